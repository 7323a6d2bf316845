/**
 * Float64 CPU reference of `encoder.wgsl` (GPT-2's token + position embedding), for tests.
 *
 * @module
 */

type Values = ArrayLike<number>;

/** Shapes of the reference: `tokens` `[B, T]` row-major, tables `[V, C]` and `[P, C]`. */
export interface EncoderRefShape {
  tokens: ArrayLike<number>;
  seq: number;
  channels: number;
  /** Position of the first token of every sequence; 0 when absent. */
  posOffset?: number;
}

/** `out[b, t, :] = wte[tokens[b, t], :] + wpe[t + posOffset, :]`, `[B, T, C]`. */
export function encoderForwardRef(
  shape: EncoderRefShape,
  options: { wte: Values; wpe: Values },
): Float64Array {
  const { tokens, seq, channels: c, posOffset = 0 } = shape;
  const out = new Float64Array(tokens.length * c);
  for (let row = 0; row < tokens.length; row++) {
    const pos = (row % seq) + posOffset;
    for (let i = 0; i < c; i++) {
      out[row * c + i] = options.wte[tokens[row] * c + i] + options.wpe[pos * c + i];
    }
  }
  return out;
}

/** `dwte[tokens[b, t]] += dout[b, t]`, `dwpe[t + posOffset] += dout[b, t]`, in place. */
export function encoderBackwardRef(
  shape: EncoderRefShape,
  options: { dwte: Float64Array; dwpe: Float64Array; dout: Values },
): void {
  const { tokens, seq, channels: c, posOffset = 0 } = shape;
  const { dwte, dwpe, dout } = options;
  for (let row = 0; row < tokens.length; row++) {
    const pos = (row % seq) + posOffset;
    for (let i = 0; i < c; i++) {
      dwte[tokens[row] * c + i] += dout[row * c + i];
      dwpe[pos * c + i] += dout[row * c + i];
    }
  }
}
