/**
 * Host wrapper of `rope.wgsl`: rotary position embeddings exactly as Hugging Face's Llama
 * applies them (`rotate_half` pairs `(i, i + hd/2)` of each head, `q * cos + rotate_half(q) *
 * sin`), in place on a strided view so the q or k columns of a fused projection can be turned
 * where they lie, and the transpose rotation for the backward. The inverse frequencies (HF's
 * default, `linear` and `llama3` types) are computed here in float64, rounded to f32 and uploaded
 * once; the kernel forms each angle as HF does, the f32 product of an f32 position and an f32
 * frequency. Views larger than one storage binding are processed one window of rows at a time.
 *
 * @module
 */

import { grid, stridedWindows } from "./dispatch.ts";
import type { Gpu, Kernel } from "./gpu.ts";
import { type BufferView, Tensor, viewRange } from "./tensor.ts";
import { UniformStruct } from "./uniform_struct.ts";
import code from "./rope.wgsl" with { type: "text" };

const WG = 256;
/**
 * Angles (position times frequency) the kernel's range reduction is exact for: `2^18`, so with
 * HF's frequencies (at most 1) positions up to 262 143.
 */
export const ROPE_MAX_ANGLE = 2 ** 18;
const SIZES = new UniformStruct("Sizes", {
  rows: "u32",
  heads: "u32",
  half: "u32",
  ld: "u32",
  shift: "u32",
  seq: "u32",
  row0: "u32",
  past: "u32",
  zero: "u32",
}, { wgsl: code });

/** HF's `rope_scaling` of the types we implement (`rope_type` `linear` or `llama3`). */
export type RopeScaling =
  | {
    /** Positions divided by `factor` (HF divides the inverse frequencies instead: the same). */
    type: "linear";
    factor: number;
  }
  | {
    /** Llama 3.1's: low frequencies divided by `factor`, high ones kept, a ramp between. */
    type: "llama3";
    factor: number;
    lowFreqFactor: number;
    highFreqFactor: number;
    originalMaxPositionEmbeddings: number;
  };

/** Options of {@link ropeInvFreq}. */
export interface RopeFrequencyOptions {
  /** `rope_theta`, the base of the frequencies (10 000 in Llama 2, 500 000 in Llama 3). */
  theta: number;
  /** `rope_scaling`; none for HF's `default` type. */
  scaling?: RopeScaling;
}

/**
 * HF's inverse frequencies `1 / theta^(2i / headDim)`, `i < headDim / 2`, scaled as
 * `_compute_linear_scaling_rope_parameters` or `_compute_llama3_parameters` do, in float64.
 *
 * @param headDim Values a head, even.
 * @param options The base and the scaling.
 * @returns `headDim / 2` frequencies.
 * @throws {RangeError} On an odd head size or a base or scaling parameter out of range.
 *
 * @example Llama 2's first two frequencies for heads of 4
 * ```ts
 * import { ropeInvFreq } from "./kernels/rope.ts";
 * console.log(ropeInvFreq(4, { theta: 10000 })); // Float64Array [1, 0.01]
 * ```
 */
export function ropeInvFreq(headDim: number, options: RopeFrequencyOptions): Float64Array {
  const { theta, scaling } = options;
  const bad = (what: string) => new RangeError(`Cannot build the RoPE frequencies: ${what}`);
  if (!(Number.isInteger(headDim) && headDim > 0 && headDim % 2 === 0)) {
    throw bad(`head size ${headDim} is not a positive even integer`);
  }
  if (!(theta > 0 && Number.isFinite(theta))) throw bad(`rope_theta ${theta} is not positive`);
  const inv = Float64Array.from({ length: headDim / 2 }, (_, i) => 1 / theta ** (2 * i / headDim));
  if (!scaling) return inv;
  const { factor } = scaling;
  if (!(factor > 0 && Number.isFinite(factor))) throw bad(`factor ${factor} is not positive`);
  if (scaling.type === "linear") return inv.map((f) => f / factor);
  const { lowFreqFactor: low, highFreqFactor: high } = scaling;
  const old = scaling.originalMaxPositionEmbeddings;
  if (!(low > 0 && high > low && Number.isFinite(high))) {
    throw bad(`low_freq_factor ${low} and high_freq_factor ${high} must be 0 < low < high`);
  }
  if (!(old > 0 && Number.isFinite(old))) {
    throw bad(`original_max_position_embeddings ${old} is not positive`);
  }
  const lowFreqWavelen = old / low;
  const highFreqWavelen = old / high;
  return inv.map((f) => {
    const wavelen = 2 * Math.PI / f;
    const scaled = wavelen > lowFreqWavelen ? f / factor : f;
    const smooth = (old / wavelen - low) / (high - low);
    const medium = !(wavelen < highFreqWavelen) && !(wavelen > lowFreqWavelen);
    return medium ? (1 - smooth) * scaled / factor + smooth * scaled : scaled;
  });
}

/** The f32 inverse frequencies of one head size on the GPU; dispose to free them. */
export class RopeTable implements Disposable {
  /** The largest frequency: bounds the angles the positions reach. */
  readonly maxInvFreq: number;

  /**
   * @param tensor `[headDim / 2]` f32, the frequencies on the GPU.
   * @param values The same frequencies on the host.
   */
  constructor(readonly tensor: Tensor<"f32">, readonly values: Float32Array) {
    this.maxInvFreq = Math.max(0, ...values);
  }

  /** Values a head. */
  get headDim(): number {
    return 2 * this.values.length;
  }

  /** Frees the GPU copy. */
  [Symbol.dispose](): void {
    this.tensor[Symbol.dispose]();
  }
}

/** Options of {@link RopeKernels.forward} and {@link RopeKernels.backward}. */
export interface RopeOptions {
  /**
   * Turned in place: `B * T` rows (batch-major), `ld` elements apart (dense when the view has no
   * `ld`), each holding `heads * table.headDim` values from the row's first element. The q or k
   * columns of a fused `[B * T, (NH + 2 * KVH) * hd]` projection are `{ tensor, offset, ld }`.
   */
  x: BufferView;
  /** The inverse frequencies, from {@link RopeKernels.table}. */
  table: RopeTable;
  /** Heads in a row (`num_attention_heads` for q, `num_key_value_heads` for k). */
  heads: number;
  /** Batch size. */
  B: number;
  /** Rows a batch element: row `b * T + t` has position `past + t`. */
  T: number;
  /** Positions already in the cache; 0 by default. */
  past?: number;
}

/**
 * The compiled RoPE kernels of one device. Methods only record work.
 *
 * @example Turn one head of 4 at position 1
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { Tensor } from "./kernels/tensor.ts";
 * import { RopeKernels } from "./kernels/rope.ts";
 * using gpu = await Gpu.acquire();
 * const rope = await RopeKernels.load(gpu);
 * using table = rope.table(4, { theta: 10000 });
 * using q = Tensor.from(gpu, new Float32Array([1, 0, 0, 0]), [1, 4]);
 * rope.forward({ x: q, table, heads: 1, B: 1, T: 1, past: 1 });
 * console.log(await q.read()); // about [0.5403, 0, 0.8415, 0]: (cos 1, sin 1) in pair (0, 2)
 * ```
 */
export class RopeKernels {
  private constructor(
    readonly gpu: Gpu,
    readonly kernels: Record<"forward" | "backward", Kernel>,
  ) {}

  /** Compiles the kernels (cached by the device). */
  static async load(gpu: Gpu): Promise<RopeKernels> {
    const load = (entry: string) =>
      gpu.kernel({
        label: entry,
        code,
        entry,
        bindings: ["storage", "read", "uniform"],
        constants: { WG },
      });
    const [forward, backward] = await Promise.all([load("rope_forward"), load("rope_backward")]);
    return new RopeKernels(gpu, { forward, backward });
  }

  /**
   * Uploads the inverse frequencies of {@link ropeInvFreq}, rounded to f32, as a persistent
   * tensor.
   */
  table(headDim: number, options: RopeFrequencyOptions): RopeTable {
    const values = Float32Array.from(ropeInvFreq(headDim, options));
    const tensor = Tensor.from(this.gpu, values, [values.length], {
      persistent: true,
      label: "rope inv_freq",
    });
    return new RopeTable(tensor, values);
  }

  /** Records `x = x * cos + rotate_half(x) * sin` in place, head by head. */
  forward(options: RopeOptions): void {
    this.#run(this.kernels.forward, options);
  }

  /** Records the transpose, `dx = dy * cos - rotate_half(dy * sin)`, in place on a gradient. */
  backward(options: RopeOptions): void {
    this.#run(this.kernels.backward, options);
  }

  #run(kernel: Kernel, options: RopeOptions): void {
    const { x, table, heads, B, T, past = 0 } = options;
    const label = kernel.key.label;
    for (const [name, n] of Object.entries({ heads, B, T, past })) {
      if (!(Number.isSafeInteger(n) && n >= 0)) {
        throw new RangeError(`Cannot run ${label}: ${name} ${n} is not a non-negative integer`);
      }
    }
    const rows = B * T;
    const width = heads * table.headDim;
    if (rows === 0 || width === 0) return;
    const ld = x instanceof Tensor ? width : x.ld ?? width;
    const { tensor, size } = viewRange(x);
    if (tensor.dtype !== "f32" || !(Number.isSafeInteger(ld) && ld >= width)) {
      throw new RangeError(
        `Cannot run ${label}: "x" must be f32 rows of ${width} values (${heads} heads of ` +
          `${table.headDim}) at least that far apart, got ${tensor.dtype} rows ${ld} apart`,
      );
    }
    if (size < (rows - 1) * ld + width) {
      throw new RangeError(
        `Cannot run ${label}: "x" holds ${size} elements, not ${rows} rows of ${width} values ` +
          `${ld} apart`,
      );
    }
    const last = past + T - 1;
    if (!(Math.fround(Math.fround(last) * table.maxInvFreq) < ROPE_MAX_ANGLE)) {
      throw new RangeError(
        `Cannot run ${label}: position ${last} times frequency ${table.maxInvFreq} is past the ` +
          `kernel's angle range ${ROPE_MAX_ANGLE}`,
      );
    }
    const views = [{ view: x, ld, width }];
    for (const w of stridedWindows(this.gpu, rows, views, label)) {
      this.gpu.dispatch(kernel, [w.bindings[0], table.tensor.buffer], {
        uniforms: SIZES.pack({
          rows: w.count,
          heads,
          half: table.headDim / 2,
          ld,
          shift: w.shifts[0],
          seq: T,
          row0: w.begin,
          past,
          zero: 0,
        }),
        workgroups: grid(this.gpu, Math.ceil((w.count * width) / 2 / WG)),
      });
    }
  }
}
