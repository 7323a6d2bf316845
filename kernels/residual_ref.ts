/**
 * Float64 CPU reference of `residual.wgsl`, written independently of the WGSL, for tests.
 *
 * @module
 */

/** `out = a + b`. */
export function residualForwardRef(a: ArrayLike<number>, b: ArrayLike<number>): Float64Array {
  return Float64Array.from(a, (x, i) => x + b[i]);
}
