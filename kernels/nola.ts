/**
 * Host wrapper of `nola.wgsl`: NOLA's factor combination `A = A0 + sum_i alpha_i A_i`,
 * `B = sum_j beta_j B_j` and the coefficient gradients `dalpha_i += <dA, A_i>`,
 * `dbeta_j += <dB, B_j>`, with every basis element regenerated (spec v1) where it is used, so no
 * `count x rows x cols` basis tensor ever exists.
 *
 * @module
 */

import { BasisFactor, type PhiloxKey } from "./basis_spec.ts";
import { bindView, checkDistinct, checkView, grid } from "./dispatch.ts";
import type { Gpu, Kernel } from "./gpu.ts";
import type { BufferView } from "./tensor.ts";
import { UniformStruct } from "./uniform_struct.ts";
import philoxCode from "./philox.wgsl" with { type: "text" };
import nolaCode from "./nola.wgsl" with { type: "text" };

const WG = 64;
const PARAMS = new UniformStruct("Params", {
  key: "vec2u",
  factor: "u32",
  count: "u32",
  n: "u32",
  scale: "f32",
  a0_scale: "f32",
  has_a0: "u32",
  chunk: "u32",
  chunks: "u32",
  shift0: "u32",
  shift1: "u32",
}, { wgsl: nolaCode });
/** Invocations the first combine pass aims for before it stops splitting the bases. */
const TARGET_INVOCATIONS = 1 << 16;
/** Fewest bases per chunk: below that, the partial sums cost more than they save. */
const MIN_CHUNK = 8;
/** Most chunks: bounds the partial sums at 16 factor-sized buffers whatever k is. */
const MAX_CHUNKS = 16;

/** What every NOLA kernel call names: which bases, how many, of what shape. */
export interface NolaBasisOptions {
  /** The module's Philox key (`moduleKey`). */
  key: PhiloxKey;
  /** Which factor: 0 (A_i) or 1 (B_j). */
  factor: 0 | 1;
  /** Number of bases (k or l), indices [0, count). */
  count: number;
  /** Rows of the factor matrix (r for A, out for B). */
  rows: number;
  /** Columns of the factor matrix (in for A, r for B). */
  cols: number;
  /** The factor's `basisScale`: `fround(1/sqrt(k))` or `fround(1/sqrt(l))`. */
  scale: number;
}

/** Options of {@link NolaKernels.combine}. */
export interface CombineOptions extends NolaBasisOptions {
  /** Written: the `[rows, cols]` factor. */
  out: BufferView;
  /** The `count` coefficients. */
  coeffs: BufferView;
  /** Adds the fixed A0 term (factor A only) with its `basisScale`, `fround(1/sqrt(in))`. */
  withA0?: { scale: number };
}

/** Options of {@link NolaKernels.gradient}. */
export interface GradientOptions extends NolaBasisOptions {
  /** Accumulated: `dcoeffs[i] += <grad, basis_i>`, `count` values. */
  dcoeffs: BufferView;
  /** The gradient of the materialized `[rows, cols]` factor. */
  grad: BufferView;
}

/** Options of {@link NolaKernels.load}. */
export interface NolaLoadOptions {
  /**
   * Bases per chunk of the first combine pass; by default chosen from the sizes (at least 8,
   * split until about 65536 invocations). Fixed per shape, so results are deterministic.
   */
  chunk?: number;
  /** A cap on workgroups per grid dimension below the adapter's, to exercise the 2-D spill. */
  maxWorkgroups?: number;
}

/**
 * The compiled NOLA kernels of one device. Methods only record work; the caller flushes or reads.
 *
 * @example Materialize A of a module from its coefficients
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { Tensor } from "./kernels/tensor.ts";
 * import { NolaKernels } from "./kernels/nola.ts";
 * import { BasisFactor, basisScale, moduleKey } from "./kernels/basis_spec.ts";
 * using gpu = await Gpu.acquire();
 * const nola = await NolaKernels.load(gpu);
 * const sizes = { k: 64, l: 64, inFeatures: 768 };
 * using alpha = Tensor.from(gpu, new Float32Array(64).fill(0.01), [64]);
 * using a = Tensor.empty(gpu, [8, 768]);
 * nola.combine({
 *   out: a, coeffs: alpha, key: moduleKey(0, "h.0.attn.c_attn.q"), factor: 0, count: 64,
 *   rows: 8, cols: 768, scale: basisScale(BasisFactor.A, sizes),
 *   withA0: { scale: basisScale(BasisFactor.A0, sizes) },
 * });
 * console.log(await a.read());
 * ```
 */
export class NolaKernels {
  private constructor(
    readonly gpu: Gpu,
    readonly kernels: Record<"forward" | "reduce" | "backward", Kernel>,
    readonly chunk: number | undefined,
    readonly maxWorkgroups: number,
  ) {}

  /**
   * Compiles the kernels (cached by the device).
   *
   * @param gpu The device.
   * @param options `chunk`: a fixed number of bases per chunk; `maxWorkgroups`: a grid cap.
   * @returns The loaded kernels.
   */
  static async load(gpu: Gpu, options: NolaLoadOptions = {}): Promise<NolaKernels> {
    const { chunk } = options;
    for (const [name, v] of [["chunk", chunk], ["maxWorkgroups", options.maxWorkgroups]]) {
      if (v !== undefined && (!Number.isSafeInteger(v) || (v as number) < 1)) {
        throw new RangeError(`Invalid NOLA ${name} ${v}: must be a positive integer`);
      }
    }
    const code = `${philoxCode}\n${nolaCode}`;
    const bindings = ["storage", "read", "uniform"] as const;
    const load = (entry: string) =>
      gpu.kernel({ label: entry, code, entry, bindings, constants: { WG } });
    const [forward, reduce, backward] = await Promise.all([
      load("nola_forward"),
      load("nola_forward_reduce"),
      load("nola_backward"),
    ]);
    const limit = gpu.device.limits.maxComputeWorkgroupsPerDimension;
    const maxWorkgroups = Math.min(limit, options.maxWorkgroups ?? limit);
    return new NolaKernels(gpu, { forward, reduce, backward }, chunk, maxWorkgroups);
  }

  /**
   * Records `out = A0 + sum_{i<count} coeffs[i] * basis_i` (A0 only with `withA0`). With many
   * bases the sum is split into chunks whose partial sums a second pass adds in a fixed order.
   *
   * @param options Output, coefficients, bases and shape.
   */
  combine(options: CombineOptions): void {
    const { gpu } = this;
    const label = "nola combine";
    const n = checkBasis(options, "combine");
    if (options.withA0 && options.factor !== BasisFactor.A) {
      throw new RangeError("Cannot combine with A0: A0 belongs to factor A (0) only");
    }
    checkView(label, "out", options.out, { size: n });
    checkView(label, "coeffs", options.coeffs, { size: options.count });
    checkDistinct(label, { out: options.out }, { coeffs: options.coeffs });
    const blocks = Math.ceil(n / 4);
    const { chunk, chunks } = this.chunking(options.count, n);
    const coeffs = bindView(gpu, options.coeffs);
    const sizes = { n, chunk, chunks };
    if (chunks === 1) {
      const out = bindView(gpu, options.out);
      gpu.dispatch(this.kernels.forward, [out.binding, coeffs.binding], {
        uniforms: params(options, { ...sizes, shift0: out.shift, shift1: coeffs.shift }),
        workgroups: this.#grid(Math.ceil(blocks / WG)),
      });
      return;
    }
    const bytes = chunks * n * 4;
    if (bytes > gpu.maxBindingBytes) {
      throw new RangeError(
        `Cannot combine ${options.count} bases of ${n} elements in ${chunks} chunks: ` +
          `${bytes} bytes of partial sums exceed one binding`,
      );
    }
    // Pooled buffers may be larger than asked for: bind only the bytes in use.
    const partial = { buffer: gpu.buffer(bytes, { label: "nola partial sums" }), size: bytes };
    gpu.dispatch(this.kernels.forward, [partial, coeffs.binding], {
      uniforms: params(options, { ...sizes, shift0: 0, shift1: coeffs.shift }),
      workgroups: this.#grid(Math.ceil((blocks * chunks) / WG)),
    });
    const out = bindView(gpu, options.out);
    gpu.dispatch(this.kernels.reduce, [out.binding, partial], {
      uniforms: params(options, { ...sizes, shift0: out.shift, shift1: 0 }),
      workgroups: this.#grid(Math.ceil(blocks / WG)),
    });
    gpu.release(partial.buffer);
  }

  /**
   * Records `dcoeffs[i] += <grad, basis_i>` (Frobenius) for every i < count: one workgroup per
   * basis, each a fixed-order tree reduction over the elements.
   *
   * @param options Accumulated coefficient gradients, factor gradient, bases and shape.
   */
  gradient(options: GradientOptions): void {
    const { gpu } = this;
    const label = "nola gradient";
    const n = checkBasis(options, "gradient");
    checkView(label, "dcoeffs", options.dcoeffs, { size: options.count });
    checkView(label, "grad", options.grad, { size: n });
    checkDistinct(label, { dcoeffs: options.dcoeffs }, { grad: options.grad });
    const dcoeffs = bindView(gpu, options.dcoeffs);
    const grad = bindView(gpu, options.grad);
    gpu.dispatch(this.kernels.backward, [dcoeffs.binding, grad.binding], {
      uniforms: params(options, {
        n,
        chunk: 0,
        chunks: 0,
        shift0: dcoeffs.shift,
        shift1: grad.shift,
      }),
      workgroups: this.#grid(options.count),
    });
  }

  /**
   * How {@link combine} splits `count` bases over a factor of `elements` elements: bases per
   * chunk, and the number of chunks (1: one pass, no partial sums).
   *
   * @param count Number of bases.
   * @param elements Elements of the factor matrix.
   * @returns `chunk` and `chunks`.
   */
  chunking(count: number, elements: number): { chunk: number; chunks: number } {
    let chunk = this.chunk;
    if (chunk === undefined) {
      const wanted = Math.ceil(TARGET_INVOCATIONS / Math.max(Math.ceil(elements / 4), 1));
      const chunks = Math.max(1, Math.min(wanted, MAX_CHUNKS, Math.ceil(count / MIN_CHUNK)));
      chunk = Math.max(1, Math.ceil(count / chunks));
    }
    return { chunk, chunks: Math.max(1, Math.ceil(count / chunk)) };
  }

  #grid(groups: number): [number, number] {
    return grid(this.gpu, groups, { max: this.maxWorkgroups });
  }
}

function checkBasis(options: NolaBasisOptions, what: string): number {
  const { factor, count, rows, cols, scale, key } = options;
  if (factor !== BasisFactor.A && factor !== BasisFactor.B) {
    throw new RangeError(`Cannot run ${what}: factor ${factor} must be 0 (A) or 1 (B)`);
  }
  for (const [name, v] of [["count", count], ["rows", rows], ["cols", cols]] as const) {
    if (!Number.isSafeInteger(v) || v < 0) {
      throw new RangeError(`Cannot run ${what}: ${name} ${v} is not a non-negative integer`);
    }
  }
  if (count > 2 ** 32 - 1) throw new RangeError(`Cannot run ${what}: count ${count} exceeds u32`);
  const n = rows * cols;
  // Block indices and element offsets are u32 on the GPU.
  if (n > 2 ** 32 - 4) {
    throw new RangeError(`Cannot run ${what}: [${rows}, ${cols}] has more than 2^32 - 4 elements`);
  }
  if (!Number.isFinite(scale)) throw new RangeError(`Cannot run ${what}: scale ${scale}`);
  if (key.length !== 2 || !key.every((w) => Number.isInteger(w) && w >= 0 && w < 2 ** 32)) {
    throw new RangeError(`Cannot run ${what}: key [${key}] must be two u32 words`);
  }
  return n;
}

function params(
  basis: NolaBasisOptions & { withA0?: { scale: number } },
  sizes: { n: number; chunk: number; chunks: number; shift0: number; shift1: number },
): ArrayBuffer {
  return PARAMS.pack({
    key: basis.key,
    factor: basis.factor,
    count: basis.count,
    scale: basis.scale,
    a0_scale: basis.withA0?.scale ?? 0,
    has_a0: basis.withA0 !== undefined,
    ...sizes,
  });
}
