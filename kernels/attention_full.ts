/**
 * Host wrapper of `attention_full.wgsl`: self-attention over every token, without a causal mask
 * (vision transformers, encoders), forward and backward, without any [T, T] buffer. q, k, v,
 * the output and the gradients are matrix views (a buffer, a first element, a row stride), so one
 * set of kernels serves a fused `[T, 3C]` qkv projection (timm's ViT) and separate q, k and v
 * projections (Hugging Face's).
 *
 * Each invocation walks all T rows of the other side in one dispatch: T is bounded so that walk
 * stays under llvmpipe's loop limit ({@link attentionFullMaxTokens}).
 *
 * @module
 */

import { checkDistinct } from "./dispatch.ts";
import type { BindingKind, BufferBinding, Gpu, Kernel } from "./gpu.ts";
import { type BufferView, Tensor, viewRange, window } from "./tensor.ts";
import { UniformStruct } from "./uniform_struct.ts";
import code from "./attention_full.wgsl" with { type: "text" };

const WG = 16;
/** Largest head size the kernels take (`4 * HD4_MAX` in the WGSL). */
export const ATTENTION_FULL_MAX_HEAD_SIZE = 128;
const SIZES = new UniformStruct("Sizes", {
  T: "u32",
  NH: "u32",
  hd: "u32",
  scale: "f32",
  stat: "u32",
  q: "vec2u",
  k: "vec2u",
  v: "vec2u",
  o: "vec2u",
  g: "vec2u",
  dq: "vec2u",
  dk: "vec2u",
  dv: "vec2u",
}, { wgsl: code });
// llvmpipe ends all loops of an invocation after 65535 iterations in total.
const LOOP_BUDGET = 48_000;

/**
 * The most tokens one call takes at head size `hd`: each row of the other side costs about
 * `2 * hd / 4 + 1` loop iterations of an invocation, which llvmpipe caps. ViT-B/16 at 224x224
 * (197 tokens, hd 64) is far below it.
 *
 * @param hd The head size.
 * @returns The largest T.
 */
export function attentionFullMaxTokens(hd: number): number {
  const h4 = Math.ceil(hd / 4);
  return Math.floor((LOOP_BUDGET - 4 * h4) / (2 * h4 + 1));
}

/** Sizes of a call: `B` sequences of `T` tokens, `NH` heads. */
export interface AttentionFullSizes {
  /** Batch size. */
  B: number;
  /** Tokens a sequence. */
  T: number;
  /** Heads; the head size is the output's row width over NH. */
  NH: number;
}

/** Options of {@link AttentionFullKernels.forward}. */
export interface AttentionFullForwardOptions extends AttentionFullSizes {
  /** Written: `B * T` dense rows of `NH * hd`; its element count gives the head size. */
  out: BufferView;
  /** Written: `[B, NH, T]`, the log-sum-exp of each query row's scaled scores. */
  lse: BufferView;
  /** Queries, `B * T` rows of `NH * hd`, `ld` apart. */
  q: BufferView;
  /** Keys, laid out like `q`. */
  k: BufferView;
  /** Values, laid out like `q`. */
  v: BufferView;
}

/** Options of {@link AttentionFullKernels.backward}. */
export interface AttentionFullBackwardOptions extends AttentionFullSizes {
  /** Gradient of `q`, accumulated into (+=). */
  dq: BufferView;
  /** Gradient of `k`, accumulated into; may lie in `dq`'s or `dv`'s tensor. */
  dk: BufferView;
  /** Gradient of `v`, accumulated into. */
  dv: BufferView;
  /** Gradient of the forward's output, `B * T` rows of `NH * hd` (`ld` apart if given). */
  dout: BufferView;
  /** The forward's queries. */
  q: BufferView;
  /** The forward's keys. */
  k: BufferView;
  /** The forward's values. */
  v: BufferView;
  /** The forward's output. */
  out: BufferView;
  /** The forward's `lse`. */
  lse: BufferView;
}

interface Matrix {
  binding: BufferBinding;
  at: readonly [number, number];
}

/**
 * The compiled non-causal attention kernels of one device. Methods only record work.
 *
 * @example 3 heads of size 8 over a fused `[B * T, 3C]` qkv, every token seeing every token
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { Tensor } from "./kernels/tensor.ts";
 * import { AttentionFullKernels } from "./kernels/attention_full.ts";
 * using gpu = await Gpu.acquire();
 * const attention = await AttentionFullKernels.load(gpu);
 * const [B, T, NH, C] = [2, 10, 3, 24];
 * using qkv = Tensor.from(gpu, new Float32Array(B * T * 3 * C).fill(0.1), [B * T, 3 * C]);
 * using out = Tensor.empty(gpu, [B * T, C]);
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
 * ```
 */
export class AttentionFullKernels {
  private constructor(
    readonly gpu: Gpu,
    readonly forwardKernel: Kernel,
    readonly dqKernel: Kernel,
    readonly dkvKernel: Kernel,
  ) {}

  /**
   * Compiles the kernels (cached by the device).
   *
   * @param gpu The device.
   * @returns The kernels.
   */
  static async load(gpu: Gpu): Promise<AttentionFullKernels> {
    const bindings = (reads: number): BindingKind[] => [
      "storage",
      "storage",
      ...Array<BindingKind>(reads).fill("read"),
      "uniform",
    ];
    const kernel = (entry: string, b: readonly BindingKind[]) =>
      gpu.kernel({ label: entry, code, entry, bindings: b, constants: { WG } });
    const [forward, dq, dkv] = await Promise.all([
      kernel("attention_full_forward", bindings(3)),
      kernel("attention_full_backward_dq", bindings(6)),
      kernel("attention_full_backward_dkv", bindings(6)),
    ]);
    return new AttentionFullKernels(gpu, forward, dq, dkv);
  }

  /**
   * Records `out = softmax(q kᵀ / sqrt(hd)) v` for every head and query row, over all `T` keys,
   * and the log-sum-exp of every row.
   *
   * @param options Outputs, inputs and sizes.
   * @throws {RangeError} On sizes that do not fit together, operands too small for them, or
   * more tokens than {@link attentionFullMaxTokens}.
   */
  forward(options: AttentionFullForwardOptions): void {
    const shape = this.#shape(options.out, options);
    if (!shape) return;
    const { hd, width } = shape;
    checkDistinct("attention_full_forward", { out: options.out, lse: options.lse }, {
      q: options.q,
      k: options.k,
      v: options.v,
    });
    const m = (name: string, view: BufferView) => this.#matrix(name, view, shape.rows, width);
    const [out, q, k, v] = [
      m("out", options.out),
      m("q", options.q),
      m("k", options.k),
      m("v", options.v),
    ];
    const lse = this.#stat("lse", options.lse, shape.stats);
    this.gpu.dispatch(this.forwardKernel, [
      out.binding,
      lse.binding,
      q.binding,
      k.binding,
      v.binding,
    ], {
      uniforms: pack(options, hd, { stat: lse.shift, q, k, v, o: out }),
      workgroups: this.#grid(options),
    });
  }

  /**
   * Records the backward: adds the gradients of q, k and v into `dq`, `dk` and `dv`, recomputing
   * the probabilities from q, k and `lse`. Each gradient element has exactly one writer, so the
   * result is deterministic.
   *
   * @param options Gradient outputs, inputs and sizes.
   * @throws {RangeError} On sizes that do not fit together or operands too small for them.
   */
  backward(options: AttentionFullBackwardOptions): void {
    const shape = this.#shape(options.out, options);
    if (!shape) return;
    const { hd, width, rows } = shape;
    checkDistinct(
      "attention_full_backward",
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
    const m = (name: keyof AttentionFullBackwardOptions) =>
      this.#matrix(name, options[name] as BufferView, rows, width);
    const [dq, dk, dv, g, q, k, v, o] = (
      ["dq", "dk", "dv", "dout", "q", "k", "v", "out"] as const
    ).map(m);
    const lse = this.#stat("lse", options.lse, shape.stats);
    const delta = this.gpu.buffer(shape.stats * 4, { label: "attention_full delta" });
    const uniforms = pack(options, hd, { stat: lse.shift, q, k, v, o, g, dq, dk, dv });
    const workgroups = this.#grid(options);
    this.gpu.dispatch(
      this.dqKernel,
      [dq.binding, delta, g.binding, q.binding, k.binding, v.binding, o.binding, lse.binding],
      { uniforms, workgroups },
    );
    this.gpu.dispatch(
      this.dkvKernel,
      [dk.binding, dv.binding, g.binding, q.binding, k.binding, v.binding, lse.binding, delta],
      { uniforms, workgroups },
    );
    this.gpu.release(delta);
  }

  // The head size from the output's element count, and the checks every call shares; null when
  // there is nothing to do.
  #shape(
    out: BufferView,
    sizes: AttentionFullSizes,
  ): { hd: number; width: number; rows: number; stats: number } | null {
    const { B, T, NH } = sizes;
    for (const [name, n] of Object.entries({ B, T, NH })) {
      if (!Number.isSafeInteger(n) || n < 0) {
        throw new RangeError(`Attention ${name} must be a non-negative integer, got ${n}`);
      }
    }
    if (NH === 0) throw new RangeError("Attention needs at least one head, got NH = 0");
    if (B === 0 || T === 0) return null;
    // The output is dense: its element count gives the head size.
    const { size } = viewRange(out);
    const hd = size / (B * T * NH);
    if (!Number.isInteger(hd) || hd === 0) {
      throw new RangeError(
        `Attention output of ${size} elements is not B=${B} x T=${T} rows of NH=${NH} heads`,
      );
    }
    if (hd > ATTENTION_FULL_MAX_HEAD_SIZE) {
      throw new RangeError(
        `Attention head size ${hd} exceeds the kernels' maximum of ${ATTENTION_FULL_MAX_HEAD_SIZE}`,
      );
    }
    const max = attentionFullMaxTokens(hd);
    if (T > max) {
      throw new RangeError(
        `Attention over ${T} tokens of head size ${hd} is more than the ${max} one pass takes`,
      );
    }
    return { hd, width: NH * hd, rows: B * T, stats: B * NH * T };
  }

  // A matrix operand of `rows` rows of `width` elements, `ld` apart, bound from its first
  // element to its last.
  #matrix(name: string, view: BufferView, rows: number, width: number): Matrix {
    const ld = view instanceof Tensor ? width : view.ld ?? width;
    if (!Number.isSafeInteger(ld) || ld < width) {
      throw new RangeError(`Attention ${name} rows of ${width} elements cannot be ${ld} apart`);
    }
    const { tensor, offset, size } = viewRange(view);
    const extent = (rows - 1) * ld + width;
    if (view instanceof Tensor ? size !== rows * width : size < extent) {
      throw new RangeError(
        `Attention ${name} has ${size} elements, expected ${
          view instanceof Tensor ? rows * width : extent
        }` +
          (view instanceof Tensor ? ` (shape [${view.shape}])` : ` (rows ${ld} apart)`),
      );
    }
    const { binding, shift } = window(this.gpu, tensor.buffer, {
      begin: offset,
      end: offset + extent,
    });
    if (shift + extent >= 2 ** 32) {
      throw new RangeError(`Attention ${name} of ${shift + extent} elements is past 2^32`);
    }
    return { binding, at: [shift, ld] };
  }

  #stat(name: string, view: BufferView, n: number): { binding: BufferBinding; shift: number } {
    const { tensor, offset, size } = viewRange(view);
    if (view instanceof Tensor ? size !== n : size < n) {
      throw new RangeError(`Attention ${name} has ${size} elements, expected ${n}`);
    }
    return window(this.gpu, tensor.buffer, { begin: offset, end: offset + n });
  }

  #grid(sizes: AttentionFullSizes): [number, number, number] {
    const max = this.gpu.device.limits.maxComputeWorkgroupsPerDimension;
    const grid: [number, number, number] = [Math.ceil(sizes.T / WG), sizes.NH, sizes.B];
    if (grid.some((n) => n > max)) {
      throw new RangeError(
        `Attention grid ${grid.join("x")} (row blocks x heads x B) exceeds ${max} workgroups a ` +
          `dimension`,
      );
    }
    return grid;
  }
}

function pack(
  sizes: AttentionFullSizes,
  hd: number,
  views:
    & { stat: number }
    & Partial<Record<"q" | "k" | "v" | "o" | "g" | "dq" | "dk" | "dv", Matrix>>,
): ArrayBuffer {
  const none = [0, 0] as const;
  const at = (m?: Matrix) => m?.at ?? none;
  return SIZES.pack({
    T: sizes.T,
    NH: sizes.NH,
    hd,
    scale: 1 / Math.sqrt(hd),
    stat: views.stat,
    q: at(views.q),
    k: at(views.k),
    v: at(views.v),
    o: at(views.o),
    g: at(views.g),
    dq: at(views.dq),
    dk: at(views.dk),
    dv: at(views.dv),
  });
}
