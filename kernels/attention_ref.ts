/**
 * Float64 CPU reference of causal multi-head self-attention (`attention.wgsl`): plain loops that
 * materialise every score row, independent of the GPU kernels' online softmax.
 *
 * @module
 */

/** Sizes of {@link attentionForwardRef}. */
export interface AttentionRefSizes {
  B: number;
  /** Query rows computed: `past .. past + T - 1`. */
  T: number;
  C: number;
  NH: number;
  /** Rows already in the KV cache (default 0). */
  past?: number;
  /** Rows per batch element of `qkv` (default `past + T`). */
  tMax?: number;
}

/**
 * Attention forward in float64.
 *
 * @param qkv `[B, tMax, 3C]`: q | k | v of every row.
 * @param sizes Shape, past and tMax.
 * @returns `out` `[B, T, C]` and `lse` `[B, NH, T]` (log-sum-exp of the scaled scores).
 *
 * @example One row attends to itself only
 * ```ts
 * import { attentionForwardRef } from "./kernels/attention_ref.ts";
 * const { out } = attentionForwardRef(new Float64Array([1, 2, 3]), { B: 1, T: 1, C: 1, NH: 1 });
 * console.log(out); // Float64Array [3]
 * ```
 */
export function attentionForwardRef(
  qkv: ArrayLike<number>,
  sizes: AttentionRefSizes,
): { out: Float64Array; lse: Float64Array } {
  const { B, T, C, NH } = sizes;
  const past = sizes.past ?? 0;
  const tMax = sizes.tMax ?? past + T;
  const hd = C / NH;
  const scale = 1 / Math.sqrt(hd);
  const out = new Float64Array(B * T * C);
  const lse = new Float64Array(B * NH * T);
  const scores = new Float64Array(past + T);
  const at = (b: number, t: number, c: number) => (b * tMax + t) * 3 * C + c;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < NH; h++) {
      for (let r = 0; r < T; r++) {
        const t = past + r;
        let max = -Infinity;
        for (let j = 0; j <= t; j++) {
          let dot = 0;
          for (let d = 0; d < hd; d++) {
            dot += qkv[at(b, t, h * hd + d)] * qkv[at(b, j, C + h * hd + d)];
          }
          scores[j] = dot * scale;
          max = Math.max(max, scores[j]);
        }
        let sum = 0;
        for (let j = 0; j <= t; j++) sum += Math.exp(scores[j] - max);
        lse[(b * NH + h) * T + r] = max + Math.log(sum);
        for (let j = 0; j <= t; j++) {
          const p = Math.exp(scores[j] - max) / sum;
          for (let d = 0; d < hd; d++) {
            out[(b * T + r) * C + h * hd + d] += p * qkv[at(b, j, 2 * C + h * hd + d)];
          }
        }
      }
    }
  }
  return { out, lse };
}

/**
 * Attention backward in float64 (training: no past): the gradient of `qkv` given the gradient
 * of `out`, by the textbook chain rule through the full probability matrix.
 *
 * @param dout `[B, T, C]`.
 * @param qkv `[B, T, 3C]`.
 * @param sizes Shape.
 * @returns `dqkv` `[B, T, 3C]` (fresh, not accumulated).
 *
 * @example Gradient of one row that attends to itself: all of it flows into v
 * ```ts
 * import { attentionBackwardRef } from "./kernels/attention_ref.ts";
 * const dqkv = attentionBackwardRef(new Float64Array([5]), new Float64Array([1, 2, 3]), {
 *   B: 1, T: 1, C: 1, NH: 1,
 * });
 * console.log(dqkv); // Float64Array [0, 0, 5]
 * ```
 */
export function attentionBackwardRef(
  dout: ArrayLike<number>,
  qkv: ArrayLike<number>,
  sizes: { B: number; T: number; C: number; NH: number },
): Float64Array {
  const { B, T, C, NH } = sizes;
  const hd = C / NH;
  const scale = 1 / Math.sqrt(hd);
  const dqkv = new Float64Array(B * T * 3 * C);
  const at = (b: number, t: number, c: number) => (b * T + t) * 3 * C + c;
  const p = new Float64Array(T);
  const dp = new Float64Array(T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < NH; h++) {
      const q = h * hd;
      const k = C + h * hd;
      const v = 2 * C + h * hd;
      for (let t = 0; t < T; t++) {
        let max = -Infinity;
        for (let j = 0; j <= t; j++) {
          let dot = 0;
          for (let d = 0; d < hd; d++) dot += qkv[at(b, t, q + d)] * qkv[at(b, j, k + d)];
          p[j] = dot * scale;
          max = Math.max(max, p[j]);
        }
        let sum = 0;
        for (let j = 0; j <= t; j++) sum += p[j] = Math.exp(p[j] - max);
        for (let j = 0; j <= t; j++) p[j] /= sum;
        // out_t = sum_j p_j v_j: dv_j += p_j dout_t, dp_j = dout_t . v_j
        const g = (b * T + t) * C + h * hd;
        let pdp = 0;
        for (let j = 0; j <= t; j++) {
          let dot = 0;
          for (let d = 0; d < hd; d++) {
            dqkv[at(b, j, v + d)] += p[j] * dout[g + d];
            dot += dout[g + d] * qkv[at(b, j, v + d)];
          }
          dp[j] = dot;
          pdp += p[j] * dot;
        }
        // Softmax: ds_j = p_j (dp_j - sum_i p_i dp_i); scores = scale * q_t . k_j.
        for (let j = 0; j <= t; j++) {
          const ds = p[j] * (dp[j] - pdp) * scale;
          for (let d = 0; d < hd; d++) {
            dqkv[at(b, t, q + d)] += ds * qkv[at(b, j, k + d)];
            dqkv[at(b, j, k + d)] += ds * qkv[at(b, t, q + d)];
          }
        }
      }
    }
  }
  return dqkv;
}
