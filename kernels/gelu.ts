/**
 * Host wrapper of `gelu.wgsl`: GPT-2's tanh-approximated GELU and its backward. Ranges longer
 * than one storage binding are split into windows.
 *
 * @module
 */

import type { Gpu, Kernel } from "./gpu.ts";
import { window } from "./tensor.ts";
import type { Elements } from "./residual.ts";
import code from "./gelu.wgsl" with { type: "text" };

const WG = 256;

/** Options of {@link GeluKernels.forward}. */
export interface GeluForwardOptions {
  /** Written: `gelu(inp)`; its buffer must differ from `inp`'s. */
  out: Elements;
  inp: Elements;
}

/** Options of {@link GeluKernels.backward}. */
export interface GeluBackwardOptions {
  /** Accumulated: `dinp += dout * gelu'(inp)`. */
  dinp: Elements;
  /** The forward's input. */
  inp: Elements;
  dout: Elements;
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
    this.#run(this.forwardKernel, [options.out, options.inp], ["out", "inp"]);
  }

  /** Records `dinp += dout * gelu'(inp)` elementwise. */
  backward(options: GeluBackwardOptions): void {
    const { dinp, inp, dout } = options;
    this.#run(this.backwardKernel, [dinp, inp, dout], ["dinp", "inp", "dout"]);
  }

  // The first operand is the output, the rest inputs.
  #run(kernel: Kernel, operands: Elements[], names: string[]): void {
    const n = operands[0].size;
    operands.forEach((e, k) => {
      if (e.size !== n) {
        throw new RangeError(
          `Cannot run ${kernel.key.label}: "${names[k]}" has ${e.size} elements, ` +
            `"${names[0]}" has ${n}`,
        );
      }
      if (k > 0 && e.buffer === operands[0].buffer) {
        throw new RangeError(
          `Cannot run ${kernel.key.label}: output "${names[0]}" and input "${names[k]}" ` +
            `share one buffer`,
        );
      }
    });
    const chunk = Math.floor((this.gpu.maxBindingBytes - this.gpu.bindingAlignment) / 4);
    const max = this.gpu.device.limits.maxComputeWorkgroupsPerDimension;
    for (let start = 0; start < n; start += chunk) {
      const count = Math.min(chunk, n - start);
      const windows = operands.map((e) => {
        const begin = ("begin" in e ? e.begin ?? 0 : 0) + start;
        return window(this.gpu, e.buffer, { begin, end: begin + count });
      });
      const groups = Math.ceil(count / WG);
      this.gpu.dispatch(kernel, windows.map((w) => w.binding), {
        uniforms: Uint32Array.of(count, ...windows.map((w) => w.shift)).buffer,
        // Workgroup counts past the per-dimension limit wrap into y; kernels skip the overhang.
        workgroups: groups <= max ? [groups, 1] : [max, Math.ceil(groups / max)],
      });
    }
  }
}
