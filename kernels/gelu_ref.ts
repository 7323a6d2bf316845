/**
 * Float64 CPU reference of `gelu.wgsl` (GPT-2's tanh approximation), for tests.
 *
 * @module
 */

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);
const CUBIC = 0.044715;

/** `out[i] = 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))`. */
export function geluForwardRef(inp: ArrayLike<number>): Float64Array {
  return Float64Array.from(
    inp,
    (x) => 0.5 * x * (1 + Math.tanh(SQRT_2_OVER_PI * (x + CUBIC * x ** 3))),
  );
}

/** `dinp[i] += dout[i] * gelu'(inp[i])`, in place. */
export function geluBackwardRef(
  dinp: Float64Array,
  options: { inp: ArrayLike<number>; dout: ArrayLike<number> },
): void {
  const { inp, dout } = options;
  for (let i = 0; i < dinp.length; i++) {
    const x = inp[i];
    const u = SQRT_2_OVER_PI * (x + CUBIC * x ** 3);
    const du = SQRT_2_OVER_PI * (1 + 3 * CUBIC * x * x);
    const t = Math.tanh(u);
    dinp[i] += dout[i] * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du);
  }
}
