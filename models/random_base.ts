/**
 * A model of any registered family whose weights are drawn on the GPU and, for a quantized base,
 * packed there straight away, tensor by tensor: neither the host nor the GPU ever holds the f32
 * model. This is how a Llama-2-7B shape fits in memory for a benchmark with no checkpoint at hand
 * (27 GB in f32; 3.4 GB of nf4 linears plus the f32 embeddings and head).
 *
 * The values are uniform with the family's init standard deviation (GPT-2's 0.02, its residual
 * projections scaled by `1/sqrt(2 n_layer)`; Llama's `initializer_range`), norm weights 1 and biases
 * 0. They come from the NOLA basis generator (Philox4x32-10, `kernels/basis.ts`), so a seed gives
 * the same bits on every device and {@link randomBaseValues} recomputes any weight on the host.
 * A weight `[rows, cols]` (as the family stores it) is drawn in pages of `pageRows(cols)` rows:
 * page `p` is basis matrix `A_p` of key `moduleKey(seed, weightName)`, scaled by
 * `fround(std * sqrt(3))`.
 *
 * @module
 */

import type { BaseFormat } from "../formats/base_quant.ts";
import { BasisKernels } from "../kernels/basis.ts";
import { BasisFactor, materializeBasis, moduleKey } from "../kernels/basis_spec.ts";
import type { Gpu } from "../kernels/gpu.ts";
import { PackedTensor } from "../kernels/packed_tensor.ts";
import { QMatmul } from "../kernels/qmatmul.ts";
import { BaseQuantKernels } from "../kernels/quantize_base.ts";
import { Tensor } from "../kernels/tensor.ts";
import { checkBaseOptions, type PackedBase } from "./_base_weights.ts";
import { Gpt2 } from "./gpt2.ts";
import { type Gpt2Config, gpt2Sites } from "./gpt2_config.ts";
import { expectedGpt2Shapes } from "./gpt2_weights.ts";
import { Llama } from "./llama.ts";
import { type LlamaConfig, llamaSites } from "./llama_config.ts";
import { expectedLlamaShapes } from "./llama_weights.ts";
import type { LinearSite, Model, ModelOptions, WeightLayout } from "./model.ts";
import type { ModelConfig } from "./registry.ts";

/** Values a generation page holds at most (4 MiB of f32). */
const PAGE_VALUES = 1 << 20;
/** Values a packing chunk holds at most (32 MiB of f32). */
const CHUNK_VALUES = 1 << 23;

/** One weight of a random base: its name, shape as stored, and how it is drawn. */
export interface RandomWeight {
  /** Canonical weight name, e.g. `layers.0.mlp.up_proj.weight`. */
  name: string;
  /** Dimensions as the family stores the weight. */
  shape: number[];
  /** `uniform` with standard deviation {@link std}, all `ones`, or all `zeros`. */
  init: "uniform" | "ones" | "zeros";
  /** Standard deviation of a `uniform` weight. */
  std: number;
  /** True for the weight of an adaptable linear layer (packed when the base is quantized). */
  linear: boolean;
}

/** What a family contributes to a random base. */
interface RandomFamily {
  weights(config: unknown): RandomWeight[];
  layout: WeightLayout;
  build(
    gpu: Gpu,
    config: unknown,
    weights: { params: Map<string, Tensor>; packed: PackedBase | null },
    options: ModelOptions,
  ): Promise<Model>;
}

function linearNames(sites: readonly LinearSite[]): Set<string> {
  return new Set(sites.map((s) => `${s.linear}.weight`));
}

const FAMILIES: Record<string, RandomFamily> = {
  gpt2: {
    layout: "conv1d",
    weights: (config) => {
      const c = config as Gpt2Config;
      const linears = linearNames(gpt2Sites(c));
      const residual = 0.02 / Math.sqrt(2 * c.nLayer);
      return expectedGpt2Shapes(c).map(({ name, shape }) => ({
        name,
        shape,
        init: /ln_(1|2|f)\.weight$/.test(name)
          ? "ones"
          : name.endsWith(".bias")
          ? "zeros"
          : "uniform",
        std: /c_proj\.weight$/.test(name) ? residual : 0.02,
        linear: linears.has(name),
      }));
    },
    build: (gpu, config, weights, options) =>
      Gpt2.fromGpuWeights(gpu, config as Gpt2Config, weights, options),
  },
  llama: {
    layout: "linear",
    weights: (config) => {
      const c = config as LlamaConfig;
      const linears = linearNames(llamaSites(c));
      return expectedLlamaShapes(c).map(({ name, shape }) => ({
        name,
        shape,
        init: name.endsWith("norm.weight") ? "ones" : name.endsWith(".bias") ? "zeros" : "uniform",
        std: c.initializerRange,
        linear: linears.has(name),
      }));
    },
    build: (gpu, config, weights, options) =>
      Llama.fromGpuWeights(gpu, config as LlamaConfig, weights, options),
  },
};

function familyOf(config: ModelConfig): RandomFamily {
  const family = FAMILIES[config.family.modelType];
  if (!family) {
    throw new RangeError(
      `Cannot draw a random base for model_type "${config.family.modelType}": supported are ` +
        `${Object.keys(FAMILIES).join(", ")}`,
    );
  }
  return family;
}

/**
 * Every weight a random base of this config draws, in the family's parameter order.
 *
 * @param config A parsed config ({@link parseModelConfig}).
 * @returns Names, stored shapes, inits and which are adaptable linears.
 * @throws {RangeError} For a family with no random base.
 */
export function randomBaseWeights(config: ModelConfig): RandomWeight[] {
  return familyOf(config).weights(config.config);
}

/**
 * Rows of a weight with `cols` columns that one generation page holds.
 *
 * @param cols Columns of the weight as stored.
 * @returns At least 1.
 */
export function pageRows(cols: number): number {
  return Math.max(1, Math.floor(PAGE_VALUES / cols));
}

/**
 * The values {@link initRandomBase} draws for one weight, computed on the host (for tests).
 *
 * @param seed The seed.
 * @param weight The weight, from {@link randomBaseWeights}.
 * @returns Its f32 values, row-major in its stored shape.
 */
export function randomBaseValues(seed: number, weight: RandomWeight): Float32Array {
  const [rows, cols] = matrixOf(weight.shape);
  const out = new Float32Array(rows * cols);
  if (weight.init === "ones") return out.fill(1);
  if (weight.init === "zeros") return out;
  const key = moduleKey(seed, weight.name);
  const scale = uniformScale(weight.std);
  const per = pageRows(cols);
  for (let p = 0; p * per < rows; p++) {
    const r = Math.min(per, rows - p * per);
    out.set(
      materializeBasis(key, { factor: BasisFactor.A, index: p, rows: r, cols, scale }),
      p * per * cols,
    );
  }
  return out;
}

/** Options of {@link initRandomBase}. */
export interface RandomBaseOptions extends ModelOptions {
  /** Seed of the draws (default 0). */
  seed?: number;
  /**
   * Values one packing chunk holds at most, in whole pages (default 2^23, 32 MiB of f32); tests
   * set it small to pack a weight in several chunks.
   */
  chunkValues?: number;
  /** Progress, one line a weight packed. */
  log?: (line: string) => void;
}

/**
 * A model of `config` with random weights drawn on the GPU. With `baseFormat` `int8` or `nf4`,
 * each adaptable linear weight is drawn a chunk of rows at a time into one reused buffer and
 * packed from it; the other weights (and every weight of an `f32` base) are drawn into their own
 * f32 tensors. `as-stored` keeps f32, there being no checkpoint dtype.
 *
 * @param gpu The device.
 * @param config A parsed config ({@link parseModelConfig}).
 * @param options The base format, block size, double quantization, `trainAll`, seed, progress.
 * @returns The model; its weights are those {@link randomBaseValues} computes (packed as asked).
 * @throws {RangeError} On bad base options, or a family with no random base.
 *
 * @example A Llama-2-7B shape in nf4
 * ```ts
 * import { Gpu } from "../kernels/gpu.ts";
 * import { parseModelConfig } from "./registry.ts";
 * import { initRandomBase } from "./random_base.ts";
 * using gpu = await Gpu.acquire();
 * const config = parseModelConfig({ model_type: "llama", hidden_size: 4096,
 *   intermediate_size: 11008, num_hidden_layers: 32, num_attention_heads: 32,
 *   vocab_size: 32000, rms_norm_eps: 1e-5 }, "<7b>");
 * using model = await initRandomBase(gpu, config, { baseFormat: "nf4" });
 * console.log(model.memory().weightsByPrecision); // { f32: 1049640960, nf4: 3340772224 }
 * ```
 */
export async function initRandomBase(
  gpu: Gpu,
  config: ModelConfig,
  options: RandomBaseOptions = {},
): Promise<Model> {
  checkBaseOptions(options);
  const family = familyOf(config);
  const weights = family.weights(config.config);
  const quantized = options.baseFormat === "int8" || options.baseFormat === "nf4";
  const format = options.baseFormat as BaseFormat;
  const seed = options.seed ?? 0;
  const conv = family.layout === "conv1d";
  const [basis, quant, qmatmul] = await Promise.all([
    BasisKernels.load(gpu),
    quantized ? BaseQuantKernels.load(gpu) : undefined,
    quantized ? QMatmul.load(gpu, { formats: [format] }) : undefined,
  ]);
  let chunk: Tensor | null = null;
  const params = new Map<string, Tensor>();
  const packed = new Map<string, PackedTensor>();
  // Pages by size, persistent: a pooled buffer returns to the pool only after a submit, so each
  // page of a weight would otherwise be a new allocation (five times slower on llvmpipe).
  const pages = new Map<number, Tensor<"f32">>();
  const pageOf = (size: number) => {
    let t = pages.get(size);
    if (!t) {
      t = Tensor.empty(gpu, [size], { persistent: true, label: "random base page" });
      pages.set(size, t);
    }
    return t;
  };
  const draw = (w: RandomWeight, into: Tensor, rows: [number, number]) => {
    const cols = matrixOf(w.shape)[1];
    const per = pageRows(cols);
    const key = moduleKey(seed, w.name);
    const scale = uniformScale(w.std);
    for (let p = rows[0] / per; p * per < rows[1]; p++) {
      const r = Math.min(per, rows[1] - p * per);
      const out = pageOf(r * cols);
      basis.generate(key, { factor: BasisFactor.A, index: p, rows: r, cols, scale, out });
      gpu.copy(out.buffer, into.buffer, {
        size: r * cols * 4,
        targetOffset: (p * per - rows[0]) * cols * 4,
      });
    }
  };
  try {
    for (const w of weights) {
      const [rows, cols] = matrixOf(w.shape);
      if (!(quantized && w.linear)) {
        const t = Tensor.empty(gpu, w.shape, { persistent: true, label: w.name });
        params.set(w.name, t);
        if (w.init === "ones") t.fill(1);
        else if (w.init === "zeros") gpu.clear(t.buffer);
        else draw(w, t, [0, rows]);
        gpu.flush();
        continue;
      }
      // Stored [rows, cols]; packed [out, in]: a conv1d weight's rows are its input features.
      const shape: [number, number] = conv ? [cols, rows] : [rows, cols];
      options.log?.(`${w.name}: drawing [${w.shape}] and packing it as ${format}`);
      const per = pageRows(cols);
      // A conv1d source is packed whole (its chunks would have to end on block boundaries).
      const most = options.chunkValues ?? CHUNK_VALUES;
      const step = conv ? rows : per * Math.max(1, Math.floor(most / (per * cols)));
      const size = Math.min(rows, step) * cols;
      if (!chunk || chunk.size < size) {
        chunk?.[Symbol.dispose]();
        chunk = Tensor.empty(gpu, [size], { persistent: true, label: "random base chunk" });
      }
      const target = PackedTensor.empty(gpu, shape, {
        format,
        blockSize: options.blockSize,
        doubleQuant: options.doubleQuant,
        label: w.name,
      });
      packed.set(w.name, target);
      for (let r0 = 0; r0 < rows; r0 += step) {
        const r1 = Math.min(rows, r0 + step);
        draw(w, chunk, [r0, r1]);
        const view = { tensor: chunk, offset: 0, size: (r1 - r0) * cols };
        quant!.quantize(target, view, { begin: r0, end: r1, transposed: conv });
        gpu.flush();
      }
      quant!.finish(target);
      gpu.flush();
      // Keeps the queue (and the memory of pending work) short on a slow device.
      await gpu.sync();
    }
  } catch (error) {
    for (const t of params.values()) t[Symbol.dispose]();
    for (const t of packed.values()) t[Symbol.dispose]();
    throw error;
  } finally {
    (chunk as Tensor | null)?.[Symbol.dispose]();
    for (const t of pages.values()) t[Symbol.dispose]();
  }
  const base = quantized ? { weights: packed, qmatmul: qmatmul!, quant: quant! } : null;
  return family.build(gpu, config.config, { params, packed: base }, options);
}

/** A weight as a `[rows, cols]` matrix (a vector is one row). */
function matrixOf(shape: readonly number[]): [number, number] {
  return shape.length === 1 ? [1, shape[0]] : [shape[0], shape.slice(1).reduce((a, b) => a * b, 1)];
}

/** The scale of uniform values in [-scale, scale) with standard deviation `std`. */
function uniformScale(std: number): number {
  return Math.fround(std * Math.sqrt(3));
}
