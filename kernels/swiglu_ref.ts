/**
 * Float64 CPU reference of `swiglu.wgsl` on dense arrays, for tests.
 *
 * @module
 */

type Values = ArrayLike<number>;

function sigmoid(g: number): number {
  return 1 / (1 + Math.exp(-g));
}

/** `h[i] = silu(gate[i]) * up[i]`, `silu(g) = g * sigmoid(g)`. */
export function swigluForwardRef(gate: Values, up: Values): Float64Array {
  return Float64Array.from(gate, (g, i) => g * sigmoid(g) * up[i]);
}

/** Outputs of {@link swigluBackwardRef}. */
export interface SwigluRefGrads {
  dgate: Float64Array;
  dup: Float64Array;
}

/** `dgate = dh * up * silu'(gate)`, `dup = dh * silu(gate)`. */
export function swigluBackwardRef(
  dh: Values,
  options: { gate: Values; up: Values },
): SwigluRefGrads {
  const { gate, up } = options;
  const dgate = new Float64Array(dh.length);
  const dup = new Float64Array(dh.length);
  for (let i = 0; i < dh.length; i++) {
    const g = gate[i];
    const s = sigmoid(g);
    dgate[i] = dh[i] * up[i] * s * (1 + g * (1 - s));
    dup[i] = dh[i] * g * s;
  }
  return { dgate, dup };
}
