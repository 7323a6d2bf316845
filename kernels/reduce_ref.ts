/**
 * Float64 CPU reference of `reduce.wgsl` (the bias gradient of a linear layer), for tests.
 *
 * @module
 */

/** `dbias[n] += sum_m dout[m, n]` for a row-major `[M, N]` `dout`, in place. */
export function reduceBackwardRef(dbias: Float64Array, options: { dout: ArrayLike<number> }): void {
  const n = dbias.length;
  const rows = options.dout.length / n;
  for (let m = 0; m < rows; m++) {
    for (let j = 0; j < n; j++) dbias[j] += options.dout[m * n + j];
  }
}

/** `out[m, n] = inp[m, n] + bias[n]`: the forward whose gradient {@link reduceBackwardRef} is. */
export function biasForwardRef(
  inp: ArrayLike<number>,
  options: { bias: ArrayLike<number> },
): Float64Array {
  const n = options.bias.length;
  return Float64Array.from(inp, (x, i) => x + options.bias[i % n]);
}
