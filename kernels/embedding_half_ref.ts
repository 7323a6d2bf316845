/**
 * Float64 CPU reference of `embedding_half.wgsl` (a token embedding read from a 16-bit table),
 * for tests.
 *
 * @module
 */

/**
 * `out[b, t, :] = table[tokens[b, t], :] (+ wpe[t + posOffset, :])`, `[B, T, C]`, the table's
 * 16-bit codes widened by their definition (IEEE binary16, or the top half of a binary32).
 *
 * @param shape Token ids (`[B, T]` row-major), the sequence length, the channels, the offset.
 * @param options The table's codes `[V, C]` (no padding), its format, the optional `[P, C]` wpe.
 * @returns The embeddings.
 */
export function embeddingHalfRef(
  shape: { tokens: ArrayLike<number>; seq: number; channels: number; posOffset?: number },
  options: { codes: Uint16Array; format: "f16" | "bf16"; wpe?: ArrayLike<number> },
): Float64Array {
  const { tokens, seq, channels: c, posOffset = 0 } = shape;
  const widen = options.format === "f16" ? halfValue : bfloatValue;
  const out = new Float64Array(tokens.length * c);
  for (let row = 0; row < tokens.length; row++) {
    const pos = (row % seq) + posOffset;
    for (let i = 0; i < c; i++) {
      const w = widen(options.codes[tokens[row] * c + i]);
      out[row * c + i] = w + (options.wpe ? options.wpe[pos * c + i] : 0);
    }
  }
  return out;
}

/** IEEE binary16 from its sign, 5 exponent bits and 10 fraction bits. */
function halfValue(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >> 10) & 0x1f;
  const frac = bits & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** bfloat16: the sign, 8 exponent bits and 7 fraction bits of a binary32. */
function bfloatValue(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >> 7) & 0xff;
  const frac = bits & 0x7f;
  if (exp === 0) return sign * frac * 2 ** -133;
  if (exp === 255) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 128) * 2 ** (exp - 127);
}
