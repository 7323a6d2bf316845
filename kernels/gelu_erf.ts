/**
 * Host wrapper of `gelu_erf.wgsl`: GELU in its exact form `x * Phi(x)` (ViT, BERT, PyTorch's
 * `nn.GELU()`), forward and backward, with erf replaced by a fit whose error relative to erfc is
 * under 1.2e-7 (WGSL has no erf). Ranges longer than one storage binding are split into windows.
 *
 * @module
 */

import { checkDistinct, checkSameSize, grid, windows } from "./dispatch.ts";
import type { Gpu, Kernel } from "./gpu.ts";
import type { BufferView } from "./tensor.ts";
import { UniformStruct } from "./uniform_struct.ts";
import code from "./gelu_erf.wgsl" with { type: "text" };

const WG = 256;
const SIZES = new UniformStruct(
  "Sizes",
  { n: "u32", shift0: "u32", shift1: "u32", shift2: "u32" },
  { wgsl: code },
);

/** Options of {@link GeluErfKernels.forward}. */
export interface GeluErfForwardOptions {
  /** Written: `gelu(inp)`; its buffer must differ from `inp`'s. */
  out: BufferView;
  /** The input. */
  inp: BufferView;
}

/** Options of {@link GeluErfKernels.backward}. */
export interface GeluErfBackwardOptions {
  /** Accumulated: `dinp += dout * gelu'(inp)`. */
  dinp: BufferView;
  /** The forward's input. */
  inp: BufferView;
  /** Gradient of the forward's output. */
  dout: BufferView;
}

/**
 * The compiled exact-GELU kernels of one device. Methods only record work.
 *
 * @example Exact GELU of three values
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { Tensor } from "./kernels/tensor.ts";
 * import { GeluErfKernels } from "./kernels/gelu_erf.ts";
 * using gpu = await Gpu.acquire();
 * const gelu = await GeluErfKernels.load(gpu);
 * using inp = Tensor.from(gpu, new Float32Array([-1, 0, 1]), [3]);
 * using out = Tensor.empty(gpu, [3]);
 * gelu.forward({ out, inp });
 * console.log(await out.read()); // about [-0.158655, 0, 0.841345]
 * ```
 */
export class GeluErfKernels {
  private constructor(
    readonly gpu: Gpu,
    readonly forwardKernel: Kernel,
    readonly backwardKernel: Kernel,
  ) {}

  /**
   * Compiles the kernels (cached by the device).
   *
   * @param gpu The device.
   * @returns The kernels.
   */
  static async load(gpu: Gpu): Promise<GeluErfKernels> {
    const load = (entry: string, bindings: ("storage" | "read" | "uniform")[]) =>
      gpu.kernel({ label: entry, code, entry, bindings, constants: { WG } });
    const [forward, backward] = await Promise.all([
      load("gelu_erf_forward", ["storage", "read", "uniform"]),
      load("gelu_erf_backward", ["storage", "read", "read", "uniform"]),
    ]);
    return new GeluErfKernels(gpu, forward, backward);
  }

  /**
   * Records `out = x * Phi(x)` elementwise (any shape; `[B, T, mlp]` in ViT).
   *
   * @param options The output and the input.
   */
  forward(options: GeluErfForwardOptions): void {
    const { out, inp } = options;
    this.#run(this.forwardKernel, { out }, { inp });
  }

  /**
   * Records `dinp += dout * gelu'(inp)` elementwise.
   *
   * @param options The gradient accumulated into, the forward's input, the output's gradient.
   */
  backward(options: GeluErfBackwardOptions): void {
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
