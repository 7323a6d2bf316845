/**
 * Host wrapper of `residual.wgsl`: the residual sum `out = a + b` of GPT-2's blocks. Ranges
 * longer than one storage binding are split into windows.
 *
 * @module
 */

import { checkDistinct, checkSameSize, grid, windows } from "./dispatch.ts";
import type { Gpu, Kernel } from "./gpu.ts";
import type { BufferView } from "./tensor.ts";
import { UniformStruct } from "./uniform_struct.ts";
import code from "./residual.wgsl" with { type: "text" };

const WG = 256;
const SIZES = new UniformStruct(
  "Sizes",
  { n: "u32", shift0: "u32", shift1: "u32", shift2: "u32" },
  { wgsl: code },
);

/** Options of {@link ResidualKernels.forward}. */
export interface ResidualForwardOptions {
  /** Written: `a + b`, same length as both. */
  out: BufferView;
  a: BufferView;
  b: BufferView;
}

/**
 * The compiled residual kernel of one device. Methods only record work.
 *
 * @example Add two tensors
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
 * console.log(await out.read()); // Float32Array [11, 22]
 * ```
 */
export class ResidualKernels {
  private constructor(readonly gpu: Gpu, readonly kernel: Kernel) {}

  /** Compiles the kernel (cached by the device). */
  static async load(gpu: Gpu): Promise<ResidualKernels> {
    const kernel = await gpu.kernel({
      label: "residual_forward",
      code,
      entry: "residual_forward",
      bindings: ["storage", "read", "read", "uniform"],
      constants: { WG },
    });
    return new ResidualKernels(gpu, kernel);
  }

  /** Records `out = a + b`. */
  forward(options: ResidualForwardOptions): void {
    const { out, a, b } = options;
    const { label } = this.kernel.key;
    const n = checkSameSize(label, { out, a, b });
    checkDistinct(label, { out }, { a, b });
    for (const w of windows(this.gpu, n, [out, a, b], { label })) {
      const [shift0, shift1, shift2] = w.shifts;
      this.gpu.dispatch(this.kernel, w.bindings, {
        uniforms: SIZES.pack({ n: w.count, shift0, shift1, shift2 }),
        workgroups: grid(this.gpu, Math.ceil(w.count / WG)),
      });
    }
  }
}
