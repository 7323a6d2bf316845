/**
 * GPU bytes of a frozen base in each precision the `load` stage offers (f32, 16-bit as stored,
 * int8, nf4 with double quantization): the adaptable linear weights packed on the GPU from random
 * f32 values, the rest counted as the models keep it: norms, biases and GPT-2's position table in
 * f32, the token embedding and head in f32 for the f32 row and 16 bits for the packed rows, as a
 * checkpoint stored in 16 bits (Llama 2 is published in f16) keeps them. GPT-2's own checkpoint is
 * f32, whose embedding then stays f32 (nf4: 0.405 of f32 for GPT-2 small instead of the row's).
 *
 * Every block of a family has the same linear shapes and a packed weight's bytes depend on its
 * shape only, so the linears of one block are packed for real and their bytes counted once a
 * block; the bench checks them against `packedLayout`'s arithmetic.
 *
 * {@link benchQuantStep} then builds the whole Llama-2-7B shape in nf4, its weights drawn and
 * packed on the GPU tensor by tensor (`models/random_base.ts`), and runs one NOLA training step
 * on every linear, reporting seconds, GPU bytes by kind and the peak host memory;
 * {@link quantRatios} puts the packed products' speed beside the f32 matmul's (`bench/qmatmul.ts`).
 *
 * @module
 */

import { type BaseFormat, packedLayout } from "../formats/base_quant.ts";
import type { Gpu } from "../kernels/gpu.ts";
import { BaseQuantKernels } from "../kernels/quantize_base.ts";
import { Tensor } from "../kernels/tensor.ts";
import { parseModelConfig } from "../models/registry.ts";
import { type Gpt2Config } from "../models/gpt2_config.ts";
import { expectedGpt2Shapes } from "../models/gpt2_weights.ts";
import type { LlamaConfig } from "../models/llama_config.ts";
import { expectedLlamaShapes } from "../models/llama_weights.ts";
import { modelShape } from "../models/registry.ts";
import { AdapterSet, ALL_LINEAR, type AttachConfig, planAdapters } from "../adapters/attach.ts";
import { estimateTrainingMemory } from "../models/memory_estimate.ts";
import { initRandomBase } from "../models/random_base.ts";
import { Optimizer } from "../train/optimizer.ts";
import { benchQMatmul, type BenchQMatmulOptions, type QMatmulOp } from "./qmatmul.ts";

/** The precisions measured. */
export type MemoryPrecision = "f32" | "16-bit" | "int8" | "nf4";

/** One row of {@link benchMemory}: a model's frozen weights in one precision. */
export interface MemoryBenchRow {
  /** The model shape, e.g. `gpt2-small`. */
  model: string;
  /** The precision of the linear weights. */
  precision: MemoryPrecision;
  /** Bytes of the adaptable linear weights. */
  linearBytes: number;
  /** Bytes of everything else (the embedding and head 16-bit in the packed rows). */
  otherBytes: number;
  /** All the weights' bytes. */
  bytes: number;
  /** {@link bytes} over the f32 model's. */
  ratio: number;
  /** Weights, counted. */
  parameters: number;
}

/** GPT-2 small (124M) and a Llama-2-7B shape, as Hugging Face configs. */
export const MEMORY_MODELS: Record<string, Record<string, unknown>> = {
  "gpt2-small": {
    model_type: "gpt2",
    activation_function: "gelu_new",
    n_layer: 12,
    n_embd: 768,
    n_head: 12,
    n_inner: null,
    n_positions: 1024,
    n_ctx: 1024,
    vocab_size: 50257,
    layer_norm_epsilon: 1e-5,
    tie_word_embeddings: true,
    scale_attn_weights: true,
  },
  "llama-2-7b": {
    model_type: "llama",
    hidden_size: 4096,
    intermediate_size: 11008,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: 32,
    vocab_size: 32000,
    max_position_embeddings: 4096,
    rms_norm_eps: 1e-5,
    tie_word_embeddings: false,
  },
};

const PACKED: Record<Exclude<MemoryPrecision, "f32">, BaseFormat> = {
  "16-bit": "f16",
  int8: "int8",
  nf4: "nf4",
};

/**
 * Measures the bytes of each model's frozen weights in each precision.
 *
 * @param gpu The device.
 * @param options `models`: keys of {@link MEMORY_MODELS} (default all); `log` for progress.
 * @returns One row a model and precision.
 * @throws {Error} If a packed weight's bytes differ from `packedLayout`'s.
 */
export async function benchMemory(
  gpu: Gpu,
  options: { models?: string[]; log?: (line: string) => void } = {},
): Promise<MemoryBenchRow[]> {
  const quant = await BaseQuantKernels.load(gpu);
  const rows: MemoryBenchRow[] = [];
  for (const name of options.models ?? Object.keys(MEMORY_MODELS)) {
    const parsed = parseModelConfig(MEMORY_MODELS[name], `<${name}>`);
    const { sites } = modelShape(parsed);
    const shapes = parsed.family.modelType === "gpt2"
      ? expectedGpt2Shapes(parsed.config as Gpt2Config)
      : expectedLlamaShapes(parsed.config as LlamaConfig);
    const layout = parsed.family.modelType === "gpt2" ? "conv1d" : "linear";
    // The linears' [out, in] shapes, by weight name.
    const linears = new Map<string, [number, number]>();
    for (const s of sites) {
      const [out, inF] = linears.get(`${s.linear}.weight`) ?? [0, s.inFeatures];
      linears.set(`${s.linear}.weight`, [Math.max(out, s.colOffset + s.outFeatures), inF]);
    }
    const numel = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
    const parameters = shapes.reduce((s, t) => s + numel(t.shape), 0);
    const otherBytes = 4 * shapes.filter((t) => !linears.has(t.name))
      .reduce((s, t) => s + numel(t.shape), 0);
    // A 16-bit checkpoint's embedding and head stay 16-bit under every packed precision.
    const tables = shapes.filter((t) => /(^|\.)(wte|embed_tokens|lm_head)\.weight$/.test(t.name));
    const halfOtherBytes = otherBytes - 4 * tables.reduce((s, t) => s + numel(t.shape), 0) +
      tables.reduce((s, t) => s + packedLayout(t.shape[0], t.shape[1], { format: "f16" }).bytes, 0);
    const linearF32 = 4 * [...linears.values()].reduce((s, [o, i]) => s + o * i, 0);
    const blocks = new Set([...linears.keys()].map((n) => n.split(".").slice(0, 2).join("."))).size;
    const firstBlock = [...linears].filter(([n]) => n.startsWith(firstBlockPrefix(layout)));
    const row = (precision: MemoryPrecision, linearBytes: number): MemoryBenchRow => {
      const other = precision === "f32" ? otherBytes : halfOtherBytes;
      return {
        model: name,
        precision,
        linearBytes,
        otherBytes: other,
        bytes: linearBytes + other,
        ratio: (linearBytes + other) / (linearF32 + otherBytes),
        parameters,
      };
    };
    rows.push(row("f32", linearF32));
    for (const [precision, format] of Object.entries(PACKED)) {
      let block = 0;
      for (const [weight, [out, inF]] of firstBlock) {
        options.log?.(`${name}: packing ${weight} [${out}, ${inF}] as ${format}`);
        const values = new Float32Array(out * inF);
        for (let i = 0; i < values.length; i++) values[i] = Math.random() * 2 - 1;
        using source = Tensor.from(gpu, values, [out, inF], { label: weight });
        using packed = quant.pack(source, [out, inF], { format, label: weight });
        await gpu.read(packed.codes, { byteLength: 4 });
        const expected = packedLayout(out, inF, { format }).bytes;
        if (packed.byteLength !== expected) {
          throw new Error(`${weight} as ${format}: ${packed.byteLength} bytes, layout ${expected}`);
        }
        block += packed.byteLength;
      }
      rows.push(row(precision as MemoryPrecision, block * blocks));
    }
  }
  return rows;
}

function firstBlockPrefix(layout: "conv1d" | "linear"): string {
  return layout === "conv1d" ? "h.0." : "layers.0.";
}

/** Options of {@link benchQuantStep}. */
export interface QuantStepOptions {
  /** A `config.json` object (default {@link MEMORY_MODELS}' `llama-2-7b`). */
  config?: Record<string, unknown>;
  /** Name in the report (default `llama-2-7b`). */
  name?: string;
  /** The base's format (default `nf4`). */
  format?: "f32" | "int8" | "nf4";
  /** Batch rows (default 1). */
  B?: number;
  /** Positions a row (default 16). */
  T?: number;
  /** NOLA on every linear: rank (default 8). */
  r?: number;
  /** Bases of A (default 64). */
  k?: number;
  /** Bases of B (default 64). */
  l?: number;
  /** Seed of the weights, the bases and the tokens (default 0). */
  seed?: number;
  /** Progress lines. */
  log?: (line: string) => void;
}

/** What {@link benchQuantStep} measures. */
export interface QuantStepReport {
  /** The model's name. */
  model: string;
  /** The base's format. */
  format: string;
  /** Batch rows. */
  B: number;
  /** Positions a row. */
  T: number;
  /** NOLA's settings and the adapted modules. */
  nola: { r: number; k: number; l: number; modules: number; coefficients: number };
  /** Seconds to draw and pack the base on the GPU (to the last weight finished). */
  buildSeconds: number;
  /** Seconds of the training step: forward, loss, backward, coefficient gradients, AdamW. */
  stepSeconds: number;
  /** The step's loss (mean over the tokens; finite, about ln(vocab) for a random base). */
  loss: number;
  /** GPU bytes by kind after the step, and their sum. */
  gpu: {
    weightsByPrecision: Record<string, number>;
    weights: number;
    adapters: number;
    optimizer: number;
    activations: number;
    /** The buffer pool's peak during the step, above what it held before. */
    temporaries: number;
    total: number;
  };
  /** `models/memory_estimate.ts`'s total for this run, computed before the step. */
  estimateBytes: number;
  /** Peak resident host memory of the process (sampled every 100 ms and at each weight). */
  peakRssBytes: number;
  /** Resident host memory before the build. */
  startRssBytes: number;
}

/**
 * Builds a model with a random base drawn and packed on the GPU and runs one NOLA training step
 * on all its linears: the 7B-in-little-memory figure of the memory suite.
 *
 * @param gpu The device.
 * @param options The shape, format, batch, NOLA settings, seed, progress.
 * @returns Seconds, loss, GPU bytes by kind, peak host memory.
 * @throws {Error} If the loss is not finite.
 */
export async function benchQuantStep(
  gpu: Gpu,
  options: QuantStepOptions = {},
): Promise<QuantStepReport> {
  const { B = 1, T = 16, r = 8, k = 64, l = 64, seed = 0, format = "nf4" } = options;
  const name = options.name ?? "llama-2-7b";
  const parsed = parseModelConfig(options.config ?? MEMORY_MODELS["llama-2-7b"], `<${name}>`);
  const startRssBytes = Deno.memoryUsage().rss;
  let peakRssBytes = startRssBytes;
  const sample = () => {
    peakRssBytes = Math.max(peakRssBytes, Deno.memoryUsage().rss);
  };
  const timer = setInterval(sample, 100);
  try {
    let start = performance.now();
    let packedWeights = 0;
    using model = await initRandomBase(gpu, parsed, {
      baseFormat: format,
      seed,
      log: (line) => {
        sample();
        if (++packedWeights % 16 === 0) options.log?.(`${name}: ${packedWeights} weights packed`);
        else if (packedWeights === 1) options.log?.(line);
      },
    });
    await gpu.sync();
    sample();
    const buildSeconds = (performance.now() - start) / 1000;
    options.log?.(`${name}: built in ${buildSeconds.toFixed(1)} s`);
    const nola: AttachConfig = {
      method: "nola",
      targets: [ALL_LINEAR],
      r,
      k,
      l,
      loraAlpha: r,
      seed,
      init: "uniform-coeffs",
    };
    const estimate = estimateTrainingMemory(parsed, {
      model: { baseFormat: format },
      batch: { B, T },
      adapters: { modules: planAdapters(model, nola), maxRows: B * T },
      optimizer: { kind: "adamw" },
    });
    using set = await AdapterSet.attach(model, nola, { maxRows: B * T });
    const params = set.parameters();
    using optimizer = await Optimizer.create(gpu, [{ kind: "adamw", lr: 1e-3, params }]);
    const V = model.outputs;
    const tokens = new Uint32Array(B * T).map((_, i) => (i * 7919 + seed) % V);
    const targets = tokens.map((t) => (t + 1) % V);
    await gpu.sync();
    gpu.pool.resetPeak();
    const before = gpu.pool.stats().inUse;
    start = performance.now();
    set.zeroGrads();
    set.prepareStep();
    model.forward({ B, T, tokens });
    const losses = model.loss({ targets }, { backward: true });
    model.backward();
    set.finishBackward();
    optimizer.step(1);
    const perToken = await losses.read();
    const stepSeconds = (performance.now() - start) / 1000;
    sample();
    const loss = Array.from(perToken as Float32Array).reduce((s, v) => s + v, 0) / perToken.length;
    if (!Number.isFinite(loss)) throw new Error(`${name}: the step's loss is ${loss}`);
    const temporaries = gpu.pool.stats().peak - before;
    const state = await optimizer.state();
    // The moments, and the optimizer's gradient norm and scale (one f32 each).
    const optimizerBytes = [...state.tensors.values()].reduce((s, t) => s + t.byteLength, 8);
    const memory = model.memory();
    const coefficients = params.reduce((s, p) => s + p.param.size, 0);
    const total = memory.weights + memory.gradients + set.bytes + optimizerBytes +
      memory.activations + temporaries;
    return {
      model: name,
      format,
      B,
      T,
      nola: { r, k, l, modules: set.modules.length, coefficients },
      buildSeconds,
      stepSeconds,
      loss,
      gpu: {
        weightsByPrecision: memory.weightsByPrecision ?? { f32: memory.weights },
        weights: memory.weights,
        adapters: set.bytes,
        optimizer: optimizerBytes,
        activations: memory.activations,
        temporaries,
        total,
      },
      estimateBytes: estimate.total,
      peakRssBytes,
      startRssBytes,
    };
  } finally {
    clearInterval(timer);
  }
}

/** One row of {@link quantRatios}: a shape and op, the f32 time and each format's ratio. */
export interface QuantRatioRow {
  /** Where the shape comes from. */
  shape: string;
  /** The product. */
  op: QMatmulOp;
  /** `M x out x in`. */
  size: string;
  /** Milliseconds of the f32 matmul. */
  f32Ms: number;
  /** Each packed format's speed over f32's (f32 ms / format ms; above 1 is faster). */
  ratios: Record<string, number>;
}

/**
 * The packed products' speed against the f32 matmul on the same shapes, one row a shape and op
 * (the measurements of `bench/qmatmul.ts`, interleaved rounds).
 *
 * @param gpu The device.
 * @param options Filter and time budget, as {@link benchQMatmul}.
 * @returns One row a shape and op.
 */
export async function quantRatios(
  gpu: Gpu,
  options: BenchQMatmulOptions = {},
): Promise<QuantRatioRow[]> {
  const rows = await benchQMatmul(gpu, options);
  const out = new Map<string, QuantRatioRow>();
  for (const r of rows) {
    const key = `${r.shape}|${r.op}`;
    const row = out.get(key) ?? {
      shape: r.shape,
      op: r.op,
      size: `${r.m} x ${r.out} x ${r.in}`,
      f32Ms: NaN,
      ratios: {},
    };
    if (r.format === "f32") row.f32Ms = r.ms;
    else row.ratios[r.format] = r.speedup;
    out.set(key, row);
  }
  return [...out.values()];
}

/**
 * {@link benchQuantStep}'s report for a person: a few lines.
 *
 * @param r The report.
 * @returns Lines of text.
 */
export function formatQuantStep(r: QuantStepReport): string {
  const mib = (b: number) =>
    b < 2 ** 20 ? `${(b / 2 ** 10).toFixed(1)} KiB` : `${(b / 2 ** 20).toFixed(1)} MiB`;
  const gib = (b: number) => b < 2 ** 30 ? mib(b) : `${(b / 2 ** 30).toFixed(2)} GiB`;
  const precisions = Object.entries(r.gpu.weightsByPrecision)
    .map(([p, b]) => `${p} ${mib(b)}`).join(", ");
  return [
    `  ${r.model} in ${r.format}, NOLA r ${r.nola.r}, k = l = ${r.nola.k} on ${r.nola.modules} ` +
    `linears (${r.nola.coefficients} coefficients), B ${r.B} x T ${r.T}`,
    `  build (draw + pack on the GPU): ${r.buildSeconds.toFixed(1)} s; one training step: ` +
    `${r.stepSeconds.toFixed(1)} s; loss ${r.loss.toFixed(4)}`,
    `  GPU bytes: ${gib(r.gpu.total)} = weights ${gib(r.gpu.weights)} (${precisions}) + ` +
    `adapters ${mib(r.gpu.adapters)} + optimizer ${mib(r.gpu.optimizer)} + activations ` +
    `${mib(r.gpu.activations)} + step temporaries ${mib(r.gpu.temporaries)}; estimated ` +
    `before the step: ${gib(r.estimateBytes)}`,
    `  host memory (RSS): peak ${gib(r.peakRssBytes)}, ${gib(r.startRssBytes)} before the build` +
    ` (llvmpipe's GPU buffers live in host memory and count here)`,
  ].join("\n");
}
