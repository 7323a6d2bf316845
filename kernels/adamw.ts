/**
 * AdamW (decoupled weight decay, bias correction) on the GPU, one dispatch per parameter tensor.
 *
 * @module
 */

import code from "./adamw.wgsl" with { type: "text" };
import { grid } from "./dispatch.ts";
import type { Gpu, Kernel } from "./gpu.ts";
import type { Tensor } from "./tensor.ts";
import { UniformStruct } from "./uniform_struct.ts";

const WG = 64;
const SIZES = new UniformStruct("AdamwSizes", {
  n: "u32",
  lr: "f32",
  beta1: "f32",
  beta2: "f32",
  eps: "f32",
  weight_decay: "f32",
  bias_correction1: "f32",
  bias_correction2_sqrt: "f32",
}, { wgsl: code });

/** Hyper-parameters of one AdamW step. */
export interface AdamwStep {
  /** 1-based step number, for bias correction. */
  step: number;
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
}

/** The AdamW update kernel. */
export class AdamwKernels {
  private constructor(readonly gpu: Gpu, readonly kernel: Kernel) {}

  /** Compiles the kernel. */
  static async load(gpu: Gpu): Promise<AdamwKernels> {
    const kernel = await gpu.kernel({
      label: "adamw",
      code,
      entry: "adamw_forward",
      bindings: ["storage", "storage", "storage", "read", "read", "uniform"],
      constants: { WG },
    });
    return new AdamwKernels(gpu, kernel);
  }

  /**
   * Records `param -= update(grad * gradScale[0])`, updating the moments `m` and `v` in place.
   * `gradScale` is a one-element tensor so that clipping and averaging stay on the GPU.
   */
  update(
    tensors: { param: Tensor; m: Tensor; v: Tensor; grad: Tensor; gradScale: Tensor },
    hyper: AdamwStep,
  ): void {
    const { param, m, v, grad, gradScale } = tensors;
    const n = param.size;
    for (const [name, t] of [["m", m], ["v", v], ["grad", grad]] as const) {
      if (t.size !== n) {
        throw new RangeError(`AdamW ${name} has ${t.size} elements, the parameter has ${n}`);
      }
    }
    if (!(hyper.step >= 1)) throw new RangeError(`AdamW step must be >= 1, got ${hyper.step}`);
    const beta1 = hyper.beta1 ?? 0.9;
    const beta2 = hyper.beta2 ?? 0.999;
    const uniforms = SIZES.pack({
      n,
      lr: hyper.lr,
      beta1,
      beta2,
      eps: hyper.eps ?? 1e-8,
      weight_decay: hyper.weightDecay ?? 0,
      bias_correction1: 1 - beta1 ** hyper.step,
      bias_correction2_sqrt: Math.sqrt(1 - beta2 ** hyper.step),
    });
    const buffers = [param, m, v, grad, gradScale].map((t) => t.buffer);
    this.gpu.dispatch(this.kernel, buffers, {
      uniforms,
      workgroups: grid(this.gpu, Math.ceil(n / WG)),
    });
  }
}
