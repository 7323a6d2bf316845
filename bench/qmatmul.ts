/**
 * Quantized-matmul throughput: the products with a frozen weight kept packed (f16, bf16, int8,
 * nf4) against the f32 matmul on the same shapes, timed side by side in interleaved rounds so
 * that the ratio survives a noisy machine, and the bytes of W in each format.
 *
 * @module
 */

import { BASE_FORMATS, type BaseFormat } from "../formats/base_quant.ts";
import type { Gpu } from "../kernels/gpu.ts";
import { Matmul } from "../kernels/matmul.ts";
import { QMatmul } from "../kernels/qmatmul.ts";
import type { PackedTensor } from "../kernels/packed_tensor.ts";
import { BaseQuantKernels } from "../kernels/quantize_base.ts";
import { Tensor } from "../kernels/tensor.ts";

/** The products measured: the forward `x · Wᵀ` and the backward to activations `dy · W`. */
export type QMatmulOp = "x·Wᵀ" | "dy·W";

/** One measurement of {@link benchQMatmul}. */
export interface QMatmulBenchRow {
  /** Where the shape comes from, e.g. `mlp c_fc`. */
  shape: string;
  op: QMatmulOp;
  /** `f32` for the plain matmul, else the packed format. */
  format: BaseFormat | "f32";
  /** Rows of activations, W's rows (out) and columns (in). */
  m: number;
  out: number;
  in: number;
  /** Milliseconds per product (best round). */
  ms: number;
  gflops: number;
  /** This format's GFLOP/s over the f32 matmul's, on the same shape and op. */
  speedup: number;
  /** Bytes of W in this format, and over its f32 bytes. */
  weightBytes: number;
  bytesRatio: number;
  /** `gpu` with timestamp queries, `wall` around submit-and-wait otherwise. */
  source: "gpu" | "wall";
}

/** Options of {@link benchQMatmul}. */
export interface BenchQMatmulOptions {
  /** Keeps only shapes, ops or formats containing this text. */
  filter?: string;
  /** Time to spend on each row and round, in ms (default 150). */
  budgetMs?: number;
  /** Timed rounds, interleaving the formats (default 3). */
  rounds?: number;
}

/** GPT-2 small at 512 tokens, a Llama-2-7B MLP at 64 tokens, and one decoding step. */
export const QMATMUL_SHAPES: readonly { shape: string; m: number; out: number; in: number }[] = [
  { shape: "gpt2 attn c_proj", m: 512, out: 768, in: 768 },
  { shape: "gpt2 mlp c_fc", m: 512, out: 3072, in: 768 },
  { shape: "gpt2 mlp c_proj", m: 512, out: 768, in: 3072 },
  { shape: "llama-7b up_proj", m: 64, out: 11008, in: 4096 },
  { shape: "llama-7b q_proj decode", m: 1, out: 4096, in: 4096 },
];

/**
 * Times every format against the f32 matmul on every shape and op: one warm-up run each, then
 * `rounds` rounds that each time every format once (repetitions sized to the budget), keeping
 * each one's best.
 *
 * @param gpu The device to measure.
 * @param options Row filter, time budget, rounds.
 * @returns One row per (shape, op, format), f32 first.
 *
 * @example The GPT-2 rows
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { benchQMatmul } from "./bench/qmatmul.ts";
 * using gpu = await Gpu.acquire();
 * for (const row of await benchQMatmul(gpu, { filter: "gpt2" })) console.log(row);
 * ```
 */
export async function benchQMatmul(
  gpu: Gpu,
  options: BenchQMatmulOptions = {},
): Promise<QMatmulBenchRow[]> {
  const { filter, budgetMs = 150, rounds = 3 } = options;
  const matmul = await Matmul.load(gpu, { variant: "auto" });
  const qmatmul = await QMatmul.load(gpu);
  const quant = await BaseQuantKernels.load(gpu);
  const rows: QMatmulBenchRow[] = [];
  for (const { shape, m, out: n, in: k } of QMATMUL_SHAPES) {
    for (const op of ["x·Wᵀ", "dy·W"] as QMatmulOp[]) {
      const formats = (["f32", ...BASE_FORMATS] as const).filter((f) =>
        !filter || [shape, op, f].some((s) => s.includes(filter))
      );
      if (formats.length === 0) continue;
      const backward = op === "dy·W";
      using w = Tensor.from(gpu, filled(n * k, 1), [n, k]);
      using inp = Tensor.from(gpu, filled(m * (backward ? n : k), 2), [m, backward ? n : k]);
      using out = Tensor.empty(gpu, [m, backward ? k : n]);
      const packed = new Map<BaseFormat, PackedTensor>();
      try {
        for (const f of formats) {
          if (f !== "f32") packed.set(f, quant.pack(w, [n, k], { format: f, label: f }));
        }
        const run = (f: BaseFormat | "f32") => {
          if (f === "f32") {
            // W is [out, in]: the forward multiplies by Wᵀ, the backward by W.
            return () => void matmul.run(inp, w, { transB: !backward, out });
          }
          const p = packed.get(f)!;
          return backward
            ? () => void qmatmul.backward(p, inp, { out })
            : () => void qmatmul.forward(p, inp, { out });
        };
        const reps = new Map<string, number>();
        for (const f of formats) {
          const first = await gpu.time(run(f));
          reps.set(f, Math.min(32, Math.max(1, Math.floor(budgetMs / Math.max(first.ms, 1e-3)))));
        }
        const best = new Map<string, { ms: number; source: "gpu" | "wall" }>();
        for (let round = 0; round < rounds; round++) {
          for (const f of formats) {
            const count = reps.get(f)!;
            const once = run(f);
            const timed = await gpu.time(() => {
              for (let r = 0; r < count; r++) once();
            });
            const ms = timed.ms / count;
            if (ms < (best.get(f)?.ms ?? Infinity)) best.set(f, { ms, source: timed.source });
          }
        }
        const flops = 2 * m * n * k;
        const f32Bytes = 4 * n * k;
        const f32 = best.get("f32");
        for (const f of formats) {
          const { ms, source } = best.get(f)!;
          const gflops = flops / (ms * 1e6);
          const weightBytes = f === "f32" ? f32Bytes : packed.get(f)!.byteLength;
          rows.push({
            shape,
            op,
            format: f,
            m,
            out: n,
            in: k,
            ms,
            gflops,
            speedup: f32 ? f32.ms / ms : NaN,
            weightBytes,
            bytesRatio: weightBytes / f32Bytes,
            source,
          });
        }
      } finally {
        for (const p of packed.values()) p[Symbol.dispose]();
      }
    }
  }
  return rows;
}

/** Small deterministic values, so products stay finite and timing does not see denormals. */
function filled(length: number, seed: number): Float32Array {
  const out = new Float32Array(length);
  for (let i = 0; i < length; i++) out[i] = ((i * 7 + seed) % 13) / 13 - 0.5;
  return out;
}
