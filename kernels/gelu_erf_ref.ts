/**
 * Float64 CPU reference of `gelu_erf.wgsl`, the exact GELU `x * Phi(x)`, with an erf and erfc of
 * its own (JavaScript has none) accurate to about 1e-15 relative, for tests.
 *
 * @module
 */

const TWO_OVER_SQRT_PI = 2 / Math.sqrt(Math.PI);

/**
 * erfc(z) in float64: `1 - erf(z)` from its all-positive series below z = 2 (no cancellation in
 * the sum), the continued fraction of erfc from there on (accurate in the far tail).
 *
 * @param z Any number.
 * @returns erfc(z).
 */
export function erfcRef(z: number): number {
  if (z < 0) return 2 - erfcRef(-z);
  if (z < 2) return 1 - erfSeries(z);
  // erfc(z) = exp(-z^2)/sqrt(pi) * 1/(z + (1/2)/(z + 1/(z + (3/2)/(z + 2/(z + ...))))),
  // evaluated from the bottom up, deep enough to converge for z >= 2.
  let f = z;
  for (let n = 120; n >= 1; n--) f = z + (n / 2) / f;
  return Math.exp(-z * z) / Math.sqrt(Math.PI) / f;
}

/**
 * erf(z) in float64.
 *
 * @param z Any number.
 * @returns erf(z).
 */
export function erfRef(z: number): number {
  if (z < 0) return -erfRef(-z);
  return z < 2 ? erfSeries(z) : 1 - erfcRef(z);
}

// erf(z) = 2/sqrt(pi) exp(-z^2) sum_n (2z^2)^n z / (1 * 3 * ... * (2n + 1)), every term positive.
function erfSeries(z: number): number {
  let term = z;
  let sum = z;
  for (let n = 1; n < 200 && term > 1e-18 * sum; n++) {
    term *= (2 * z * z) / (2 * n + 1);
    sum += term;
  }
  return TWO_OVER_SQRT_PI * Math.exp(-z * z) * sum;
}

/** Phi(x), the standard normal CDF, as `erfc(-x / sqrt(2)) / 2` (accurate in both tails). */
export function normalCdfRef(x: number): number {
  return 0.5 * erfcRef(-x / Math.SQRT2);
}

/**
 * The exact GELU, elementwise.
 *
 * @param inp The inputs.
 * @returns `x * Phi(x)` for each.
 */
export function geluErfForwardRef(inp: ArrayLike<number>): Float64Array {
  return Float64Array.from(inp, (x) => x * normalCdfRef(x));
}

/**
 * `dinp[i] += dout[i] * gelu'(inp[i])`, in place, with `gelu'(x) = Phi(x) + x phi(x)`.
 *
 * @param dinp The gradient accumulated into.
 * @param options The forward's input and the output's gradient.
 */
export function geluErfBackwardRef(
  dinp: Float64Array,
  options: { inp: ArrayLike<number>; dout: ArrayLike<number> },
): void {
  const { inp, dout } = options;
  for (let i = 0; i < dinp.length; i++) {
    const x = inp[i];
    // Past |x| = 40 the density is below 1e-300: leave it out rather than make inf * 0.
    const density = Math.abs(x) > 40 ? 0 : Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI);
    dinp[i] += dout[i] * (normalCdfRef(x) + x * density);
  }
}
