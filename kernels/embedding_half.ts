/**
 * Host wrapper of `embedding_half.wgsl`: the token embedding read straight from a table kept
 * 16-bit as the checkpoint stored it (a {@link PackedTensor} in `f16` or `bf16`, `[V, C]`), so a
 * 16-bit embedding never needs an f32 copy on the GPU. The table is bound one window of
 * vocabulary rows at a time, as `encoder.ts` binds an f32 one. There is no backward: a table kept
 * 16-bit is frozen (full fine-tuning loads the model in f32).
 *
 * @module
 */

import { bindView, grid } from "./dispatch.ts";
import type { Gpu, Kernel } from "./gpu.ts";
import type { PackedTensor } from "./packed_tensor.ts";
import { type Tensor, window } from "./tensor.ts";
import { UniformStruct } from "./uniform_struct.ts";
import code from "./embedding_half.wgsl" with { type: "text" };

const WG = 256;
const FORMATS = { f16: 0, bf16: 1 } as const;
const SIZES = new UniformStruct("Sizes", {
  rows: "u32",
  seq: "u32",
  channels: "u32",
  pos_offset: "u32",
  v_begin: "u32",
  v_end: "u32",
  shift: "u32",
  vocab: "u32",
  last: "u32",
  row_words: "u32",
  has_pos: "u32",
}, { wgsl: code });

/** Options of {@link EmbeddingHalfKernels.forward}. */
export interface EmbeddingHalfOptions {
  /** Written: `[B, T, C]` f32. */
  out: Tensor;
  /** `[B, T]` u32 token ids, each below V (a larger id gives a NaN row). */
  tokens: Tensor;
  /** `[V, C]` table packed `f16` or `bf16`; may be larger than one storage binding. */
  table: PackedTensor;
  /** `[P, C]` f32 position embedding added to every row, P >= T + posOffset; none when absent. */
  wpe?: Tensor;
  /** Position of the first token of every sequence (with `wpe`); 0 if absent. */
  posOffset?: number;
}

/**
 * The compiled 16-bit embedding kernels of one device (both formats). Methods only record work.
 *
 * @example Embed two tokens from a bf16 table
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { Tensor } from "./kernels/tensor.ts";
 * import { PackedTensor } from "./kernels/packed_tensor.ts";
 * import { EmbeddingHalfKernels } from "./kernels/embedding_half.ts";
 * import { f32ToBf16Bits, packHalfBits } from "./formats/base_quant.ts";
 * using gpu = await Gpu.acquire();
 * const kernels = await EmbeddingHalfKernels.load(gpu);
 * const bits = Uint16Array.from([0, 0, 10, 10, 20, 20], f32ToBf16Bits);
 * using table = PackedTensor.from(gpu, packHalfBits(bits, [3, 2], "bf16"));
 * using tokens = Tensor.from(gpu, new Uint32Array([2, 1]), [1, 2]);
 * using out = Tensor.empty(gpu, [1, 2, 2]);
 * kernels.forward({ out, tokens, table });
 * console.log(await out.read()); // Float32Array [20, 20, 10, 10]
 * ```
 */
export class EmbeddingHalfKernels {
  private constructor(
    readonly gpu: Gpu,
    readonly kernels: Record<keyof typeof FORMATS, Kernel>,
  ) {}

  /** Compiles the kernels (cached by the device). */
  static async load(gpu: Gpu): Promise<EmbeddingHalfKernels> {
    const load = (format: keyof typeof FORMATS) =>
      gpu.kernel({
        label: `embedding_half_forward ${format}`,
        code,
        entry: "embedding_half_forward",
        bindings: ["storage", "read", "read", "read", "uniform"],
        constants: { WG, FORMAT: FORMATS[format] },
      });
    const [f16, bf16] = await Promise.all([load("f16"), load("bf16")]);
    return new EmbeddingHalfKernels(gpu, { f16, bf16 });
  }

  /**
   * Records `out[b, t] = widen(table[tokens[b, t]]) (+ wpe[t + posOffset])`.
   *
   * @param options The output, the token ids, the table, and the optional position embedding.
   * @throws {RangeError} On a table that is not 16-bit, or shapes that do not agree, in one line.
   */
  forward(options: EmbeddingHalfOptions): void {
    const { out, tokens, table, wpe, posOffset = 0 } = options;
    const { format, rows: vocab, cols: channels, rowBytes } = table.layout;
    const fail = (why: string): never => {
      throw new RangeError(`Cannot embed tokens from "${table.label}": ${why}`);
    };
    if (format !== "f16" && format !== "bf16") {
      fail(`it is packed ${format}; the embedding reads f16 or bf16 tables`);
    }
    if (!table.ready) fail("its packing was not finished");
    const [B, T, C] = out.shape;
    if (out.shape.length !== 3 || out.dtype !== "f32" || C !== channels) {
      fail(`the output [${out.shape}] ${out.dtype} must be [B, T, ${channels}] f32`);
    }
    const rows = B * T;
    if (tokens.dtype !== "u32" || tokens.size !== rows) {
      fail(`the tokens [${tokens.shape}] ${tokens.dtype} must be [${rows}] u32`);
    }
    if (wpe) {
      const P = wpe.shape[0];
      if (wpe.shape.length !== 2 || wpe.shape[1] !== channels || wpe.dtype !== "f32") {
        fail(`the position table [${wpe.shape}] ${wpe.dtype} must be [rows, ${channels}] f32`);
      }
      if (!Number.isInteger(posOffset) || posOffset < 0 || posOffset + T > P) {
        fail(`positions ${posOffset}..${posOffset + T - 1} are outside the ${P} of wpe`);
      }
    }
    if (rows === 0) return;
    const { gpu } = this;
    const rowWords = rowBytes / 4;
    const perWindow = Math.floor((gpu.maxBindingBytes - gpu.bindingAlignment) / rowBytes);
    if (perWindow < 1) fail(`one row of ${rowBytes} bytes is over the binding limit`);
    const fixed = [bindView(gpu, out).binding, bindView(gpu, tokens).binding];
    const wpeBinding = bindView(gpu, wpe ?? tokens).binding;
    for (let v0 = 0; v0 < vocab; v0 += perWindow) {
      const v1 = Math.min(vocab, v0 + perWindow);
      const w = window(gpu, table.codes, { begin: v0 * rowWords, end: v1 * rowWords });
      gpu.dispatch(this.kernels[format as keyof typeof FORMATS], [
        ...fixed,
        w.binding,
        wpeBinding,
      ], {
        uniforms: SIZES.pack({
          rows,
          seq: T,
          channels,
          pos_offset: posOffset,
          v_begin: v0,
          v_end: v1,
          shift: w.shift,
          vocab,
          last: v1 === vocab,
          row_words: rowWords,
          has_pos: wpe !== undefined,
        }),
        workgroups: grid(gpu, Math.ceil((rows * channels) / WG)),
      });
    }
  }
}
