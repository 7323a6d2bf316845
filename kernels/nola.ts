/**
 * Host wrapper of `nola.wgsl`: NOLA's factor combination `A = A0 + sum_i alpha_i A_i`,
 * `B = sum_j beta_j B_j` and the coefficient gradients `dalpha_i += <dA, A_i>`,
 * `dbeta_j += <dB, B_j>`, with every basis element regenerated (spec v1) where it is used, so no
 * `count x rows x cols` basis tensor ever exists.
 *
 * @module
 */

import { BasisFactor, type PhiloxKey } from "./basis_spec.ts";
import type { BufferBinding, Gpu, Kernel } from "./gpu.ts";
import { type Tensor, window } from "./tensor.ts";
import philoxCode from "./philox.wgsl" with { type: "text" };
import nolaCode from "./nola.wgsl" with { type: "text" };

const WG = 64;
const PARAMS_BYTES = 48;
/** Invocations the first combine pass aims for before it stops splitting the bases. */
const TARGET_INVOCATIONS = 1 << 16;
/** Fewest bases per chunk: below that, the partial sums cost more than they save. */
const MIN_CHUNK = 8;
/** Most chunks: bounds the partial sums at 16 factor-sized buffers whatever k is. */
const MAX_CHUNKS = 16;

/**
 * A run of f32 elements: a whole tensor, or `size` elements of a buffer from element `begin`
 * (a slice of a parameter or gradient arena).
 */
export type F32Elements = Tensor | { buffer: GPUBuffer; begin?: number; size: number };

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
  out: F32Elements;
  /** The `count` coefficients. */
  coeffs: F32Elements;
  /** Adds the fixed A0 term (factor A only) with its `basisScale`, `fround(1/sqrt(in))`. */
  withA0?: { scale: number };
}

/** Options of {@link NolaKernels.gradient}. */
export interface GradientOptions extends NolaBasisOptions {
  /** Accumulated: `dcoeffs[i] += <grad, basis_i>`, `count` values. */
  dcoeffs: F32Elements;
  /** The gradient of the materialized `[rows, cols]` factor. */
  grad: F32Elements;
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
    const n = checkBasis(options, "combine");
    if (options.withA0 && options.factor !== BasisFactor.A) {
      throw new RangeError("Cannot combine with A0: A0 belongs to factor A (0) only");
    }
    checkElements(options.out, n, "combine", "out");
    checkElements(options.coeffs, options.count, "combine", "coeffs");
    checkDistinct(options.out, options.coeffs, "combine", ["out", "coeffs"]);
    const blocks = Math.ceil(n / 4);
    const { chunk, chunks } = this.chunking(options.count, n);
    const coeffs = bind(gpu, options.coeffs);
    if (chunks === 1) {
      const out = bind(gpu, options.out);
      gpu.dispatch(this.kernels.forward, [out.binding, coeffs.binding], {
        uniforms: params(options, { n, chunk, chunks, shift0: out.shift, shift1: coeffs.shift }),
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
    const partial = gpu.buffer(bytes, { label: "nola partial sums" });
    gpu.dispatch(this.kernels.forward, [{ buffer: partial, size: bytes }, coeffs.binding], {
      uniforms: params(options, { n, chunk, chunks, shift0: 0, shift1: coeffs.shift }),
      workgroups: this.#grid(Math.ceil((blocks * chunks) / WG)),
    });
    const out = bind(gpu, options.out);
    gpu.dispatch(this.kernels.reduce, [out.binding, { buffer: partial, size: bytes }], {
      uniforms: params(options, { n, chunk, chunks, shift0: out.shift, shift1: 0 }),
      workgroups: this.#grid(Math.ceil(blocks / WG)),
    });
    gpu.release(partial);
  }

  /**
   * Records `dcoeffs[i] += <grad, basis_i>` (Frobenius) for every i < count: one workgroup per
   * basis, each a fixed-order tree reduction over the elements.
   *
   * @param options Accumulated coefficient gradients, factor gradient, bases and shape.
   */
  gradient(options: GradientOptions): void {
    const { gpu } = this;
    const n = checkBasis(options, "gradient");
    checkElements(options.dcoeffs, options.count, "gradient", "dcoeffs");
    checkElements(options.grad, n, "gradient", "grad");
    checkDistinct(options.dcoeffs, options.grad, "gradient", ["dcoeffs", "grad"]);
    const dcoeffs = bind(gpu, options.dcoeffs);
    const grad = bind(gpu, options.grad);
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

  // Workgroup counts past the per-dimension limit wrap into y; kernels skip the overhang.
  #grid(groups: number): [number, number] {
    const max = this.maxWorkgroups;
    return groups <= max ? [groups, 1] : [max, Math.ceil(groups / max)];
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

function checkElements(e: F32Elements, size: number, what: string, name: string): void {
  if (e.size !== size) {
    throw new RangeError(
      `Cannot run ${what}: "${name}" has ${e.size} elements, expected ${size}`,
    );
  }
  if ("dtype" in e && e.dtype !== "f32") {
    throw new RangeError(`Cannot run ${what}: "${name}" is ${e.dtype}, not f32`);
  }
}

// WebGPU forbids binding one buffer as written and as read in the same dispatch.
function checkDistinct(
  out: F32Elements,
  input: F32Elements,
  what: string,
  names: [string, string],
): void {
  if (out.buffer === input.buffer) {
    throw new RangeError(
      `Cannot run ${what}: output "${names[0]}" and input "${names[1]}" share one buffer`,
    );
  }
}

function bind(gpu: Gpu, e: F32Elements): { binding: BufferBinding; shift: number } {
  const begin = "begin" in e ? e.begin ?? 0 : 0;
  return window(gpu, e.buffer, { begin, end: begin + e.size });
}

function params(
  basis: NolaBasisOptions & { withA0?: { scale: number } },
  sizes: { n: number; chunk: number; chunks: number; shift0: number; shift1: number },
): ArrayBuffer {
  const block = new ArrayBuffer(PARAMS_BYTES);
  const u32 = new Uint32Array(block);
  const f32 = new Float32Array(block);
  u32.set([basis.key[0], basis.key[1], basis.factor, basis.count, sizes.n]);
  f32[5] = basis.scale;
  f32[6] = basis.withA0?.scale ?? 0;
  u32[7] = basis.withA0 ? 1 : 0;
  u32.set([sizes.chunk, sizes.chunks, sizes.shift0, sizes.shift1], 8);
  return block;
}
