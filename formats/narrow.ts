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
  const sign = (bits >>> 16) & 0x8000;
  const abs = bits & 0x7fffffff;
  if (abs >= 0x7f800000) return sign | (abs > 0x7f800000 ? 0x7e00 : 0x7c00);
  if (abs >= 0x477ff000) return sign | 0x7c00;
  if (abs >= 0x38800000) {
    // Normal: rebias the exponent (127 -> 15) and round off the 13 low mantissa bits; a carry
    // into the exponent is the correct next binade (or infinity, excluded above).
    const h = (abs - 0x38000000) >>> 13;
    const rest = abs & 0x1fff;
    return sign | (rest > 0x1000 || (rest === 0x1000 && (h & 1)) ? h + 1 : h);
  }
  // Below 2^-14: a multiple of 2^-24 (subnormal). 2^-25 itself ties to the even 0.
  if (abs <= 0x33000000) return sign;
  const exponent = abs >>> 23;
  const mantissa = (abs & 0x7fffff) | 0x800000;
  const shift = 126 - exponent; // 14 .. 24, within JS's 5-bit shift counts
  const h = mantissa >>> shift;
  const rest = mantissa & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  return sign | (rest > half || (rest === half && (h & 1)) ? h + 1 : h);
}

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
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < bits.length; i++) out[i] = f32BitsToF16(bits[i]);
  return out;
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
