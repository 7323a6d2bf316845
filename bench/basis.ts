/**
 * Throughput of NOLA basis generation (spec v1) on the GPU: elements per second, measured on the
 * reducing kernel so that Philox, not memory bandwidth, is what the figure reflects.
 *
 * @module
 */

import { BasisFactor, basisScale, moduleKey } from "../kernels/basis_spec.ts";
import { BasisKernels } from "../kernels/basis.ts";
import type { Gpu } from "../kernels/gpu.ts";
import { Tensor } from "../kernels/tensor.ts";

/** Options of {@link benchBasis}. */
export interface BenchBasisOptions {
  /** Rows of each basis matrix (default 8: GPT-2's r). */
  rows?: number;
  /** Columns of each basis matrix (default 768: GPT-2's hidden size). */
  cols?: number;
  /** Bases generated per timed run (default 1024). */
  count?: number;
  /** Timed runs; the fastest is reported (default 3). */
  repeats?: number;
}

/** What {@link benchBasis} measured. */
export interface BenchBasisResult {
  /** Basis elements generated per second in the fastest run. */
  elementsPerSecond: number;
  /** Elements generated per run (`count * rows * cols`). */
  elements: number;
  /** Milliseconds of the fastest run. */
  ms: number;
  /** `gpu` with timestamp queries, `wall` around submit-and-wait otherwise. */
  source: "gpu" | "wall";
  /** Rows of each basis matrix. */
  rows: number;
  /** Columns of each basis matrix. */
  cols: number;
  /** Bases generated per run. */
  count: number;
}

/**
 * Measures basis generation throughput: `count` A bases of `rows x cols` reduced to their sums
 * per run, after one untimed warm-up run.
 *
 * @param gpu The device to measure.
 * @param options Basis shape, count and repeats.
 * @returns Elements per second and the figures it came from.
 * @example
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { benchBasis } from "./bench/basis.ts";
 * using gpu = await Gpu.acquire();
 * console.log((await benchBasis(gpu)).elementsPerSecond);
 * ```
 */
export async function benchBasis(
  gpu: Gpu,
  options: BenchBasisOptions = {},
): Promise<BenchBasisResult> {
  const { rows = 8, cols = 768, count = 1024, repeats = 3 } = options;
  const basis = await BasisKernels.load(gpu);
  const key = moduleKey(0, "h.*.attn.c_attn.q");
  const scale = basisScale(BasisFactor.A, { k: count, l: count, inFeatures: cols });
  using out = Tensor.empty(gpu, [count, 2], { label: "bench basis sums" });
  const record = () =>
    basis.sums(key, { factor: BasisFactor.A, begin: 0, end: count, rows, cols, scale, out });
  record();
  await out.read();
  let best = { ms: Infinity, source: "gpu" as "gpu" | "wall" };
  for (let i = 0; i < repeats; i++) {
    const run = await gpu.time(record);
    if (run.ms < best.ms) best = run;
  }
  const elements = count * rows * cols;
  return {
    elementsPerSecond: elements / (best.ms / 1000),
    elements,
    ms: best.ms,
    source: best.source,
    rows,
    cols,
    count,
  };
}

if (import.meta.main) {
  const { Gpu } = await import("../kernels/gpu.ts");
  using gpu = await Gpu.acquire();
  const result = await benchBasis(gpu);
  console.log(gpu.adapterName, JSON.stringify(result));
}
