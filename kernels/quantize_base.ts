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

import { baseCodebook, type BaseQuantOptions, type PackedLayout } from "../formats/base_quant.ts";
import { grid } from "./dispatch.ts";
import type { BufferBinding, Gpu, Kernel } from "./gpu.ts";
import { formatId, PackedTensor, weightParams } from "./packed_tensor.ts";
import { QMATMUL_PARAMS } from "./qmatmul.ts";
import { type BufferView, Tensor, viewRange, window } from "./tensor.ts";
import { UniformStruct } from "./uniform_struct.ts";
import code from "./quantize_base.wgsl" with { type: "text" };
import QMATMUL_WGSL from "./qmatmul.wgsl" with { type: "text" };
import UNPACK_PRELUDE from "./qmatmul_unpack.wgsl" with { type: "text" };

const WG = 64;
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
      [0, 1, 2, 3].map((id) =>
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
      format: formatId(layout.format),
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
      const [name, missing] = covered.rows.some((v: number) =>
          v
        ) || !covered.cols.some((v: number) => v)
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
        format: formatId(layout.format),
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
    const kernel = this.dequantizers[formatId(layout.format)];
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
