/**
 * Float64 CPU reference of `attention_full.wgsl`: self-attention over every token (no mask),
 * forward and backward, on dense `[B * T, NH * hd]` q, k, v, for tests.
 *
 * @module
 */

/** Sizes of a reference call. */
export interface AttentionFullRefSizes {
  /** Batch. */
  B: number;
  /** Tokens. */
  T: number;
  /** Heads. */
  NH: number;
  /** Head size. */
  hd: number;
}

/**
 * `out = softmax(q kᵀ / sqrt(hd)) v` per head, and each query row's log-sum-exp.
 *
 * @param q Queries `[B * T, NH * hd]`.
 * @param k Keys, like `q`.
 * @param v Values, like `q`.
 * @param s Sizes.
 * @returns `out` `[B * T, NH * hd]` and `lse` `[B, NH, T]`.
 */
export function attentionFullForwardRef(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  s: AttentionFullRefSizes,
): { out: Float64Array; lse: Float64Array } {
  const { B, T, NH, hd } = s;
  const C = NH * hd;
  const scale = 1 / Math.sqrt(hd);
  const out = new Float64Array(B * T * C);
  const lse = new Float64Array(B * NH * T);
  const scores = new Float64Array(T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < NH; h++) {
      for (let i = 0; i < T; i++) {
        let max = -Infinity;
        for (let j = 0; j < T; j++) {
          let dot = 0;
          for (let c = 0; c < hd; c++) {
            dot += q[(b * T + i) * C + h * hd + c] * k[(b * T + j) * C + h * hd + c];
          }
          scores[j] = dot * scale;
          max = Math.max(max, scores[j]);
        }
        let sum = 0;
        for (let j = 0; j < T; j++) sum += Math.exp(scores[j] - max);
        lse[(b * NH + h) * T + i] = max + Math.log(sum);
        for (let j = 0; j < T; j++) {
          const p = Math.exp(scores[j] - max) / sum;
          for (let c = 0; c < hd; c++) {
            out[(b * T + i) * C + h * hd + c] += p * v[(b * T + j) * C + h * hd + c];
          }
        }
      }
    }
  }
  return { out, lse };
}

/**
 * The gradients of q, k and v given the output's gradient.
 *
 * @param dout Gradient of the output, `[B * T, NH * hd]`.
 * @param q Queries.
 * @param k Keys.
 * @param v Values.
 * @param s Sizes.
 * @returns `dq`, `dk`, `dv`, each `[B * T, NH * hd]`.
 */
export function attentionFullBackwardRef(
  dout: ArrayLike<number>,
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  s: AttentionFullRefSizes,
): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const { B, T, NH, hd } = s;
  const C = NH * hd;
  const scale = 1 / Math.sqrt(hd);
  const { lse } = attentionFullForwardRef(q, k, v, s);
  const dq = new Float64Array(B * T * C);
  const dk = new Float64Array(B * T * C);
  const dv = new Float64Array(B * T * C);
  const p = new Float64Array(T);
  const dp = new Float64Array(T);
  const at = (b: number, t: number, h: number) => (b * T + t) * C + h * hd;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < NH; h++) {
      for (let i = 0; i < T; i++) {
        const qi = at(b, i, h);
        let pdp = 0;
        for (let j = 0; j < T; j++) {
          const kj = at(b, j, h);
          let dot = 0;
          let g = 0;
          for (let c = 0; c < hd; c++) {
            dot += q[qi + c] * k[kj + c];
            g += dout[qi + c] * v[kj + c];
          }
          p[j] = Math.exp(dot * scale - lse[(b * NH + h) * T + i]);
          dp[j] = g;
          pdp += p[j] * g;
        }
        for (let j = 0; j < T; j++) {
          const kj = at(b, j, h);
          const ds = p[j] * (dp[j] - pdp) * scale;
          for (let c = 0; c < hd; c++) {
            dv[kj + c] += p[j] * dout[qi + c];
            dq[qi + c] += ds * k[kj + c];
            dk[kj + c] += ds * q[qi + c];
          }
        }
      }
    }
  }
  return { dq, dk, dv };
}
