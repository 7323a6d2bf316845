/**
 * Float64 CPU reference of `layernorm.wgsl`, for tests.
 *
 * @module
 */

type Values = ArrayLike<number>;

/** Outputs of {@link layerNormForwardRef}. */
export interface LayerNormRefResult {
  /** `[rows, C]`. */
  out: Float64Array;
  /** `[rows]`. */
  mean: Float64Array;
  /** `[rows]`: `1 / sqrt(var + eps)`, biased variance. */
  rstd: Float64Array;
}

/** Layer norm of every row of a row-major `[rows, C]` `inp`, C = `weight.length`. */
export function layerNormForwardRef(
  inp: Values,
  options: { weight: Values; bias: Values; eps?: number },
): LayerNormRefResult {
  const { weight, bias, eps = 1e-5 } = options;
  const c = weight.length;
  const rows = inp.length / c;
  const out = new Float64Array(inp.length);
  const mean = new Float64Array(rows);
  const rstd = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let m = 0;
    for (let i = 0; i < c; i++) m += inp[r * c + i];
    m /= c;
    let v = 0;
    for (let i = 0; i < c; i++) v += (inp[r * c + i] - m) ** 2;
    const s = 1 / Math.sqrt(v / c + eps);
    for (let i = 0; i < c; i++) out[r * c + i] = (inp[r * c + i] - m) * s * weight[i] + bias[i];
    mean[r] = m;
    rstd[r] = s;
  }
  return { out, mean, rstd };
}

/** Gradients, accumulated in place into `dinp`, `dweight`, `dbias`. */
export function layerNormBackwardRef(
  grads: { dinp: Float64Array; dweight: Float64Array; dbias: Float64Array },
  options: { dout: Values; inp: Values; weight: Values; mean: Values; rstd: Values },
): void {
  const { dinp, dweight, dbias } = grads;
  const { dout, inp, weight, mean, rstd } = options;
  const c = weight.length;
  const rows = inp.length / c;
  for (let r = 0; r < rows; r++) {
    // d out_i / d x_j = w_i * rstd * (delta_ij - 1/C - norm_i * norm_j / C)
    const norm = (i: number) => (inp[r * c + i] - mean[r]) * rstd[r];
    let sumG = 0;
    let sumGN = 0;
    for (let i = 0; i < c; i++) {
      const g = weight[i] * dout[r * c + i];
      sumG += g;
      sumGN += g * norm(i);
      dweight[i] += dout[r * c + i] * norm(i);
      dbias[i] += dout[r * c + i];
    }
    for (let j = 0; j < c; j++) {
      const g = weight[j] * dout[r * c + j];
      dinp[r * c + j] += rstd[r] * (g - sumG / c - norm(j) * sumGN / c);
    }
  }
}
