/**
 * Narrowing f32 to the half-precision formats checkpoints are stored in, rounding to nearest with
 * ties to even (what PyTorch's `.to(torch.float16)` / `.to(torch.bfloat16)` do), so that a weight
 * written back in its checkpoint's dtype is the one nearest to the f32 value.
 *
 * @module
 */

import type { TensorData } from "./safetensors.ts";

/**
 * Rounds one f32 bit pattern to binary16, to nearest with ties to even. Values at or above 65520
 * in magnitude become infinity, values at or below 2^-25 become a signed zero, NaN stays a (quiet)
 * NaN.
 *
 * @param bits The f32 bit pattern (as a `Uint32Array` element holds it).
 * @returns The f16 bit pattern, 0 to 0xffff.
 *
 * @example Known values
 * ```ts
 * import { f32BitsToF16 } from "./narrow.ts";
 * f32BitsToF16(0x3f800000); // 0x3c00 (1)
 * f32BitsToF16(0x477ff000); // 0x7c00 (65520 rounds to infinity)
 * ```
 */
export function f32BitsToF16(bits: number): number {
  SCRATCH_U32[0] = bits;
  SCRATCH_F16[0] = SCRATCH_F32[0];
  return SCRATCH_U16[0];
}

// Float16Array stores a number rounded to nearest even, as IEEE 754 binary16 (ES2025).
const SCRATCH_U32 = new Uint32Array(1);
const SCRATCH_F32 = new Float32Array(SCRATCH_U32.buffer);
const SCRATCH_U16 = new Uint16Array(1);
const SCRATCH_F16 = new Float16Array(SCRATCH_U16.buffer);

/**
 * Rounds one f32 bit pattern to bfloat16 (its top 16 bits), to nearest with ties to even; finite
 * values that round past the largest bf16 become infinity, NaN stays a (quiet) NaN.
 *
 * @param bits The f32 bit pattern.
 * @returns The bf16 bit pattern, 0 to 0xffff.
 *
 * @example Known values
 * ```ts
 * import { f32BitsToBf16 } from "./narrow.ts";
 * f32BitsToBf16(0x3f808000); // 0x3f80 (a tie: 1 + 2^-8 rounds to the even 1)
 * f32BitsToBf16(0x3f818000); // 0x3f82
 * ```
 */
export function f32BitsToBf16(bits: number): number {
  const u = bits >>> 0;
  if ((u & 0x7fffffff) > 0x7f800000) return (u >>> 16) | 0x0040;
  // Below 2^32 for every non-NaN pattern, so the unsigned shift sees the true sum.
  return (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
}

/**
 * Rounds f32 values to f16 bit patterns, element by element, as {@linkcode f32BitsToF16} does.
 *
 * @param values The values.
 * @returns A new array of f16 bit patterns, ready to write as an `F16` tensor.
 */
export function narrowToF16(values: Float32Array): Uint16Array {
  return new Uint16Array(new Float16Array(values).buffer);
}

/**
 * Rounds f32 values to bf16 bit patterns, element by element, as {@linkcode f32BitsToBf16} does.
 *
 * @param values The values.
 * @returns A new array of bf16 bit patterns, ready to write as a `BF16` tensor.
 */
export function narrowToBf16(values: Float32Array): Uint16Array {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < bits.length; i++) out[i] = f32BitsToBf16(bits[i]);
  return out;
}

/** The float dtypes f32 values can be written as. */
export type FloatDtype = "F64" | "F32" | "F16" | "BF16";

/**
 * Converts f32 values to the data of a tensor of a float dtype: F64 widens exactly, F32 is kept,
 * F16 and BF16 round to nearest even.
 *
 * @param values The values.
 * @param dtype The dtype to write.
 * @returns Data for `writeSafetensors` with that dtype.
 *
 * @example Writing a weight back in its checkpoint's dtype
 * ```ts
 * import { toFloatDtype } from "./narrow.ts";
 * const data = toFloatDtype(new Float32Array([1, 0.1]), "BF16"); // Uint16Array [0x3f80, 0x3dcd]
 * ```
 */
export function toFloatDtype(values: Float32Array, dtype: FloatDtype): TensorData {
  switch (dtype) {
    case "F64":
      return Float64Array.from(values);
    case "F32":
      return values;
    case "F16":
      return narrowToF16(values);
    case "BF16":
      return narrowToBf16(values);
  }
}
