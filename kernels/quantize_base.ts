/**
 * Host wrapper of `quantize_base.wgsl`: frozen weights packed on the GPU (f16, bf16, int8, nf4
 * with optional double quantization), bit for bit as `formats/base_quant.ts` packs them on the
 * host, and unpacked to f32 again (for merging an adapter into a copy of the base).
 *
 * A loader packs a weight without ever holding the model in f32: it allocates a
 * {@link PackedTensor}, uploads the f32 weight in chunks of rows into one reused buffer, records
 * {@link BaseQuantKernels.quantize} for each chunk, then {@link BaseQuantKernels.finish} once
 * (which double-quantizes the absmaxes, when asked, from the whole tensor's).
 *
 * @module
 */

import {
  baseCodebook,
  type BaseQuantOptions,
  type PackedLayout,
  packedLayout,
  type PackedWeight,
} from "../formats/base_quant.ts";
import { grid } from "./dispatch.ts";
import { align, type BufferBinding, type Gpu, GpuError, type Kernel } from "./gpu.ts";
import { type BufferView, Tensor, viewRange, window } from "./tensor.ts";
import { UniformStruct } from "./uniform_struct.ts";
import code from "./quantize_base.wgsl" with { type: "text" };
import QMATMUL_WGSL from "./qmatmul.wgsl" with { type: "text" };
import UNPACK_PRELUDE from "./qmatmul_unpack.wgsl" with { type: "text" };

const WG = 64;
const FORMAT_IDS = { f16: 0, bf16: 1, int8: 2, nf4: 3 } as const;
const PARAMS = new UniformStruct("Params", {
  format: "u32",
  rows: "u32",
  cols: "u32",
  row_words: "u32",
  block: "u32",
  blocks_per_row: "u32",
  blocks: "u32",
  double_quant: "u32",
  row0: "u32",
  rows_here: "u32",
  col0: "u32",
  cols_here: "u32",
  src_shift: "u32",
  src_row: "u32",
  src_col: "u32",
  code_shift: "u32",
  code_row0: "u32",
  pad0: "u32",
  pad1: "u32",
  pad2: "u32",
}, { wgsl: code });

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

/** The `FORMAT` constant of the kernels, by format. */
export function formatId(format: PackedLayout["format"]): number {
  return FORMAT_IDS[format];
}

/**
 * The uniform fields every qmatmul dispatch of `w` shares: the row pitch in u32 and the blocks
 * (one block a row, and no scale, for 16-bit formats).
 */
export function weightParams(
  layout: PackedLayout,
): { row_words: number; block: number; blocks_per_row: number; double_quant: boolean } {
  const half = layout.blockSize === 0;
  return {
    row_words: layout.rowBytes / 4,
    block: half ? align(layout.cols, 32) : layout.blockSize,
    blocks_per_row: half ? 1 : layout.blocksPerRow,
    double_quant: layout.doubleQuant,
  };
}

/**
 * A packed weight on the GPU: its codes, absmaxes and second-level scales in their own buffers
 * (persistent, exact-sized), laid out as {@link PackedLayout} says.
 *
 * @example Upload a weight packed on the host
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { PackedTensor } from "./kernels/quantize_base.ts";
 * import { packWeight } from "./formats/base_quant.ts";
 * using gpu = await Gpu.acquire();
 * using w = PackedTensor.from(gpu, packWeight(new Float32Array(64), [2, 32], { format: "nf4" }));
 * console.log(w.layout.bytes); // 56
 * ```
 */
export class PackedTensor implements Disposable {
  /** The codes: `rows` rows of `rowBytes`. */
  readonly codes: GPUBuffer;
  /** int8/nf4: the absmaxes (f32, or byte codes with double quantization). */
  readonly scales: GPUBuffer | null;
  /** Double quantization: the offset, then one absmax2 a group (f32). */
  readonly scales2: GPUBuffer | null;
  /** Set once every row holds codes (and double quantization is done): products may read it. */
  ready = false;
  /**
   * Double quantization in progress: the f32 absmaxes before {@link BaseQuantKernels.finish}.
   *
   * @internal
   */
  pending: GPUBuffer | null = null;
  /**
   * Rows (or, for transposed chunks, columns) quantized so far.
   *
   * @internal
   */
  readonly covered: { rows: Uint8Array; cols: Uint8Array };
  #disposed = false;

  private constructor(readonly gpu: Gpu, readonly layout: PackedLayout, readonly label: string) {
    const bufferOf = (bytes: number, part: string) => {
      if (bytes > gpu.device.limits.maxBufferSize) {
        throw new GpuError(
          `Cannot hold the ${part} of "${label}" (${bytes} bytes): over this adapter's ` +
            `maxBufferSize of ${gpu.device.limits.maxBufferSize}`,
        );
      }
      return gpu.buffer(bytes, { persistent: true, label: `${label} ${part}` });
    };
    for (const [part, bytes] of [["absmaxes", layout.scaleBytes], ["rows", layout.rowBytes]]) {
      if ((bytes as number) > gpu.maxBindingBytes - gpu.bindingAlignment) {
        throw new GpuError(
          `Cannot pack "${label}" as ${layout.format}: its ${part} take ${bytes} bytes, over ` +
            `this adapter's ${gpu.maxBindingBytes}-byte storage binding limit ` +
            `(maxStorageBufferBindingSize); use a larger block size or split the weight`,
        );
      }
    }
    this.codes = bufferOf(layout.codeBytes, "codes");
    this.scales = layout.scaleBytes ? bufferOf(layout.scaleBytes, "absmax") : null;
    this.scales2 = layout.scale2Bytes ? bufferOf(layout.scale2Bytes, "absmax2") : null;
    this.covered = { rows: new Uint8Array(layout.rows), cols: new Uint8Array(layout.cols) };
  }

  /**
   * A packed weight with unspecified contents, to quantize into.
   *
   * @param gpu The device.
   * @param shape `[rows, cols]`: `[out, in]` features.
   * @param options Format, block size, double quantization, and a label for messages.
   * @returns The tensor; not {@link ready} until its rows are quantized and finished.
   * @throws {RangeError} On a bad layout ({@link packedLayout}).
   * @throws {GpuError} When a part is over the adapter's buffer or binding limits.
   */
  static empty(
    gpu: Gpu,
    shape: readonly [number, number],
    options: BaseQuantOptions & { label?: string },
  ): PackedTensor {
    const layout = packedLayout(shape[0], shape[1], options);
    return new PackedTensor(gpu, layout, options.label ?? "weight");
  }

  /**
   * Uploads a weight packed on the host ({@link packWeight}, {@link packHalfBits}).
   *
   * @param gpu The device.
   * @param packed The layout and bytes.
   * @param options A label for messages.
   * @returns A ready tensor.
   */
  static from(gpu: Gpu, packed: PackedWeight, options: { label?: string } = {}): PackedTensor {
    const t = new PackedTensor(
      gpu,
      packedLayout(packed.rows, packed.cols, packed),
      options.label ?? "weight",
    );
    gpu.write(t.codes, packed.codes);
    if (t.scales) {
      if (packed.doubleQuant) {
        const bytes = new Uint8Array(packed.scaleBytes);
        bytes.set(packed.absmaxCodes!);
        gpu.write(t.scales, bytes);
      } else gpu.write(t.scales, packed.absmax!);
    }
    if (t.scales2) gpu.write(t.scales2, Float32Array.from([packed.offset!, ...packed.absmax2!]));
    t.ready = true;
    return t;
  }

  /** Bytes of GPU memory the weight holds. */
  get byteLength(): number {
    return this.layout.bytes;
  }

  /**
   * Copies the packed bytes to the host, in the shape {@link packWeight} returns.
   *
   * @returns The layout and its bytes.
   */
  async read(): Promise<PackedWeight> {
    this.#alive();
    const { layout, gpu } = this;
    const codes = new Uint8Array(await gpu.read(this.codes, { byteLength: layout.codeBytes }));
    if (!this.scales) return { ...layout, codes };
    if (!layout.doubleQuant) {
      const absmax = new Float32Array(
        await gpu.read(this.scales, { byteLength: layout.scaleBytes }),
      );
      return { ...layout, codes, absmax };
    }
    const bytes = new Uint8Array(await gpu.read(this.scales, { byteLength: layout.scaleBytes }));
    const second = new Float32Array(
      await gpu.read(this.scales2!, { byteLength: layout.scale2Bytes }),
    );
    return {
      ...layout,
      codes,
      absmaxCodes: bytes.slice(0, layout.blocks),
      absmax2: second.slice(1),
      offset: second[0],
    };
  }

  /** Destroys the buffers after pending work. */
  [Symbol.dispose](): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.gpu.flush();
    for (const b of [this.codes, this.scales, this.scales2]) b?.destroy();
    if (this.pending) this.gpu.release(this.pending);
    this.pending = null;
  }

  #alive(): void {
    if (this.#disposed) throw new GpuError(`Packed weight "${this.label}" used after dispose`);
  }
}

/** Options of {@link BaseQuantKernels.quantize}. */
export interface QuantizeOptions {
  /**
   * The source is stored `[in, out]` (a `conv1d` weight): its rows are the packed matrix's
   * columns. Default false (`[out, in]`, a `linear` weight).
   */
  transposed?: boolean;
  /** First source row the source view holds; default 0. */
  begin?: number;
  /** One past its last row; default all of them. */
  end?: number;
  /** A `[1]` u32 tensor the number of non-finite source values is added to. */
  nonFinite?: Tensor;
}

/**
 * The compiled packing kernels of one device. Methods only record work.
 *
 * @example Pack a weight on the GPU in two chunks of rows, then read it back
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { Tensor } from "./kernels/tensor.ts";
 * import { BaseQuantKernels, PackedTensor } from "./kernels/quantize_base.ts";
 * using gpu = await Gpu.acquire();
 * const kernels = await BaseQuantKernels.load(gpu);
 * using w = PackedTensor.empty(gpu, [4, 64], { format: "nf4" });
 * using chunk = Tensor.from(gpu, new Float32Array(128).map((_, i) => Math.sin(i)), [2, 64]);
 * kernels.quantize(w, chunk, { begin: 0, end: 2 });
 * kernels.quantize(w, chunk, { begin: 2, end: 4 });
 * kernels.finish(w);
 * console.log((await w.read()).codes.length); // 128
 * ```
 */
export class BaseQuantKernels {
  private constructor(
    readonly gpu: Gpu,
    readonly kernels: Record<"half" | "blocks" | "mean" | "absmax", Kernel>,
    readonly dequantizers: readonly Kernel[],
    readonly book: GPUBuffer,
    readonly scratch: GPUBuffer,
  ) {}

  /** Compiles the kernels (cached by the device) and uploads the codebook. */
  static async load(gpu: Gpu): Promise<BaseQuantKernels> {
    const bindings = ["storage", "storage", "storage", "read", "read", "uniform"] as const;
    const compile = (entry: string, wg?: number) =>
      gpu.kernel({ label: entry, code, entry, bindings, constants: wg ? { WG: wg } : {} });
    const [half, blocks, mean, absmax] = await Promise.all([
      compile("quantize_half", WG),
      compile("quantize_blocks", WG),
      compile("absmax_mean"),
      compile("absmax_quantize"),
    ]);
    const source = `${UNPACK_PRELUDE}\n${QMATMUL_WGSL}`;
    const dequantizers = await Promise.all(
      Object.values(FORMAT_IDS).map((id) =>
        gpu.kernel({
          label: "dequantize",
          code: source,
          entry: "dequantize",
          bindings: ["storage", "read", "read", "read", "read", "read", "read", "read", "uniform"],
          constants: { FORMAT: id },
        })
      ),
    );
    const table = baseCodebook();
    const book = gpu.buffer(table.byteLength, { persistent: true, label: "base codebook" });
    gpu.write(book, table);
    const scratch = gpu.buffer(16, { persistent: true, label: "base quantize scratch" });
    return new BaseQuantKernels(gpu, { half, blocks, mean, absmax }, dequantizers, book, scratch);
  }

  /**
   * Records the packing of some rows of a weight (all of them by default). With a transposed
   * (`conv1d`) source, a chunk's rows are columns of the packed matrix and must start and end on
   * a block boundary (or at the last column).
   *
   * @param target The packed weight to write.
   * @param source The f32 values of source rows `[begin, end)`, dense.
   * @param options Source layout, the chunk's rows, a counter of non-finite values.
   * @throws {RangeError} On a source of the wrong size or dtype, or a misaligned chunk.
   * @throws {GpuError} When a transposed source or the codes of a transposed weight do not fit
   * in one storage binding.
   */
  quantize(target: PackedTensor, source: BufferView, options: QuantizeOptions = {}): void {
    const { layout, label } = target;
    const { rows, cols } = layout;
    const transposed = options.transposed ?? false;
    const lead = transposed ? cols : rows;
    const width = transposed ? rows : cols;
    const begin = options.begin ?? 0;
    const end = options.end ?? lead;
    const what = `Cannot pack ${transposed ? "columns" : "rows"} ${begin}..${end} of "${label}"`;
    if (
      !Number.isSafeInteger(begin) || !Number.isSafeInteger(end) || begin < 0 ||
      end > lead || begin >= end
    ) {
      throw new RangeError(`${what}: expected 0 <= begin < end <= ${lead}`);
    }
    const range = viewRange(source);
    if (range.tensor.dtype !== "f32" || range.size !== (end - begin) * width) {
      throw new RangeError(
        `${what}: the source holds ${range.size} ${range.tensor.dtype} values, expected ` +
          `${(end - begin) * width} f32 (${end - begin} rows of ${width})`,
      );
    }
    const unit = layout.blockSize || 8;
    if (transposed && (begin % unit !== 0 || (end % unit !== 0 && end !== cols))) {
      throw new RangeError(
        `${what}: a transposed chunk must start and end on a multiple of ${unit} (or at the ` +
          `last column)`,
      );
    }
    if (target.ready && layout.doubleQuant) {
      throw new RangeError(`${what}: it is already finished (double quantization is done)`);
    }
    target.ready = false;
    let scales = target.scales ?? this.scratch;
    if (layout.doubleQuant) {
      target.pending ??= this.gpu.buffer(layout.blocks * 4);
      scales = target.pending;
    }
    const count = options.nonFinite?.buffer ?? this.scratch;
    const common = {
      format: FORMAT_IDS[layout.format],
      rows,
      cols,
      row_words: layout.rowBytes / 4,
      block: layout.blockSize,
      blocks_per_row: layout.blocksPerRow,
      blocks: layout.blocks,
      double_quant: layout.doubleQuant,
      pad0: 0,
      pad1: 0,
      pad2: 0,
    };
    if (transposed) {
      const src = window(this.gpu, range.tensor.buffer, {
        begin: range.offset,
        end: range.offset + range.size,
      });
      const codes = window(this.gpu, target.codes, { begin: 0, end: layout.codeBytes / 4 });
      this.#dispatch(layout, [codes.binding, scales, count, src.binding, this.book], {
        ...common,
        row0: 0,
        rows_here: rows,
        col0: begin,
        cols_here: end - begin,
        src_shift: src.shift,
        src_row: 1,
        src_col: rows,
        code_shift: codes.shift,
        code_row0: 0,
      });
      target.covered.cols.fill(1, begin, end);
      return;
    }
    // Row windows small enough for one binding of source and of codes each.
    const perBinding = Math.floor(
      (this.gpu.maxBindingBytes - this.gpu.bindingAlignment) / Math.max(4 * cols, layout.rowBytes),
    );
    const step = Math.min(perBinding, 65535);
    for (let r0 = begin; r0 < end; r0 += step) {
      const r1 = Math.min(end, r0 + step);
      const src = window(this.gpu, range.tensor.buffer, {
        begin: range.offset + (r0 - begin) * cols,
        end: range.offset + (r1 - begin) * cols,
      });
      const codes = window(this.gpu, target.codes, {
        begin: (r0 * layout.rowBytes) / 4,
        end: (r1 * layout.rowBytes) / 4,
      });
      this.#dispatch(layout, [codes.binding, scales, count, src.binding, this.book], {
        ...common,
        row0: r0,
        rows_here: r1 - r0,
        col0: 0,
        cols_here: cols,
        src_shift: src.shift,
        src_row: cols,
        src_col: 1,
        code_shift: codes.shift,
        code_row0: r0,
      });
    }
    target.covered.rows.fill(1, begin, end);
  }

  /**
   * Records the end of packing: checks that every row was quantized, and with double
   * quantization codes the absmaxes (mean, then groups of 256) and frees their f32 copy.
   *
   * @param target The packed weight.
   * @throws {RangeError} Naming the first rows (or columns) never quantized.
   */
  finish(target: PackedTensor): void {
    const { layout, label, covered } = target;
    if (target.ready) return;
    const byRows = covered.rows.indexOf(0);
    const byCols = covered.cols.indexOf(0);
    if (byRows >= 0 && byCols >= 0) {
      const [name, missing] = covered.rows.some((v) => v) || !covered.cols.some((v) => v)
        ? ["rows", covered.rows]
        : ["columns", covered.cols];
      const first = missing.indexOf(0);
      let last = first;
      while (last + 1 < missing.length && missing[last + 1] === 0) last++;
      throw new RangeError(
        `Cannot finish packing "${label}": ${name} ${first}..${last + 1} were never quantized`,
      );
    }
    if (layout.doubleQuant) {
      const pending = target.pending!;
      const params = PARAMS.pack({
        format: FORMAT_IDS[layout.format],
        rows: layout.rows,
        cols: layout.cols,
        row_words: layout.rowBytes / 4,
        block: layout.blockSize,
        blocks_per_row: layout.blocksPerRow,
        blocks: layout.blocks,
        double_quant: true,
        row0: 0,
        rows_here: 0,
        col0: 0,
        cols_here: 0,
        src_shift: 0,
        src_row: 0,
        src_col: 0,
        code_shift: 0,
        code_row0: 0,
        pad0: 0,
        pad1: 0,
        pad2: 0,
      });
      const buffers = [target.scales!, target.scales2!, this.scratch, pending, this.book];
      this.gpu.dispatch(this.kernels.mean, buffers, { uniforms: params, workgroups: [1] });
      this.gpu.dispatch(this.kernels.absmax, buffers, {
        uniforms: params,
        workgroups: grid(this.gpu, layout.groups),
      });
      this.gpu.release(pending);
      target.pending = null;
    }
    target.ready = true;
  }

  /**
   * Records the packing of a whole f32 weight into a new packed tensor.
   *
   * @param source `rows * cols` f32 values, `[out, in]` (or `[in, out]` with `transposed`).
   * @param shape `[rows, cols]` of the packed `[out, in]` matrix.
   * @param options Format, block size, double quantization, layout, label, non-finite counter.
   * @returns The packed weight, ready.
   */
  pack(
    source: BufferView,
    shape: readonly [number, number],
    options: BaseQuantOptions & Omit<QuantizeOptions, "begin" | "end"> & { label?: string },
  ): PackedTensor {
    const target = PackedTensor.empty(this.gpu, shape, options);
    try {
      this.quantize(target, source, options);
      this.finish(target);
    } catch (error) {
      target[Symbol.dispose]();
      throw error;
    }
    return target;
  }

  /**
   * Records the unpacking of a weight to f32, exactly as `unpackWeight` computes it.
   *
   * @param source A ready packed weight.
   * @param options `out`: where to write (`rows * cols` f32, allocated when absent);
   * `transposed`: write `[cols, rows]` (a `conv1d` layout) instead of `[rows, cols]`.
   * @returns The f32 weight.
   * @throws {RangeError} On a weight that is not ready or an output of the wrong size.
   */
  dequantize(
    source: PackedTensor,
    options: { out?: Tensor; transposed?: boolean } = {},
  ): Tensor {
    const { layout, label } = source;
    const { rows, cols } = layout;
    if (!source.ready) {
      throw new RangeError(`Cannot unpack "${label}": its packing was not finished`);
    }
    const transposed = options.transposed ?? false;
    const shape = transposed ? [cols, rows] : [rows, cols];
    const out = options.out ?? Tensor.empty(this.gpu, shape, { label: `${label} f32` });
    if (out.dtype !== "f32" || out.size !== rows * cols) {
      throw new RangeError(
        `Cannot unpack "${label}" into a ${out.dtype} tensor of shape [${out.shape}]: expected ` +
          `f32 [${shape}]`,
      );
    }
    const perBinding = Math.floor(
      (this.gpu.maxBindingBytes - this.gpu.bindingAlignment) / Math.max(4 * cols, layout.rowBytes),
    );
    const step = transposed ? rows : Math.max(1, Math.min(perBinding, 1 << 20));
    const w = weightParams(layout);
    const kernel = this.dequantizers[FORMAT_IDS[layout.format]];
    for (let r0 = 0; r0 < rows; r0 += step) {
      const r1 = Math.min(rows, r0 + step);
      const dst = transposed
        ? window(this.gpu, out.buffer, { begin: 0, end: rows * cols })
        : window(this.gpu, out.buffer, { begin: r0 * cols, end: r1 * cols });
      const codes = window(this.gpu, source.codes, {
        begin: (r0 * layout.rowBytes) / 4,
        end: (r1 * layout.rowBytes) / 4,
      });
      const uniforms = QMATMUL_PARAMS.pack({
        m: r1 - r0,
        n: rows,
        k: cols,
        flags: transposed ? 4 : 0,
        ld_out: transposed ? rows : cols,
        ld_inp: 0,
        off_out: dst.shift + (transposed ? r0 : 0),
        off_inp: 0,
        off_bias: 0,
        row_words: w.row_words,
        w_row0: r0,
        code_shift: codes.shift,
        block: w.block,
        blocks_per_row: w.blocks_per_row,
        double_quant: w.double_quant,
        zero: 0,
      });
      const buffers: (GPUBuffer | BufferBinding)[] = [
        dst.binding,
        this.book,
        codes.binding,
        source.scales ?? this.book,
        source.scales2 ?? this.book,
        this.book,
        this.book,
        codes.binding,
      ];
      this.gpu.dispatch(kernel, buffers, {
        uniforms,
        workgroups: grid(this.gpu, Math.ceil(((r1 - r0) * cols) / 64)),
      });
    }
    return out;
  }

  #dispatch(
    layout: PackedLayout,
    buffers: (GPUBuffer | BufferBinding)[],
    values: Record<keyof typeof PARAMS.fields, number | boolean> & {
      row0: number;
      rows_here: number;
      col0: number;
      cols_here: number;
    },
  ): void {
    const half = layout.blockSize === 0;
    let groups: number;
    if (half) {
      const w0 = Math.floor(values.col0 / 2);
      const colEnd = values.col0 + values.cols_here;
      const wEnd = colEnd === layout.cols ? layout.rowBytes / 4 : colEnd / 2;
      groups = Math.ceil((values.rows_here * (wEnd - w0)) / WG);
    } else {
      const first = Math.floor(values.col0 / layout.blockSize);
      const perRow = Math.ceil((values.col0 + values.cols_here) / layout.blockSize) - first;
      groups = values.rows_here * perRow;
    }
    this.gpu.dispatch(half ? this.kernels.half : this.kernels.blocks, buffers, {
      uniforms: PARAMS.pack(values),
      workgroups: grid(this.gpu, groups),
    });
  }
}
