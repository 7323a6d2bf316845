/**
 * Host wrapper of `fakequant.wgsl`: fake quantization of one coefficient tensor on the GPU,
 * `out = dequantize(quantize(x))` with the per-tensor scale computed from `x` itself, bit for bit
 * as {@link quantize} in `formats/quantize.ts` computes `dequantized` on the host (every bit width
 * 1 to 8, both schemes, all-zero tensors, half-to-even ties). Quantization-aware training writes
 * the quantized coefficients with it once per step without reading anything back.
 *
 * The kernel repeats the host's float64 steps in integer arithmetic, each exact result held in 64
 * bits plus a sticky bit and rounded where the host rounds (see the header of `fakequant.wgsl`).
 * One workgroup owns a tensor: the reductions (max |x|, min, max, and the 1-bit scheme's serial
 * sum of |x|) need the whole tensor before any element can be written, and coefficient tensors are
 * small (k, l up to a few thousand; at most {@link FAKEQUANT_MAX_SIZE}). A non-finite input makes
 * every output NaN (the host throws).
 *
 * @module
 */

import type { Gpu, Kernel } from "./gpu.ts";
import { type BufferView, type Tensor, viewRange, window } from "./tensor.ts";
import { checkQuantOptions, type QuantOptions } from "../formats/quantize.ts";
import code from "./fakequant.wgsl" with { type: "text" };

const WG = 256;

/** The most values one tensor may have: the 1-bit mean divides by the count in 24-bit steps. */
export const FAKEQUANT_MAX_SIZE = 2 ** 24 - 1;

/** Outputs of {@link FakequantKernels.forward}. */
export interface FakequantOutputs {
  /** Written: the fake-quantized values, as many as the input; must not overlap it. */
  out: BufferView;
  /** Written when given: two f32, the scale and the zero point (0 for the symmetric scheme). */
  stats?: Tensor;
}

/** Options of {@link FakequantKernels.forward}: the input and how to quantize it. */
export interface FakequantOptions extends QuantOptions {
  /** The tensor to quantize (its own per-tensor scale). */
  x: BufferView;
}

/**
 * The compiled fake-quantization kernel of one device. Methods only record work.
 *
 * @example 4-bit symmetric fake quantization of one tensor
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { Tensor } from "./kernels/tensor.ts";
 * import { FakequantKernels } from "./kernels/fakequant.ts";
 * using gpu = await Gpu.acquire();
 * const fq = await FakequantKernels.load(gpu);
 * using x = Tensor.from(gpu, new Float32Array([0.5, -1, 0.25]), [3]);
 * using out = Tensor.empty(gpu, [3]);
 * fq.forward({ out }, { x, bits: 4, scheme: "symmetric" });
 * console.log(await out.read()); // Float32Array [0.571.., -1, 0.285..]
 * ```
 */
export class FakequantKernels {
  private constructor(readonly gpu: Gpu, readonly kernel: Kernel) {}

  /** Compiles the kernel (cached by the device). */
  static async load(gpu: Gpu): Promise<FakequantKernels> {
    const kernel = await gpu.kernel({
      label: "fakequant_forward",
      code,
      entry: "fakequant_forward",
      bindings: ["storage", "storage", "read", "uniform"],
      constants: { WG },
    });
    return new FakequantKernels(gpu, kernel);
  }

  /**
   * Records `outputs.out = dequantize(quantize(options.x))` and, when asked, the scale and zero
   * point into `outputs.stats`.
   *
   * @throws {RangeError} On invalid bits or scheme, mismatched sizes, non-f32 tensors, more than
   * {@link FAKEQUANT_MAX_SIZE} values or an output that overlaps the input.
   */
  forward(outputs: FakequantOutputs, options: FakequantOptions): void {
    checkQuantOptions(options);
    const { stats } = outputs;
    const out = viewRange(outputs.out);
    const x = viewRange(options.x);
    for (const [name, { tensor }] of [["out", out], ["x", x]] as const) {
      if (tensor.dtype !== "f32") {
        throw new RangeError(`Fake quantization "${name}" must be f32, got ${tensor.dtype}`);
      }
    }
    if (out.size !== x.size) {
      throw new RangeError(
        `Fake quantization "out" has ${out.size} elements, "x" has ${x.size}`,
      );
    }
    if (x.size > FAKEQUANT_MAX_SIZE) {
      throw new RangeError(
        `Cannot fake-quantize ${x.size} values at once: at most ${FAKEQUANT_MAX_SIZE}`,
      );
    }
    if (stats && (stats.size !== 2 || stats.dtype !== "f32")) {
      throw new RangeError(`Fake quantization "stats" must be two f32, got [${stats.shape}]`);
    }
    const outBuffer = out.tensor.buffer;
    const xBuffer = x.tensor.buffer;
    if (
      outBuffer === xBuffer && out.offset < x.offset + x.size && x.offset < out.offset + out.size
    ) {
      throw new RangeError(`Fake quantization "out" overlaps "x" in "${xBuffer.label}"`);
    }
    if (x.size === 0) return;
    const { gpu } = this;
    const o = window(gpu, outBuffer, { begin: out.offset, end: out.offset + out.size });
    const i = window(gpu, xBuffer, { begin: x.offset, end: x.offset + x.size });
    const statsBuffer = stats?.buffer ?? gpu.buffer(8, { label: "fakequant stats" });
    const uniforms = Uint32Array.of(
      x.size,
      options.bits,
      options.scheme === "asymmetric" ? 1 : 0,
      i.shift,
      o.shift,
      0,
      0,
      0,
    );
    gpu.dispatch(this.kernel, [o.binding, { buffer: statsBuffer, size: 8 }, i.binding], {
      uniforms: uniforms.buffer,
      workgroups: [1],
    });
    if (!stats) gpu.release(statsBuffer);
  }
}
