/**
 * The GPU memory a training run will take, computed from the config alone, before anything is
 * allocated: the weights by kind and by precision (as `load` will keep them, packed or not), their
 * gradients when every weight is trained, the adapters, the optimizer's state, and the activation
 * arena of one training micro-batch with its gradients. {@link checkMemoryLimits} turns it into a
 * one-line refusal when one buffer will not fit the adapter's limits or the total is over a budget
 * the user gave.
 *
 * The byte counts follow the allocations one for one (`GpuModel.memory`, the families' arenas,
 * `LowRankLinear`, `NolaFactors`, AdamW's moments); `tests/models/memory_estimate_test.ts` holds
 * them to the real allocation. The families: GPT-2, the Llama family, and ViT in either layout
 * (Hugging Face or timm), whose loss rows are images (one row of class logits each, a new head's
 * classes when {@link MemoryEstimateOptions.head} says so) and whose arena covers every token of
 * an image whatever the sequence length asked. What the estimate leaves out is small: the buffer pool's step
 * temporaries, uniforms, scratch gradients of frozen norm weights, and evaluation arenas of other
 * shapes.
 *
 * @module
 */

import { type BaseFormat, packedLayout } from "../formats/base_quant.ts";
import type { Gpt2Config } from "./gpt2_config.ts";
import { gpt2Sites } from "./gpt2_config.ts";
import { expectedGpt2Shapes, gpt2WeightNames } from "./gpt2_weights.ts";
import { type LlamaConfig, llamaSites } from "./llama_config.ts";
import { expectedLlamaShapes, llamaWeightNames } from "./llama_weights.ts";
import { type VitConfig, vitPatches, vitTokens } from "./vit_config.ts";
import { vitNames, vitSites } from "./vit_names.ts";
import { expectedVitShapes, vitWeightNames } from "./vit_weights.ts";
import { storedDtypes } from "./_base_weights.ts";
import type { LinearSite, ModelOptions } from "./model.ts";
import type { ModelConfig } from "./registry.ts";

/**
 * What a weight is, for the estimate's breakdown: `linear` (the blocks' linear layers, and a ViT
 * `ViTModel`'s pooler), `embedding` (the token embedding; a ViT's class token), `patch` (a ViT's
 * patch embedding, the convolution's weight and bias), `head` (the output layer: GPT-2 and Llama's
 * `lm_head`, a ViT classifier's weight and bias), `position` (learned position embeddings),
 * `norm` (norm weights), `bias` (every other bias: the linear layers' and the norms').
 */
export type WeightKind =
  | "linear"
  | "embedding"
  | "patch"
  | "head"
  | "position"
  | "norm"
  | "bias";

/** The kinds in the order the breakdown lists them. */
const KINDS: readonly WeightKind[] = [
  "linear",
  "embedding",
  "patch",
  "head",
  "position",
  "norm",
  "bias",
];

/** One adapted module, as the adapters' plan gives it (`adapters/attach.ts` `ModulePlan`). */
export interface AdapterShape {
  /** Input features. */
  inFeatures: number;
  /** Output features written. */
  outFeatures: number;
  /** Rank. */
  r: number;
  /** NOLA: bases of A (0 for LoRA). */
  k: number;
  /** NOLA: bases of B (0 for LoRA). */
  l: number;
  /** `nola` trains k + l coefficients; `lora` trains A and B. */
  method: "nola" | "lora";
}

/** What {@link estimateTrainingMemory} needs besides the config. */
export interface MemoryEstimateOptions {
  /** How `load` keeps the base (`baseFormat`, `blockSize`, `doubleQuant`, `trainAll`). */
  model?: ModelOptions;
  /** The checkpoint's dtype of each weight (its header), for `as-stored` and 16-bit embeddings. */
  storedDtypes?: ReadonlyMap<string, string>;
  /**
   * Rows and positions of the loss evaluation's batches (the `evaluate` stage's 8 x `seq_len`);
   * absent: none. A shape other than {@link batch}'s is a second arena, forward only.
   */
  evaluation?: { B: number; T: number };
  /** Rows and positions of one training micro-batch; absent: no activations. */
  batch?: { B: number; T: number };
  /** The adapted modules and the rows their saved projections hold (`maxRows`). */
  adapters?: { modules: readonly AdapterShape[]; maxRows: number };
  /** The optimizer of the trainable tensors; absent: none. */
  optimizer?: { kind: "adamw" | "sgd"; momentum?: number };
  /**
   * A classifier's head as the attach stage leaves it: `classes`, the rows of a new head (the
   * data's classes; absent: the config's), and whether it `trainable` beside the adapters (its
   * gradients count under {@link MemoryEstimate.gradients} and its values under the optimizer's).
   * Absent: the checkpoint's head, frozen. Only for a family with a classifier head (ViT).
   */
  head?: { classes?: number; trainable: boolean };
}

/** A buffer the run will allocate, and the part of it one storage binding must hold. */
export interface EstimatedBuffer {
  /** What it is, e.g. `layers.0.mlp.up_proj.weight codes` or `activations logits`. */
  name: string;
  /** Bytes of the buffer. */
  bytes: number;
  /** Bytes one binding must cover at once (a row, a packed weight's absmaxes, a whole factor). */
  bindingBytes: number;
}

/** The estimate, in bytes. */
export interface MemoryEstimate {
  /** Weights by precision: `f32`, `f16`, `bf16`, `int8`, `nf4` (as `Model.memory` reports). */
  weightsByPrecision: Record<string, number>;
  /** Weights by kind, in the order linear, embedding, head, position, norm, bias. */
  weightsByKind: Partial<Record<WeightKind, number>>;
  /** All weights. */
  weights: number;
  /** Weight gradients: every weight's under full fine-tuning, else a trained head's. */
  gradients: number;
  /** Adapter factors, coefficients, their gradients and saved projections. */
  adapters: number;
  /** Optimizer moments. */
  optimizer: number;
  /** The training arena: activations and their gradients, logits, losses. */
  activations: number;
  /** The evaluation arena, when its shape is not the training one's (no gradients). */
  evaluation: number;
  /** Everything above. */
  total: number;
  /** The largest buffer. */
  largest: EstimatedBuffer;
  /** The buffer whose one-binding part is largest. */
  widestBinding: EstimatedBuffer;
  /**
   * Whether every input has the same length whatever the data stage's `seq_len` (a ViT's image is
   * always its patches and the class token): then only the batch size changes the activations.
   */
  fixedLength: boolean;
}

/**
 * How `load` keeps a weight: `linear` follows the base format (packed int8 / nf4, or 16-bit
 * `as-stored`), `half` stays 16-bit when the checkpoint stores it so and the base is not f32 (the
 * token embedding and a text head), `f32` always f32.
 */
type Kept = "linear" | "half" | "f32";

interface WeightSpec {
  name: string;
  shape: number[];
  kind: WeightKind;
  kept: Kept;
}

interface EstimateFamily {
  /** Every weight the load keeps; `stored` (the checkpoint's names) adds optional ones. */
  weights(config: unknown, stored?: ReadonlyMap<string, string>): WeightSpec[];
  sites(config: unknown): readonly LinearSite[];
  layout: "conv1d" | "linear";
  /** Outputs of one loss row: the vocabulary, or a classifier's classes. */
  outputs(config: unknown): number;
  positions(config: unknown): number;
  weightNames(names: readonly string[], config: unknown): Map<string, string | null>;
  /**
   * The arena a batch of B x T runs in: B x T, or (B, 1) for a family whose loss rows are whole
   * inputs (a ViT's images); absent: B x T.
   */
  arenaShape?(B: number, T: number): { B: number; T: number };
  /** The config with a new head of `classes` rows; absent: the family has no classifier head. */
  relabel?(config: unknown, classes: number): unknown;
  /**
   * The arena's tensors at (B, T) with their gradients, as [names, count, elements of each,
   * elements a row].
   */
  arena(config: unknown, B: number, T: number): [string, number, number, number][];
}

// A text family's weight kinds: the token embedding and the head stay 16-bit when stored so.
function textSpec(
  name: string,
  shape: number[],
  linears: ReadonlySet<string>,
): WeightSpec {
  const kind: WeightKind = linears.has(name)
    ? "linear"
    : name === "wte.weight" || name === "embed_tokens.weight"
    ? "embedding"
    : name === "lm_head.weight"
    ? "head"
    : name === "wpe.weight"
    ? "position"
    : name.endsWith(".bias")
    ? "bias"
    : "norm";
  const kept: Kept = kind === "linear"
    ? "linear"
    : kind === "embedding" || kind === "head"
    ? "half"
    : "f32";
  return { name, shape, kind, kept };
}

// The pooler a Hugging Face `ViTModel` checkpoint may store: loaded (and kept f32) when present.
const VIT_POOLER = "pooler.dense";

// A ViT's weights: the adaptable linears follow the base format, everything else stays f32 (the
// loader packs no embedding or head of a ViT).
function vitWeights(c: VitConfig, stored?: ReadonlyMap<string, string>): WeightSpec[] {
  const n = vitNames(c.layout);
  const linears = new Set(vitSites(c).map((s) => `${s.linear}.weight`));
  const head = new Set([`${n.head}.weight`, `${n.head}.bias`]);
  const patch = new Set([`${n.patch}.weight`, `${n.patch}.bias`]);
  const shapes = expectedVitShapes(c);
  if (c.layout === "hf" && stored?.has(`${VIT_POOLER}.weight`)) {
    const D = c.hiddenSize;
    shapes.push(
      { name: `${VIT_POOLER}.weight`, shape: [D, D] },
      { name: `${VIT_POOLER}.bias`, shape: [D] },
    );
  }
  return shapes.map(({ name, shape }): WeightSpec => {
    if (linears.has(name)) return { name, shape, kind: "linear", kept: "linear" };
    const kind: WeightKind = name === n.cls
      ? "embedding"
      : name === n.pos
      ? "position"
      : patch.has(name)
      ? "patch"
      : head.has(name)
      ? "head"
      : name === `${VIT_POOLER}.weight`
      ? "linear"
      : name.endsWith(".bias")
      ? "bias"
      : "norm";
    return { name, shape, kind, kept: "f32" };
  });
}

const FAMILIES: Record<string, EstimateFamily> = {
  gpt2: {
    layout: "conv1d",
    sites: (c) => gpt2Sites(c as Gpt2Config),
    outputs: (c) => (c as Gpt2Config).vocabSize,
    positions: (c) => (c as Gpt2Config).nPositions,
    weightNames: (names) => gpt2WeightNames(names),
    weights: (c) => {
      const linears = new Set(gpt2Sites(c as Gpt2Config).map((s) => `${s.linear}.weight`));
      return expectedGpt2Shapes(c as Gpt2Config)
        .map(({ name, shape }) => textSpec(name, shape, linears));
    },
    arena: (config, B, T) => {
      const { nEmbd: C, nHead: NH, nInner: I, nLayer: L } = config as Gpt2Config;
      const BT = B * T;
      return [
        ["encoded", 1, BT * C, C],
        ["ln1, atty, attproj, residual2, ln2, fcproj, residual3", 7 * L, BT * C, C],
        ["qkv", L, 3 * BT * C, 3 * C],
        ["fch, fchGelu", 2 * L, BT * I, I],
        ["layernorm means and rstds", 4 * L + 2, BT, 1],
        ["lse", L, B * NH * T, T],
        ["lnf", 1, BT * C, C],
        ["gradients dresidual, dln, datty", 3, BT * C, C],
        ["gradient dqkv", 1, 3 * BT * C, 3 * C],
        ["gradients dfch, dfchGelu", 2, BT * I, I],
      ];
    },
  },
  llama: {
    layout: "linear",
    sites: (c) => llamaSites(c as LlamaConfig),
    outputs: (c) => (c as LlamaConfig).vocabSize,
    positions: (c) => (c as LlamaConfig).maxPositionEmbeddings,
    weightNames: (names, c) => llamaWeightNames(names, c as LlamaConfig),
    weights: (c) => {
      const linears = new Set(llamaSites(c as LlamaConfig).map((s) => `${s.linear}.weight`));
      return expectedLlamaShapes(c as LlamaConfig)
        .map(({ name, shape }) => textSpec(name, shape, linears));
    },
    arena: (config, B, T) => {
      const c = config as LlamaConfig;
      const { hiddenSize: D, intermediateSize: I, numHiddenLayers: L, headDim: hd } = c;
      const H = c.numAttentionHeads;
      const Q = H * hd;
      const KV = c.numKeyValueHeads * hd;
      const BT = B * T;
      return [
        ["encoded, lnf", 2, BT * D, D],
        ["zero positions", 1, T * D, D],
        ["ln1, attproj, residual2, ln2, down, residual3", 6 * L, BT * D, D],
        ["q, atty", 2 * L, BT * Q, Q],
        ["k, v", 2 * L, BT * KV, KV],
        ["gate, up, h", 3 * L, BT * I, I],
        ["rstds", 2 * L + 1, BT, 1],
        ["lse", L, B * H * T, T],
        ["gradients dresidual, dln", 2, BT * D, D],
        ["gradients dq, datty", 2, BT * Q, Q],
        ["gradients dk, dv", 2, BT * KV, KV],
        ["gradients dh, dgate, dup", 3, BT * I, I],
        ["gradient of the zero positions", 1, T * D, D],
      ];
    },
  },
  vit: {
    layout: "linear",
    sites: (c) => vitSites(c as VitConfig),
    outputs: (c) => (c as VitConfig).numLabels,
    // The tokens of an image: its patches and the class token.
    positions: (c) => vitTokens(c as VitConfig),
    weightNames: (names) => vitWeightNames(names),
    // One loss row an image: the arena is (B, 1) whatever T the caller has.
    arenaShape: (B) => ({ B, T: 1 }),
    relabel: (c, classes) => ({
      ...(c as VitConfig),
      numLabels: classes,
      labels: Array.from({ length: classes }, (_, i) => `LABEL_${i}`),
    }),
    weights: (c, stored) => vitWeights(c as VitConfig, stored),
    // VitActivations: every tensor is counted whatever T is (an image is always N + 1 tokens).
    arena: (config, B) => {
      const c = config as VitConfig;
      const { hiddenSize: D, intermediateSize: I, numLayers: L, numHeads: NH } = c;
      const N = vitPatches(c);
      const T = vitTokens(c);
      const rows = B * T;
      const K = c.numChannels * c.patchSize * c.patchSize;
      // Hugging Face keeps q, k and v apart; timm's one fused projection is 3D wide.
      const [qkvCount, qkvWidth] = c.layout === "hf" ? [3, D] : [1, 3 * D];
      return [
        ["pixels", 1, B * c.numChannels * c.imageHeight * c.imageWidth, c.imageWidth],
        ["unfolded patches", 1, B * N * K, K],
        ["embedded patches", 1, B * N * D, D],
        ["encoded", 1, rows * D, D],
        ["ln1, atty, attproj, residual2, ln2, fcproj, residual3", 7 * L, rows * D, D],
        ["q, k, v", qkvCount * L, rows * qkvWidth, qkvWidth],
        ["fch, fchGelu", 2 * L, rows * I, I],
        ["layernorm means and rstds", 4 * L, rows, 1],
        ["lse", L, B * NH * T, T],
        ["class rows, their norm", 2, B * D, D],
        ["final norm's mean and rstd, ones", 3, B, 1],
        ["gradients dresidual, dln, datty", 3, rows * D, D],
        ["gradients dq, dk, dv", qkvCount, rows * qkvWidth, qkvWidth],
        ["gradients dfch, dfchGelu", 2, rows * I, I],
        ["gradients dlnf, dcls", 2, B * D, D],
        ["gradient dpatches", 1, B * N * D, D],
      ];
    },
  },
};

function familyOf(config: ModelConfig): EstimateFamily {
  const family = FAMILIES[config.family.modelType];
  if (!family) {
    throw new RangeError(
      `Cannot estimate the memory of model_type "${config.family.modelType}": supported are ` +
        `${Object.keys(FAMILIES).join(", ")}`,
    );
  }
  return family;
}

/**
 * The longest sequence a model of this config takes.
 *
 * @param config A parsed config.
 * @returns Its positions (`n_positions`, `max_position_embeddings`).
 * @throws {RangeError} For a family the estimate does not know.
 */
export function modelPositions(config: ModelConfig): number {
  return familyOf(config).positions(config.config);
}

/**
 * The dtype of each weight a model folder's checkpoint stores, by weight name, read from the
 * safetensors headers alone.
 *
 * @param folder A Hugging Face model folder.
 * @param config Its parsed config.
 * @returns Dtypes (`F32`, `F16`, `BF16`, ...) by canonical weight name.
 * @throws {SafetensorsError} If the checkpoint is missing or malformed.
 */
export function checkpointDtypes(
  folder: string,
  config: ModelConfig,
): Promise<Map<string, string>> {
  const family = familyOf(config);
  return storedDtypes(folder, (names) => family.weightNames(names, config.config));
}

/** How a weight will be kept: a packed format, or null for f32 (mirrors the loaders' rules). */
function keptAs(
  spec: WeightSpec,
  model: ModelOptions,
  stored: string | undefined,
): BaseFormat | null {
  const format = model.baseFormat ?? "f32";
  if (model.trainAll || format === "f32" || spec.kept === "f32") return null;
  const half = stored === "F16" ? "f16" : stored === "BF16" ? "bf16" : null;
  if (spec.kept === "linear") return format === "int8" || format === "nf4" ? format : half;
  // A text family's token embedding and head stay in their stored 16 bits on any base but f32.
  return half;
}

/**
 * Estimates the GPU bytes of a training run before any allocation.
 *
 * @param config A parsed config (`readModelConfig`, `parseModelConfig`).
 * @param options The base options, stored dtypes, micro-batch, adapters and optimizer.
 * @returns Bytes by kind and precision, the total, and the largest buffers.
 * @throws {RangeError} For a family the estimate does not know.
 *
 * @example Llama-2-7B in nf4 with NOLA on its attention, batch 1 x 512
 * ```ts
 * import { parseModelConfig } from "./models/registry.ts";
 * import { estimateTrainingMemory } from "./models/memory_estimate.ts";
 * const config = parseModelConfig({ model_type: "llama", hidden_size: 4096,
 *   intermediate_size: 11008, num_hidden_layers: 32, num_attention_heads: 32,
 *   vocab_size: 32000, rms_norm_eps: 1e-5 }, "<7b>");
 * const e = estimateTrainingMemory(config, { model: { baseFormat: "nf4" }, batch: { B: 1, T: 512 } });
 * console.log(e.weightsByPrecision.nf4, e.total);
 * ```
 */
export function estimateTrainingMemory(
  config: ModelConfig,
  options: MemoryEstimateOptions = {},
): MemoryEstimate {
  const family = familyOf(config);
  const model = options.model ?? {};
  const head = options.head;
  let c = config.config;
  if (head) {
    if (!family.relabel) {
      throw new RangeError(
        `Cannot estimate a classifier head for model_type "${config.family.modelType}": it has ` +
          `no classifier head`,
      );
    }
    if (head.classes !== undefined) {
      if (!Number.isSafeInteger(head.classes) || head.classes < 1) {
        throw new RangeError(`A head needs a positive number of classes, got ${head.classes}`);
      }
      c = family.relabel(c, head.classes);
    }
  }
  const buffers: EstimatedBuffer[] = [];
  const byPrecision: Record<string, number> = { f32: 0 };
  const byKind: Partial<Record<WeightKind, number>> = {};
  let weights = 0;
  let parameters = 0;
  let headParameters = 0;
  for (const spec of family.weights(c, options.storedDtypes)) {
    const numel = spec.shape.reduce((a, b) => a * b, 1);
    parameters += numel;
    if (spec.kind === "head") headParameters += numel;
    const format = keptAs(spec, model, options.storedDtypes?.get(spec.name));
    let bytes: number;
    if (format === null) {
      bytes = 4 * numel;
      buffers.push({ name: spec.name, bytes, bindingBytes: 4 * spec.shape.at(-1)! });
    } else {
      // Packed [out, in]: a conv1d linear is stored [in, out].
      const [rows, cols] = spec.kept === "linear" && family.layout === "conv1d"
        ? [spec.shape[1], spec.shape[0]]
        : [spec.shape[0], spec.shape[1]];
      const layout = packedLayout(rows, cols, {
        format,
        blockSize: model.blockSize,
        doubleQuant: model.doubleQuant,
      });
      bytes = layout.bytes;
      buffers.push(
        { name: `${spec.name} codes`, bytes: layout.codeBytes, bindingBytes: layout.rowBytes },
        {
          name: `${spec.name} absmaxes`,
          bytes: layout.scaleBytes,
          bindingBytes: layout.scaleBytes,
        },
      );
    }
    byPrecision[format ?? "f32"] = (byPrecision[format ?? "f32"] ?? 0) + bytes;
    byKind[spec.kind] = (byKind[spec.kind] ?? 0) + bytes;
    weights += bytes;
  }
  // A head trained beside the adapters has gradients of its own (with trainAll, among all).
  const headTrains = !model.trainAll && head?.trainable === true;
  const gradients = model.trainAll ? 4 * parameters : headTrains ? 4 * headParameters : 0;
  let adapters = 0;
  let trainable = model.trainAll ? parameters : headTrains ? headParameters : 0;
  for (const m of options.adapters?.modules ?? []) {
    const rows = options.adapters!.maxRows;
    // A, B, their gradients, and the saved x·Aᵀ and its gradient.
    adapters += 4 * (2 * m.r * m.inFeatures + 2 * m.outFeatures * m.r + 2 * rows * m.r);
    if (m.method === "nola") adapters += 4 * 2 * (m.k + m.l);
    trainable += m.method === "nola" ? m.k + m.l : m.r * (m.inFeatures + m.outFeatures);
    buffers.push({
      name: "adapter factor",
      bytes: 4 * m.r * Math.max(m.inFeatures, m.outFeatures),
      bindingBytes: 4 * m.r * Math.max(m.inFeatures, m.outFeatures),
    });
  }
  const opt = options.optimizer;
  const moments = !opt ? 0 : opt.kind === "adamw" ? 2 : (opt.momentum ?? 0) > 0 ? 1 : 0;
  // The moments, and the optimizer's gradient norm and scale.
  const optimizer = opt ? 4 * moments * trainable + 8 : 0;
  const stride = Math.ceil(family.outputs(c) / 4) * 4;
  const shapeOf = (s: { B: number; T: number }) => family.arenaShape?.(s.B, s.T) ?? s;
  // One arena's bytes at (B, T), with or without the activation gradients a backward adds.
  const arena = (shape: { B: number; T: number }, what: string, backward: boolean) => {
    const { B, T } = shapeOf(shape);
    const BT = B * T;
    const tensors: [string, number, number, number][] = [
      // Logits, then per-row losses, token ids, targets and weights.
      ["logits", 1, BT * stride, stride],
      ["losses, tokens, targets, weights", 4, BT, 1],
      ...family.arena(c, B, T),
    ];
    let bytes = 0;
    for (const [name, count, elements, row] of tensors) {
      if (!backward && name.startsWith("gradient")) continue;
      bytes += 4 * count * elements;
      buffers.push({ name: `${what} ${name}`, bytes: 4 * elements, bindingBytes: 4 * row });
    }
    return bytes;
  };
  const activations = options.batch ? arena(options.batch, "activations", true) : 0;
  // An evaluation of another shape keeps its own arena beside the training one.
  const e = options.evaluation && shapeOf(options.evaluation);
  const b = options.batch && shapeOf(options.batch);
  const same = e && b && e.B === b.B && e.T === b.T;
  const evaluation = e && !same ? arena(e, "evaluation activations", false) : 0;
  const total = weights + gradients + adapters + optimizer + activations + evaluation;
  const most = (key: "bytes" | "bindingBytes") =>
    buffers.reduce((a, b) => (b[key] > a[key] ? b : a), { name: "", bytes: 0, bindingBytes: 0 });
  return {
    weightsByPrecision: Object.fromEntries(Object.entries(byPrecision).filter(([, b]) => b > 0)),
    weightsByKind: Object.fromEntries(
      KINDS.filter((k) => byKind[k] !== undefined).map((k) => [k, byKind[k]]),
    ),
    weights,
    gradients,
    adapters,
    optimizer,
    activations,
    evaluation,
    total,
    largest: most("bytes"),
    widestBinding: most("bindingBytes"),
    fixedLength: family.arenaShape !== undefined,
  };
}

/** The limits {@link memoryProblem} holds an estimate to. */
export interface MemoryLimits {
  /** The adapter's `maxBufferSize`. */
  maxBufferSize: number;
  /** The adapter's `maxStorageBufferBindingSize` (less its binding offset alignment). */
  maxStorageBufferBindingSize: number;
  /** The user's budget for the whole run, in bytes; absent: none. */
  maxMemory?: number;
}

/** Why an estimate does not fit, and what to change. */
export interface MemoryProblem {
  /** What would not fit, with the numbers. */
  message: string;
  /** How to make it fit. */
  hint: string;
}

const n = (x: number) => Math.round(x).toLocaleString("en-US");

// What to lower for the activations: the batch, and the sequence when inputs have no fixed length.
function lower(fixedLength: boolean): string {
  return fixedLength
    ? "lower the train stage's batch_size (an image's tokens are fixed by the model's image and " +
      "patch sizes)"
    : "lower the train stage's batch_size or the data stage's seq_len";
}

function fixFor(name: string, fixedLength: boolean): string {
  if (name.startsWith("evaluation")) {
    return fixedLength
      ? "use a smaller model (the evaluate stage runs 8 images at a time)"
      : "lower the data stage's seq_len (the evaluate stage's loss runs 8 rows at a time)";
  }
  if (name.startsWith("activations")) return lower(fixedLength);
  if (name === "adapter factor") return "lower the attach stage's r";
  return "quantize the base (load stage quantize_base: nf4, or a larger block_size) or use a " +
    "smaller model";
}

/**
 * Says whether an estimate fits the adapter's buffer and binding limits and the user's budget.
 *
 * @param estimate From {@link estimateTrainingMemory}.
 * @param limits The adapter's limits and the budget.
 * @returns The first problem (a buffer, a binding, then the total), or undefined when it fits.
 *
 * @example
 * ```ts
 * import { memoryProblem } from "./models/memory_estimate.ts";
 * // const problem = memoryProblem(estimate, { ...gpu.device.limits, maxMemory: 6e9 });
 * ```
 */
export function memoryProblem(
  estimate: MemoryEstimate,
  limits: MemoryLimits,
): MemoryProblem | undefined {
  const { largest, widestBinding } = estimate;
  if (largest.bytes > limits.maxBufferSize) {
    return {
      message: `"${largest.name}" would take ${n(largest.bytes)} bytes in one buffer, over this ` +
        `adapter's maxBufferSize of ${n(limits.maxBufferSize)}`,
      hint: fixFor(largest.name, estimate.fixedLength),
    };
  }
  if (widestBinding.bindingBytes > limits.maxStorageBufferBindingSize) {
    return {
      message: `"${widestBinding.name}" needs ${n(widestBinding.bindingBytes)} bytes in one ` +
        `storage binding, over this adapter's maxStorageBufferBindingSize of ` +
        `${n(limits.maxStorageBufferBindingSize)}`,
      hint: fixFor(widestBinding.name, estimate.fixedLength),
    };
  }
  if (limits.maxMemory !== undefined && estimate.total > limits.maxMemory) {
    return {
      message: `training needs about ${n(estimate.total)} bytes of GPU memory ` +
        `(${breakdown(estimate)}), over the ${n(limits.maxMemory)} of --max-memory`,
      hint: estimate.weights >= estimate.activations + estimate.evaluation
        ? "quantize the base (load stage quantize_base: nf4), use a smaller model or raise " +
          "--max-memory"
        : `${lower(estimate.fixedLength)}, or raise --max-memory`,
    };
  }
  return undefined;
}

function breakdown(e: MemoryEstimate): string {
  const parts: [string, number][] = [
    ["weights", e.weights],
    ["weight gradients", e.gradients],
    ["adapters", e.adapters],
    ["optimizer", e.optimizer],
    ["activations", e.activations],
    ["evaluation", e.evaluation],
  ];
  return parts.filter(([, b]) => b > 0).map(([what, b]) => `${what} ${n(b)}`).join(", ");
}

/**
 * An estimate in one line for a person: the total and its parts, the weights by precision.
 *
 * @param e From {@link estimateTrainingMemory}.
 * @returns `training estimate: 4,448,… bytes (weights …, adapters …, …; weights f32 …, nf4 …)`.
 */
export function formatEstimate(e: MemoryEstimate): string {
  const precisions = Object.entries(e.weightsByPrecision).map(([p, b]) => `${p} ${n(b)}`);
  return `${n(e.total)} bytes (${breakdown(e)}; weights ${precisions.join(", ")})`;
}

const UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
  tib: 2 ** 40,
};

/**
 * Parses a size a person writes: `6GB` (10^9), `6GiB` (2^30), `512MB`, `1.5e9`, `6 gb`.
 *
 * @param text The size.
 * @returns Bytes, rounded down.
 * @throws {RangeError} In one line, on anything else.
 *
 * @example
 * ```ts
 * import { parseByteSize } from "./models/memory_estimate.ts";
 * console.log(parseByteSize("6GB"), parseByteSize("1GiB")); // 6000000000 1073741824
 * ```
 */
export function parseByteSize(text: string): number {
  const match = /^\s*(\d+(?:\.\d*)?(?:e\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  const unit = match ? UNITS[match[2].toLowerCase()] : undefined;
  const bytes = unit === undefined ? NaN : Math.floor(Number(match![1]) * unit);
  if (!Number.isSafeInteger(bytes) || bytes <= 0) {
    throw new RangeError(
      `Invalid size "${text}": expected a positive number of bytes with an optional unit, ` +
        `e.g. 6GB, 6GiB or 512MB`,
    );
  }
  return bytes;
}
