/**
 * GPT-2's architecture, read strictly from a Hugging Face `config.json`.
 *
 * `config.json` carries many keys that do not change the network (dropout rates, generation and
 * summary-head settings); those are ignored. Keys that do change it are either read into
 * {@linkcode Gpt2Config} or, where this project does not implement the variant (cross-attention,
 * untied heads, per-layer attention scaling), rejected with a message naming the file and key.
 *
 * @module
 */

import { fnv1a64 } from "../kernels/basis_spec.ts";
import { readConfigJson } from "./config_file.ts";
import { type LinearSite, ModelConfigError } from "./model.ts";

/** The GELU variants GPT-2 checkpoints name; all three are the same tanh approximation. */
export const GPT2_ACTIVATIONS = ["gelu_new", "gelu_pytorch_tanh", "gelu_fast"] as const;

/** One of {@linkcode GPT2_ACTIVATIONS}. */
export type Gpt2Activation = typeof GPT2_ACTIVATIONS[number];

/** The architecture of a GPT-2 model: everything that fixes the weights' shapes and the math. */
export interface Gpt2Config {
  /** Transformer blocks (`n_layer`). */
  nLayer: number;
  /** Attention heads per block (`n_head`); divides `nEmbd`. */
  nHead: number;
  /** Width of the residual stream, C (`n_embd`). */
  nEmbd: number;
  /** Rows of the position embedding, the longest sequence (`n_positions`, or `n_ctx`). */
  nPositions: number;
  /** Rows of the token embedding, V (`vocab_size`). */
  vocabSize: number;
  /** Width of the MLP's hidden layer (`n_inner`, `4 * n_embd` when null or absent). */
  nInner: number;
  /** Epsilon of every LayerNorm (`layer_norm_epsilon`). */
  layerNormEpsilon: number;
  /** The MLP's activation (`activation_function`); always GELU in its tanh form. */
  activationFunction: Gpt2Activation;
  /** `eos_token_id`, when the config gives one. */
  eosTokenId?: number;
  /** `bos_token_id`, when the config gives one. */
  bosTokenId?: number;
}

/** A `config.json` that cannot describe a GPT-2 this project can run. */
export class Gpt2ConfigError extends ModelConfigError {
  /**
   * Makes the error.
   *
   * @param message The whole message, already naming the file and key.
   * @param options Where the error happened.
   */
  constructor(message: string, options: { file: string; key?: string; cause?: unknown }) {
    super(message, options);
    this.name = "Gpt2ConfigError";
  }
}

// Options that change the network in ways this project does not implement, with the one value
// (HF's default) that is accepted. Absent counts as the default.
const UNSUPPORTED: ReadonlyArray<[key: string, accepted: unknown, why: string]> = [
  ["add_cross_attention", false, "cross-attention is not supported"],
  ["tie_word_embeddings", true, "untied lm_head weights are not supported"],
  ["scale_attn_weights", true, "attention without 1/sqrt(head_dim) scaling is not supported"],
  ["scale_attn_by_inverse_layer_idx", false, "per-layer attention scaling is not supported"],
];

/** The deepest GPT-2 accepted (`n_layer`). */
export const MAX_LAYERS = 4096;

/**
 * Reads GPT-2's architecture from a parsed Hugging Face `config.json`.
 *
 * @param json The parsed JSON.
 * @param source Where it came from, for error messages (usually the file's path).
 * @returns The architecture.
 * @throws {Gpt2ConfigError} If a required key is missing or ill-typed, `model_type` is present
 * and not `"gpt2"`, `n_layer` is over {@linkcode MAX_LAYERS}, the activation is not a tanh GELU,
 * `n_embd` is not divisible by `n_head`, or the config asks for an unsupported variant.
 *
 * @example Parsing a config
 * ```ts
 * import { parseGpt2Config } from "./gpt2_config.ts";
 * const path = "fixtures/tiny-gpt2/config.json";
 * const config = parseGpt2Config(JSON.parse(await Deno.readTextFile(path)), path);
 * console.log(config.nLayer, config.nEmbd);
 * ```
 */
export function parseGpt2Config(json: unknown, source: string): Gpt2Config {
  const fail = (message: string, key?: string): never => {
    throw new Gpt2ConfigError(`Invalid GPT-2 config "${source}": ${message}`, {
      file: source,
      key,
    });
  };
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    return fail(`expected a JSON object, found ${describe(json)}`);
  }
  const obj = json as Record<string, unknown>;
  const has = (key: string) => Object.hasOwn(obj, key) && obj[key] !== undefined;

  if (has("model_type") && obj.model_type !== "gpt2") {
    fail(`"model_type" is ${describe(obj.model_type)}, expected "gpt2"`, "model_type");
  }
  const positiveInt = (key: string): number => {
    if (!has(key)) return fail(`missing key "${key}"`, key);
    const v = obj[key];
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 1) {
      return fail(`"${key}" is ${describe(v)}, expected a positive integer`, key);
    }
    return v;
  };
  const optionalId = (key: string): number | undefined => {
    if (!has(key) || obj[key] === null) return undefined;
    const v = obj[key];
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
      return fail(`"${key}" is ${describe(v)}, expected a token id or null`, key);
    }
    return v;
  };

  const nLayer = positiveInt("n_layer");
  // Sites and expected weights are listed per layer before any weight is read, so a claimed depth
  // must be bounded before it is believed (the deepest published transformers have ~1000 layers).
  if (nLayer > MAX_LAYERS) {
    fail(
      `"n_layer" is ${nLayer}, more than the ${MAX_LAYERS} layers this project supports`,
      "n_layer",
    );
  }
  const nHead = positiveInt("n_head");
  const nEmbd = positiveInt("n_embd");
  // HF sizes wpe by n_positions; very old configs have only n_ctx, which then means the same.
  const nPositions = has("n_positions") || !has("n_ctx")
    ? positiveInt("n_positions")
    : positiveInt("n_ctx");
  const vocabSize = positiveInt("vocab_size");
  const nInner = has("n_inner") && obj.n_inner !== null ? positiveInt("n_inner") : 4 * nEmbd;
  if (nEmbd % nHead !== 0) {
    fail(`"n_embd" (${nEmbd}) is not divisible by "n_head" (${nHead})`, "n_embd");
  }

  if (!has("layer_norm_epsilon")) fail(`missing key "layer_norm_epsilon"`, "layer_norm_epsilon");
  const eps = obj.layer_norm_epsilon;
  if (typeof eps !== "number" || !Number.isFinite(eps) || eps <= 0) {
    fail(
      `"layer_norm_epsilon" is ${describe(eps)}, expected a positive number`,
      "layer_norm_epsilon",
    );
  }

  if (!has("activation_function")) fail(`missing key "activation_function"`, "activation_function");
  const act = obj.activation_function;
  if (!(GPT2_ACTIVATIONS as readonly unknown[]).includes(act)) {
    fail(
      `"activation_function" is ${describe(act)}, expected one of ${
        GPT2_ACTIVATIONS.map((a) => `"${a}"`).join(", ")
      } (GELU, tanh form)`,
      "activation_function",
    );
  }

  for (const [key, accepted, why] of UNSUPPORTED) {
    if (has(key) && obj[key] !== accepted) {
      fail(`"${key}" is ${describe(obj[key])}: ${why}`, key);
    }
  }

  const config: Gpt2Config = {
    nLayer,
    nHead,
    nEmbd,
    nPositions,
    vocabSize,
    nInner,
    layerNormEpsilon: eps as number,
    activationFunction: act as Gpt2Activation,
  };
  const eosTokenId = optionalId("eos_token_id");
  const bosTokenId = optionalId("bos_token_id");
  if (eosTokenId !== undefined) config.eosTokenId = eosTokenId;
  if (bosTokenId !== undefined) config.bosTokenId = bosTokenId;
  return config;
}

/**
 * Reads and parses `<folder>/config.json`.
 *
 * @param folder A Hugging Face model folder.
 * @returns The architecture.
 * @throws {Gpt2ConfigError} If the file cannot be read, is not JSON, or is not a valid config.
 *
 * @example Reading the fixture's config
 * ```ts
 * import { readGpt2Config } from "./gpt2_config.ts";
 * const config = await readGpt2Config("fixtures/tiny-gpt2");
 * ```
 */
export async function readGpt2Config(folder: string): Promise<Gpt2Config> {
  const { path, json } = await readConfigJson(folder);
  return parseGpt2Config(json, path);
}

/**
 * The canonical text {@linkcode configHash} hashes: a JSON object with exactly these keys in this
 * order, `JSON.stringify` number formatting, no spaces:
 * `{"model_type":"gpt2","n_layer":..,"n_head":..,"n_embd":..,"n_positions":..,"vocab_size":..,
 * "n_inner":..,"layer_norm_epsilon":..,"activation_function":".."}`.
 *
 * @param config An architecture.
 * @returns The canonical JSON.
 *
 * @example Printing the canonical text
 * ```ts
 * import { canonicalConfigJson, readGpt2Config } from "./gpt2_config.ts";
 * console.log(canonicalConfigJson(await readGpt2Config("fixtures/tiny-gpt2")));
 * ```
 */
export function canonicalConfigJson(config: Gpt2Config): string {
  // Token ids are left out: they do not change the weights an adapter was trained against.
  return JSON.stringify({
    model_type: "gpt2",
    n_layer: config.nLayer,
    n_head: config.nHead,
    n_embd: config.nEmbd,
    n_positions: config.nPositions,
    vocab_size: config.vocabSize,
    n_inner: config.nInner,
    layer_norm_epsilon: config.layerNormEpsilon,
    activation_function: config.activationFunction,
  });
}

/**
 * A stable fingerprint of an architecture, stored in adapter files: FNV-1a 64 of the UTF-8 of
 * {@linkcode canonicalConfigJson}, as 16 lowercase hex digits.
 *
 * @param config An architecture.
 * @returns 16 hex digits.
 *
 * @example Hashing the fixture's config
 * ```ts
 * import { configHash, readGpt2Config } from "./gpt2_config.ts";
 * const hash = configHash(await readGpt2Config("fixtures/tiny-gpt2")); // 16 hex digits
 * ```
 */
export function configHash(config: Gpt2Config): string {
  const bytes = new TextEncoder().encode(canonicalConfigJson(config));
  return fnv1a64(bytes).toString(16).padStart(16, "0");
}

function describe(value: unknown): string {
  if (value === undefined) return "missing";
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) return "an array";
  if (value === null) return "null";
  if (typeof value === "object") return "an object";
  return String(value);
}

/** GPT-2 small (124M), as its Hugging Face `config.json` describes it. */
export const GPT2_SMALL: Gpt2Config = {
  nLayer: 12,
  nHead: 12,
  nEmbd: 768,
  nPositions: 1024,
  vocabSize: 50257,
  nInner: 3072,
  layerNormEpsilon: 1e-5,
  activationFunction: "gelu_new",
};

/** The four linear layers of a block, by their Hugging Face names. */
export const GPT2_LINEARS = ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"] as const;

/**
 * Every site a GPT-2 of this shape offers adapters, in model order: block by block, each linear
 * (`h.{i}.attn.c_attn`, `h.{i}.attn.c_proj`, `h.{i}.mlp.c_fc`, `h.{i}.mlp.c_proj`), with the q, k
 * and v parts of `c_attn` (`h.{i}.attn.c_attn.q|k|v`, each `C -> C` at features `0`, `C`, `2C`)
 * after the whole `c_attn`.
 *
 * @param config The architecture.
 * @returns The sites.
 */
export function gpt2Sites(config: Gpt2Config): LinearSite[] {
  const { nLayer, nEmbd: C, nInner } = config;
  const sites: LinearSite[] = [];
  const site = (name: string, linear: string, colOffset: number, inF: number, outF: number) =>
    sites.push({ name, linear, colOffset, inFeatures: inF, outFeatures: outF });
  for (let i = 0; i < nLayer; i++) {
    const attn = `h.${i}.attn.c_attn`;
    site(attn, attn, 0, C, 3 * C);
    ["q", "k", "v"].forEach((part, j) => site(`${attn}.${part}`, attn, j * C, C, C));
    site(`h.${i}.attn.c_proj`, `h.${i}.attn.c_proj`, 0, C, C);
    site(`h.${i}.mlp.c_fc`, `h.${i}.mlp.c_fc`, 0, C, nInner);
    site(`h.${i}.mlp.c_proj`, `h.${i}.mlp.c_proj`, 0, nInner, C);
  }
  return sites;
}
