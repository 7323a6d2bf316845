/**
 * GPU bytes of a frozen base in each precision the `load` stage offers (f32, 16-bit as stored,
 * int8, nf4 with double quantization): the adaptable linear weights packed on the GPU from random
 * f32 values, the rest (embeddings, norms, biases, the head) counted in f32 as the models keep it.
 *
 * Every block of a family has the same linear shapes and a packed weight's bytes depend on its
 * shape only, so the linears of one block are packed for real and their bytes counted once a
 * block; the bench checks them against `packedLayout`'s arithmetic.
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

/** The precisions measured. */
export type MemoryPrecision = "f32" | "16-bit" | "int8" | "nf4";

/** One row of {@link benchMemory}: a model's frozen weights in one precision. */
export interface MemoryBenchRow {
  /** The model shape, e.g. `gpt2-small`. */
  model: string;
  precision: MemoryPrecision;
  /** Bytes of the adaptable linear weights. */
  linearBytes: number;
  /** Bytes of everything else (f32 in every precision). */
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
    const linearF32 = 4 * [...linears.values()].reduce((s, [o, i]) => s + o * i, 0);
    const blocks = new Set([...linears.keys()].map((n) => n.split(".").slice(0, 2).join("."))).size;
    const firstBlock = [...linears].filter(([n]) => n.startsWith(firstBlockPrefix(layout)));
    const row = (precision: MemoryPrecision, linearBytes: number): MemoryBenchRow => ({
      model: name,
      precision,
      linearBytes,
      otherBytes,
      bytes: linearBytes + otherBytes,
      ratio: (linearBytes + otherBytes) / (linearF32 + otherBytes),
      parameters,
    });
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
