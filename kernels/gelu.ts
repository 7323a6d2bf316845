/**
 * Host wrapper of `gelu.wgsl`: GPT-2's tanh-approximated GELU and its backward. Ranges longer
 * than one storage binding are split into windows.
 *
 * @module
 */

import { checkDistinct, checkSameSize, grid, windows } from "./dispatch.ts";
import type { Gpu, Kernel } from "./gpu.ts";
import type { BufferView } from "./tensor.ts";
import { UniformStruct } from "./uniform_struct.ts";
import code from "./gelu.wgsl" with { type: "text" };

const WG = 256;
const SIZES = new UniformStruct(
  "Sizes",
  { n: "u32", shift0: "u32", shift1: "u32", shift2: "u32" },
  { wgsl: code },
);

/** Options of {@link GeluKernels.forward}. */
export interface GeluForwardOptions {
  /** Written: `gelu(inp)`; its buffer must differ from `inp`'s. */
  out: BufferView;
  inp: BufferView;
}

/** Options of {@link GeluKernels.backward}. */
export interface GeluBackwardOptions {
  /** Accumulated: `dinp += dout * gelu'(inp)`. */
  dinp: BufferView;
  /** The forward's input. */
  inp: BufferView;
  dout: BufferView;
}

/**
 * The compiled GELU kernels of one device. Methods only record work.
 *
 * @example GELU of three values
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { Tensor } from "./kernels/tensor.ts";
 * import { GeluKernels } from "./kernels/gelu.ts";
 * using gpu = await Gpu.acquire();
 * const gelu = await GeluKernels.load(gpu);
 * using inp = Tensor.from(gpu, new Float32Array([-1, 0, 1]), [3]);
 * using out = Tensor.empty(gpu, [3]);
 * gelu.forward({ out, inp });
 * console.log(await out.read()); // about [-0.1588, 0, 0.8412]
 * ```
 */
export class GeluKernels {
  private constructor(
    readonly gpu: Gpu,
    readonly forwardKernel: Kernel,
    readonly backwardKernel: Kernel,
  ) {}

  /** Compiles the kernels (cached by the device). */
  static async load(gpu: Gpu): Promise<GeluKernels> {
    const load = (entry: string, bindings: ("storage" | "read" | "uniform")[]) =>
      gpu.kernel({ label: entry, code, entry, bindings, constants: { WG } });
    const [forward, backward] = await Promise.all([
      load("gelu_forward", ["storage", "read", "uniform"]),
      load("gelu_backward", ["storage", "read", "read", "uniform"]),
    ]);
    return new GeluKernels(gpu, forward, backward);
  }

  /** Records `out = gelu(inp)` elementwise (any shape; `[B, T, 4C]` in GPT-2). */
  forward(options: GeluForwardOptions): void {
    const { out, inp } = options;
    this.#run(this.forwardKernel, { out }, { inp });
  }

  /** Records `dinp += dout * gelu'(inp)` elementwise. */
  backward(options: GeluBackwardOptions): void {
    const { dinp, inp, dout } = options;
    this.#run(this.backwardKernel, { dinp }, { inp, dout });
  }

  #run(
    kernel: Kernel,
    output: Record<string, BufferView>,
    inputs: Record<string, BufferView>,
  ): void {
    const { label } = kernel.key;
    const views = { ...output, ...inputs };
    const n = checkSameSize(label, views);
    checkDistinct(label, output, inputs);
    for (const w of windows(this.gpu, n, Object.values(views), { label })) {
      const [shift0, shift1, shift2 = 0] = w.shifts;
      this.gpu.dispatch(kernel, w.bindings, {
        uniforms: SIZES.pack({ n: w.count, shift0, shift1, shift2 }),
        workgroups: grid(this.gpu, Math.ceil(w.count / WG)),
      });
    }
  }
}
