/**
 * Host wrapper of `basis.wgsl`: NOLA basis matrices (spec v1) generated on the GPU, bit-identical
 * to {@link materializeBasis} for the uniform distribution.
 *
 * @module
 */

import {
  type BasisDistribution,
  BasisFactor,
  type MaterializeOptions,
  type PhiloxKey,
} from "./basis_spec.ts";
import { grid } from "./dispatch.ts";
import type { Gpu, Kernel } from "./gpu.ts";
import { Tensor } from "./tensor.ts";
import { UniformStruct } from "./uniform_struct.ts";
import philoxCode from "./philox.wgsl" with { type: "text" };
import basisCode from "./basis.wgsl" with { type: "text" };

/** WGSL of the Philox4x32-10 / basis v1 function library, to prepend to a kernel's source. */
export const PHILOX_WGSL: string = philoxCode;

const WG = 64;
const PARAMS = new UniformStruct("Params", {
  key: "vec2u",
  factor: "u32",
  index: "u32",
  n: "u32",
  scale: "f32",
  normal: "u32",
  count: "u32",
}, { wgsl: basisCode });

/**
 * Which basis matrix {@link BasisKernels.generate} writes: as `materializeBasis` builds it
 * (`uniform` is bit-exact with it, `normal` close to it), into `out` or a new tensor.
 */
export interface GenerateOptions extends MaterializeOptions {
  /** Tensor to write into, of `rows * cols` f32 elements; a new one when absent. */
  out?: Tensor<"f32">;
}

/** Which range of bases {@link BasisKernels.sums} reduces. */
export interface SumsOptions extends Omit<GenerateOptions, "index" | "out"> {
  /** First basis index of the range. */
  begin: number;
  /** One past the last basis index. */
  end: number;
  /** Tensor of `(end - begin) * 2` f32 elements to write into; a new one when absent. */
  out?: Tensor<"f32">;
}

/**
 * The compiled basis kernels of one device. Methods only record work; the caller flushes or
 * reads.
 *
 * @example Generate A_3 of a module and read it back
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { BasisKernels } from "./kernels/basis.ts";
 * import { BasisFactor, moduleKey } from "./kernels/basis_spec.ts";
 * using gpu = await Gpu.acquire();
 * const basis = await BasisKernels.load(gpu);
 * using a3 = basis.generate(moduleKey(0, "h.0.attn.c_attn.q"), {
 *   factor: BasisFactor.A, index: 3, rows: 8, cols: 768, scale: 0.03125,
 * });
 * console.log(await a3.read());
 * ```
 */
export class BasisKernels {
  private constructor(
    readonly gpu: Gpu,
    readonly forward: Kernel,
    readonly sumsKernel: Kernel,
    readonly maxWorkgroups: number,
  ) {}

  /**
   * Compiles the kernels (cached by the device).
   *
   * @param gpu The device.
   * @param options `maxWorkgroups`: a cap on workgroups per grid dimension below the adapter's,
   *   to exercise the spill into a second dimension on small inputs.
   * @returns The loaded kernels.
   */
  static async load(gpu: Gpu, options: { maxWorkgroups?: number } = {}): Promise<BasisKernels> {
    const code = `${philoxCode}\n${basisCode}`;
    const bindings = ["storage", "uniform"] as const;
    const [forward, sums] = await Promise.all([
      gpu.kernel({
        label: "basis_forward",
        code,
        entry: "basis_forward",
        bindings,
        constants: { WG },
      }),
      gpu.kernel({ label: "basis_sums", code, entry: "basis_sums", bindings, constants: { WG } }),
    ]);
    const limit = gpu.device.limits.maxComputeWorkgroupsPerDimension;
    return new BasisKernels(gpu, forward, sums, Math.min(limit, options.maxWorkgroups ?? limit));
  }

  /**
   * Records the generation of one basis matrix.
   *
   * @param key The module's key (`moduleKey`).
   * @param options Factor, index, shape, scale, distribution and an optional output.
   * @returns A `[rows, cols]` f32 tensor (`options.out` when given).
   */
  generate(key: PhiloxKey, options: GenerateOptions): Tensor<"f32"> {
    const { rows, cols } = options;
    const n = elementCount(rows, cols);
    checkRange(options.factor, options.index, options.index + 1);
    const out = options.out ?? Tensor.empty(this.gpu, [rows, cols], { label: "basis" });
    checkOut(out, n, "generate");
    const blocks = Math.ceil(n / 4);
    this.gpu.dispatch(this.forward, [out.buffer], {
      uniforms: params(key, { ...options, n, count: 1 }),
      workgroups: this.#grid(Math.ceil(blocks / WG)),
    });
    return out;
  }

  /**
   * Records, for every basis index in [begin, end), the sum and the sum of squares of its
   * elements: the whole generation work with almost no memory traffic, for throughput
   * measurements and cheap whole-basis checks.
   *
   * @param key The module's key (`moduleKey`).
   * @param options Factor, index range, shape, scale, distribution and an optional output.
   * @returns A `[end - begin, 2]` f32 tensor.
   */
  sums(key: PhiloxKey, options: SumsOptions): Tensor<"f32"> {
    const { begin, end } = options;
    const n = elementCount(options.rows, options.cols);
    checkRange(options.factor, begin, end);
    const count = end - begin;
    const out = options.out ?? Tensor.empty(this.gpu, [count, 2], { label: "basis sums" });
    checkOut(out, count * 2, "sums");
    this.gpu.dispatch(this.sumsKernel, [out.buffer], {
      uniforms: params(key, { ...options, index: begin, n, count }),
      workgroups: this.#grid(count),
    });
    return out;
  }

  #grid(groups: number): [number, number] {
    return grid(this.gpu, groups, { max: this.maxWorkgroups });
  }
}

function elementCount(rows: number, cols: number): number {
  const n = rows * cols;
  if (!Number.isSafeInteger(rows) || !Number.isSafeInteger(cols) || rows < 0 || cols < 0) {
    throw new RangeError(`Invalid basis shape [${rows}, ${cols}]`);
  }
  // Block indices and element offsets are u32 on the GPU.
  if (n > 2 ** 32 - 4) {
    throw new RangeError(`Basis shape [${rows}, ${cols}] has more than 2^32 - 4 elements`);
  }
  return n;
}

function checkRange(factor: number, begin: number, end: number): void {
  if (factor !== BasisFactor.A && factor !== BasisFactor.B && factor !== BasisFactor.A0) {
    throw new RangeError(`Invalid basis factor ${factor}: must be 0 (A), 1 (B) or 2 (A0)`);
  }
  if (!Number.isSafeInteger(begin) || !Number.isSafeInteger(end) || begin < 0 || end < begin) {
    throw new RangeError(`Invalid basis index range [${begin}, ${end})`);
  }
  if (end > 2 ** 32) throw new RangeError(`Basis index range [${begin}, ${end}) exceeds u32`);
  if (factor === BasisFactor.A0 && (begin !== 0 || end > 1)) {
    throw new RangeError(`Invalid basis index range [${begin}, ${end}) for A0: only index 0`);
  }
}

function checkOut(out: Tensor, n: number, what: string): void {
  if (out.dtype !== "f32" || out.size !== n) {
    throw new RangeError(
      `Cannot write basis ${what} of ${n} values into a ${out.dtype} tensor of shape ` +
        `[${out.shape}]`,
    );
  }
}

function params(
  key: PhiloxKey,
  options: {
    factor: number;
    index: number;
    n: number;
    scale: number;
    distribution?: BasisDistribution;
    count: number;
  },
): ArrayBuffer {
  return PARAMS.pack({
    key,
    factor: options.factor,
    index: options.index,
    n: options.n,
    scale: options.scale,
    normal: options.distribution === "normal",
    count: options.count,
  });
}
