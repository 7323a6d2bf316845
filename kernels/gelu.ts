/**
 * Host wrapper of `gelu.wgsl`: GELU and its backward in either form models use, the tanh
 * approximation (GPT-2) or the exact `x * Phi(x)` (ViT, BERT, PyTorch's `nn.GELU()`), with erf
 * replaced by a fit whose error relative to erfc is under 1.2e-7 (WGSL has no erf). Ranges longer
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

/**
 * Which GELU: `"tanh"`, the approximation `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`
 * (GPT-2's `gelu_new`), or `"erf"`, the exact `x * Phi(x)` (Hugging Face's `gelu`).
 */
export type GeluVariant = "tanh" | "erf";

/** Options of {@link GeluKernels.load}. */
export interface GeluLoadOptions {
  /** The form computed; `"tanh"` by default. */
  variant?: GeluVariant;
}

/** Options of {@link GeluKernels.forward}. */
export interface GeluForwardOptions {
  /** Written: `gelu(inp)`; its buffer must differ from `inp`'s. */
  out: BufferView;
  /** The input. */
  inp: BufferView;
}

/** Options of {@link GeluKernels.backward}. */
export interface GeluBackwardOptions {
  /** Accumulated: `dinp += dout * gelu'(inp)`. */
  dinp: BufferView;
  /** The forward's input. */
  inp: BufferView;
  /** Gradient of the forward's output. */
  dout: BufferView;
}

/**
 * The compiled GELU kernels of one device, in one variant. Methods only record work.
 *
 * @example GELU of three values, approximated and exact
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { Tensor } from "./kernels/tensor.ts";
 * import { GeluKernels } from "./kernels/gelu.ts";
 * using gpu = await Gpu.acquire();
 * const tanh = await GeluKernels.load(gpu);
 * const erf = await GeluKernels.load(gpu, { variant: "erf" });
 * using inp = Tensor.from(gpu, new Float32Array([-1, 0, 1]), [3]);
 * using out = Tensor.empty(gpu, [3]);
 * tanh.forward({ out, inp });
 * console.log(await out.read()); // about [-0.158808, 0, 0.841192]
 * erf.forward({ out, inp });
 * console.log(await out.read()); // about [-0.158655, 0, 0.841345]
 * ```
 */
export class GeluKernels {
  private constructor(
    readonly gpu: Gpu,
    readonly variant: GeluVariant,
    readonly forwardKernel: Kernel,
    readonly backwardKernel: Kernel,
  ) {}

  /**
   * Compiles the kernels of one variant (cached by the device).
   *
   * @param gpu The device.
   * @param options The variant, tanh by default.
   * @returns The kernels.
   * @throws {RangeError} On a variant other than `"tanh"` or `"erf"`.
   */
  static async load(gpu: Gpu, options: GeluLoadOptions = {}): Promise<GeluKernels> {
    const { variant = "tanh" } = options;
    if (variant !== "tanh" && variant !== "erf") {
      throw new RangeError(`GELU variant must be "tanh" or "erf", got ${JSON.stringify(variant)}`);
    }
    const exact = variant === "erf";
    const load = (op: string, bindings: ("storage" | "read" | "uniform")[]) =>
      gpu.kernel({
        label: exact ? `gelu_erf_${op}` : `gelu_${op}`,
        code,
        entry: `gelu_${op}`,
        bindings,
        constants: { WG, EXACT: exact ? 1 : 0 },
      });
    const [forward, backward] = await Promise.all([
      load("forward", ["storage", "read", "uniform"]),
      load("backward", ["storage", "read", "read", "uniform"]),
    ]);
    return new GeluKernels(gpu, variant, forward, backward);
  }

  /**
   * Records `out = gelu(inp)` elementwise (any shape; `[B, T, 4C]` in GPT-2, `[B, T, mlp]` in
   * ViT).
   *
   * @param options The output and the input.
   */
  forward(options: GeluForwardOptions): void {
    const { out, inp } = options;
    this.#run(this.forwardKernel, { out }, { inp });
  }

  /**
   * Records `dinp += dout * gelu'(inp)` elementwise.
   *
   * @param options The gradient accumulated into, the forward's input, the output's gradient.
   */
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
