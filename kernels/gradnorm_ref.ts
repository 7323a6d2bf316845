/**
 * Float64 reference of global gradient-norm clipping (`torch.nn.utils.clip_grad_norm_` with a
 * base scale folded in), independent of the WGSL.
 *
 * @module
 */

/** The norm of the raw gradients and the multiplier an optimizer applies to them. */
export function gradnormRef(
  grads: readonly ArrayLike<number>[],
  options: { maxNorm?: number; baseScale?: number } = {},
): { norm: number; gradScale: number } {
  let sum = 0;
  for (const g of grads) for (let i = 0; i < g.length; i++) sum += g[i] * g[i];
  const norm = Math.sqrt(sum);
  const base = options.baseScale ?? 1;
  const maxNorm = options.maxNorm ?? 0;
  if (!Number.isFinite(norm)) return { norm, gradScale: NaN };
  const clip = maxNorm > 0 && maxNorm !== Infinity;
  return { norm, gradScale: clip ? base * Math.min(1, maxNorm / (norm * base + 1e-6)) : base };
}
