/**
 * The Llama family's architecture, read strictly from a Hugging Face `config.json`: Llama 2,
 * Llama 3.x and TinyLlama (`model_type: "llama"`, `LlamaForCausalLM`), Mistral (`"mistral"`,
 * `MistralForCausalLM`) and Qwen2 (`"qwen2"`, `Qwen2ForCausalLM`). All three are the same network
 * (RMSNorm, rotary embeddings, grouped-query attention, SwiGLU MLP) and differ only in biases and
 * in what their configs may ask for.
 *
 * Keys that do not change the network (dropout rates, `use_cache`, `torch_dtype`,
 * `pretraining_tp`, `pad_token_id`) are ignored. Keys that do are read into
 * {@linkcode LlamaConfig} or, where this project does not implement the variant (rope types other
 * than `linear` and `llama3`, MLP biases, sliding-window attention, partial rotary embeddings),
 * refused with one line naming the file and key. Transformers 5's `rope_parameters` is read like
 * `rope_theta` plus `rope_scaling`.
 *
 * @module
 */

import { fnv1a64 } from "../kernels/basis_spec.ts";
import { readConfigJson } from "./config_file.ts";
import {
  describe,
  type Fail,
  isTokenId,
  LLAMA_MAX_DIM,
  LLAMA_MAX_LAYERS,
  reader,
} from "./llama_config_keys.ts";
import { type LlamaRopeScaling, readRope, ropeScalingJson } from "./llama_rope_config.ts";

export { LLAMA_MAX_DIM, LLAMA_MAX_LAYERS, type LlamaRopeScaling, ropeScalingJson };
import { type LinearSite, ModelConfigError, type ModelShape, type PeftNaming } from "./model.ts";

/** The `model_type`s this family reads, with the `architectures` each is saved under. */
export const LLAMA_MODEL_TYPES = {
  llama: { name: "Llama", architectures: ["LlamaForCausalLM", "LlamaModel"] },
  mistral: { name: "Mistral", architectures: ["MistralForCausalLM", "MistralModel"] },
  qwen2: { name: "Qwen2", architectures: ["Qwen2ForCausalLM", "Qwen2Model"] },
} as const;

/** One of the keys of {@linkcode LLAMA_MODEL_TYPES}. */
export type LlamaModelType = keyof typeof LLAMA_MODEL_TYPES;

/** The architecture of a Llama-family model: everything that fixes its weights and its math. */
export interface LlamaConfig {
  /** `model_type`. */
  modelType: LlamaModelType;
  /** Decoder layers (`num_hidden_layers`). */
  numHiddenLayers: number;
  /** Width of the residual stream, D (`hidden_size`). */
  hiddenSize: number;
  /** Width of the SwiGLU MLP, I (`intermediate_size`). */
  intermediateSize: number;
  /** Query heads, H (`num_attention_heads`). */
  numAttentionHeads: number;
  /** Key-value heads, KVH (`num_key_value_heads`, H when absent); divides H. */
  numKeyValueHeads: number;
  /** Values a head, hd (`head_dim`, `hidden_size / num_attention_heads` when absent); even. */
  headDim: number;
  /** Rows of the token embedding, V (`vocab_size`). */
  vocabSize: number;
  /** Longest sequence (`max_position_embeddings`). */
  maxPositionEmbeddings: number;
  /** Epsilon of every RMSNorm (`rms_norm_eps`). */
  rmsNormEps: number;
  /** Base of the rotary frequencies (`rope_theta`, 10000 when absent). */
  ropeTheta: number;
  /** `rope_scaling`; absent for none (HF's `default`). */
  ropeScaling?: LlamaRopeScaling;
  /** Whether q, k and v projections have biases (Qwen2 always; Llama with `attention_bias`). */
  qkvBias: boolean;
  /** Whether o_proj has a bias (Llama with `attention_bias`). */
  oBias: boolean;
  /** `lm_head` is `embed_tokens` (`tie_word_embeddings`, false when absent). */
  tieWordEmbeddings: boolean;
  /** Std of the normal init of fresh weights (`initializer_range`, 0.02 when absent). */
  initializerRange: number;
  /** `bos_token_id`, when the config gives one. */
  bosTokenId?: number;
  /** `eos_token_id` as a list (one or several ids), when the config gives one. */
  eosTokenIds?: number[];
}

/** A `config.json` that cannot describe a Llama-family model this project can run. */
export class LlamaConfigError extends ModelConfigError {
  /**
   * Makes the error.
   *
   * @param message The whole message, already naming the file and key.
   * @param options Where the error happened.
   */
  constructor(message: string, options: { file: string; key?: string; cause?: unknown }) {
    super(message, options);
    this.name = "LlamaConfigError";
  }
}

/** How PEFT names the family's modules: `base_model.model.model.layers.0.self_attn.q_proj`. */
export const LLAMA_PEFT: PeftNaming = { modulePrefix: "model.", taskType: "CAUSAL_LM" };

/**
 * Reads a Llama-family architecture from a parsed Hugging Face `config.json`.
 *
 * @param json The parsed JSON.
 * @param source Where it came from, for error messages (usually the file's path).
 * @param options `modelType`: the type a family expects (a config of another type is refused; a
 * config without `model_type` or known `architectures` is taken as this type).
 * @returns The architecture.
 * @throws {LlamaConfigError} Naming the file and key, on a missing or ill-typed key, sizes over
 * {@linkcode LLAMA_MAX_LAYERS} or {@linkcode LLAMA_MAX_DIM}, heads that do not divide, an odd
 * head size, or a variant this project does not implement.
 *
 * @example Parsing the fixture's config
 * ```ts
 * import { parseLlamaConfig } from "./llama_config.ts";
 * const path = "fixtures/tiny-llama/config.json";
 * const config = parseLlamaConfig(JSON.parse(await Deno.readTextFile(path)), path);
 * console.log(config.numKeyValueHeads, config.ropeScaling?.type); // 2 "llama3"
 * ```
 */
export function parseLlamaConfig(
  json: unknown,
  source: string,
  options: { modelType?: LlamaModelType } = {},
): LlamaConfig {
  let family = options.modelType === undefined
    ? "Llama"
    : LLAMA_MODEL_TYPES[options.modelType].name;
  const fail = (message: string, key?: string): never => {
    throw new LlamaConfigError(`Invalid ${family} config "${source}": ${message}`, {
      file: source,
      key,
    });
  };
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    return fail(`expected a JSON object, found ${describe(json)}`);
  }
  const obj = json as Record<string, unknown>;
  const has = (key: string) => Object.hasOwn(obj, key) && obj[key] !== undefined;
  const modelType = modelTypeOf(obj, options.modelType, fail);
  family = LLAMA_MODEL_TYPES[modelType].name;
  const read = reader(obj, "", fail);

  const numHiddenLayers = read.positiveInt("num_hidden_layers", LLAMA_MAX_LAYERS, "layers");
  const hiddenSize = read.positiveInt("hidden_size", LLAMA_MAX_DIM);
  const intermediateSize = read.positiveInt("intermediate_size", LLAMA_MAX_DIM);
  const numAttentionHeads = read.positiveInt("num_attention_heads", LLAMA_MAX_DIM, "heads");
  const numKeyValueHeads = has("num_key_value_heads") && obj.num_key_value_heads !== null
    ? read.positiveInt("num_key_value_heads", LLAMA_MAX_DIM, "heads")
    : numAttentionHeads;
  if (numAttentionHeads % numKeyValueHeads !== 0) {
    fail(
      `"num_attention_heads" (${numAttentionHeads}) is not divisible by "num_key_value_heads" ` +
        `(${numKeyValueHeads})`,
      "num_key_value_heads",
    );
  }
  // HF: `getattr(config, "head_dim", None) or hidden_size // num_attention_heads`.
  let headDim: number;
  if (has("head_dim") && obj.head_dim !== null) {
    headDim = read.positiveInt("head_dim", LLAMA_MAX_DIM);
    if (headDim % 2 !== 0) {
      fail(`"head_dim" is ${headDim}: rotary embeddings need an even head size`, "head_dim");
    }
  } else {
    if (hiddenSize % numAttentionHeads !== 0) {
      fail(
        `"hidden_size" (${hiddenSize}) is not divisible by "num_attention_heads" ` +
          `(${numAttentionHeads}) and there is no "head_dim"`,
        "hidden_size",
      );
    }
    headDim = hiddenSize / numAttentionHeads;
    if (headDim % 2 !== 0) {
      fail(
        `the head size "hidden_size" / "num_attention_heads" is ${headDim}: rotary embeddings ` +
          `need an even head size`,
        "hidden_size",
      );
    }
  }
  if (numAttentionHeads * headDim > LLAMA_MAX_DIM) {
    fail(
      `"num_attention_heads" × head size is ${numAttentionHeads * headDim}, more than the ` +
        `${LLAMA_MAX_DIM} this project supports`,
      "num_attention_heads",
    );
  }
  const vocabSize = read.positiveInt("vocab_size", LLAMA_MAX_DIM);
  const maxPositionEmbeddings = read.positiveInt("max_position_embeddings", LLAMA_MAX_DIM);
  const rmsNormEps = read.positiveNumber("rms_norm_eps");
  const initializerRange = has("initializer_range")
    ? read.positiveNumber("initializer_range")
    : 0.02;

  const hiddenAct = has("hidden_act") ? obj.hidden_act : "silu";
  if (hiddenAct !== "silu") {
    fail(`"hidden_act" is ${describe(hiddenAct)}, expected "silu"`, "hidden_act");
  }
  if (read.flag("mlp_bias", false)) {
    fail(`"mlp_bias" is true: MLP biases are not supported`, "mlp_bias");
  }
  const attentionBias = read.flag("attention_bias", false);
  if (attentionBias && modelType !== "llama") {
    fail(
      `"attention_bias" is true: ${family} has ${
        modelType === "qwen2" ? "biases on q, k and v only" : "no attention biases"
      }`,
      "attention_bias",
    );
  }
  const tieWordEmbeddings = read.flag("tie_word_embeddings", false);
  if (has("partial_rotary_factor") && obj.partial_rotary_factor !== 1) {
    fail(
      `"partial_rotary_factor" is ${describe(obj.partial_rotary_factor)}: partial rotary ` +
        `embeddings are not supported`,
      "partial_rotary_factor",
    );
  }
  refuseSlidingWindow(obj, modelType, maxPositionEmbeddings, fail);
  const { ropeTheta, ropeScaling } = readRope(obj, fail);

  const config: LlamaConfig = {
    modelType,
    numHiddenLayers,
    hiddenSize,
    intermediateSize,
    numAttentionHeads,
    numKeyValueHeads,
    headDim,
    vocabSize,
    maxPositionEmbeddings,
    rmsNormEps,
    ropeTheta,
    qkvBias: modelType === "qwen2" || attentionBias,
    oBias: attentionBias,
    tieWordEmbeddings,
    initializerRange,
  };
  if (ropeScaling !== undefined) config.ropeScaling = ropeScaling;
  const bos = obj.bos_token_id;
  if (bos !== undefined && bos !== null) {
    if (!isTokenId(bos)) {
      fail(`"bos_token_id" is ${describe(bos)}, expected a token id or null`, "bos_token_id");
    }
    config.bosTokenId = bos as number;
  }
  const eos = obj.eos_token_id;
  if (eos !== undefined && eos !== null) {
    const ids = Array.isArray(eos) ? eos : [eos];
    if (ids.length === 0 || !ids.every(isTokenId)) {
      fail(
        `"eos_token_id" is ${
          describe(eos)
        }, expected a token id, a non-empty list of them, or null`,
        "eos_token_id",
      );
    }
    config.eosTokenIds = ids as number[];
  }
  return config;
}

function modelTypeOf(
  obj: Record<string, unknown>,
  expected: LlamaModelType | undefined,
  fail: Fail,
): LlamaModelType {
  const types = Object.keys(LLAMA_MODEL_TYPES) as LlamaModelType[];
  const list = `"llama", "mistral" or "qwen2"`;
  let type: LlamaModelType | undefined;
  if (obj.model_type !== undefined) {
    if (!(types as unknown[]).includes(obj.model_type)) {
      fail(`"model_type" is ${describe(obj.model_type)}, expected ${list}`, "model_type");
    }
    type = obj.model_type as LlamaModelType;
  } else {
    const names = Array.isArray(obj.architectures) ? obj.architectures : [];
    type = types.find((t) =>
      names.some((a) =>
        (LLAMA_MODEL_TYPES[t].architectures as readonly unknown[]).includes(a)
      )
    ) ?? expected;
    if (type === undefined) fail(`missing key "model_type" (expected ${list})`, "model_type");
  }
  if (expected !== undefined && type !== expected) {
    fail(`"model_type" is "${type}", expected "${expected}"`, "model_type");
  }
  return type!;
}

// Full attention over a window-limited model would be a different model, not an approximation
// anybody asked for, so a window that can bite is refused.
function refuseSlidingWindow(
  obj: Record<string, unknown>,
  modelType: LlamaModelType,
  maxPositions: number,
  fail: Fail,
): void {
  if (modelType === "llama") return;
  const read = reader(obj, "", fail);
  const window = obj.sliding_window === null || obj.sliding_window === undefined
    ? undefined
    : read.positiveInt("sliding_window");
  if (modelType === "qwen2" && read.flag("use_sliding_window", false)) {
    fail(
      `"use_sliding_window" is true: sliding-window attention is not supported, and full ` +
        `attention would only approximate the model`,
      "use_sliding_window",
    );
  }
  if (modelType === "mistral" && window !== undefined && window < maxPositions) {
    fail(
      `"sliding_window" is ${window}, less than "max_position_embeddings" (${maxPositions}): ` +
        `sliding-window attention is not supported, and full attention would only approximate ` +
        `the model beyond ${window} positions`,
      "sliding_window",
    );
  }
  const layers = obj.layer_types;
  if (Array.isArray(layers)) {
    const at = layers.findIndex((t) => t !== "full_attention");
    if (at >= 0) {
      fail(
        `"layer_types" has ${describe(layers[at])} at ${at}: only "full_attention" is supported`,
        "layer_types",
      );
    }
  }
}

/**
 * Reads and parses `<folder>/config.json`.
 *
 * @param folder A Hugging Face model folder.
 * @param options As for {@linkcode parseLlamaConfig}.
 * @returns The architecture.
 * @throws {ModelConfigError} If the file cannot be read or is not JSON.
 * @throws {LlamaConfigError} If it is not a valid config.
 *
 * @example Reading the fixture's config
 * ```ts
 * import { readLlamaConfig } from "./llama_config.ts";
 * const config = await readLlamaConfig("fixtures/tiny-qwen2");
 * console.log(config.qkvBias, config.tieWordEmbeddings); // true true
 * ```
 */
export async function readLlamaConfig(
  folder: string,
  options: { modelType?: LlamaModelType } = {},
): Promise<LlamaConfig> {
  const { path, json } = await readConfigJson(folder);
  return parseLlamaConfig(json, path, options);
}

/**
 * The canonical text {@linkcode llamaConfigHash} hashes: a JSON object with exactly these keys in
 * this order, `JSON.stringify` number formatting, no spaces: `model_type`, `num_hidden_layers`,
 * `hidden_size`, `intermediate_size`, `num_attention_heads`, `num_key_value_heads`, `head_dim`,
 * `vocab_size`, `max_position_embeddings`, `rms_norm_eps`, `rope_theta`, `rope_scaling` (null,
 * `{"rope_type":"linear","factor":..}` or `{"rope_type":"llama3","factor":..,
 * "low_freq_factor":..,"high_freq_factor":..,"original_max_position_embeddings":..}`),
 * `qkv_bias`, `o_bias`, `tie_word_embeddings`, `hidden_act`. Token ids and the init's
 * `initializer_range` are left out: they do not change the weights an adapter was trained on.
 *
 * @param config An architecture.
 * @returns The canonical JSON.
 *
 * @example Printing the canonical text
 * ```ts
 * import { canonicalLlamaConfigJson, readLlamaConfig } from "./llama_config.ts";
 * console.log(canonicalLlamaConfigJson(await readLlamaConfig("fixtures/tiny-llama")));
 * ```
 */
export function canonicalLlamaConfigJson(config: LlamaConfig): string {
  const ropeScaling = ropeScalingJson(config.ropeScaling);
  return JSON.stringify({
    model_type: config.modelType,
    num_hidden_layers: config.numHiddenLayers,
    hidden_size: config.hiddenSize,
    intermediate_size: config.intermediateSize,
    num_attention_heads: config.numAttentionHeads,
    num_key_value_heads: config.numKeyValueHeads,
    head_dim: config.headDim,
    vocab_size: config.vocabSize,
    max_position_embeddings: config.maxPositionEmbeddings,
    rms_norm_eps: config.rmsNormEps,
    rope_theta: config.ropeTheta,
    rope_scaling: ropeScaling,
    qkv_bias: config.qkvBias,
    o_bias: config.oBias,
    tie_word_embeddings: config.tieWordEmbeddings,
    hidden_act: "silu",
  });
}

/**
 * A stable fingerprint of an architecture, stored in adapter files: FNV-1a 64 of the UTF-8 of
 * {@linkcode canonicalLlamaConfigJson}, as 16 lowercase hex digits.
 *
 * @param config An architecture.
 * @returns 16 hex digits.
 *
 * @example Hashing the fixture's config
 * ```ts
 * import { llamaConfigHash, readLlamaConfig } from "./llama_config.ts";
 * const hash = llamaConfigHash(await readLlamaConfig("fixtures/tiny-llama")); // 16 hex digits
 * ```
 */
export function llamaConfigHash(config: LlamaConfig): string {
  const bytes = new TextEncoder().encode(canonicalLlamaConfigJson(config));
  return fnv1a64(bytes).toString(16).padStart(16, "0");
}

/** The seven linear layers of a decoder layer, in model order, by their Hugging Face names. */
export const LLAMA_LINEARS = [
  "self_attn.q_proj",
  "self_attn.k_proj",
  "self_attn.v_proj",
  "self_attn.o_proj",
  "mlp.gate_proj",
  "mlp.up_proj",
  "mlp.down_proj",
] as const;

/**
 * Every site a Llama-family model of this shape offers adapters, in model order: layer by layer,
 * `layers.{i}.self_attn.{q,k,v,o}_proj` and `layers.{i}.mlp.{gate,up,down}_proj`, all `linear`
 * (`[out, in]` weights, no slices). `lm_head` is not a site.
 *
 * @param config The architecture.
 * @returns The sites: q `D -> H·hd`, k and v `D -> KVH·hd`, o `H·hd -> D`, gate and up
 * `D -> I`, down `I -> D`.
 *
 * @example The sites of one layer
 * ```ts
 * import { llamaSites, readLlamaConfig } from "./llama_config.ts";
 * const sites = llamaSites(await readLlamaConfig("fixtures/tiny-llama"));
 * console.log(sites[1]); // { name: "layers.0.self_attn.k_proj", inFeatures: 24, outFeatures: 16, ... }
 * ```
 */
export function llamaSites(config: LlamaConfig): LinearSite[] {
  const { hiddenSize: D, intermediateSize: I, headDim: hd } = config;
  const q = config.numAttentionHeads * hd;
  const kv = config.numKeyValueHeads * hd;
  const features: Record<typeof LLAMA_LINEARS[number], [number, number]> = {
    "self_attn.q_proj": [D, q],
    "self_attn.k_proj": [D, kv],
    "self_attn.v_proj": [D, kv],
    "self_attn.o_proj": [q, D],
    "mlp.gate_proj": [D, I],
    "mlp.up_proj": [D, I],
    "mlp.down_proj": [I, D],
  };
  const sites: LinearSite[] = [];
  for (let i = 0; i < config.numHiddenLayers; i++) {
    for (const linear of LLAMA_LINEARS) {
      const name = `layers.${i}.${linear}`;
      const [inFeatures, outFeatures] = features[linear];
      sites.push({ name, linear: name, colOffset: 0, inFeatures, outFeatures });
    }
  }
  return sites;
}

/**
 * What accounting and adapter files need of a Llama-family model, from its config alone.
 *
 * @param config The architecture.
 * @returns Its config hash and sites.
 */
export function llamaFamilyShape(config: LlamaConfig): ModelShape {
  return { configHash: llamaConfigHash(config), sites: llamaSites(config) };
}
