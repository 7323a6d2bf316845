/**
 * Host wrapper of `attention.wgsl`: GPT-2's causal multi-head self-attention, forward (training
 * and KV-cached generation) and backward, without any [T, T] buffer.
 *
 * @module
 */

import { bindView } from "./dispatch.ts";
import type { BindingKind, BufferBinding, Gpu, Kernel } from "./gpu.ts";
import { type BufferView, Tensor, viewRange } from "./tensor.ts";
import { UniformStruct } from "./uniform_struct.ts";
import code from "./attention.wgsl" with { type: "text" };

const WG = 16;
const KB = 16;
// The vec4 kernels: invocations a workgroup (one llvmpipe SIMD group) and rows an invocation.
const WG4 = 8;
const ROWS4 = 4;
/** Largest head size the kernels take (`4 * HD4_MAX` in the WGSL). */
export const ATTENTION_MAX_HEAD_SIZE = 128;
const SIZES = new UniformStruct("Sizes", {
  B: "u32",
  T: "u32",
  past: "u32",
  Tmax: "u32",
  C: "u32",
  NH: "u32",
  hd: "u32",
  scale: "f32",
  lo: "u32",
  hi: "u32",
}, { wgsl: code });
// llvmpipe ends all loops of an invocation after 65535 iterations in total: each pass streams
// few enough rows to stay well under that, counting every loop iteration of the kernels.
const LOOP_BUDGET = 48_000;

/** Options of {@link AttentionKernels.load}. */
export interface AttentionLoadOptions {
  /**
   * Rows of the streamed side (keys in the forward and dq, queries in dk/dv) per dispatch, a
   * multiple of 16; by default as many as llvmpipe's loop limit allows for the head size.
   * Smaller values only add dispatches (and exercise the multi-pass path in tests).
   */
  span?: number;
}

/** Options of {@link AttentionKernels.forward}. */
export interface AttentionForwardOptions {
  /** Output `[B, T, C]` f32: row `t - past` holds query row `t`. */
  out: BufferView;
  /** Output `[B, NH, T]` f32: log-sum-exp of each query row's scaled scores. */
  lse: BufferView;
  /** Input `[B, tMax, 3C]` f32, `c_attn`'s output: q | k | v. */
  qkv: BufferView;
  /** Batch size. */
  B: number;
  /** Number of query rows computed, `past .. past + T - 1`. */
  T: number;
  /** Number of heads; `C / NH` is the head size. */
  NH: number;
  /** Rows of `qkv` already holding earlier positions' k and v (KV cache); 0 in training. */
  past?: number;
  /** Rows per batch element of `qkv` (its batch stride is `tMax * 3C`); `past + T` by default. */
  tMax?: number;
}

/** Options of {@link AttentionKernels.backward} (training: no past, `qkv` is `[B, T, 3C]`). */
export interface AttentionBackwardOptions {
  /** Gradient `[B, T, 3C]` f32 of `qkv`, accumulated into (+=). */
  dqkv: BufferView;
  /** Gradient `[B, T, C]` f32 of the forward's `out`. */
  dout: BufferView;
  /** The forward's input `[B, T, 3C]`. */
  qkv: BufferView;
  /** The forward's output `[B, T, C]`. */
  out: BufferView;
  /** The forward's `lse` `[B, NH, T]`. */
  lse: BufferView;
  /** Batch size. */
  B: number;
  /** Sequence length. */
  T: number;
  /** Number of heads. */
  NH: number;
}

/**
 * The compiled attention kernels of one device. Methods only record work; the caller flushes or
 * reads. The channel count C is taken from `out` (`B * T * C` elements).
 *
 * @example Attention over a batch of two 5-token sequences with 2 heads of size 4
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { Tensor } from "./kernels/tensor.ts";
 * import { AttentionKernels } from "./kernels/attention.ts";
 * using gpu = await Gpu.acquire();
 * const attention = await AttentionKernels.load(gpu);
 * using qkv = Tensor.from(gpu, new Float32Array(2 * 5 * 24).fill(0.1), [2, 5, 24]);
 * using out = Tensor.empty(gpu, [2, 5, 8]);
 * using lse = Tensor.empty(gpu, [2, 2, 5]);
 * attention.forward({ out, lse, qkv, B: 2, T: 5, NH: 2 });
 * console.log(await out.read());
 * ```
 */
export class AttentionKernels {
  private constructor(
    readonly gpu: Gpu,
    readonly forwardKernel: Kernel,
    readonly dqKernel: Kernel,
    readonly dkvKernel: Kernel,
    readonly vec4: { forward: Kernel; dq: Kernel; dkv: Kernel },
    readonly span: number | undefined,
  ) {}

  /**
   * Compiles the kernels (cached by the device).
   *
   * @param gpu The device.
   * @param options Rows streamed per dispatch.
   * @returns The kernels.
   */
  static async load(gpu: Gpu, options: AttentionLoadOptions = {}): Promise<AttentionKernels> {
    const { span } = options;
    if (span !== undefined && (!Number.isSafeInteger(span) || span <= 0 || span % KB !== 0)) {
      throw new RangeError(`Attention span must be a positive multiple of ${KB}, got ${span}`);
    }
    const forwardBindings = ["storage", "storage", "read", "uniform"] as const;
    const dqBindings = ["storage", "storage", "read", "read", "read", "read", "uniform"] as const;
    const dkvBindings = ["storage", "read", "read", "read", "read", "uniform"] as const;
    const kernel = (entry: string, bindings: readonly BindingKind[], wg = WG) =>
      gpu.kernel({ label: entry, code, entry, bindings, constants: { WG: wg, KB } });
    const [forward, dq, dkv, forward4, dq4, dkv4] = await Promise.all([
      kernel("attention_forward", forwardBindings),
      kernel("attention_backward_dq", dqBindings),
      kernel("attention_backward_dkv", dkvBindings),
      kernel("attention_forward_vec4", forwardBindings, WG4),
      kernel("attention_backward_dq_vec4", dqBindings, WG4),
      kernel("attention_backward_dkv_vec4", dkvBindings, WG4),
    ]);
    const vec4 = { forward: forward4, dq: dq4, dkv: dkv4 };
    return new AttentionKernels(gpu, forward, dq, dkv, vec4, span);
  }

  /**
   * Records the forward: `out = softmax(q k^T / sqrt(hd) + causal mask) v` per head, for query
   * rows `past .. past + T - 1` over key rows `0 ..= t`, and the log-sum-exp of every row.
   *
   * @param options Outputs, input and sizes.
   */
  forward(options: AttentionForwardOptions): void {
    const { B, T, NH } = options;
    const past = options.past ?? 0;
    const tMax = options.tMax ?? past + T;
    checkCount("past", past);
    checkCount("tMax", tMax);
    if (past + T > tMax) {
      throw new RangeError(`Attention rows past + T = ${past + T} exceed tMax = ${tMax}`);
    }
    const C = this.#channels(options.out, { B, T, NH });
    if (B === 0 || T === 0) return;
    checkSize("qkv", options.qkv, B * tMax * 3 * C);
    checkSize("lse", options.lse, B * NH * T);
    const buffers = [
      this.#bind("out", options.out),
      this.#bind("lse", options.lse),
      this.#bind("qkv", options.qkv),
    ];
    const vec4 = aligned(C / NH, buffers);
    const kernel = vec4 ? this.vec4.forward : this.forwardKernel;
    const workgroups = this.#grid({ B, T, NH }, vec4);
    const span = this.#span(C / NH, vec4);
    // Key ranges in order: each pass resumes from the out and lse of the ones before.
    for (let lo = 0; lo < past + T; lo += span) {
      const hi = Math.min(lo + span, past + T);
      this.gpu.dispatch(kernel, buffers, {
        uniforms: sizes({ B, T, past, tMax, C, NH, lo, hi }),
        workgroups,
      });
    }
  }

  /**
   * Records the backward: adds the gradients of q, k and v into `dqkv`, recomputing the
   * probabilities from `qkv` and `lse`. The dq dispatches (one per key range) run before the
   * dk/dv ones (one per query range), and within a dispatch each gradient element has exactly one
   * writer, so the result is deterministic.
   *
   * @param options Gradient output, inputs and sizes.
   */
  backward(options: AttentionBackwardOptions): void {
    const { B, T, NH } = options;
    const C = this.#channels(options.out, { B, T, NH });
    if (B === 0 || T === 0) return;
    checkSize("dout", options.dout, B * T * C);
    checkSize("qkv", options.qkv, B * T * 3 * C);
    checkSize("dqkv", options.dqkv, B * T * 3 * C);
    checkSize("lse", options.lse, B * NH * T);
    const delta = this.gpu.buffer(B * NH * T * 4);
    const dqkv = this.#bind("dqkv", options.dqkv);
    const dout = this.#bind("dout", options.dout);
    const qkv = this.#bind("qkv", options.qkv);
    const lse = this.#bind("lse", options.lse);
    const out = this.#bind("out", options.out);
    const vec4 = aligned(C / NH, [dqkv, dout, qkv, out]);
    const [dqKernel, dkvKernel] = vec4
      ? [this.vec4.dq, this.vec4.dkv]
      : [this.dqKernel, this.dkvKernel];
    const workgroups = this.#grid({ B, T, NH }, vec4);
    const span = this.#span(C / NH, vec4);
    // The pass with lo = 0 writes delta, which every dk/dv pass reads.
    for (let lo = 0; lo < T; lo += span) {
      const uniforms = sizes({ B, T, past: 0, tMax: T, C, NH, lo, hi: Math.min(lo + span, T) });
      this.gpu.dispatch(dqKernel, [dqkv, delta, dout, qkv, out, lse], {
        uniforms,
        workgroups,
      });
    }
    for (let lo = 0; lo < T; lo += span) {
      const uniforms = sizes({ B, T, past: 0, tMax: T, C, NH, lo, hi: Math.min(lo + span, T) });
      this.gpu.dispatch(dkvKernel, [dqkv, dout, qkv, lse, delta], { uniforms, workgroups });
    }
    this.gpu.release(delta);
  }

  // Rows streamed per pass. Scalar kernels: each streamed row costs about 2 * hd / 4 + 3 loop
  // iterations (two dot-product loops and the loops over rows and blocks), each pass up to
  // 10 * hd / 4 more. vec4 kernels: each step of 4 streamed rows costs 2 * hd / 4 + 1, each
  // pass 3 * hd / 4 more (zeroing, resuming, storing).
  #span(hd: number, vec4: boolean): number {
    if (this.span) return this.span;
    const h4 = Math.ceil(hd / 4);
    const rows = vec4
      ? ROWS4 * Math.floor((LOOP_BUDGET - 4 * h4 - 64) / (2 * h4 + 1))
      : Math.floor((LOOP_BUDGET - 10 * h4 - 64) / (2 * h4 + 4));
    return Math.max(KB, Math.floor(rows / KB) * KB);
  }

  // C from `out`'s element count, with the checks every entry point shares.
  #channels(out: BufferView, shape: { B: number; T: number; NH: number }): number {
    const { B, T, NH } = shape;
    checkCount("B", B);
    checkCount("T", T);
    checkCount("NH", NH);
    if (NH === 0) throw new RangeError("Attention needs at least one head, got NH = 0");
    if (B === 0 || T === 0) return 0;
    const n = viewRange(out).size;
    const C = n / (B * T);
    if (!Number.isInteger(C) || C === 0 || C % NH !== 0) {
      throw new RangeError(
        `Attention output of ${n} elements is not [B=${B}, T=${T}, C] with C a multiple of ` +
          `NH = ${NH}`,
      );
    }
    const hd = C / NH;
    if (hd > ATTENTION_MAX_HEAD_SIZE) {
      throw new RangeError(
        `Attention head size ${hd} exceeds the kernels' maximum of ${ATTENTION_MAX_HEAD_SIZE}`,
      );
    }
    return C;
  }

  // The kernels index their bindings from 0: an operand must start at a binding boundary.
  #bind(name: string, view: BufferView): BufferBinding {
    const { binding, shift } = bindView(this.gpu, view);
    if (shift !== 0) {
      throw new RangeError(
        `Attention ${name} must start on a ${this.gpu.bindingAlignment}-byte boundary of its ` +
          `buffer`,
      );
    }
    return binding;
  }

  #grid(shape: { B: number; T: number; NH: number }, vec4: boolean): [number, number, number] {
    const max = this.gpu.device.limits.maxComputeWorkgroupsPerDimension;
    const rows = vec4 ? WG4 * ROWS4 : WG;
    const grid: [number, number, number] = [Math.ceil(shape.T / rows), shape.NH, shape.B];
    if (grid.some((n) => n > max)) {
      throw new RangeError(
        `Attention grid ${grid.join("x")} (row blocks x NH x B) exceeds ${max} workgroups a ` +
          `dimension`,
      );
    }
    return grid;
  }
}

function checkCount(name: string, n: number): void {
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new RangeError(`Attention ${name} must be a non-negative integer, got ${n}`);
  }
}

// A tensor must match exactly (its shape says what it is); a window must be large enough.
function checkSize(name: string, x: BufferView, want: number): void {
  const n = viewRange(x).size;
  if (x instanceof Tensor ? n !== want : n < want) {
    throw new RangeError(
      `Attention ${name} has ${n} elements, expected ${want}` +
        (x instanceof Tensor ? ` (shape [${x.shape}])` : ""),
    );
  }
  // Offsets inside the kernels are u32.
  if (want >= 2 ** 32) {
    throw new RangeError(`Attention ${name} of ${want} elements is past 2^32 elements`);
  }
}

// The vec4 kernels read rows of hd floats as vec4s: hd and every binding's start must allow it.
function aligned(hd: number, bindings: readonly BufferBinding[]): boolean {
  return hd % 4 === 0 && bindings.every((b) => (b.offset ?? 0) % 16 === 0);
}

interface Sizes {
  B: number;
  T: number;
  past: number;
  tMax: number;
  C: number;
  NH: number;
  /** The streamed rows of this pass: [lo, hi). */
  lo: number;
  hi: number;
}

function sizes(s: Sizes): ArrayBuffer {
  const hd = s.C / s.NH;
  const { B, T, past, C, NH, lo, hi } = s;
  return SIZES.pack({ B, T, past, Tmax: s.tMax, C, NH, hd, scale: 1 / Math.sqrt(hd), lo, hi });
}
