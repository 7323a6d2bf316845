/**
 * Float64 CPU reference of self-attention with grouped-query heads (`attention.wgsl`), causal or
 * over every token: plain loops over dense q, k and v that materialise every score row,
 * independent of the GPU kernels' online softmax and of how their operands are laid out.
 *
 * @module
 */

/** Sizes of {@link attentionForwardRef} and {@link attentionBackwardRef}. */
export interface AttentionRefSizes {
  B: number;
  /** Query rows computed: `past .. past + T - 1`. */
  T: number;
  /** Query heads. */
  NH: number;
  /** Key/value heads, dividing NH: query head h reads kv head `h / (NH / KVH)`; NH by default. */
  KVH?: number;
  /** Head size. */
  hd: number;
  /** Rows already in the KV cache (default 0; the backward takes none). */
  past?: number;
  /** Rows per batch element of `k` and `v` (default `past + T`). */
  tMax?: number;
  /**
   * Whether query row t sees key rows `0 ..= t` only (default), or all of `0 .. past + T - 1`.
   */
  causal?: boolean;
}

/** Dense inputs of the reference: `q` `[B, T, NH * hd]`, `k` and `v` `[B, tMax, KVH * hd]`. */
export interface AttentionRefInputs {
  q: ArrayLike<number>;
  k: ArrayLike<number>;
  v: ArrayLike<number>;
}

/**
 * Attention forward in float64.
 *
 * @param inputs Dense q (the T query rows), k and v (`tMax` rows a batch element, the first
 * `past + T` read).
 * @param sizes Shape, heads, past and tMax.
 * @returns `out` `[B, T, NH * hd]` and `lse` `[B, NH, T]` (log-sum-exp of the scaled scores).
 *
 * @example One row attends to itself only
 * ```ts
 * import { attentionForwardRef } from "./kernels/attention_ref.ts";
 * const { out } = attentionForwardRef(
 *   { q: [1], k: [2], v: [3] },
 *   { B: 1, T: 1, NH: 1, hd: 1 },
 * );
 * console.log(out); // Float64Array [3]
 * ```
 */
export function attentionForwardRef(
  inputs: AttentionRefInputs,
  sizes: AttentionRefSizes,
): { out: Float64Array; lse: Float64Array } {
  const { q, k, v } = inputs;
  const { B, T, NH, hd } = sizes;
  const KVH = sizes.KVH ?? NH;
  const past = sizes.past ?? 0;
  const tMax = sizes.tMax ?? past + T;
  const causal = sizes.causal ?? true;
  const scale = 1 / Math.sqrt(hd);
  const out = new Float64Array(B * T * NH * hd);
  const lse = new Float64Array(B * NH * T);
  const scores = new Float64Array(past + T);
  const qAt = (b: number, r: number, h: number) => ((b * T + r) * NH + h) * hd;
  const kvAt = (b: number, j: number, g: number) => ((b * tMax + j) * KVH + g) * hd;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < NH; h++) {
      const g = Math.floor(h / (NH / KVH));
      for (let r = 0; r < T; r++) {
        // The last key row seen.
        const last = causal ? past + r : past + T - 1;
        let max = -Infinity;
        for (let j = 0; j <= last; j++) {
          let dot = 0;
          for (let d = 0; d < hd; d++) dot += q[qAt(b, r, h) + d] * k[kvAt(b, j, g) + d];
          scores[j] = dot * scale;
          max = Math.max(max, scores[j]);
        }
        let sum = 0;
        for (let j = 0; j <= last; j++) sum += Math.exp(scores[j] - max);
        lse[(b * NH + h) * T + r] = max + Math.log(sum);
        for (let j = 0; j <= last; j++) {
          const p = Math.exp(scores[j] - max) / sum;
          for (let d = 0; d < hd; d++) out[qAt(b, r, h) + d] += p * v[kvAt(b, j, g) + d];
        }
      }
    }
  }
  return { out, lse };
}

/**
 * Attention backward in float64 (training: no past): the gradients of q, k and v given the
 * gradient of `out`, by the textbook chain rule through the full probability matrix. A kv
 * head's gradients sum over the query heads that read it.
 *
 * @param inputs `dout` `[B, T, NH * hd]` and the forward's dense q, k, v (`tMax = T`).
 * @param sizes Shape, heads, and whether causal.
 * @returns Fresh `dq` `[B, T, NH * hd]`, `dk` and `dv` `[B, T, KVH * hd]`.
 *
 * @example Gradient of one row that attends to itself: all of it flows into v
 * ```ts
 * import { attentionBackwardRef } from "./kernels/attention_ref.ts";
 * const { dv } = attentionBackwardRef(
 *   { dout: [5], q: [1], k: [2], v: [3] },
 *   { B: 1, T: 1, NH: 1, hd: 1 },
 * );
 * console.log(dv); // Float64Array [5]
 * ```
 */
export function attentionBackwardRef(
  inputs: AttentionRefInputs & { dout: ArrayLike<number> },
  sizes: Omit<AttentionRefSizes, "past" | "tMax">,
): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const { dout, q, k, v } = inputs;
  const { B, T, NH, hd } = sizes;
  const KVH = sizes.KVH ?? NH;
  const causal = sizes.causal ?? true;
  const scale = 1 / Math.sqrt(hd);
  const dq = new Float64Array(B * T * NH * hd);
  const dk = new Float64Array(B * T * KVH * hd);
  const dv = new Float64Array(B * T * KVH * hd);
  const qAt = (b: number, t: number, h: number) => ((b * T + t) * NH + h) * hd;
  const kvAt = (b: number, t: number, g: number) => ((b * T + t) * KVH + g) * hd;
  const p = new Float64Array(T);
  const dp = new Float64Array(T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < NH; h++) {
      const g = Math.floor(h / (NH / KVH));
      for (let t = 0; t < T; t++) {
        const qt = qAt(b, t, h);
        // The last key row seen.
        const last = causal ? t : T - 1;
        let max = -Infinity;
        for (let j = 0; j <= last; j++) {
          let dot = 0;
          for (let d = 0; d < hd; d++) dot += q[qt + d] * k[kvAt(b, j, g) + d];
          p[j] = dot * scale;
          max = Math.max(max, p[j]);
        }
        let sum = 0;
        for (let j = 0; j <= last; j++) sum += p[j] = Math.exp(p[j] - max);
        for (let j = 0; j <= last; j++) p[j] /= sum;
        // out_t = sum_j p_j v_j: dv_j += p_j dout_t, dp_j = dout_t . v_j
        let pdp = 0;
        for (let j = 0; j <= last; j++) {
          const vj = kvAt(b, j, g);
          let dot = 0;
          for (let d = 0; d < hd; d++) {
            dv[vj + d] += p[j] * dout[qt + d];
            dot += dout[qt + d] * v[vj + d];
          }
          dp[j] = dot;
          pdp += p[j] * dot;
        }
        // Softmax: ds_j = p_j (dp_j - sum_i p_i dp_i); scores = scale * q_t . k_j.
        for (let j = 0; j <= last; j++) {
          const ds = p[j] * (dp[j] - pdp) * scale;
          const kj = kvAt(b, j, g);
          for (let d = 0; d < hd; d++) {
            dq[qt + d] += ds * k[kj + d];
            dk[kj + d] += ds * q[qt + d];
          }
        }
      }
    }
  }
  return { dq, dk, dv };
}
