/**
 * Float64 CPU reference of `residual.wgsl`, written independently of the WGSL, for tests.
 *
 * @module
 */

type Values = ArrayLike<number>;

/** `out = a + b`. */
export function residualForwardRef(a: Values, b: Values): Float64Array {
  return Float64Array.from(a, (x, i) => x + b[i]);
}

/** `da += dout; db += dout`, in place. */
export function residualBackwardRef(
  da: Float64Array,
  options: { db: Float64Array; dout: Values },
): void {
  for (let i = 0; i < da.length; i++) {
    da[i] += options.dout[i];
    options.db[i] += options.dout[i];
  }
}

/** `dst += factor * src`, in place. */
export function accumulateRef(dst: Float64Array, options: { src: Values; factor?: number }): void {
  const factor = options.factor ?? 1;
  for (let i = 0; i < dst.length; i++) dst[i] += factor * options.src[i];
}

/** `dst *= factor`, in place. */
export function scaleRef(dst: Float64Array, options: { factor: number }): void {
  for (let i = 0; i < dst.length; i++) dst[i] *= options.factor;
}
