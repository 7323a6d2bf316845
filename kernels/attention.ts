/**
 * Host wrapper of `attention.wgsl`: self-attention with grouped-query heads, causal (GPT-2,
 * Llama) or over every token (ViT; `causal: false` at load), forward (training and KV-cached
 * generation) and backward, without any [T, T] buffer. q, k and v are matrix views (a buffer, a
 * first element, a row stride), so one set of kernels serves a fused `[T, 3C]` projection
 * (GPT-2's c_attn, timm's qkv) and separate q, k, v projections (Llama-style models, Hugging
 * Face's ViT).
 *
 * @module
 */

import { checkDistinct } from "./dispatch.ts";
import type { BindingKind, BufferBinding, Gpu, Kernel } from "./gpu.ts";
import { type BufferView, Tensor, viewRange, window } from "./tensor.ts";
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
  Tq: "u32",
  NH: "u32",
  KVH: "u32",
  hd: "u32",
  scale: "f32",
  lo: "u32",
  hi: "u32",
  g0: "u32",
  g1: "u32",
  q: "vec2u",
  k: "vec2u",
  v: "vec2u",
  dq: "vec2u",
  dk: "vec2u",
  dv: "vec2u",
}, { wgsl: code });
// llvmpipe ends all loops of an invocation after 65535 iterations in total: each pass streams
// few enough rows to stay well under that, counting every loop iteration of the kernels.
const LOOP_BUDGET = 48_000;

/**
 * The most tokens a call takes on any WebGPU device: the scalar kernels' grid has one workgroup
 * per 16 query rows, and every device allows at least 65535 workgroups a dimension. Longer
 * sequences stream in passes, so neither the head size nor llvmpipe's loop limit bounds T.
 */
export const ATTENTION_MAX_TOKENS = 65535 * WG;

/** Options of {@link AttentionKernels.load}. */
export interface AttentionLoadOptions {
  /**
   * Whether query row t sees only key rows `0 ..= t` (decoders; the default), or every key row
   * (vision transformers, encoders). Compiled in: each setting is its own set of pipelines.
   */
  causal?: boolean;
  /**
   * Rows of the streamed side (keys in the forward and dq, queries in dk/dv, counted over all
   * the query heads of a kv head) per dispatch, a multiple of 16; by default as many as
   * llvmpipe's loop limit allows for the head size. Smaller values only add dispatches (and
   * exercise the multi-pass path in tests).
   */
  span?: number;
}

/** Options of {@link AttentionKernels.forward}. */
export interface AttentionForwardOptions {
  /** Output `[B, T, NH * hd]` f32: row `r` holds query row `past + r`. */
  out: BufferView;
  /** Output `[B, NH, T]` f32: log-sum-exp of each query row's scaled scores. */
  lse: BufferView;
  /**
   * Input: `B * qRows` rows of `NH * hd` queries, `ld` elements apart (a tensor or a view
   * without `ld` is dense); rows `b * qRows + r`, `r < T`, are read.
   */
  q: BufferView;
  /** Input: `B * tMax` rows of `KVH * hd` keys; rows `b * tMax + j`, `j < past + T`, are read. */
  k: BufferView;
  /** Input: values, laid out like `k`. */
  v: BufferView;
  /** Batch size. */
  B: number;
  /** Number of query rows computed, `past .. past + T - 1`. */
  T: number;
  /** Number of query heads; the head size `hd` is `out`'s row width over NH. */
  NH: number;
  /**
   * Number of key/value heads, dividing NH: query head h reads kv head `h / (NH / KVH)`; NH by
   * default.
   */
  KVH?: number;
  /** Rows of `k` and `v` already holding earlier positions (KV cache); 0 in training. */
  past?: number;
  /** Rows per batch element of `k` and `v` (the cache's capacity); `past + T` by default. */
  tMax?: number;
  /** Rows per batch element of `q`; `T` by default. */
  qRows?: number;
}

/**
 * Options of {@link AttentionKernels.backward} (training: no past, every view has `T` rows a batch
 * element).
 */
export interface AttentionBackwardOptions {
  /** Gradient of `q`, laid out like it (its own `ld`), accumulated into (+=). */
  dq: BufferView;
  /** Gradient of `k`, accumulated into (+=); may lie in `dq`'s or `dv`'s tensor. */
  dk: BufferView;
  /** Gradient of `v`, accumulated into (+=). */
  dv: BufferView;
  /** Gradient `[B, T, NH * hd]` f32 of the forward's `out`. */
  dout: BufferView;
  /** The forward's queries, `B * T` rows. */
  q: BufferView;
  /** The forward's keys, `B * T` rows. */
  k: BufferView;
  /** The forward's values, `B * T` rows. */
  v: BufferView;
  /** The forward's output `[B, T, NH * hd]`. */
  out: BufferView;
  /** The forward's `lse` `[B, NH, T]`. */
  lse: BufferView;
  /** Batch size. */
  B: number;
  /** Sequence length. */
  T: number;
  /** Number of query heads. */
  NH: number;
  /** Number of key/value heads; NH by default. */
  KVH?: number;
}

/**
 * A matrix operand as the kernels see it: its binding, and the first element and row stride
 * inside the binding.
 */
interface Matrix {
  binding: BufferBinding;
  at: readonly [number, number];
}

/** Shape of one call, checked. */
interface Shape {
  B: number;
  T: number;
  NH: number;
  KVH: number;
  hd: number;
}

/**
 * The compiled attention kernels of one device, causal or not. Methods only record work; the
 * caller flushes or reads. The head size is taken from `out` (`B * T * NH * hd` elements).
 *
 * @example GPT-2 style: 2 heads of size 4 over one fused `[B, T, 3C]` buffer
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { Tensor } from "./kernels/tensor.ts";
 * import { AttentionKernels } from "./kernels/attention.ts";
 * using gpu = await Gpu.acquire();
 * const attention = await AttentionKernels.load(gpu);
 * const [B, T, NH, C] = [2, 5, 2, 8];
 * using qkv = Tensor.from(gpu, new Float32Array(B * T * 3 * C).fill(0.1), [B, T, 3 * C]);
 * using out = Tensor.empty(gpu, [B, T, C]);
 * using lse = Tensor.empty(gpu, [B, NH, T]);
 * const ld = 3 * C;
 * attention.forward({
 *   out,
 *   lse,
 *   q: { tensor: qkv, ld },
 *   k: { tensor: qkv, offset: C, ld },
 *   v: { tensor: qkv, offset: 2 * C, ld },
 *   B,
 *   T,
 *   NH,
 * });
 * console.log(await out.read());
 * ```
 *
 * @example Grouped-query attention: 4 query heads share 2 kv heads, separate tensors
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { Tensor } from "./kernels/tensor.ts";
 * import { AttentionKernels } from "./kernels/attention.ts";
 * using gpu = await Gpu.acquire();
 * const attention = await AttentionKernels.load(gpu);
 * const [B, T, NH, KVH, hd] = [1, 3, 4, 2, 8];
 * using q = Tensor.from(gpu, new Float32Array(B * T * NH * hd).fill(0.1), [B, T, NH * hd]);
 * using k = Tensor.from(gpu, new Float32Array(B * T * KVH * hd).fill(0.2), [B, T, KVH * hd]);
 * using v = Tensor.from(gpu, new Float32Array(B * T * KVH * hd).fill(0.3), [B, T, KVH * hd]);
 * using out = Tensor.empty(gpu, [B, T, NH * hd]);
 * using lse = Tensor.empty(gpu, [B, NH, T]);
 * attention.forward({ out, lse, q, k, v, B, T, NH, KVH });
 * ```
 *
 * @example ViT style: every token sees every token, separate q, k and v
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { Tensor } from "./kernels/tensor.ts";
 * import { AttentionKernels } from "./kernels/attention.ts";
 * using gpu = await Gpu.acquire();
 * const attention = await AttentionKernels.load(gpu, { causal: false });
 * const [B, T, NH, hd] = [2, 10, 3, 8];
 * const x = () => Tensor.from(gpu, new Float32Array(B * T * NH * hd).fill(0.1), [B, T, NH * hd]);
 * using q = x();
 * using k = x();
 * using v = x();
 * using out = Tensor.empty(gpu, [B, T, NH * hd]);
 * using lse = Tensor.empty(gpu, [B, NH, T]);
 * attention.forward({ out, lse, q, k, v, B, T, NH });
 * ```
 */
export class AttentionKernels {
  private constructor(
    readonly gpu: Gpu,
    /** Whether query row t sees only key rows `0 ..= t`. */
    readonly causal: boolean,
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
   * @param options Causal or not, rows streamed per dispatch.
   * @returns The kernels.
   */
  static async load(gpu: Gpu, options: AttentionLoadOptions = {}): Promise<AttentionKernels> {
    const { span, causal = true } = options;
    if (span !== undefined && (!Number.isSafeInteger(span) || span <= 0 || span % KB !== 0)) {
      throw new RangeError(`Attention span must be a positive multiple of ${KB}, got ${span}`);
    }
    // Two outputs, then inputs: forward out, lse | q, k, v; dq: dq, delta | dout, q, k, v, out,
    // lse; dk/dv: dk, dv | dout, q, k, v, lse, delta.
    const bindings = (reads: number): BindingKind[] => [
      "storage",
      "storage",
      ...Array<BindingKind>(reads).fill("read"),
      "uniform",
    ];
    const [forwardBindings, backwardBindings] = [bindings(3), bindings(6)];
    const kernel = (entry: string, bindings: readonly BindingKind[], wg = WG) =>
      gpu.kernel({
        label: causal ? entry : entry.replace("attention_", "attention_full_"),
        code,
        entry,
        bindings,
        constants: { WG: wg, KB, CAUSAL: causal ? 1 : 0 },
      });
    const [forward, dq, dkv, forward4, dq4, dkv4] = await Promise.all([
      kernel("attention_forward", forwardBindings),
      kernel("attention_backward_dq", backwardBindings),
      kernel("attention_backward_dkv", backwardBindings),
      kernel("attention_forward_vec4", forwardBindings, WG4),
      kernel("attention_backward_dq_vec4", backwardBindings, WG4),
      kernel("attention_backward_dkv_vec4", backwardBindings, WG4),
    ]);
    const vec4 = { forward: forward4, dq: dq4, dkv: dkv4 };
    return new AttentionKernels(gpu, causal, forward, dq, dkv, vec4, span);
  }

  /**
   * Records the forward: `out = softmax(q k^T / sqrt(hd) + mask) v` per query head (over its kv
   * head), for query rows `past .. past + T - 1` over key rows `0 ..= t` (causal) or all key rows
   * `0 .. past + T - 1`, and the log-sum-exp of every row.
   *
   * @param options Outputs, inputs and sizes.
   * @throws {RangeError} On sizes that do not fit together or operands too small for them.
   */
  forward(options: AttentionForwardOptions): void {
    const { B, T } = options;
    const past = options.past ?? 0;
    const tMax = options.tMax ?? past + T;
    const qRows = options.qRows ?? T;
    checkCount("past", past);
    checkCount("tMax", tMax);
    checkCount("qRows", qRows);
    if (past + T > tMax) {
      throw new RangeError(`Attention rows past + T = ${past + T} exceed tMax = ${tMax}`);
    }
    if (T > qRows) throw new RangeError(`Attention rows T = ${T} exceed qRows = ${qRows}`);
    const shape = this.#shape(options.out, options);
    if (B === 0 || T === 0) return;
    const { NH, KVH, hd } = shape;
    checkDistinct("attention_forward", { out: options.out, lse: options.lse }, {
      q: options.q,
      k: options.k,
      v: options.v,
    });
    const out = this.#dense("out", options.out, B * T * NH * hd);
    const lse = this.#dense("lse", options.lse, B * NH * T);
    const q = this.#matrix("q", options.q, { B, perBatch: qRows, used: T, width: NH * hd });
    const k = this.#matrix("k", options.k, { B, perBatch: tMax, used: past + T, width: KVH * hd });
    const v = this.#matrix("v", options.v, { B, perBatch: tMax, used: past + T, width: KVH * hd });
    const vec4 = aligned(hd, [out, lse], [q, k, v]);
    const kernel = vec4 ? this.vec4.forward : this.forwardKernel;
    const workgroups = this.#grid(shape, NH, vec4);
    const span = this.#span(hd, vec4);
    const buffers = [out, lse, q.binding, k.binding, v.binding];
    // Key ranges in order: each pass resumes from the out and lse of the ones before.
    for (let lo = 0; lo < past + T; lo += span) {
      const hi = Math.min(lo + span, past + T);
      const uniforms = sizes(shape, { past, tMax, qRows, lo, hi, q, k, v });
      this.gpu.dispatch(kernel, buffers, { uniforms, workgroups });
    }
  }

  /**
   * Records the backward: adds the gradients of q, k and v into `dq`, `dk` and `dv`,
   * recomputing the probabilities from q, k and `lse`. The dq dispatches (one per key range) run
   * before the dk/dv ones (one per query range and group of query heads), and within a dispatch
   * each gradient element has exactly one writer, which sums a kv head's query heads in order,
   * so the result is deterministic.
   *
   * @param options Gradient outputs, inputs and sizes.
   * @throws {RangeError} On sizes that do not fit together or operands too small for them.
   */
  backward(options: AttentionBackwardOptions): void {
    const { B, T } = options;
    const shape = this.#shape(options.out, options);
    if (B === 0 || T === 0) return;
    const { NH, KVH, hd } = shape;
    checkDistinct(
      "attention_backward",
      { dq: options.dq, dk: options.dk, dv: options.dv },
      {
        dout: options.dout,
        q: options.q,
        k: options.k,
        v: options.v,
        out: options.out,
        lse: options.lse,
      },
    );
    const qShape = { B, perBatch: T, used: T, width: NH * hd };
    const kvShape = { B, perBatch: T, used: T, width: KVH * hd };
    const dq = this.#matrix("dq", options.dq, qShape);
    const dk = this.#matrix("dk", options.dk, kvShape);
    const dv = this.#matrix("dv", options.dv, kvShape);
    const q = this.#matrix("q", options.q, qShape);
    const k = this.#matrix("k", options.k, kvShape);
    const v = this.#matrix("v", options.v, kvShape);
    const dout = this.#dense("dout", options.dout, B * T * NH * hd);
    const out = this.#dense("out", options.out, B * T * NH * hd);
    const lse = this.#dense("lse", options.lse, B * NH * T);
    const vec4 = aligned(hd, [dout, out, lse], [dq, dk, dv, q, k, v]);
    const [dqKernel, dkvKernel] = vec4
      ? [this.vec4.dq, this.vec4.dkv]
      : [this.dqKernel, this.dkvKernel];
    const span = this.#span(hd, vec4);
    const delta = this.gpu.buffer(B * NH * T * 4);
    const views = { past: 0, tMax: T, qRows: T, q, k, v, dq, dk, dv };
    // The pass with lo = 0 writes delta, which every dk/dv pass reads.
    const dqGrid = this.#grid(shape, NH, vec4);
    for (let lo = 0; lo < T; lo += span) {
      const uniforms = sizes(shape, { ...views, lo, hi: Math.min(lo + span, T) });
      const buffers = [dq.binding, delta, dout, q.binding, k.binding, v.binding, out, lse];
      this.gpu.dispatch(dqKernel, buffers, { uniforms, workgroups: dqGrid });
    }
    // A pass streams `rows` query rows of `heads` query heads of each kv head's group.
    const group = NH / KVH;
    const rows = Math.min(span, T);
    const heads = Math.max(1, Math.min(group, Math.floor(span / (4 * Math.ceil(rows / 4) + 4))));
    const dkvGrid = this.#grid(shape, KVH, vec4);
    const buffers = [dk.binding, dv.binding, dout, q.binding, k.binding, v.binding, lse, delta];
    for (let g0 = 0; g0 < group; g0 += heads) {
      for (let lo = 0; lo < T; lo += rows) {
        const pass = { lo, hi: Math.min(lo + rows, T), g0, g1: Math.min(g0 + heads, group) };
        const uniforms = sizes(shape, { ...views, ...pass });
        this.gpu.dispatch(dkvKernel, buffers, { uniforms, workgroups: dkvGrid });
      }
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

  // The head size from `out`'s element count, with the checks every entry point shares.
  #shape(out: BufferView, options: { B: number; T: number; NH: number; KVH?: number }): Shape {
    const { B, T, NH } = options;
    const KVH = options.KVH ?? NH;
    checkCount("B", B);
    checkCount("T", T);
    checkCount("NH", NH);
    checkCount("KVH", KVH);
    if (NH === 0) throw new RangeError("Attention needs at least one head, got NH = 0");
    if (KVH === 0 || NH % KVH !== 0) {
      throw new RangeError(
        `Attention query heads NH = ${NH} must be a multiple of the kv heads KVH = ${KVH}`,
      );
    }
    if (B === 0 || T === 0) return { B, T, NH, KVH, hd: 0 };
    const n = viewRange(out).size;
    const hd = n / (B * T * NH);
    if (!Number.isInteger(hd) || hd === 0) {
      throw new RangeError(
        `Attention output of ${n} elements is not [B=${B}, T=${T}, NH * hd] with NH = ${NH}`,
      );
    }
    if (hd > ATTENTION_MAX_HEAD_SIZE) {
      throw new RangeError(
        `Attention head size ${hd} exceeds the kernels' maximum of ${ATTENTION_MAX_HEAD_SIZE}`,
      );
    }
    return { B, T, NH, KVH, hd };
  }

  // A dense operand: the kernels index it from its binding's start, so it must start there.
  #dense(name: string, view: BufferView, want: number): BufferBinding {
    checkSize(name, view, want);
    const { tensor, offset } = viewRange(view);
    const { binding, shift } = window(this.gpu, tensor.buffer, {
      begin: offset,
      end: offset + want,
    });
    if (shift !== 0) {
      throw new RangeError(
        `Attention ${name} must start on a ${this.gpu.bindingAlignment}-byte boundary of its ` +
          `buffer`,
      );
    }
    return binding;
  }

  // A matrix operand of `B * perBatch` rows of `width` (rows `used` .. `perBatch` of each batch
  // element are not read), bound from its first element to the last one read.
  #matrix(
    name: string,
    view: BufferView,
    shape: { B: number; perBatch: number; used: number; width: number },
  ): Matrix {
    const { B, perBatch, used, width } = shape;
    const ld = view instanceof Tensor ? width : view.ld ?? width;
    if (!Number.isSafeInteger(ld) || ld < width) {
      throw new RangeError(`Attention ${name} rows of ${width} elements cannot be ${ld} apart`);
    }
    const { tensor, offset, size } = viewRange(view);
    const extent = ((B - 1) * perBatch + used - 1) * ld + width;
    if (view instanceof Tensor ? size !== B * perBatch * width : size < extent) {
      const want = view instanceof Tensor ? B * perBatch * width : extent;
      throw new RangeError(
        `Attention ${name} has ${size} elements, expected ${want}` +
          (view instanceof Tensor ? ` (shape [${view.shape}])` : ` (rows ${ld} apart)`),
      );
    }
    const { binding, shift } = window(this.gpu, tensor.buffer, {
      begin: offset,
      end: offset + extent,
    });
    checkElements(name, shift + extent);
    return { binding, at: [shift, ld] };
  }

  #grid(shape: Shape, heads: number, vec4: boolean): [number, number, number] {
    const max = this.gpu.device.limits.maxComputeWorkgroupsPerDimension;
    const rows = vec4 ? WG4 * ROWS4 : WG;
    const grid: [number, number, number] = [Math.ceil(shape.T / rows), heads, shape.B];
    if (grid.some((n) => n > max)) {
      throw new RangeError(
        `Attention grid ${grid.join("x")} (row blocks x heads x B) exceeds ${max} workgroups a ` +
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
  checkElements(name, want);
}

// Offsets inside the kernels are u32.
function checkElements(name: string, n: number): void {
  if (n >= 2 ** 32) {
    throw new RangeError(`Attention ${name} of ${n} elements is past 2^32 elements`);
  }
}

// The vec4 kernels read rows of hd floats as vec4s: hd, every binding's start and every matrix
// view's first element and row stride must allow it.
function aligned(hd: number, dense: readonly BufferBinding[], matrices: readonly Matrix[]) {
  const bindings = [...dense, ...matrices.map((m) => m.binding)];
  return hd % 4 === 0 && bindings.every((b) => (b.offset ?? 0) % 16 === 0) &&
    matrices.every(({ at }) => at[0] % 4 === 0 && at[1] % 4 === 0);
}

interface Pass {
  past: number;
  tMax: number;
  qRows: number;
  /** The streamed rows of this pass: [lo, hi). */
  lo: number;
  hi: number;
  /** dk/dv: the query heads [g0, g1) of each kv head's group. */
  g0?: number;
  g1?: number;
  q: Matrix;
  k: Matrix;
  v: Matrix;
  dq?: Matrix;
  dk?: Matrix;
  dv?: Matrix;
}

function sizes(shape: Shape, pass: Pass): ArrayBuffer {
  const { B, T, NH, KVH, hd } = shape;
  const none = [0, 0] as const;
  return SIZES.pack({
    B,
    T,
    past: pass.past,
    Tmax: pass.tMax,
    Tq: pass.qRows,
    NH,
    KVH,
    hd,
    scale: 1 / Math.sqrt(hd),
    lo: pass.lo,
    hi: pass.hi,
    g0: pass.g0 ?? 0,
    g1: pass.g1 ?? 0,
    q: pass.q.at,
    k: pass.k.at,
    v: pass.v.at,
    dq: pass.dq?.at ?? none,
    dk: pass.dk?.at ?? none,
    dv: pass.dv?.at ?? none,
  });
}
