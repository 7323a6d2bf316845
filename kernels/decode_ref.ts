/**
 * Float64 references of `decode.ts`: batched decode attention over per-row cache slots, row
 * copies and moves, and rotary embeddings at per-row positions.
 *
 * @module
 */

/** A strided matrix on the host: first element and row stride. */
export interface HostRows {
  /** The elements. */
  data: ArrayLike<number>;
  /** First element of row 0. */
  offset: number;
  /** Elements from one row to the next. */
  ld: number;
}

/**
 * `out[b, h] = softmax_j(q_b,h · k_j / sqrt(hd)) v_j` over the keys `j < length_b` at cache
 * rows `first_b + j`, query head h reading kv head `h / (NH / KVH)`.
 *
 * @param inputs `q`: `B` query rows of `NH * hd`; `k`: key rows of `KVH * hd`; `v`: value
 * rows, laid out like `k`.
 * @param o Per-row slots, heads and head size.
 * @returns `out` `[B, NH * hd]` and `lse` `[B * NH]`.
 */
export function decodeAttentionRef(
  inputs: { q: HostRows; k: HostRows; v: HostRows },
  o: { rows: readonly { first: number; length: number }[]; NH: number; KVH: number; hd: number },
): { out: Float64Array; lse: Float64Array } {
  const { q, k, v } = inputs;
  const { NH, KVH, hd } = o;
  const B = o.rows.length;
  const out = new Float64Array(B * NH * hd);
  const lse = new Float64Array(B * NH);
  const scale = 1 / Math.sqrt(hd);
  o.rows.forEach(({ first, length }, b) => {
    for (let h = 0; h < NH; h++) {
      const kvh = Math.floor(h / (NH / KVH));
      const scores = new Float64Array(length);
      for (let j = 0; j < length; j++) {
        let s = 0;
        for (let c = 0; c < hd; c++) {
          s += q.data[q.offset + b * q.ld + h * hd + c] *
            k.data[k.offset + (first + j) * k.ld + kvh * hd + c];
        }
        scores[j] = s * scale;
      }
      const max = Math.max(...scores);
      let sum = 0;
      for (let j = 0; j < length; j++) sum += Math.exp(scores[j] - max);
      lse[b * NH + h] = max + Math.log(sum);
      for (let j = 0; j < length; j++) {
        const p = Math.exp(scores[j] - max) / sum;
        for (let c = 0; c < hd; c++) {
          out[(b * NH + h) * hd + c] += p * v.data[v.offset + (first + j) * v.ld + kvh * hd + c];
        }
      }
    }
  });
  return { out, lse };
}

/**
 * Rotary embeddings (Hugging Face's `rotate_half`) of rows at their own positions, in place on
 * a float64 copy.
 *
 * @param x Rows of `heads * 2 * invFreq.length` values, `ld` apart from `offset`.
 * @param o Heads a row, the inverse frequencies and each row's position.
 * @returns The turned elements (the whole array, others unchanged).
 */
export function ropeRowsRef(
  x: HostRows,
  o: { heads: number; invFreq: ArrayLike<number>; positions: readonly number[] },
): Float64Array {
  const out = Float64Array.from(x.data);
  const half = o.invFreq.length;
  o.positions.forEach((pos, r) => {
    for (let h = 0; h < o.heads; h++) {
      for (let i = 0; i < half; i++) {
        // The kernel rounds the angle to f32 as Hugging Face does; so does the reference.
        const angle = Math.fround(Math.fround(pos) * o.invFreq[i]);
        const a = x.offset + r * x.ld + h * 2 * half + i;
        const [x0, x1] = [out[a], out[a + half]];
        out[a] = x0 * Math.cos(angle) - x1 * Math.sin(angle);
        out[a + half] = x1 * Math.cos(angle) + x0 * Math.sin(angle);
      }
    }
  });
  return out;
}
