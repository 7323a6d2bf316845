/**
 * Host wrapper of `residual.wgsl`: the residual sum `out = a + b` of GPT-2's blocks, its
 * backward, and the elementwise `dst += factor * src` and `dst *= factor` that backward passes
 * and optimizers use. Ranges longer than one storage binding are split into windows.
 *
 * @module
 */

import { checkDistinct, checkSameSize, grid, windows } from "./dispatch.ts";
import type { Gpu, Kernel } from "./gpu.ts";
import type { BufferView, Tensor } from "./tensor.ts";
import { UniformStruct } from "./uniform_struct.ts";
import code from "./residual.wgsl" with { type: "text" };

const WG = 256;
const SIZES = new UniformStruct(
  "Sizes",
  { n: "u32", shift0: "u32", shift1: "u32", shift2: "u32", factor: "f32" },
  { wgsl: code },
);

/**
 * A run of f32 elements: a whole tensor, or `size` elements of a buffer from element `begin`.
 *
 * @deprecated Use {@link BufferView}; kept for `fakequant.ts`, its last user.
 */
export type Elements = Tensor | { buffer: GPUBuffer; begin?: number; size: number };

/** Options of {@link ResidualKernels.forward}. */
export interface ResidualForwardOptions {
  /** Written: `a + b`, same length as both. */
  out: BufferView;
  a: BufferView;
  b: BufferView;
}

/** Options of {@link ResidualKernels.backward}. */
export interface ResidualBackwardOptions {
  /** Accumulated: `da += dout`. */
  da: BufferView;
  /** Accumulated: `db += dout`. */
  db: BufferView;
  dout: BufferView;
}

/** Options of {@link ResidualKernels.accumulate}. */
export interface AccumulateOptions {
  /** Accumulated: `dst += factor * src`. */
  dst: BufferView;
  src: BufferView;
  /** Multiplier of `src`; 1 when absent (then the sum is exact f32 addition). */
  factor?: number;
}

/** Options of {@link ResidualKernels.scale}. */
export interface ScaleOptions {
  /** Scaled in place: `dst *= factor`. */
  dst: BufferView;
  factor: number;
}

/**
 * The compiled residual kernels of one device. Methods only record work.
 *
 * @example Add two tensors, then accumulate one into the sum
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { Tensor } from "./kernels/tensor.ts";
 * import { ResidualKernels } from "./kernels/residual.ts";
 * using gpu = await Gpu.acquire();
 * const residual = await ResidualKernels.load(gpu);
 * using a = Tensor.from(gpu, new Float32Array([1, 2]), [2]);
 * using b = Tensor.from(gpu, new Float32Array([10, 20]), [2]);
 * using out = Tensor.empty(gpu, [2]);
 * residual.forward({ out, a, b });
 * residual.accumulate({ dst: out, src: a, factor: 0.5 });
 * console.log(await out.read()); // Float32Array [11.5, 23]
 * ```
 */
export class ResidualKernels {
  private constructor(
    readonly gpu: Gpu,
    readonly kernels: Record<"forward" | "backward" | "accumulate" | "scale", Kernel>,
  ) {}

  /** Compiles the kernels (cached by the device). */
  static async load(gpu: Gpu): Promise<ResidualKernels> {
    const load = (entry: string, bindings: ("storage" | "read" | "uniform")[]) =>
      gpu.kernel({ label: entry, code, entry, bindings, constants: { WG } });
    const [forward, backward, accumulate, scale] = await Promise.all([
      load("residual_forward", ["storage", "read", "read", "uniform"]),
      load("residual_backward", ["storage", "storage", "read", "uniform"]),
      load("residual_accumulate", ["storage", "read", "uniform"]),
      load("residual_scale", ["storage", "uniform"]),
    ]);
    return new ResidualKernels(gpu, { forward, backward, accumulate, scale });
  }

  /** Records `out = a + b`. */
  forward(options: ResidualForwardOptions): void {
    const { out, a, b } = options;
    this.#run(this.kernels.forward, { out }, { a, b }, 1);
  }

  /** Records `da += dout; db += dout` (the residual's gradient reaches both branches). */
  backward(options: ResidualBackwardOptions): void {
    const { da, db, dout } = options;
    this.#run(this.kernels.backward, { da, db }, { dout }, 1);
  }

  /** Records `dst += factor * src`. */
  accumulate(options: AccumulateOptions): void {
    const { dst, src, factor = 1 } = options;
    this.#run(this.kernels.accumulate, { dst }, { src }, factor);
  }

  /** Records `dst *= factor`. */
  scale(options: ScaleOptions): void {
    this.#run(this.kernels.scale, { dst: options.dst }, {}, options.factor);
  }

  #run(
    kernel: Kernel,
    outputs: Record<string, BufferView>,
    inputs: Record<string, BufferView>,
    factor: number,
  ): void {
    const { label } = kernel.key;
    const views = { ...outputs, ...inputs };
    const n = checkSameSize(label, views);
    checkDistinct(label, outputs, inputs);
    for (const w of windows(this.gpu, n, Object.values(views), { label })) {
      const [shift0, shift1 = 0, shift2 = 0] = w.shifts;
      this.gpu.dispatch(kernel, w.bindings, {
        uniforms: SIZES.pack({ n: w.count, shift0, shift1, shift2, factor }),
        workgroups: grid(this.gpu, Math.ceil(w.count / WG)),
      });
    }
  }
}
