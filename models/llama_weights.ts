/**
 * Checks a Hugging Face Llama-family folder (Llama, Mistral, Qwen2: `config.json` plus
 * `model.safetensors` or a sharded index) against its config from the header alone, strictly,
 * and plans a streaming load ({@linkcode planLlamaWeights}); or loads it into f32 host arrays
 * under canonical names ({@linkcode loadLlamaWeights}); and fresh weights for a config.
 *
 * Canonical names are the module names without `LlamaForCausalLM`'s `model.` prefix:
 * `embed_tokens.weight`, `layers.0.self_attn.q_proj.weight`, ..., `norm.weight`, and
 * `lm_head.weight` (which never has the prefix) when the head is untied. A checkpoint may carry
 * the prefix on all of its parameters or on none (a bare `LlamaModel`); a mix is an error. The
 * rotary `inv_freq` buffers old conversions saved are skipped. A tied head may be stored only when
 * it equals `embed_tokens.weight` exactly. Every other difference from
 * {@linkcode expectedLlamaShapes} (a missing tensor, an extra one, a wrong shape) is an error
 * naming the tensor, the file, and the expected shape.
 *
 * @module
 */

import { Random } from "../data/random.ts";
import { Checkpoint } from "../formats/safetensors.ts";
import { FLOAT_DTYPES, type HostTensor } from "./gpt2_weights.ts";
import type { PlannedWeight, WeightReader } from "./_base_weights.ts";
import {
  LLAMA_MODEL_TYPES,
  type LlamaConfig,
  type LlamaModelType,
  readLlamaConfig,
} from "./llama_config.ts";
import { ModelWeightsError } from "./model.ts";
import { describeCheckpoint, formatShape, sameShape } from "./_weight_files.ts";

/** A loaded Llama-family model: its architecture and every parameter under its canonical name. */
export interface LlamaWeights {
  /** The architecture from `config.json`. */
  config: LlamaConfig;
  /** Every parameter, in {@linkcode expectedLlamaShapes} order. */
  tensors: Map<string, HostTensor>;
}

/** A checkpoint whose tensors do not match its config. */
export class LlamaWeightsError extends ModelWeightsError {
  /**
   * Makes the error.
   *
   * @param message The whole message, already naming the file and tensor.
   * @param options Where the error happened.
   */
  constructor(message: string, options: { file: string; tensor?: string }) {
    super(message, options);
    this.name = "LlamaWeightsError";
  }
}

/** The prefix `LlamaForCausalLM` (and Mistral's, Qwen2's) puts before the decoder's parameters. */
export const MODEL_PREFIX = "model.";

const LM_HEAD = "lm_head.weight";
const EMBED = "embed_tokens.weight";
const BUFFER = /^(layers\.\d+\.self_attn\.)?rotary_emb\.inv_freq$/;

/** One expected parameter; `note` explains its shape when a checkpoint's differs. */
export interface ExpectedTensor {
  /** Canonical name. */
  name: string;
  /** Dimensions; `nn.Linear` weights are `[out, in]`. */
  shape: number[];
  /** What fixes the shape, for messages (attention projections). */
  note?: string;
}

/**
 * Every parameter of a Llama-family model and its shape, in `LlamaForCausalLM`'s parameter order
 * (per layer: q, k, v, o projections with their biases, gate, up, down, then the two norms).
 *
 * @param config The architecture.
 * @returns Canonical names and shapes; `lm_head.weight` last, only when the head is untied.
 *
 * @example The key projection of layer 0
 * ```ts
 * import { expectedLlamaShapes } from "./llama_weights.ts";
 * import { readLlamaConfig } from "./llama_config.ts";
 * const shapes = expectedLlamaShapes(await readLlamaConfig("fixtures/tiny-llama"));
 * shapes.find((s) => s.name === "layers.0.self_attn.k_proj.weight")?.shape; // [16, 24]
 * ```
 */
export function expectedLlamaShapes(config: LlamaConfig): ExpectedTensor[] {
  const { hiddenSize: D, intermediateSize: I, vocabSize: V, headDim: hd } = config;
  const H = config.numAttentionHeads;
  const KVH = config.numKeyValueHeads;
  const qNote = `num_attention_heads × head_dim = ${H} × ${hd} rows`;
  const kvNote = `num_key_value_heads × head_dim = ${KVH} × ${hd} rows`;
  const out: ExpectedTensor[] = [{ name: EMBED, shape: [V, D] }];
  for (let i = 0; i < config.numHiddenLayers; i++) {
    const a = `layers.${i}.self_attn.`;
    const projections: Array<[string, number, string]> = [
      ["q", H * hd, qNote],
      ["k", KVH * hd, kvNote],
      ["v", KVH * hd, kvNote],
    ];
    for (const [proj, rows, note] of projections) {
      out.push({ name: `${a}${proj}_proj.weight`, shape: [rows, D], note });
      if (config.qkvBias) out.push({ name: `${a}${proj}_proj.bias`, shape: [rows], note });
    }
    out.push({
      name: `${a}o_proj.weight`,
      shape: [D, H * hd],
      note: `num_attention_heads × head_dim = ${H} × ${hd} columns`,
    });
    if (config.oBias) out.push({ name: `${a}o_proj.bias`, shape: [D] });
    const m = `layers.${i}.mlp.`;
    out.push(
      { name: `${m}gate_proj.weight`, shape: [I, D] },
      { name: `${m}up_proj.weight`, shape: [I, D] },
      { name: `${m}down_proj.weight`, shape: [D, I] },
      { name: `layers.${i}.input_layernorm.weight`, shape: [D] },
      { name: `layers.${i}.post_attention_layernorm.weight`, shape: [D] },
    );
  }
  out.push({ name: "norm.weight", shape: [D] });
  if (!config.tieWordEmbeddings) out.push({ name: LM_HEAD, shape: [V, D] });
  return out;
}

/**
 * Checks a Llama-family checkpoint against its config from the header alone (names, prefix,
 * shapes, dtypes, a stored tied head's shape), before any weight is read, and plans the load.
 *
 * @param config The architecture.
 * @param ckpt The checkpoint (or a reader wrapping one).
 * @returns Every weight in {@linkcode expectedLlamaShapes} order; with a tied head stored,
 * `embed_tokens.weight` carries `lm_head.weight` as its tied copy, which must hold the same
 * values.
 * @throws {LlamaWeightsError} If a tensor is missing, unexpected, of the wrong shape or not a
 * float, names mix prefixed and bare forms, or a stored tied `lm_head.weight` differs from
 * `embed_tokens.weight` in shape.
 *
 * @example Planning the fixture's load
 * ```ts
 * import { Checkpoint } from "../formats/safetensors.ts";
 * import { planLlamaWeights } from "./llama_weights.ts";
 * import { readLlamaConfig } from "./llama_config.ts";
 * using ckpt = await Checkpoint.open("fixtures/tiny-llama");
 * const plan = await planLlamaWeights(await readLlamaConfig("fixtures/tiny-llama"), ckpt);
 * console.log(plan.at(-1)?.name); // lm_head.weight
 * ```
 */
export async function planLlamaWeights(
  config: LlamaConfig,
  ckpt: WeightReader,
): Promise<PlannedWeight[]> {
  const family = LLAMA_MODEL_TYPES[config.modelType].name;
  const fail = (message: string, file: string, tensor?: string): never => {
    throw new LlamaWeightsError(`Invalid ${family} checkpoint "${file}": ${message}`, {
      file,
      tensor,
    });
  };

  const names = ckpt.names();
  const prefixed = names.find((n) => n.startsWith(MODEL_PREFIX));
  const prefix = prefixed === undefined ? "" : MODEL_PREFIX;
  const stored = (canonical: string) => canonical === LM_HEAD ? LM_HEAD : prefix + canonical;
  const expected = expectedLlamaShapes(config);
  const byName = new Map(expected.map((e) => [e.name, e]));
  const found = new Map<string, string>(); // canonical name -> name in the checkpoint
  let tiedHead: string | undefined;

  for (const name of names) {
    const canonical = name === LM_HEAD ? name : name.slice(prefix.length);
    if (name !== LM_HEAD && !name.startsWith(prefix)) {
      fail(
        `tensor "${name}" has no "${prefix}" prefix while "${prefixed}" has one; a checkpoint ` +
          `must use one naming for all its parameters`,
        ckpt.fileOf(name),
        name,
      );
    }
    if (BUFFER.test(canonical)) continue;
    if (name === LM_HEAD && config.tieWordEmbeddings) {
      tiedHead = name;
      continue;
    }
    // `lm_head` sits beside `model`, never inside it: `model.lm_head.weight` is no head.
    const want = name !== LM_HEAD && canonical === LM_HEAD ? undefined : byName.get(canonical);
    if (want === undefined) {
      fail(
        `unexpected tensor "${name}" (${whyUnexpected(canonical, config)})`,
        ckpt.fileOf(name),
        name,
      );
    }
    const actual = ckpt.info(name).shape;
    if (!sameShape(actual, want!.shape)) {
      fail(
        `tensor "${name}" has shape ${formatShape(actual)}, expected ${formatShape(want!.shape)}` +
          (want!.note ? ` (${want!.note})` : ""),
        ckpt.fileOf(name),
        name,
      );
    }
    found.set(canonical, name);
  }

  const missing = expected.filter((e) => !found.has(e.name));
  if (missing.length > 0) {
    const first = missing[0];
    const why = first.name === LM_HEAD ? ` ("tie_word_embeddings" is false)` : "";
    const more = missing.length > 1 ? ` (and ${missing.length - 1} more)` : "";
    fail(
      `missing tensor "${stored(first.name)}" with shape ${formatShape(first.shape)}${why}${more}`,
      await describeCheckpoint(ckpt.folder),
      stored(first.name),
    );
  }
  for (const name of [...found.values(), ...(tiedHead ? [tiedHead] : [])]) {
    const { dtype } = ckpt.info(name);
    if (!FLOAT_DTYPES.includes(dtype)) {
      fail(
        `tensor "${name}" has dtype ${dtype}; weights must be ${FLOAT_DTYPES.join(", ")}`,
        ckpt.fileOf(name),
        name,
      );
    }
  }

  const differs = `"${tiedHead}" differs from "${stored(EMBED)}" while "tie_word_embeddings" ` +
    `is true`;
  if (tiedHead !== undefined) {
    const shape = ckpt.info(tiedHead).shape;
    const want = byName.get(EMBED)!.shape;
    if (!sameShape(shape, want)) {
      fail(
        `${differs} (its shape is ${formatShape(shape)}, not ${formatShape(want)})`,
        ckpt.fileOf(tiedHead),
        tiedHead,
      );
    }
  }
  return expected.map(({ name, shape }) => {
    const where = found.get(name)!;
    const planned: PlannedWeight = {
      name,
      stored: where,
      shape: [...shape],
      dtype: ckpt.info(where).dtype,
    };
    if (name === EMBED && tiedHead !== undefined) {
      const file = ckpt.fileOf(tiedHead);
      planned.tiedCopy = {
        stored: tiedHead,
        differs: (at) =>
          new LlamaWeightsError(
            `Invalid ${family} checkpoint "${file}": ${differs} (first difference at element ` +
              `${at})`,
            { file, tensor: tiedHead },
          ),
      };
    }
    return planned;
  });
}

/**
 * Loads a Hugging Face Llama-family folder into host memory, checking every tensor against the
 * config. Every check that needs only the header runs before any weight is read
 * ({@linkcode planLlamaWeights}). A model loaded for the GPU streams instead (`Llama.load`);
 * this is for code that wants the values on the host.
 *
 * @param folder A folder with `config.json` and `model.safetensors` or
 * `model.safetensors.index.json` plus its shards.
 * @param options `modelType`: the type the caller expects, as for `parseLlamaConfig`.
 * @returns The architecture and every parameter under its canonical name, as f32 (F16 and BF16
 * widened).
 * @throws {LlamaConfigError} If `config.json` is invalid.
 * @throws {SafetensorsError} If a weights file is missing or invalid.
 * @throws {LlamaWeightsError} If a tensor is missing, unexpected, of the wrong shape or not a
 * float, names mix prefixed and bare forms, or a stored tied `lm_head.weight` differs from
 * `embed_tokens.weight`.
 *
 * @example Loading the fixture
 * ```ts
 * import { loadLlamaWeights } from "./llama_weights.ts";
 * const { config, tensors } = await loadLlamaWeights("fixtures/tiny-llama");
 * console.log(config.numHiddenLayers, tensors.get("lm_head.weight")?.shape); // 2 [300, 24]
 * ```
 */
export async function loadLlamaWeights(
  folder: string,
  options: { modelType?: LlamaModelType } = {},
): Promise<LlamaWeights> {
  const config = await readLlamaConfig(folder, options);
  using ckpt = await Checkpoint.open(folder);
  const plan = await planLlamaWeights(config, ckpt);
  const tensors = new Map<string, HostTensor>();
  for (const { name, stored, shape } of plan) {
    tensors.set(name, { shape, data: await ckpt.readFloat32(stored) });
  }
  const tied = plan.find((p) => p.tiedCopy)?.tiedCopy;
  if (tied) {
    const embed = tensors.get(EMBED)!.data;
    const head = await ckpt.readFloat32(tied.stored);
    const a = new Uint32Array(head.buffer, head.byteOffset, head.length);
    const b = new Uint32Array(embed.buffer, embed.byteOffset, embed.length);
    const at = a.findIndex((bits, i) => bits !== b[i]);
    if (at >= 0) throw tied.differs(at);
  }
  return { config, tensors };
}

function whyUnexpected(canonical: string, config: LlamaConfig): string {
  const family = LLAMA_MODEL_TYPES[config.modelType].name;
  if (/^layers\.\d+\.mlp\.\w+\.bias$/.test(canonical)) return "MLP biases are not supported";
  if (/^layers\.\d+\.self_attn\.[qkvo]_proj\.bias$/.test(canonical)) {
    if (config.modelType === "llama") {
      return `"attention_bias" is false: the projections have no biases`;
    }
    if (config.modelType === "qwen2") return "Qwen2's o_proj has no bias";
    return "Mistral's projections have no biases";
  }
  return `a ${family} with num_hidden_layers ${config.numHiddenLayers} has no such parameter`;
}

/**
 * Maps a Llama-family checkpoint's tensor names to weight names: the `model.` prefix dropped when
 * the checkpoint uses it, a stored tied `lm_head.weight` to `embed_tokens.weight`, the rotary
 * `inv_freq` buffers to `null`.
 *
 * @param names The checkpoint's tensor names.
 * @param config Whether the head is tied.
 * @returns Each name's weight name, or null for a buffer.
 *
 * @example A tied checkpoint that stores its head
 * ```ts
 * import { llamaWeightNames } from "./llama_weights.ts";
 * const map = llamaWeightNames(["model.norm.weight", "lm_head.weight"], { tieWordEmbeddings: true });
 * console.log(map.get("lm_head.weight")); // "embed_tokens.weight"
 * ```
 */
export function llamaWeightNames(
  names: readonly string[],
  config: Pick<LlamaConfig, "tieWordEmbeddings">,
): Map<string, string | null> {
  const prefix = names.some((n) => n.startsWith(MODEL_PREFIX)) ? MODEL_PREFIX : "";
  return new Map(names.map((name) => {
    if (name === LM_HEAD) return [name, config.tieWordEmbeddings ? EMBED : LM_HEAD];
    const canonical = name.startsWith(prefix) ? name.slice(prefix.length) : name;
    return [name, BUFFER.test(canonical) ? null : canonical];
  }));
}

/**
 * Fresh weights as Hugging Face initialises a Llama: N(0, `initializer_range`) for the embedding,
 * every projection and an untied head, zero biases, RMSNorm weights 1. Drawn from
 * `data/random.ts`'s generator, so a seed gives the same model everywhere.
 *
 * @param config The architecture.
 * @param options `seed` (default 0).
 * @returns The weights under canonical names, in {@linkcode expectedLlamaShapes} order.
 *
 * @example
 * ```ts
 * import { initLlamaWeights } from "./llama_weights.ts";
 * import { readLlamaConfig } from "./llama_config.ts";
 * const weights = initLlamaWeights(await readLlamaConfig("fixtures/tiny-llama"), { seed: 1 });
 * console.log(weights.tensors.get("embed_tokens.weight")!.shape); // [300, 24]
 * ```
 */
export function initLlamaWeights(
  config: LlamaConfig,
  options: { seed?: number } = {},
): LlamaWeights {
  const normal = gaussian(options.seed ?? 0);
  const std = config.initializerRange;
  const tensors = new Map<string, HostTensor>();
  for (const { name, shape } of expectedLlamaShapes(config)) {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    if (name.endsWith("norm.weight")) data.fill(1);
    else if (!name.endsWith(".bias")) {
      for (let i = 0; i < data.length; i++) data[i] = normal() * std;
    }
    tensors.set(name, { shape, data });
  }
  return { config, tensors };
}

// Standard normals by Box-Muller over data/random.ts's xoshiro128**, both values of each pair used.
function gaussian(seed: number): () => number {
  const random = new Random(seed);
  let spare: number | null = null;
  return () => {
    if (spare !== null) {
      const v = spare;
      spare = null;
      return v;
    }
    const radius = Math.sqrt(-2 * Math.log(1 - random.nextFloat()));
    const angle = 2 * Math.PI * random.nextFloat();
    spare = radius * Math.sin(angle);
    return radius * Math.cos(angle);
  };
}
