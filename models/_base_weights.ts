/**
 * Uploading a family's host weights to the GPU in the precision `ModelOptions.baseFormat` asks
 * for: the weights of adaptable linear layers packed ({@link PackedTensor}: 16 bits as the
 * checkpoint stored them, or quantized to int8 / nf4 on the GPU), everything else (embeddings,
 * norms, biases, the head) in f32. Quantizing goes tensor by tensor: one f32 weight is uploaded,
 * packed and freed before the next, so the model never exists in f32 on the GPU at once.
 *
 * @module
 */

import type { BaseFormat } from "../formats/base_quant.ts";
import { f32ToBf16Bits, f32ToF16Bits, packHalfBits } from "../formats/base_quant.ts";
import { Checkpoint, type Dtype } from "../formats/safetensors.ts";
import type { Gpu } from "../kernels/gpu.ts";
import { PackedTensor } from "../kernels/packed_tensor.ts";
import { QMatmul } from "../kernels/qmatmul.ts";
import { BaseQuantKernels } from "../kernels/quantize_base.ts";
import { Tensor } from "../kernels/tensor.ts";
import type { BaseWeightFormat, ModelOptions, WeightLayout } from "./model.ts";

/** The base formats a model option takes. */
export const BASE_WEIGHT_FORMATS: readonly BaseWeightFormat[] = ["f32", "as-stored", "int8", "nf4"];

/** A model's packed linear weights and the kernels that read them. */
export interface PackedBase {
  /** Packed weights by weight name (`h.0.attn.c_attn.weight`), each `[out, in]`. */
  readonly weights: Map<string, PackedTensor>;
  /** Products with packed weights. */
  readonly qmatmul: QMatmul;
  /** Unpacking to f32 (merging, export). */
  readonly quant: BaseQuantKernels;
}

/** What a family passes to {@link uploadWeights}. */
export interface UploadOptions {
  /** The weight names of the adaptable linear layers (`<linear>.weight`). */
  linears: ReadonlySet<string>;
  /** How the family stores linear weights. */
  layout: WeightLayout;
  /** The user's choice of precision. */
  options: ModelOptions;
  /** The checkpoint's dtype of each weight, by weight name (needed by `as-stored`). */
  storedDtypes?: ReadonlyMap<string, Dtype>;
}

/**
 * Checks the base options: a known format, and no full fine-tuning of a packed base.
 *
 * @param options The model options.
 * @throws {RangeError} In one line, naming the option and how to fix it.
 */
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

/**
 * The packed format of one weight, or null to keep it f32.
 *
 * @param format The option.
 * @param stored The checkpoint's dtype of the weight, when known.
 * @returns `f16`, `bf16`, `int8`, `nf4` or null.
 */
function packedFormat(format: BaseWeightFormat, stored: Dtype | undefined): BaseFormat | null {
  if (format === "int8" || format === "nf4") return format;
  if (format === "as-stored") {
    if (stored === "F16") return "f16";
    if (stored === "BF16") return "bf16";
  }
  return null;
}

/**
 * Uploads host weights: adaptable linear weights packed as the options say, the rest in f32.
 *
 * @param gpu The device.
 * @param tensors Host weights by canonical name, in the family's layout.
 * @param upload Which weights are linear, their layout, the options, the stored dtypes.
 * @returns The f32 weights, and the packed ones with their kernels (null when none is packed).
 * @throws {RangeError} On a non-finite value in a weight to quantize, or a packed base with
 * `trainAll`, naming the weight.
 */
export async function uploadWeights(
  gpu: Gpu,
  tensors: Map<string, { shape: number[]; data: Float32Array }>,
  upload: UploadOptions,
): Promise<{ params: Map<string, Tensor>; packed: PackedBase | null }> {
  const { options, linears, layout, storedDtypes } = upload;
  checkBaseOptions(options);
  const format = options.baseFormat ?? "f32";
  const plan = new Map<string, BaseFormat>();
  for (const name of tensors.keys()) {
    const f = linears.has(name) ? packedFormat(format, storedDtypes?.get(name)) : null;
    if (f) plan.set(name, f);
  }
  if (plan.size > 0 && options.trainAll) {
    const f = plan.values().next().value;
    throw new RangeError(
      `Cannot train all weights of a base kept in ${f} (baseFormat "${format}"): a packed ` +
        `weight has no gradient; full fine-tuning needs baseFormat "f32"`,
    );
  }
  const params = new Map<string, Tensor>();
  if (plan.size === 0) {
    for (const [name, { shape, data }] of tensors) {
      params.set(name, Tensor.from(gpu, data, shape, { persistent: true, label: name }));
    }
    return { params, packed: null };
  }
  const [qmatmul, quant] = await Promise.all([
    QMatmul.load(gpu, { formats: [...new Set(plan.values())] }),
    BaseQuantKernels.load(gpu),
  ]);
  const weights = new Map<string, PackedTensor>();
  try {
    for (const [name, { shape, data }] of tensors) {
      const f = plan.get(name);
      if (!f) {
        params.set(name, Tensor.from(gpu, data, shape, { persistent: true, label: name }));
        continue;
      }
      const conv = layout === "conv1d";
      const [rows, cols] = conv ? [shape[1], shape[0]] : [shape[0], shape[1]];
      if (f === "f16" || f === "bf16") {
        weights.set(name, PackedTensor.from(gpu, halfBits(data, shape, f, conv), { label: name }));
        continue;
      }
      const bad = data.findIndex((v) => !Number.isFinite(v));
      if (bad >= 0) {
        throw new RangeError(
          `Cannot quantize weight "${name}" to ${f}: element ${bad} is ${data[bad]}; a ` +
            `quantized base needs finite weights (load it with baseFormat "f32")`,
        );
      }
      using source = Tensor.from(gpu, data, shape, { label: `${name} f32` });
      weights.set(
        name,
        quant.pack(source, [rows, cols], {
          format: f,
          blockSize: options.blockSize,
          doubleQuant: options.doubleQuant,
          transposed: conv,
          label: name,
        }),
      );
      gpu.flush();
    }
  } catch (error) {
    for (const t of params.values()) t[Symbol.dispose]();
    for (const t of weights.values()) t[Symbol.dispose]();
    throw error;
  }
  return { params, packed: { weights, qmatmul, quant } };
}

/**
 * The 16-bit codes of a weight widened from f16/bf16 (narrowing is exact), as `[out, in]`.
 */
function halfBits(
  data: Float32Array,
  shape: number[],
  format: "f16" | "bf16",
  conv: boolean,
): ReturnType<typeof packHalfBits> {
  const narrow = format === "f16" ? f32ToF16Bits : f32ToBf16Bits;
  const [rows, cols] = conv ? [shape[1], shape[0]] : [shape[0], shape[1]];
  const bits = new Uint16Array(rows * cols);
  if (conv) {
    // Stored [in, out]: element (i, o) goes to row o, column i.
    for (let i = 0; i < cols; i++) {
      for (let o = 0; o < rows; o++) bits[o * cols + i] = narrow(data[i * rows + o]);
    }
  } else {
    for (let j = 0; j < bits.length; j++) bits[j] = narrow(data[j]);
  }
  return packHalfBits(bits, [rows, cols], format);
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
