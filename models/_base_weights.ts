/**
 * Putting a family's weights on the GPU in the precision `ModelOptions.baseFormat` asks for: the
 * weights of adaptable linear layers packed ({@link PackedTensor}: 16 bits as the checkpoint
 * stored them, or quantized to int8 / nf4 on the GPU), the token embedding and the head kept
 * 16-bit when the checkpoint stores them so and the base is not f32, everything else (norms,
 * biases, position embeddings) in f32.
 *
 * Loading streams: {@link streamWeights} reads one tensor from the checkpoint, uploads (and packs)
 * it and lets go of the host copy before reading the next, so a model never exists on the host at
 * once, in f32 or as stored; quantizing packs on the GPU tensor by tensor, so it never exists in
 * f32 on the GPU either. {@link uploadWeights} does the same from host arrays already in memory
 * (fresh weights, or a test's).
 *
 * @module
 */

import type { BaseFormat } from "../formats/base_quant.ts";
import {
  f32ToBf16Bits,
  f32ToF16Bits,
  packedLayout,
  type PackedWeight,
  packHalfBits,
} from "../formats/base_quant.ts";
import { Checkpoint, type Dtype, type TensorInfo, widenHalf } from "../formats/safetensors.ts";
import { EmbeddingHalfKernels } from "../kernels/embedding_half.ts";
import type { Gpu } from "../kernels/gpu.ts";
import { PackedTensor } from "../kernels/packed_tensor.ts";
import { QMatmul } from "../kernels/qmatmul.ts";
import { BaseQuantKernels } from "../kernels/quantize_base.ts";
import { Tensor } from "../kernels/tensor.ts";
import type { BaseWeightFormat, ModelOptions, WeightLayout } from "./model.ts";

/** The base formats a model option takes. */
export const BASE_WEIGHT_FORMATS: readonly BaseWeightFormat[] = ["f32", "as-stored", "int8", "nf4"];

/** A model's packed weights and the kernels that read them. */
export interface PackedBase {
  /**
   * Packed weights by weight name: linear weights (`h.0.attn.c_attn.weight`), each `[out, in]`,
   * and a 16-bit token embedding or head (`wte.weight`, `lm_head.weight`), `[V, C]`.
   */
  readonly weights: Map<string, PackedTensor>;
  /** Products with packed weights (linears, and a 16-bit head). */
  readonly qmatmul: QMatmul;
  /** Unpacking to f32 (merging, export). */
  readonly quant: BaseQuantKernels;
  /** The lookup of a 16-bit token embedding; needed only when one is packed. */
  readonly embedding?: EmbeddingHalfKernels;
}

/** What a family passes to {@link uploadWeights} and {@link streamWeights}. */
export interface UploadOptions {
  /** The weight names of the adaptable linear layers (`<linear>.weight`). */
  linears: ReadonlySet<string>;
  /**
   * The token embedding and the head (`wte.weight`; `embed_tokens.weight`, `lm_head.weight`):
   * kept 16-bit when the checkpoint stores them in F16/BF16 and the base format is not `f32`.
   */
  embeddings?: ReadonlySet<string>;
  /** How the family stores linear weights. */
  layout: WeightLayout;
  /** The user's choice of precision. */
  options: ModelOptions;
  /** Host arrays only: the checkpoint's dtype of each weight, by weight name. */
  storedDtypes?: ReadonlyMap<string, Dtype>;
  /** Called once each weight is on the GPU, in load order. */
  onWeight?: (loaded: WeightLoaded) => void;
}

/**
 * What a streaming load reads a checkpoint through: a {@link Checkpoint} is one; a test can wrap
 * one to watch the reads, a benchmark can make weights up.
 */
export type WeightReader = Pick<
  Checkpoint,
  "folder" | "names" | "info" | "fileOf" | "readBytes" | "readFloat32"
>;

/** One weight of a streaming load, planned from the checkpoint's header alone. */
export interface PlannedWeight {
  /** The weight name (`h.0.ln_1.weight`). */
  name: string;
  /** Its name in the checkpoint (`transformer.h.0.ln_1.weight`). */
  stored: string;
  /** Its shape in the family's layout (as stored). */
  shape: number[];
  /** Its dtype in the checkpoint (a float type; the plan checks it). */
  dtype: Dtype;
  /**
   * A second checkpoint tensor that must hold exactly the same values (a stored tied head),
   * read and compared after this one, and the error to throw at the first element that differs.
   */
  tiedCopy?: { stored: string; differs: (at: number) => Error };
}

/** What {@link UploadOptions.onWeight} is told about each weight. */
export interface WeightLoaded {
  /** The weight name. */
  name: string;
  /** Its dtype in the checkpoint, when known. */
  dtype?: Dtype;
  /** What it became on the GPU: `f32`, `f16`, `bf16`, `int8` or `nf4`. */
  precision: "f32" | BaseFormat;
  /** Bytes it takes on the GPU. */
  gpuBytes: number;
  /**
   * Host bytes the load held at once for it: what was read from the checkpoint (or taken from
   * the caller's array) plus the conversions made of it (widening, transposing, padding).
   */
  hostBytes: number;
}

/** Checks the base options: a known format, and no full fine-tuning of a quantized base. */
export function checkBaseOptions(options: ModelOptions): void {
  const format = options.baseFormat ?? "f32";
  if (!BASE_WEIGHT_FORMATS.includes(format)) {
    throw new RangeError(
      `Unknown baseFormat ${JSON.stringify(format)}: expected one of ` +
        `${BASE_WEIGHT_FORMATS.join(", ")}`,
    );
  }
  if (options.trainAll && (format === "int8" || format === "nf4")) {
    throw new RangeError(
      `Cannot train all weights of a ${format} base: a packed weight has no gradient; full ` +
        `fine-tuning needs baseFormat "f32"`,
    );
  }
}

/** The 16-bit format a dtype is, or null. */
function halfFormat(stored: Dtype | undefined): "f16" | "bf16" | null {
  return stored === "F16" ? "f16" : stored === "BF16" ? "bf16" : null;
}

/** The packed format of one weight under the options, or null to keep it f32. */
function packedFormat(
  name: string,
  stored: Dtype | undefined,
  upload: UploadOptions,
): BaseFormat | null {
  const format = upload.options.baseFormat ?? "f32";
  if (upload.linears.has(name)) {
    if (format === "int8" || format === "nf4") return format;
    return format === "as-stored" ? halfFormat(stored) : null;
  }
  if (upload.embeddings?.has(name) && format !== "f32") return halfFormat(stored);
  return null;
}

/** One weight to place: its sizes and how to get its values on the host. */
interface WeightSource {
  name: string;
  shape: number[];
  dtype?: Dtype;
  /** The values as f32, in the family's layout, and the host bytes the read itself took. */
  f32(): Promise<{ data: Float32Array; bytes: number }>;
  /** The 16-bit codes, when `dtype` is F16 or BF16. */
  half(): Promise<Uint16Array>;
  /** Checks a tied copy against the values just placed; returns the host bytes it held. */
  check?(digest: string): Promise<number>;
}

/**
 * Uploads host weights: adaptable linear weights packed as the options say, the embedding and
 * head kept 16-bit when `storedDtypes` says the checkpoint stored them so, the rest in f32.
 *
 * @param gpu The device.
 * @param tensors Host weights by canonical name, in the family's layout.
 * @param upload Which weights are linear or embeddings, their layout, the options, the stored
 * dtypes.
 * @returns The f32 weights, and the packed ones with their kernels (null when none is packed).
 * @throws {RangeError} On a non-finite value in a weight to quantize, or a packed base with
 * `trainAll`, naming the weight.
 */
export function uploadWeights(
  gpu: Gpu,
  tensors: Map<string, { shape: number[]; data: Float32Array }>,
  upload: UploadOptions,
): Promise<{ params: Map<string, Tensor>; packed: PackedBase | null }> {
  const sources: WeightSource[] = [...tensors].map(([name, { shape, data }]) => ({
    name,
    shape,
    dtype: upload.storedDtypes?.get(name),
    f32: () => Promise.resolve({ data, bytes: data.byteLength }),
    half: () => {
      // The values were widened from 16 bits, so narrowing them back is exact.
      const narrow = upload.storedDtypes?.get(name) === "F16" ? f32ToF16Bits : f32ToBf16Bits;
      return Promise.resolve(Uint16Array.from(data, narrow));
    },
  }));
  return placeWeights(gpu, sources, upload);
}

/**
 * Loads weights from a checkpoint one tensor at a time: each is read, uploaded (packed as the
 * options say) and let go of before the next is read. 16-bit codes kept 16-bit are uploaded as
 * read, never widened on the host. A tied copy is compared through a digest of its values, so
 * the tensor it copies need not stay on the host; only when they differ are both read again to
 * name the first differing element.
 *
 * @param gpu The device.
 * @param reader The checkpoint.
 * @param plan The weights, in load order, checked against the header by the family.
 * @param upload Which weights are linear or embeddings, their layout, the options, a hook.
 * @returns The f32 weights, and the packed ones with their kernels (null when none is packed).
 * @throws {RangeError} On a non-finite value in a weight to quantize, or a packed base with
 * `trainAll`, naming the weight; whatever the family's `tiedCopy.differs` returns.
 * @throws {SafetensorsError} When a tensor cannot be read.
 */
export function streamWeights(
  gpu: Gpu,
  reader: WeightReader,
  plan: readonly PlannedWeight[],
  upload: UploadOptions,
): Promise<{ params: Map<string, Tensor>; packed: PackedBase | null }> {
  const sources: WeightSource[] = plan.map((w) => ({
    name: w.name,
    shape: w.shape,
    dtype: w.dtype,
    f32: async () => {
      const data = await reader.readFloat32(w.stored);
      // The stored bytes were alive while they were widened.
      const stored = w.dtype === "F32" ? 0 : storedBytes(reader.info(w.stored));
      return { data, bytes: data.byteLength + stored };
    },
    half: async () => halfCodes(await reader.readBytes(w.stored)),
    check: w.tiedCopy && (async (digest) => {
      const copy = await reader.readFloat32(w.tiedCopy!.stored);
      if (digestOf(copy) === digest) return copy.byteLength;
      // Only now read the original again, to say where they differ.
      const original = await reader.readFloat32(w.stored);
      const a = new Uint32Array(copy.buffer, copy.byteOffset, copy.length);
      const b = new Uint32Array(original.buffer, original.byteOffset, original.length);
      throw w.tiedCopy!.differs(a.findIndex((bits, i) => bits !== b[i]));
    }),
  }));
  return placeWeights(gpu, sources, upload);
}

/** Bytes of a tensor as stored. */
function storedBytes(info: TensorInfo): number {
  return info.end - info.begin;
}

/** The 16-bit codes of raw little-endian bytes (copied only when misaligned). */
function halfCodes(bytes: Uint8Array): Uint16Array {
  const aligned = bytes.byteOffset % 2 === 0 ? bytes : bytes.slice();
  return new Uint16Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 2);
}

async function placeWeights(
  gpu: Gpu,
  sources: readonly WeightSource[],
  upload: UploadOptions,
): Promise<{ params: Map<string, Tensor>; packed: PackedBase | null }> {
  const { options, layout, onWeight } = upload;
  checkBaseOptions(options);
  const format = options.baseFormat ?? "f32";
  const plan = new Map<string, BaseFormat>();
  for (const s of sources) {
    const f = packedFormat(s.name, s.dtype, upload);
    if (f) plan.set(s.name, f);
  }
  if (plan.size > 0 && options.trainAll) {
    const f = plan.values().next().value;
    throw new RangeError(
      `Cannot train all weights of a base kept in ${f} (baseFormat "${format}"): a packed ` +
        `weight has no gradient; full fine-tuning needs baseFormat "f32"`,
    );
  }
  const embedded = [...plan.keys()].some((name) => !upload.linears.has(name));
  const [qmatmul, quant, embedding] = plan.size === 0 ? [] : await Promise.all([
    QMatmul.load(gpu, { formats: [...new Set(plan.values())] }),
    BaseQuantKernels.load(gpu),
    embedded ? EmbeddingHalfKernels.load(gpu) : undefined,
  ]);
  const params = new Map<string, Tensor>();
  const weights = new Map<string, PackedTensor>();
  try {
    for (const source of sources) {
      const { name, shape } = source;
      const f = plan.get(name);
      // Linear weights in the conv1d layout are stored [in, out] and packed [out, in].
      const conv = layout === "conv1d" && upload.linears.has(name);
      const [rows, cols] = conv ? [shape[1], shape[0]] : [shape[0], shape[1]];
      let hostBytes: number;
      let digest = "";
      if (!f) {
        const { data, bytes } = await source.f32();
        hostBytes = bytes;
        if (source.check) digest = digestOf(data);
        params.set(name, Tensor.from(gpu, data, shape, { persistent: true, label: name }));
      } else if (f === "f16" || f === "bf16") {
        const bits = await source.half();
        const packed = halfPacked(bits, [rows, cols], f, conv);
        // The codes as read, a transposed copy, the padded rows: whichever were made.
        const copied = packed.codes.buffer === bits.buffer ? 0 : packed.codes.byteLength;
        hostBytes = bits.byteLength * (conv ? 2 : 1) + copied;
        if (source.check) digest = digestOf(bits, source.dtype as "F16" | "BF16");
        weights.set(name, PackedTensor.from(gpu, packed, { label: name }));
      } else {
        const { data, bytes } = await source.f32();
        hostBytes = bytes;
        const bad = data.findIndex((v) => !Number.isFinite(v));
        if (bad >= 0) {
          throw new RangeError(
            `Cannot quantize weight "${name}" to ${f}: element ${bad} is ${data[bad]}; a ` +
              `quantized base needs finite weights (load it with baseFormat "f32")`,
          );
        }
        if (source.check) digest = digestOf(data);
        using f32 = Tensor.from(gpu, data, shape, { label: `${name} f32` });
        weights.set(
          name,
          quant!.pack(f32, [rows, cols], {
            format: f,
            blockSize: options.blockSize,
            doubleQuant: options.doubleQuant,
            transposed: conv,
            label: name,
          }),
        );
      }
      gpu.flush();
      if (source.check) hostBytes = Math.max(hostBytes, await source.check(digest));
      onWeight?.({
        name,
        dtype: source.dtype,
        precision: f ?? "f32",
        gpuBytes: f ? weights.get(name)!.byteLength : params.get(name)!.byteLength,
        hostBytes,
      });
    }
  } catch (error) {
    for (const t of params.values()) t[Symbol.dispose]();
    for (const t of weights.values()) t[Symbol.dispose]();
    throw error;
  }
  return {
    params,
    packed: plan.size === 0 ? null : { weights, qmatmul: qmatmul!, quant: quant!, embedding },
  };
}

/**
 * A weight's 16-bit codes packed `[rows, cols]`: as read when the rows need neither transposing
 * nor padding, else transposed from `[cols, rows]` (`conv1d`) and padded.
 */
function halfPacked(
  bits: Uint16Array,
  [rows, cols]: [number, number],
  format: "f16" | "bf16",
  transposed: boolean,
): PackedWeight {
  const layout = packedLayout(rows, cols, { format });
  if (!transposed && layout.rowBytes === 2 * cols && bits.length === rows * cols) {
    return { ...layout, codes: new Uint8Array(bits.buffer, bits.byteOffset, bits.byteLength) };
  }
  if (!transposed) return packHalfBits(bits, [rows, cols], format);
  const out = new Uint16Array(rows * cols);
  // Stored [in, out]: element (i, o) goes to row o, column i.
  for (let i = 0; i < cols; i++) {
    for (let o = 0; o < rows; o++) out[o * cols + i] = bits[i * rows + o];
  }
  return packHalfBits(out, [rows, cols], format);
}

const DIGEST_CHUNK = 1 << 16;

/**
 * A 64-bit digest of a tensor's f32 bit patterns (16-bit codes widened first, a chunk at a time),
 * in hex: two multiply-xor lanes over every word. Not cryptographic: it tells a tied copy from
 * its original without both on the host, where a difference is a mistake, not an attack.
 */
function digestOf(values: Float32Array | Uint16Array, dtype?: "F16" | "BF16"): string {
  let h1 = 0x811c9dc5;
  let h2 = 0x9747b28c;
  const mix = (words: Uint32Array) => {
    for (let i = 0; i < words.length; i++) {
      const w = words[i];
      h1 = Math.imul(h1 ^ w, 0x01000193);
      h2 = Math.imul(h2 ^ Math.imul(w, 0xcc9e2d51), 0x1b873593);
      h2 = (h2 << 13) | (h2 >>> 19);
    }
  };
  if (values instanceof Float32Array) {
    mix(new Uint32Array(values.buffer, values.byteOffset, values.length));
  } else {
    for (let i = 0; i < values.length; i += DIGEST_CHUNK) {
      const wide = widenHalf(values.subarray(i, i + DIGEST_CHUNK), dtype!);
      mix(new Uint32Array(wide.buffer));
    }
  }
  const hex = (h: number) => (h >>> 0).toString(16).padStart(8, "0");
  return `${hex(h1)}${hex(h2)}:${values.length}`;
}

/**
 * The checkpoint's dtype of each weight, by weight name.
 *
 * @param folder The model folder.
 * @param weightNames The family's mapping of checkpoint names to weight names.
 * @returns Dtypes by weight name.
 */
export async function storedDtypes(
  folder: string,
  weightNames: (names: readonly string[]) => Map<string, string | null>,
): Promise<Map<string, Dtype>> {
  using ckpt = await Checkpoint.open(folder);
  const out = new Map<string, Dtype>();
  for (const [name, canonical] of weightNames(ckpt.names())) {
    if (canonical !== null && !out.has(canonical)) out.set(canonical, ckpt.info(name).dtype);
  }
  return out;
}
