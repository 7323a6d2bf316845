/**
 * A frozen weight packed on the GPU (f16, bf16, int8 or nf4; `formats/base_quant.ts` defines the
 * layout): what `quantize_base.ts` writes and `qmatmul.ts` multiplies by.
 *
 * @module
 */

import {
  type BaseQuantOptions,
  type PackedLayout,
  packedLayout,
  type PackedWeight,
} from "../formats/base_quant.ts";
import { align, type Gpu, GpuError } from "./gpu.ts";

const FORMAT_IDS = { f16: 0, bf16: 1, int8: 2, nf4: 3 } as const;

/**
 * The `FORMAT` pipeline constant of the kernels.
 *
 * @param format A packed format.
 * @returns 0 (f16), 1 (bf16), 2 (int8) or 3 (nf4); undefined for anything else.
 */
export function formatId(format: PackedLayout["format"]): number {
  return FORMAT_IDS[format];
}

/**
 * The uniform fields every dispatch reading a packed weight shares: the row pitch in u32 and
 * the blocks (for 16-bit formats, one block a row, a multiple of 32 values, and no scale).
 *
 * @param layout The weight's layout.
 * @returns The fields of `qmatmul.wgsl`'s `Params` that describe the weight.
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
