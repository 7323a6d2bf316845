/**
 * Float64 CPU reference of `crossentropy.wgsl`: softmax cross-entropy with PyTorch's label
 * smoothing, per row, and its logits gradient, for tests.
 *
 * @module
 */

/** Inputs of the reference: `logits` `[N, V]` row-major, `targets` `[N]`, `eps` smoothing. */
export interface CrossEntropyRefInputs {
  logits: ArrayLike<number>;
  targets: ArrayLike<number>;
  vocab: number;
  /** Label smoothing; 0 when absent. */
  eps?: number;
}

function logSumExp(x: ArrayLike<number>, begin: number, end: number): number {
  let m = -Infinity;
  for (let v = begin; v < end; v++) m = Math.max(m, x[v]);
  let s = 0;
  for (let v = begin; v < end; v++) s += Math.exp(x[v] - m);
  return m + Math.log(s);
}

/**
 * Unweighted per-row losses: `-sum_v q_v log softmax(x)_v` with the smoothed target
 * `q = (1 - eps) onehot(t) + eps / V`, as `torch.nn.functional.cross_entropy(label_smoothing=eps)`.
 */
export function crossEntropyForwardRef(inputs: CrossEntropyRefInputs): Float64Array {
  const { logits, targets, vocab, eps = 0 } = inputs;
  return Float64Array.from({ length: targets.length }, (_, r) => {
    const base = r * vocab;
    const lse = logSumExp(logits, base, base + vocab);
    let loss = 0;
    for (let v = 0; v < vocab; v++) {
      const q = (v === targets[r] ? 1 - eps : 0) + eps / vocab;
      loss -= q * (logits[base + v] - lse);
    }
    return loss;
  });
}

/** The gradient of `sum_r weights[r] * loss_r` with respect to the logits, `[N, V]`. */
export function crossEntropyBackwardRef(
  inputs: CrossEntropyRefInputs & { weights: ArrayLike<number> },
): Float64Array {
  const { logits, targets, vocab, weights, eps = 0 } = inputs;
  const out = new Float64Array(targets.length * vocab);
  for (let r = 0; r < targets.length; r++) {
    const base = r * vocab;
    const lse = logSumExp(logits, base, base + vocab);
    for (let v = 0; v < vocab; v++) {
      const q = (v === targets[r] ? 1 - eps : 0) + eps / vocab;
      out[base + v] = weights[r] * (Math.exp(logits[base + v] - lse) - q);
    }
  }
  return out;
}
