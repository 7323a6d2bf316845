/**
 * Host wrapper of `residual.wgsl`: the residual sum `out = a + b` of GPT-2's blocks, its
 * backward, and the elementwise `dst += factor * src` and `dst *= factor` that backward passes
 * and optimizers use. Ranges longer than one storage binding are split into windows.
 *
 * @module
 */

import type { Gpu, Kernel } from "./gpu.ts";
import { type Tensor, window } from "./tensor.ts";
import code from "./residual.wgsl" with { type: "text" };

const WG = 256;

/**
 * A run of f32 elements: a whole tensor, or `size` elements of a buffer from element `begin`
 * (a slice of an arena). WebGPU forbids binding one buffer as written and as read in the same
 * dispatch, so an output may not share its buffer with an input.
 */
export type Elements = Tensor | { buffer: GPUBuffer; begin?: number; size: number };

/** Options of {@link ResidualKernels.forward}. */
export interface ResidualForwardOptions {
  /** Written: `a + b`, same length as both. */
  out: Elements;
  a: Elements;
  b: Elements;
}

/** Options of {@link ResidualKernels.backward}. */
export interface ResidualBackwardOptions {
  /** Accumulated: `da += dout`. */
  da: Elements;
  /** Accumulated: `db += dout`. */
  db: Elements;
  dout: Elements;
}

/** Options of {@link ResidualKernels.accumulate}. */
export interface AccumulateOptions {
  /** Accumulated: `dst += factor * src`. */
  dst: Elements;
  src: Elements;
  /** Multiplier of `src`; 1 when absent (then the sum is exact f32 addition). */
  factor?: number;
}

/** Options of {@link ResidualKernels.scale}. */
export interface ScaleOptions {
  /** Scaled in place: `dst *= factor`. */
  dst: Elements;
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
    this.#run(this.kernels.forward, [out, a, b], ["out", "a", "b"], 1, 1);
  }

  /** Records `da += dout; db += dout` (the residual's gradient reaches both branches). */
  backward(options: ResidualBackwardOptions): void {
    const { da, db, dout } = options;
    this.#run(this.kernels.backward, [da, db, dout], ["da", "db", "dout"], 1, 2);
  }

  /** Records `dst += factor * src`. */
  accumulate(options: AccumulateOptions): void {
    const { dst, src, factor = 1 } = options;
    this.#run(this.kernels.accumulate, [dst, src], ["dst", "src"], factor, 1);
  }

  /** Records `dst *= factor`. */
  scale(options: ScaleOptions): void {
    this.#run(this.kernels.scale, [options.dst], ["dst"], options.factor, 1);
  }

  // The first `written` operands are outputs, the rest inputs.
  #run(
    kernel: Kernel,
    operands: Elements[],
    names: string[],
    factor: number,
    written: number,
  ): void {
    const n = operands[0].size;
    for (let w = 0; w < written; w++) {
      for (let r = written; r < operands.length; r++) {
        if (operands[w].buffer === operands[r].buffer) {
          throw new RangeError(
            `Cannot run ${kernel.key.label}: output "${names[w]}" and input "${names[r]}" ` +
              `share one buffer`,
          );
        }
      }
    }
    operands.forEach((e, k) => {
      if (e.size !== n) {
        throw new RangeError(
          `Cannot run ${kernel.key.label}: "${names[k]}" has ${e.size} elements, ` +
            `"${names[0]}" has ${n}`,
        );
      }
      if ("dtype" in e && e.dtype !== "f32") {
        throw new RangeError(
          `Cannot run ${kernel.key.label}: "${names[k]}" is ${e.dtype}, not f32`,
        );
      }
    });
    const chunk = chunkElements(this.gpu);
    for (let start = 0; start < n; start += chunk) {
      const count = Math.min(chunk, n - start);
      const windows = operands.map((e) => {
        const begin = ("begin" in e ? e.begin ?? 0 : 0) + start;
        return window(this.gpu, e.buffer, { begin, end: begin + count });
      });
      const block = new ArrayBuffer(32);
      const u32 = new Uint32Array(block);
      u32[0] = count;
      windows.forEach((w, k) => u32[1 + k] = w.shift);
      new Float32Array(block)[4] = factor;
      this.gpu.dispatch(kernel, windows.map((w) => w.binding), {
        uniforms: block,
        workgroups: grid(this.gpu, Math.ceil(count / WG)),
      });
    }
  }
}

/** Elements one dispatch may cover: a binding's worth, less the slack of an aligned offset. */
function chunkElements(gpu: Gpu): number {
  return Math.floor((gpu.maxBindingBytes - gpu.bindingAlignment) / 4);
}

// Workgroup counts past the per-dimension limit wrap into y; kernels skip the overhang.
function grid(gpu: Gpu, groups: number): [number, number] {
  const max = gpu.device.limits.maxComputeWorkgroupsPerDimension;
  return groups <= max ? [groups, 1] : [max, Math.ceil(groups / max)];
}
