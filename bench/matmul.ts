/**
 * Matmul throughput: GFLOP/s of every kernel variant and operand layout at GPT-2 small shapes
 * (512 rows) and at 1024³.
 *
 * @module
 */

import type { Gpu } from "../kernels/gpu.ts";
import { Matmul, MATMUL_VARIANTS, type MatmulVariant } from "../kernels/matmul.ts";
import { Tensor } from "../kernels/tensor.ts";

/** The operand layouts measured: plain, B transposed (linear layers), A transposed (gradients). */
export type MatmulOp = "A·B" | "A·Bᵀ" | "Aᵀ·B";

/** One measurement of {@link benchMatmul}. */
export interface BenchRow {
  variant: MatmulVariant;
  op: MatmulOp;
  /** Where the shape comes from, e.g. `attn c_attn`. */
  shape: string;
  m: number;
  n: number;
  k: number;
  /** Products timed together in the best pass. */
  reps: number;
  /** Milliseconds per product. */
  ms: number;
  gflops: number;
  /** `gpu` with timestamp queries, `wall` around submit-and-wait otherwise. */
  source: "gpu" | "wall";
}

/** Options of {@link benchMatmul}. */
export interface BenchMatmulOptions {
  /** Keeps only rows whose variant, op or shape label contains this text. */
  filter?: string;
  /** Time to spend timing each row after its first run, in ms (default 300). */
  budgetMs?: number;
}

/** GPT-2 small with 512 tokens a batch, and a square reference. */
export const BENCH_SHAPES: readonly { shape: string; m: number; n: number; k: number }[] = [
  { shape: "attn c_proj", m: 512, n: 768, k: 768 },
  { shape: "attn c_attn", m: 512, n: 2304, k: 768 },
  { shape: "mlp c_fc", m: 512, n: 3072, k: 768 },
  { shape: "mlp c_proj", m: 512, n: 768, k: 3072 },
  { shape: "square", m: 1024, n: 1024, k: 1024 },
];

const OPS: readonly MatmulOp[] = ["A·B", "A·Bᵀ", "Aᵀ·B"];

/**
 * Times every variant on every op and shape: one run to warm up and size the repetitions, then
 * the best of three timed passes of repetitions that fit `budgetMs` (one pass of one repetition
 * for rows slower than that).
 *
 * @param gpu the device to measure
 * @param options row filter and time budget
 * @returns one row per (variant, op, shape)
 *
 * @example Print the square rows
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { benchMatmul } from "./bench/matmul.ts";
 * using gpu = await Gpu.acquire();
 * for (const row of await benchMatmul(gpu, { filter: "square" })) console.log(row);
 * ```
 */
export async function benchMatmul(
  gpu: Gpu,
  options: BenchMatmulOptions = {},
): Promise<BenchRow[]> {
  const { filter, budgetMs = 300 } = options;
  const matmul = await Matmul.load(gpu, { variant: "blocked" });
  const rows: BenchRow[] = [];
  for (const { shape, m, n, k } of BENCH_SHAPES) {
    for (const op of OPS) {
      const variants = MATMUL_VARIANTS.filter((variant) =>
        !filter || [variant, op, shape, `${m}x${n}x${k}`].some((s) => s.includes(filter))
      );
      if (variants.length === 0) continue;
      const transA = op === "Aᵀ·B";
      const transB = op === "A·Bᵀ";
      using a = Tensor.from(gpu, filled(m * k, 1), transA ? [k, m] : [m, k]);
      using b = Tensor.from(gpu, filled(k * n, 2), transB ? [n, k] : [k, n]);
      using out = Tensor.empty(gpu, [m, n]);
      for (const variant of variants) {
        const once = () => matmul.run(a, b, { transA, transB, out, variant });
        // The first run pays one-time costs (a CPU driver compiles on first dispatch). Fast
        // rows then take the best of three batches: other work on the machine only slows a run.
        const first = await gpu.time(once);
        const batches = first.ms < budgetMs ? 3 : 1;
        const reps = Math.min(64, Math.max(1, Math.floor(budgetMs / batches / first.ms)));
        let best = { ms: Infinity, source: first.source };
        for (let batch = 0; batch < batches; batch++) {
          const timed = await gpu.time(() => {
            for (let r = 0; r < reps; r++) once();
          });
          if (timed.ms < best.ms) best = timed;
        }
        const ms = best.ms / reps;
        rows.push({
          variant,
          op,
          shape,
          m,
          n,
          k,
          reps,
          ms,
          gflops: (2 * m * n * k) / (ms * 1e6),
          source: best.source,
        });
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
