/**
 * Float64 reference of PyTorch's SGD (momentum, dampening, Nesterov, coupled weight decay),
 * written from `torch.optim.SGD`'s documented update rule, independent of the WGSL.
 *
 * @module
 */

import type { SgdStep } from "./sgd.ts";

/** Applies one SGD step in place to `param` and `buf` (float64 arrays). */
export function sgdRef(
  state: { param: Float64Array; buf: Float64Array; grad: ArrayLike<number> },
  hyper: SgdStep & { gradScale?: number },
): void {
  const { param, buf, grad } = state;
  const mu = hyper.momentum ?? 0;
  const tau = hyper.dampening ?? 0;
  const wd = hyper.weightDecay ?? 0;
  const scale = hyper.gradScale ?? 1;
  for (let i = 0; i < param.length; i++) {
    let g = grad[i] * scale + wd * param[i];
    if (mu !== 0) {
      buf[i] = hyper.first ? g : mu * buf[i] + (1 - tau) * g;
      g = hyper.nesterov ? g + mu * buf[i] : buf[i];
    }
    param[i] -= hyper.lr * g;
  }
}
