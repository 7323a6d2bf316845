/**
 * Host wrapper of `qmatmul.wgsl`: matrix products with a frozen weight kept packed
 * ({@link PackedTensor}: f16, bf16, int8 or nf4), widened or dequantized in registers and
 * accumulated in f32. The forward `y (+)= x · Wᵀ (+ bias)` and the backward to the activations
 * `dx (+)= dy · W` (a frozen weight needs no gradient of its own) read the same packed `[out, in]`
 * weight. Operands larger than one storage binding are split into chunks (rows of the
 * activations, rows of W), as `matmul.ts` splits its operands; a weight's absmaxes must fit in
 * one binding ({@link PackedTensor.empty} refuses one whose do not).
 *
 * @module
 */

import type { BaseFormat } from "../formats/base_quant.ts";
import type { BufferBinding, Gpu, Kernel } from "./gpu.ts";
import { formatId, type PackedTensor, weightParams } from "./packed_tensor.ts";
import { baseCodebook } from "../formats/base_quant.ts";
import { Tensor, window } from "./tensor.ts";
import { UniformStruct } from "./uniform_struct.ts";
import QMATMUL_WGSL from "./qmatmul.wgsl" with { type: "text" };
import F16_PRELUDE from "./qmatmul_f16.wgsl" with { type: "text" };
import UNPACK_PRELUDE from "./qmatmul_unpack.wgsl" with { type: "text" };

/**
 * The kernels: `tiled` (16 rows a tile, vec4 loads of the activations), `narrow` (the forward
 * with 4 rows a tile, for a few rows), `scalar` (4 x 4, any alignment).
 */
export type QMatmulVariant = "tiled" | "narrow" | "scalar";

/** How f16 weights are widened: the `f16` type (`shader-f16`) or `unpack2x16float`. */
export type F16Path = "native" | "unpack";

/** Buffers of {@link QMatmul.forwardRaw} and {@link QMatmul.backwardRaw}. */
export interface QMatmulBuffers {
  /** `y` (forward) or `dx` (backward). */
  out: GPUBuffer;
  /** `x` (forward) or `dy` (backward). */
  inp: GPUBuffer;
  /** Forward only: `[out]` added to every row. */
  bias?: GPUBuffer;
}

/**
 * Sizes and element layout of a raw product: `m` rows of activations, each `ld*` elements after
 * the previous one, from element `offset*` of its buffer.
 */
export interface QMatmulLayout {
  /** Rows of `x` and `y` (forward) or `dy` and `dx` (backward). */
  m: number;
  /** Row pitch of the input; default its width (`in` forward, `out` backward). */
  ldInp?: number;
  /** Row pitch of the output; default its width (`out` forward, `in` backward). */
  ldOut?: number;
  offsetInp?: number;
  offsetOut?: number;
  offsetBias?: number;
  /** Add to what the output holds. */
  accumulate?: boolean;
  /** Overrides the kernel choice (which falls back to `scalar` where alignment demands). */
  variant?: QMatmulVariant;
}

/** Options of {@link QMatmul.forward} and {@link QMatmul.backward}. */
export interface QMatmulOptions {
  /** Forward only: `[out]`, added to every row. */
  bias?: Tensor;
  /** Add to what `out` holds. */
  accumulate?: boolean;
  /** Where to write; allocated when absent. */
  out?: Tensor;
  /** Overrides the kernel choice. */
  variant?: QMatmulVariant;
}

/** Options of {@link QMatmul.load}. */
export interface QMatmulLoadOptions {
  /** Formats to compile kernels for; default all four. */
  formats?: readonly BaseFormat[];
  /** How to widen f16: default `native` where the device has `shader-f16`, else `unpack`. */
  f16?: F16Path | "auto";
}

/** The `Params` of `qmatmul.wgsl`, which the dequantize kernel shares with the products. */
export const QMATMUL_PARAMS = new UniformStruct("Params", {
  m: "u32",
  n: "u32",
  k: "u32",
  flags: "u32",
  ld_out: "u32",
  ld_inp: "u32",
  off_out: "u32",
  off_inp: "u32",
  off_bias: "u32",
  row_words: "u32",
  w_row0: "u32",
  code_shift: "u32",
  block: "u32",
  blocks_per_row: "u32",
  double_quant: "u32",
  zero: "u32",
}, { wgsl: QMATMUL_WGSL });

const FLAG_BIAS = 1;
const FLAG_ACCUMULATE = 2;
const MAX_GROUPS = 65535;

type Entry = "forward" | "narrow" | "backward" | "forward_scalar" | "backward_scalar";
const ENTRIES: readonly Entry[] = [
  "forward",
  "narrow",
  "backward",
  "forward_scalar",
  "backward_scalar",
];

/** Output rows and columns one workgroup covers (8 invocations along the columns). */
const GEOMETRY: Record<Entry, { rows: number; cols: number }> = {
  forward: { rows: 16, cols: 128 },
  narrow: { rows: 4, cols: 128 },
  backward: { rows: 16, cols: 256 },
  forward_scalar: { rows: 4, cols: 32 },
  backward_scalar: { rows: 4, cols: 32 },
};

/** The resolved layout of one product. */
interface Plan {
  backward: boolean;
  m: number;
  /** Output columns (forward: W's rows; backward: W's columns). */
  width: number;
  /** The reduction (forward: W's columns; backward: W's rows). */
  depth: number;
  ldInp: number;
  ldOut: number;
  offsetInp: number;
  offsetOut: number;
  offsetBias: number;
  accumulate: boolean;
}

/**
 * Quantized matrix products on the GPU. Pipelines are compiled by {@link QMatmul.load}, so
 * recording is synchronous.
 *
 * @example Multiply by an NF4 weight packed on the host
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { QMatmul } from "./kernels/qmatmul.ts";
 * import { PackedTensor } from "./kernels/quantize_base.ts";
 * import { Tensor } from "./kernels/tensor.ts";
 * import { packWeight } from "./formats/base_quant.ts";
 * using gpu = await Gpu.acquire();
 * const qmatmul = await QMatmul.load(gpu, { formats: ["nf4"] });
 * const w = new Float32Array(3 * 64).map((_, i) => Math.cos(i));
 * using packed = PackedTensor.from(gpu, packWeight(w, [3, 64], { format: "nf4" }));
 * using x = Tensor.from(gpu, new Float32Array(2 * 64).fill(0.5), [2, 64]);
 * using y = qmatmul.forward(packed, x); // [2, 3]
 * console.log(await y.read());
 * ```
 */
export class QMatmul {
  private constructor(
    readonly gpu: Gpu,
    /** How f16 weights are widened. */
    readonly f16: F16Path,
    readonly kernels: ReadonlyMap<string, Kernel>,
    readonly book: GPUBuffer,
  ) {}

  /**
   * Compiles the kernels of the given formats and uploads the codebook.
   *
   * @param gpu The device.
   * @param options Formats, and how to widen f16.
   * @returns The loaded kernels.
   * @throws {RangeError} On an unknown format, or `f16: "native"` on a device without
   * `shader-f16`.
   */
  static async load(gpu: Gpu, options: QMatmulLoadOptions = {}): Promise<QMatmul> {
    const formats = options.formats ?? ["f16", "bf16", "int8", "nf4"];
    const requested = options.f16 ?? "auto";
    if (requested === "native" && !gpu.hasF16) {
      throw new RangeError(
        `Cannot widen f16 natively: this adapter (${gpu.adapterName}) has no shader-f16; use ` +
          `f16: "unpack"`,
      );
    }
    if (!["auto", "native", "unpack"].includes(requested)) {
      throw new RangeError(`Unknown f16 path "${requested}": expected auto, native or unpack`);
    }
    const f16: F16Path = requested === "auto" ? (gpu.hasF16 ? "native" : "unpack") : requested;
    const kernels = new Map<string, Kernel>();
    await Promise.all(formats.flatMap((format) => {
      const id = formatId(format);
      if (id === undefined) {
        throw new RangeError(
          `Unknown base weight format "${format}": expected one of f16, bf16, int8, nf4`,
        );
      }
      // Only f16 kernels need the f16 type; the others compile without the extension.
      const prelude = format === "f16" && f16 === "native" ? F16_PRELUDE : UNPACK_PRELUDE;
      const code = `${prelude}\n${QMATMUL_WGSL}`;
      return ENTRIES.map(async (entry) => {
        const kernel = await gpu.kernel({
          label: `qmatmul_${entry}`,
          code,
          entry: `qmatmul_${entry}`,
          bindings: ["storage", "read", "read", "read", "read", "read", "read", "read", "uniform"],
          constants: { FORMAT: id },
        });
        kernels.set(`${format} ${entry}`, kernel);
      });
    }));
    const table = baseCodebook();
    const book = gpu.buffer(table.byteLength, { persistent: true, label: "qmatmul codebook" });
    gpu.write(book, table);
    return new QMatmul(gpu, f16, kernels, book);
  }

  /**
   * Records `out (+)= x · Wᵀ (+ bias)`: x is `[rows, in]`, out `[rows, out]`.
   *
   * @param w The packed weight, `[out, in]`.
   * @param x `[rows, in]` f32 (any leading dimensions).
   * @param options Bias, accumulate, output, variant.
   * @returns `options.out`, or a new `[rows, out]` tensor.
   */
  forward(w: PackedTensor, x: Tensor, options: QMatmulOptions = {}): Tensor {
    const { rows: outF, cols: inF } = w.layout;
    const m = this.#rowsOf(
      x,
      inF,
      `Cannot multiply [${x.shape}] by "${w.label}"ᵀ [${inF}, ${outF}]`,
    );
    const out = this.#output(options.out, m, outF, `forward of "${w.label}"`);
    if (options.bias && (options.bias.dtype !== "f32" || options.bias.size !== outF)) {
      throw new RangeError(
        `Cannot add bias [${options.bias.shape}] to "${w.label}": expected f32 [${outF}]`,
      );
    }
    this.forwardRaw(w, { out: out.buffer, inp: x.buffer, bias: options.bias?.buffer }, {
      m,
      accumulate: options.accumulate,
      variant: options.variant,
    });
    return out;
  }

  /**
   * Records `out (+)= dy · W`: dy is `[rows, out]`, out `[rows, in]`.
   *
   * @param w The packed weight, `[out, in]`.
   * @param dy `[rows, out]` f32.
   * @param options Accumulate, output, variant.
   * @returns `options.out`, or a new `[rows, in]` tensor.
   */
  backward(w: PackedTensor, dy: Tensor, options: Omit<QMatmulOptions, "bias"> = {}): Tensor {
    const { rows: outF, cols: inF } = w.layout;
    const m = this.#rowsOf(
      dy,
      outF,
      `Cannot multiply [${dy.shape}] by "${w.label}" [${outF}, ${inF}]`,
    );
    const out = this.#output(options.out, m, inF, `backward of "${w.label}"`);
    this.backwardRaw(w, { out: out.buffer, inp: dy.buffer }, {
      m,
      accumulate: options.accumulate,
      variant: options.variant,
    });
    return out;
  }

  /**
   * Records the forward on raw buffers with an explicit layout (`GpuModel.linear`'s call).
   *
   * @param w The packed weight, `[out, in]`, ready.
   * @param buffers `out` (y), `inp` (x), optional bias.
   * @param layout Rows, pitches, offsets, accumulate.
   */
  forwardRaw(w: PackedTensor, buffers: QMatmulBuffers, layout: QMatmulLayout): void {
    this.#run(w, buffers, layout, false);
  }

  /**
   * Records the backward to the activations on raw buffers (`GpuModel.linearBackward`'s call).
   *
   * @param w The packed weight, `[out, in]`, ready.
   * @param buffers `out` (dx), `inp` (dy).
   * @param layout Rows, pitches, offsets, accumulate.
   */
  backwardRaw(w: PackedTensor, buffers: QMatmulBuffers, layout: QMatmulLayout): void {
    this.#run(w, { out: buffers.out, inp: buffers.inp }, layout, true);
  }

  #rowsOf(t: Tensor, width: number, what: string): number {
    if (t.dtype !== "f32") throw new TypeError(`${what}: the input is ${t.dtype}, expected f32`);
    if (t.shape.length < 1 || t.shape[t.shape.length - 1] !== width) {
      throw new RangeError(`${what}: the input's last dimension must be ${width}`);
    }
    return t.size / width;
  }

  #output(out: Tensor | undefined, m: number, n: number, what: string): Tensor {
    if (out && (out.dtype !== "f32" || out.size !== m * n)) {
      throw new RangeError(
        `Cannot write the ${what} into ${out.dtype} [${out.shape}]: expected f32 [${m}, ${n}]`,
      );
    }
    return out ?? Tensor.empty(this.gpu, [m, n], { label: "qmatmul out" });
  }

  #run(w: PackedTensor, buffers: QMatmulBuffers, layout: QMatmulLayout, backward: boolean): void {
    const { label } = w;
    const { rows, cols, format } = w.layout;
    const what = `Cannot multiply by "${label}" (${format} [${rows}, ${cols}])`;
    if (!w.ready) throw new RangeError(`${what}: its packing was not finished`);
    if (!this.kernels.has(`${format} forward`)) {
      throw new RangeError(`${what}: no ${format} kernels were loaded (QMatmul.load formats)`);
    }
    const [width, depth] = backward ? [cols, rows] : [rows, cols];
    const plan: Plan = {
      backward,
      m: layout.m,
      width,
      depth,
      ldInp: layout.ldInp ?? depth,
      ldOut: layout.ldOut ?? width,
      offsetInp: layout.offsetInp ?? 0,
      offsetOut: layout.offsetOut ?? 0,
      offsetBias: layout.offsetBias ?? 0,
      accumulate: layout.accumulate ?? false,
    };
    if (!Number.isSafeInteger(plan.m) || plan.m < 1) {
      throw new RangeError(`${what}: m is ${plan.m}, expected an integer >= 1`);
    }
    for (const name of ["ldInp", "ldOut", "offsetInp", "offsetOut", "offsetBias"] as const) {
      if (!Number.isSafeInteger(plan[name]) || plan[name] < 0 || plan[name] >= 2 ** 32) {
        throw new RangeError(`${what}: ${name} is ${plan[name]}, expected a u32`);
      }
    }
    if (plan.ldInp < depth) throw new RangeError(`${what}: ldInp ${plan.ldInp} is below ${depth}`);
    if (plan.ldOut < width) throw new RangeError(`${what}: ldOut ${plan.ldOut} is below ${width}`);
    if (buffers.out === buffers.inp || buffers.out === buffers.bias) {
      throw new RangeError(`${what}: the output buffer is also an input`);
    }
    const need = (offset: number, ld: number, n: number) => offset + (plan.m - 1) * ld + n;
    for (
      const [name, buffer, last] of [
        ["input", buffers.inp, need(plan.offsetInp, plan.ldInp, depth)],
        ["output", buffers.out, need(plan.offsetOut, plan.ldOut, width)],
        ["bias", buffers.bias, plan.offsetBias + width],
      ] as const
    ) {
      if (buffer && last > Math.floor(buffer.size / 4)) {
        throw new RangeError(
          `${what}: the ${name} needs ${last} elements but its buffer holds ${
            Math.floor(buffer.size / 4)
          }`,
        );
      }
    }
    let variant = layout.variant ?? (!backward && plan.m <= 8 ? "narrow" : "tiled");
    if (backward && variant === "narrow") variant = "tiled";
    // The tiled kernels read the activations as vec4s: rows start on a multiple of 4, and the
    // last row's last vec4 lies in the buffer.
    const lastVec4 = Math.ceil(need(plan.offsetInp, plan.ldInp, depth) / 4) * 4;
    if (
      variant !== "scalar" && (plan.ldInp % 4 !== 0 || plan.offsetInp % 4 !== 0 ||
        lastVec4 > Math.floor(buffers.inp.size / 4))
    ) {
      variant = "scalar";
    }
    const entry: Entry = variant === "scalar"
      ? (backward ? "backward_scalar" : "forward_scalar")
      : backward
      ? "backward"
      : variant === "narrow"
      ? "narrow"
      : "forward";
    this.#chunks(w, buffers, plan, entry);
  }

  /** Splits the product into chunks whose operands each fit in one binding, and dispatches. */
  #chunks(w: PackedTensor, buffers: QMatmulBuffers, plan: Plan, entry: Entry): void {
    const { gpu } = this;
    const limit = gpu.maxBindingBytes - gpu.bindingAlignment - 64;
    const geometry = GEOMETRY[entry];
    const { rowBytes } = w.layout;
    // Rows of activations: both windows must fit, and the grid's y dimension.
    const perRow = Math.max(plan.ldInp, plan.ldOut) * 4;
    const widest = Math.max(plan.depth, plan.width) * 4 + 64;
    let rowStep = Math.floor((limit - widest) / perRow) + 1;
    rowStep = Math.min(rowStep, MAX_GROUPS * geometry.rows);
    // Rows of W: the codes window, and (forward) the grid's x dimension. Multiples of 64 keep
    // the backward's dy windows on vec4 boundaries.
    let wStep = Math.floor(limit / rowBytes);
    if (!plan.backward) wStep = Math.min(wStep, MAX_GROUPS * geometry.cols);
    if (wStep < w.layout.rows) wStep = Math.max(64, Math.floor(wStep / 64) * 64);
    if (rowStep < 1 || wStep < 1 || wStep * rowBytes > limit + 64) {
      throw new RangeError(
        `Cannot multiply by "${w.label}": one row of it or of the activations is over the ` +
          `${gpu.maxBindingBytes}-byte storage binding limit`,
      );
    }
    if (plan.backward && Math.ceil(plan.width / geometry.cols) > MAX_GROUPS) {
      throw new RangeError(
        `Cannot multiply by "${w.label}": ${plan.width} columns are over ` +
          `${MAX_GROUPS * geometry.cols}, the most one dispatch covers`,
      );
    }
    const vec4 = entry !== "forward_scalar" && entry !== "backward_scalar";
    const wp = weightParams(w.layout);
    for (let i0 = 0; i0 < plan.m; i0 += rowStep) {
      const i1 = Math.min(plan.m, i0 + rowStep);
      for (let r0 = 0; r0 < w.layout.rows; r0 += wStep) {
        const r1 = Math.min(w.layout.rows, r0 + wStep);
        // Forward: W's rows are output columns; backward: they are the reduction.
        const inpCols = plan.backward ? [r0, r1] : [0, plan.depth];
        const outCols = plan.backward ? [0, plan.width] : [r0, r1];
        const inp = this.#window(buffers.inp, plan.offsetInp, plan.ldInp, [i0, i1], inpCols, vec4);
        const out = this.#window(buffers.out, plan.offsetOut, plan.ldOut, [i0, i1], outCols, false);
        const codes = window(gpu, w.codes, {
          begin: (r0 * rowBytes) / 4,
          end: (r1 * rowBytes) / 4,
        });
        const accumulate = plan.accumulate || (plan.backward && r0 > 0);
        const bias = !plan.backward && buffers.bias !== undefined;
        const uniforms = QMATMUL_PARAMS.pack({
          m: i1 - i0,
          n: plan.backward ? r1 - r0 : r1 - r0,
          k: plan.backward ? plan.width : plan.depth,
          flags: (bias ? FLAG_BIAS : 0) | (accumulate ? FLAG_ACCUMULATE : 0),
          ld_out: plan.ldOut,
          ld_inp: plan.ldInp,
          off_out: out.shift,
          off_inp: inp.shift,
          off_bias: plan.offsetBias + r0,
          row_words: wp.row_words,
          w_row0: r0,
          code_shift: codes.shift,
          block: wp.block,
          blocks_per_row: wp.blocks_per_row,
          double_quant: wp.double_quant,
          zero: 0,
        });
        const columns = plan.backward ? plan.width : r1 - r0;
        gpu.dispatch(this.kernels.get(`${w.layout.format} ${entry}`)!, [
          out.binding,
          inp.binding,
          codes.binding,
          w.scales ?? this.book,
          w.scales2 ?? this.book,
          this.book,
          bias ? buffers.bias! : this.book,
          codes.binding,
        ], {
          uniforms,
          workgroups: [
            Math.ceil(columns / geometry.cols),
            Math.ceil((i1 - i0) / geometry.rows),
          ],
        });
      }
    }
  }

  /**
   * The binding over rows [i0, i1) and columns [c0, c1) of a row-major operand, and the element
   * shift of its (i0, c0) inside it; with `vec4`, widened to whole vec4s (the kernels mask what
   * lies past the columns).
   */
  #window(
    buffer: GPUBuffer,
    offset: number,
    ld: number,
    [i0, i1]: number[],
    [c0, c1]: number[],
    vec4: boolean,
  ): { binding: BufferBinding; shift: number } {
    const begin = offset + i0 * ld + c0;
    let end = offset + (i1 - 1) * ld + c1;
    if (vec4) end = Math.ceil(end / 4) * 4;
    return window(this.gpu, buffer, { begin, end });
  }
}
