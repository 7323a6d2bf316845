/**
 * Float64 CPU reference of `gelu.wgsl` in both variants, for tests: GPT-2's tanh approximation,
 * and the exact GELU `x * Phi(x)` with an erf and erfc of its own (JavaScript has none) accurate
 * to about 1e-15 relative.
 *
 * @module
 */

import type { GeluVariant } from "./gelu.ts";

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);
const CUBIC = 0.044715;
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

/**
 * Phi(x), the standard normal CDF, as `erfc(-x / sqrt(2)) / 2` (accurate in both tails).
 *
 * @param x Any number.
 * @returns Phi(x).
 */
export function normalCdfRef(x: number): number {
  return 0.5 * erfcRef(-x / Math.SQRT2);
}

/**
 * GELU, elementwise.
 *
 * @param inp The inputs.
 * @param variant `"tanh"` (default): `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`;
 * `"erf"`: `x * Phi(x)`.
 * @returns GELU of each.
 */
export function geluForwardRef(
  inp: ArrayLike<number>,
  variant: GeluVariant = "tanh",
): Float64Array {
  if (variant === "erf") return Float64Array.from(inp, (x) => x * normalCdfRef(x));
  return Float64Array.from(
    inp,
    (x) => 0.5 * x * (1 + Math.tanh(SQRT_2_OVER_PI * (x + CUBIC * x ** 3))),
  );
}

/**
 * `dinp[i] += dout[i] * gelu'(inp[i])`, in place.
 *
 * @param dinp The gradient accumulated into.
 * @param options The forward's input, the output's gradient and the variant (`"tanh"` by
 * default; for `"erf"`, `gelu'(x) = Phi(x) + x phi(x)`).
 */
export function geluBackwardRef(
  dinp: Float64Array,
  options: { inp: ArrayLike<number>; dout: ArrayLike<number>; variant?: GeluVariant },
): void {
  const { inp, dout, variant = "tanh" } = options;
  for (let i = 0; i < dinp.length; i++) {
    dinp[i] += dout[i] * (variant === "erf" ? erfSlope(inp[i]) : tanhSlope(inp[i]));
  }
}

function tanhSlope(x: number): number {
  const u = SQRT_2_OVER_PI * (x + CUBIC * x ** 3);
  const du = SQRT_2_OVER_PI * (1 + 3 * CUBIC * x * x);
  const t = Math.tanh(u);
  return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du;
}

function erfSlope(x: number): number {
  // Past |x| = 40 the density is below 1e-300: leave it out rather than make inf * 0.
  const density = Math.abs(x) > 40 ? 0 : Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI);
  return normalCdfRef(x) + x * density;
}
