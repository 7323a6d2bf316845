/**
 * Float64 CPU reference of `rmsnorm.wgsl`, for tests.
 *
 * @module
 */

type Values = ArrayLike<number>;

/** Outputs of {@link rmsNormForwardRef}. */
export interface RmsNormRefResult {
  /** `[rows, C]`. */
  out: Float64Array;
  /** `[rows]`: `1 / sqrt(mean(x^2) + eps)`. */
  rstd: Float64Array;
}

/** RMS norm of every row of a row-major `[rows, C]` `inp`, C = `weight.length`. */
export function rmsNormForwardRef(
  inp: Values,
  options: { weight: Values; eps?: number },
): RmsNormRefResult {
  const { weight, eps = 1e-6 } = options;
  const c = weight.length;
  const rows = inp.length / c;
  const out = new Float64Array(inp.length);
  const rstd = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let sq = 0;
    for (let i = 0; i < c; i++) sq += inp[r * c + i] ** 2;
    const s = 1 / Math.sqrt(sq / c + eps);
    for (let i = 0; i < c; i++) out[r * c + i] = weight[i] * inp[r * c + i] * s;
    rstd[r] = s;
  }
  return { out, rstd };
}

/** Gradients, accumulated in place into `dinp` and `dweight`. */
export function rmsNormBackwardRef(
  grads: { dinp: Float64Array; dweight: Float64Array },
  options: { dout: Values; inp: Values; weight: Values; rstd: Values },
): void {
  const { dinp, dweight } = grads;
  const { dout, inp, weight, rstd } = options;
  const c = weight.length;
  const rows = inp.length / c;
  for (let r = 0; r < rows; r++) {
    // d out_i / d x_j = w_i * rstd * (delta_ij - norm_i * norm_j / C)
    const norm = (i: number) => inp[r * c + i] * rstd[r];
    let sumGN = 0;
    for (let i = 0; i < c; i++) {
      sumGN += weight[i] * dout[r * c + i] * norm(i);
      dweight[i] += dout[r * c + i] * norm(i);
    }
    for (let j = 0; j < c; j++) {
      dinp[r * c + j] += rstd[r] * (weight[j] * dout[r * c + j] - norm(j) * sumGN / c);
    }
  }
}
