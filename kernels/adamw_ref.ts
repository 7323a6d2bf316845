/**
 * Float64 reference of AdamW, written from the update rule (decoupled decay, bias-corrected
 * moments), independent of the WGSL.
 *
 * @module
 */

import type { AdamwStep } from "./adamw.ts";

/** Applies one AdamW step in place to `param`, `m`, `v` (float64 arrays). */
export function adamwRef(
  state: { param: Float64Array; m: Float64Array; v: Float64Array; grad: ArrayLike<number> },
  hyper: AdamwStep & { gradScale?: number },
): void {
  const { param, m, v, grad } = state;
  const b1 = hyper.beta1 ?? 0.9;
  const b2 = hyper.beta2 ?? 0.999;
  const eps = hyper.eps ?? 1e-8;
  const wd = hyper.weightDecay ?? 0;
  const scale = hyper.gradScale ?? 1;
  for (let i = 0; i < param.length; i++) {
    const g = grad[i] * scale;
    m[i] = b1 * m[i] + (1 - b1) * g;
    v[i] = b2 * v[i] + (1 - b2) * g * g;
    const mHat = m[i] / (1 - b1 ** hyper.step);
    const vHat = v[i] / (1 - b2 ** hyper.step);
    param[i] = param[i] * (1 - hyper.lr * wd) - hyper.lr * mHat / (Math.sqrt(vHat) + eps);
  }
}
