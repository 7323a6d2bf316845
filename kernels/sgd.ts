/**
 * SGD with momentum (PyTorch semantics: dampening, Nesterov, weight decay added to the gradient)
 * on the GPU, one dispatch per parameter tensor.
 *
 * @module
 */

import code from "./sgd.wgsl" with { type: "text" };
import { grid } from "./dispatch.ts";
import type { Gpu, Kernel } from "./gpu.ts";
import type { Tensor } from "./tensor.ts";
import { UniformStruct } from "./uniform_struct.ts";

const WG = 64;
const SIZES = new UniformStruct("SgdSizes", {
  n: "u32",
  lr: "f32",
  momentum: "f32",
  dampening: "f32",
  weight_decay: "f32",
  first: "u32",
  nesterov: "u32",
}, { wgsl: code });

/** Hyper-parameters of one SGD step, as `torch.optim.SGD` names them. */
export interface SgdStep {
  lr: number;
  /** Default 0: plain SGD, no momentum buffer. */
  momentum?: number;
  /** Default 0. */
  dampening?: number;
  /** Default false; needs `momentum > 0` and `dampening = 0`, as in PyTorch. */
  nesterov?: boolean;
  /** L2 penalty added to the gradient (coupled, unlike AdamW's); default 0. */
  weightDecay?: number;
  /** True on the first step: the momentum buffer becomes the gradient, as PyTorch's `None` buffer. */
  first: boolean;
}

/** Tensors of {@link SgdKernels.update}. */
export interface SgdTensors {
  /** Updated in place. */
  param: Tensor;
  /** Momentum buffer, same size as `param`; required when `momentum > 0`, unused otherwise. */
  buf?: Tensor;
  grad: Tensor;
  /** One element: the multiplier on `grad` (averaging, clipping), on the GPU. */
  gradScale: Tensor;
}

/**
 * The SGD update kernels of one device. Methods only record work.
 *
 * @example One step of plain SGD
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { Tensor } from "./kernels/tensor.ts";
 * import { SgdKernels } from "./kernels/sgd.ts";
 * using gpu = await Gpu.acquire();
 * const sgd = await SgdKernels.load(gpu);
 * using param = Tensor.from(gpu, new Float32Array([1, 2]), [2]);
 * using grad = Tensor.from(gpu, new Float32Array([10, -10]), [2]);
 * using gradScale = Tensor.from(gpu, new Float32Array([1]), [1]);
 * sgd.update({ param, grad, gradScale }, { lr: 0.1, first: true });
 * console.log(await param.read()); // Float32Array [0, 3]
 * ```
 */
export class SgdKernels {
  private constructor(
    readonly gpu: Gpu,
    readonly momentum: Kernel,
    readonly plain: Kernel,
  ) {}

  /** Compiles the kernels (cached by the device). */
  static async load(gpu: Gpu): Promise<SgdKernels> {
    const [momentum, plain] = await Promise.all([
      gpu.kernel({
        label: "sgd",
        code,
        entry: "sgd_forward",
        bindings: ["storage", "storage", "read", "read", "uniform"],
        constants: { WG },
      }),
      gpu.kernel({
        label: "sgd plain",
        code,
        entry: "sgd_forward_plain",
        bindings: ["storage", "read", "read", "uniform"],
        constants: { WG },
      }),
    ]);
    return new SgdKernels(gpu, momentum, plain);
  }

  /**
   * Records one SGD step on `param` with `grad * gradScale[0]`, updating the momentum buffer.
   *
   * @throws {RangeError} On mismatched sizes, a missing buffer, or invalid hyper-parameters.
   */
  update(tensors: SgdTensors, hyper: SgdStep): void {
    const { param, buf, grad, gradScale } = tensors;
    const n = param.size;
    const momentum = hyper.momentum ?? 0;
    const dampening = hyper.dampening ?? 0;
    const nesterov = hyper.nesterov ?? false;
    if (!(momentum >= 0)) throw new RangeError(`SGD momentum must be >= 0, got ${momentum}`);
    if (nesterov && (momentum <= 0 || dampening !== 0)) {
      throw new RangeError("SGD nesterov needs momentum > 0 and dampening 0");
    }
    const named: [string, Tensor | undefined][] = [["grad", grad]];
    if (momentum > 0) {
      if (!buf) throw new RangeError("SGD with momentum needs a momentum buffer");
      named.push(["buf", buf]);
    }
    for (const [name, t] of named) {
      if (t!.size !== n) {
        throw new RangeError(`SGD ${name} has ${t!.size} elements, the parameter has ${n}`);
      }
    }
    if (gradScale.size !== 1) {
      throw new RangeError(`SGD gradScale has ${gradScale.size} elements, not 1`);
    }
    const uniforms = SIZES.pack({
      n,
      lr: hyper.lr,
      momentum,
      dampening,
      weight_decay: hyper.weightDecay ?? 0,
      first: hyper.first,
      nesterov,
    });
    const workgroups = grid(this.gpu, Math.ceil(n / WG));
    if (momentum > 0) {
      const buffers = [param, buf!, grad, gradScale].map((t) => t.buffer);
      this.gpu.dispatch(this.momentum, buffers, { uniforms, workgroups });
    } else {
      const buffers = [param, grad, gradScale].map((t) => t.buffer);
      this.gpu.dispatch(this.plain, buffers, { uniforms, workgroups });
    }
  }
}
