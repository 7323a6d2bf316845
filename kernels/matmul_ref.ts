/**
 * Float64 CPU reference of {@link ../kernels/matmul.ts}: the same layout options, computed the
 * obvious way, for tests.
 *
 * @module
 */

import type { MatmulLayout } from "./matmul.ts";

/** Layout and options of {@link matmulRef}; element offsets and strides as in the GPU kernel. */
export type MatmulRefOptions = Omit<MatmulLayout, "variant"> & {
  /** [N] (from `offsetBias`), added to every row. */
  bias?: ArrayLike<number>;
};

/**
 * Computes `C = alpha * op(A)·op(B) (+ bias) (+ C)` in float64 into `c` (only the elements the
 * layout names are touched) and returns `c`.
 *
 * @param inputs `a`, `b` and the output array `c` (its prior contents are read when accumulating)
 * @param options sizes and layout
 * @returns `c`
 *
 * @example Multiply 2x2 matrices
 * ```ts
 * import { matmulRef } from "./kernels/matmul_ref.ts";
 * const c = matmulRef({ a: [1, 2, 3, 4], b: [1, 0, 0, 1], c: new Float64Array(4) }, { m: 2, n: 2, k: 2 });
 * console.log(c); // Float64Array [1, 2, 3, 4]
 * ```
 */
export function matmulRef<C extends { [i: number]: number; length: number }>(
  inputs: { a: ArrayLike<number>; b: ArrayLike<number>; c: C },
  options: MatmulRefOptions,
): C {
  const { a, b, c } = inputs;
  const { m, n, k, transA = false, transB = false, alpha = 1, bias } = options;
  const batch = options.batch ?? 1;
  const lda = options.lda ?? (transA ? m : k);
  const ldb = options.ldb ?? (transB ? k : n);
  const ldc = options.ldc ?? n;
  const strideA = options.strideA ?? m * k;
  const strideB = options.strideB ?? k * n;
  const strideC = options.strideC ?? m * n;
  const [ai, ak] = transA ? [1, lda] : [lda, 1];
  const [bk, bj] = transB ? [1, ldb] : [ldb, 1];
  for (let z = 0; z < batch; z++) {
    const baseA = (options.offsetA ?? 0) + z * strideA;
    const baseB = (options.offsetB ?? 0) + z * strideB;
    const baseC = (options.offsetC ?? 0) + z * strideC;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let sum = 0;
        for (let p = 0; p < k; p++) sum += a[baseA + i * ai + p * ak] * b[baseB + p * bk + j * bj];
        let value = alpha * sum;
        if (bias) value += bias[(options.offsetBias ?? 0) + j];
        const at = baseC + i * ldc + j;
        c[at] = options.accumulate ? c[at] + value : value;
      }
    }
  }
  return c;
}
