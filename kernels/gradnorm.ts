/**
 * Host wrapper of `gradnorm.wgsl`: the global L2 norm of a list of gradients and the gradient
 * scale that clips it, both left on the GPU for the optimizer kernels (no readback in a step).
 *
 * Semantics, with `n = sqrt(sum over every gradient element of g^2)` (the norm of the raw
 * gradients as they lie in their buffers) and `b = baseScale`:
 *
 *     norm      = n
 *     gradScale = b * min(1, maxNorm / (n * b + 1e-6))     clipping on
 *     gradScale = b                                        maxNorm 0, Infinity or absent
 *
 * The optimizer multiplies each gradient by `gradScale`, so the gradient it uses is `g * b`,
 * clipped to norm `maxNorm` exactly as `torch.nn.utils.clip_grad_norm_` clips (same `1e-6`).
 * `baseScale` folds averaging into the same multiply: 1 when the loss weights already average
 * (the trainer's weights `mask / total mask` do), `1 / microBatches` for gradients summed over
 * micro-batches of mean losses. When any gradient holds a NaN the norm is NaN (else +Inf for an
 * infinity or an overflowing sum) and `gradScale` is NaN, so a non-finite step poisons the update
 * as it would in PyTorch and the norm, read every few steps, says so.
 *
 * @module
 */

import { grid, rowsPerBinding, windows } from "./dispatch.ts";
import type { Gpu, Kernel } from "./gpu.ts";
import { type BufferView, type Tensor, viewRange } from "./tensor.ts";
import { UniformStruct } from "./uniform_struct.ts";
import code from "./gradnorm.wgsl" with { type: "text" };

const WG = 256;
/** Fewest elements a workgroup sums: a few per invocation. */
const MIN_CHUNK = 4 * WG;
/** Most partial sums one tensor contributes, so the final single-workgroup pass stays short. */
const MAX_PARTS = 1024;
const PART_SIZES = new UniformStruct(
  "PartSizes",
  { n: "u32", shift: "u32", chunk: "u32", out_offset: "u32" },
  { wgsl: code },
);
const FINISH_SIZES = new UniformStruct(
  "FinishSizes",
  { parts: "u32", clip: "u32", max_norm: "f32", base_scale: "f32" },
  { wgsl: code },
);

/** Outputs of {@link GradnormKernels.forward}: one f32 each. */
export interface GradnormOutputs {
  /** Written: the global L2 norm of the raw gradients (before `baseScale`). */
  norm: Tensor;
  /** Written: the multiplier the optimizer applies to every gradient. */
  gradScale: Tensor;
}

/** Options of {@link GradnormKernels.forward}. */
export interface GradnormOptions {
  /** The gradients, summed in this order. */
  grads: readonly BufferView[];
  /** Clip the scaled gradient's norm to this; 0, Infinity or absent: no clipping. */
  maxNorm?: number;
  /** Multiplier folded into `gradScale` before clipping (averaging); default 1. */
  baseScale?: number;
}

/**
 * The compiled gradient-norm kernels of one device. Methods only record work.
 *
 * @example Clip two gradients to norm 1
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { Tensor } from "./kernels/tensor.ts";
 * import { GradnormKernels } from "./kernels/gradnorm.ts";
 * using gpu = await Gpu.acquire();
 * const gradnorm = await GradnormKernels.load(gpu);
 * using a = Tensor.from(gpu, new Float32Array([3]), [1]);
 * using b = Tensor.from(gpu, new Float32Array([4]), [1]);
 * using norm = Tensor.empty(gpu, [1]);
 * using gradScale = Tensor.empty(gpu, [1]);
 * gradnorm.forward({ norm, gradScale }, { grads: [a, b], maxNorm: 1 });
 * console.log(await norm.read(), await gradScale.read()); // [5], [~0.2]
 * ```
 */
export class GradnormKernels {
  private constructor(readonly gpu: Gpu, readonly part: Kernel, readonly finish: Kernel) {}

  /** Compiles the kernels (cached by the device). */
  static async load(gpu: Gpu): Promise<GradnormKernels> {
    const [part, finish] = await Promise.all([
      gpu.kernel({
        label: "gradnorm_forward",
        code,
        entry: "gradnorm_forward",
        bindings: ["storage", "read", "uniform"],
        constants: { WG },
      }),
      gpu.kernel({
        label: "gradnorm_finish",
        code,
        entry: "gradnorm_finish",
        bindings: ["storage", "storage", "read", "uniform"],
        constants: { WG },
      }),
    ]);
    return new GradnormKernels(gpu, part, finish);
  }

  /**
   * Records the norm of `options.grads` into `outputs.norm` and the clipping multiplier into
   * `outputs.gradScale`.
   *
   * @throws {RangeError} On outputs that are not one f32, non-f32 gradients or bad options.
   */
  forward(outputs: GradnormOutputs, options: GradnormOptions): void {
    const { norm, gradScale } = outputs;
    for (const [name, t] of [["norm", norm], ["gradScale", gradScale]] as const) {
      if (t.size !== 1 || t.dtype !== "f32") {
        throw new RangeError(
          `Gradient norm "${name}" must be one f32, got [${t.shape}] ${t.dtype}`,
        );
      }
    }
    if (norm.buffer === gradScale.buffer) {
      throw new RangeError('Gradient norm "norm" and "gradScale" share one buffer');
    }
    const maxNorm = options.maxNorm ?? 0;
    const baseScale = options.baseScale ?? 1;
    if (!(maxNorm >= 0)) {
      throw new RangeError(`Gradient norm "maxNorm" must be >= 0, got ${maxNorm}`);
    }
    if (!Number.isFinite(baseScale)) {
      throw new RangeError(`Gradient norm "baseScale" must be finite, got ${baseScale}`);
    }
    const { gpu } = this;
    const label = "gradnorm_forward";
    const windowElements = rowsPerBinding(gpu, { label });
    const plans = options.grads.map((g, k) => {
      const { tensor, size } = viewRange(g);
      const name = `Gradient ${k} ("${tensor.buffer.label}")`;
      if (tensor.dtype !== "f32") throw new RangeError(`${name} is ${tensor.dtype}, not f32`);
      const chunk = Math.max(MIN_CHUNK, Math.ceil(size / MAX_PARTS));
      if (chunk > windowElements) throw new RangeError(`${name} is too large to reduce`);
      return { g, size, chunk, parts: Math.ceil(size / chunk) };
    });
    const parts = plans.reduce((sum, p) => sum + p.parts, 0);
    // Pooled buffers may be larger than asked for: bind only the bytes in use.
    const bytes = Math.max(parts, 1) * 4;
    const partial = { buffer: gpu.buffer(bytes, { label: "gradnorm partial" }), size: bytes };
    let out_offset = 0;
    for (const { g, size, chunk } of plans) {
      // Whole chunks per window, so a chunk never straddles two bindings.
      for (const w of windows(gpu, size, [g], { multiple: chunk, label })) {
        const chunks = Math.ceil(w.count / chunk);
        gpu.dispatch(this.part, [partial, w.bindings[0]], {
          uniforms: PART_SIZES.pack({ n: w.count, shift: w.shifts[0], chunk, out_offset }),
          workgroups: grid(gpu, chunks),
        });
        out_offset += chunks;
      }
    }
    const clip = maxNorm > 0 && maxNorm !== Infinity;
    gpu.dispatch(this.finish, [norm.buffer, gradScale.buffer, partial], {
      uniforms: FINISH_SIZES.pack({
        parts,
        clip,
        max_norm: clip ? maxNorm : 0,
        base_scale: baseScale,
      }),
      workgroups: [1],
    });
    gpu.release(partial.buffer);
  }
}
