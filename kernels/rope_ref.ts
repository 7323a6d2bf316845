/**
 * Float64 CPU reference of `rope.wgsl`, for tests. The angles are the kernel's (and HF's): the
 * f32 product of the f32 position and the f32 frequency; their cosine and sine are float64.
 *
 * @module
 */

type Values = ArrayLike<number>;

/** Options of {@link ropeForwardRef} and {@link ropeBackwardRef}. */
export interface RopeRefOptions {
  /** `[headDim / 2]`, the frequencies as uploaded (f32 values). */
  invFreq: Values;
  /** Heads a row; a row holds `heads * 2 * invFreq.length` values. */
  heads: number;
  /** Rows a batch element: row `b * T + t` has position `past + t`. */
  T: number;
  /** Positions already in the cache; 0 by default. */
  past?: number;
}

/** HF's angle: `float32(position) * inv_freq` rounded to f32. */
export function ropeAngle(position: number, invFreq: number): number {
  return Math.fround(Math.fround(position) * Math.fround(invFreq));
}

/** `x * cos + rotate_half(x) * sin` of every head of a dense `[rows, heads * hd]` `x`. */
export function ropeForwardRef(x: Values, options: RopeRefOptions): Float64Array {
  return turn(x, options, 1);
}

/** The transpose rotation of a gradient `dy` (same layout): the gradient of the input. */
export function ropeBackwardRef(dy: Values, options: RopeRefOptions): Float64Array {
  return turn(dy, options, -1);
}

function turn(x: Values, options: RopeRefOptions, sign: 1 | -1): Float64Array {
  const { invFreq, heads, T, past = 0 } = options;
  const half = invFreq.length;
  const width = heads * 2 * half;
  const rows = x.length / width;
  const out = new Float64Array(x.length);
  for (let r = 0; r < rows; r++) {
    const pos = past + r % T;
    for (let i = 0; i < half; i++) {
      const angle = ropeAngle(pos, invFreq[i]);
      const c = Math.cos(angle);
      const s = sign * Math.sin(angle);
      for (let h = 0; h < heads; h++) {
        const a = r * width + h * 2 * half + i;
        const b = a + half;
        // rotate_half(x) = cat(-x2, x1): element i gets -x[i + half], element i + half gets x[i].
        out[a] = x[a] * c - x[b] * s;
        out[b] = x[b] * c + x[a] * s;
      }
    }
  }
  return out;
}
