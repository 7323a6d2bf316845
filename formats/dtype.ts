/**
 * Element types of safetensors files and exact widening of half-precision floats.
 *
 * @module
 */

/** An element type a safetensors file may hold. */
export type Dtype = "F64" | "F32" | "F16" | "BF16" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

const DTYPE_BYTES: Readonly<Record<Dtype, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

/** Every supported dtype, in the order error messages list them. */
export const DTYPES: readonly Dtype[] = Object.keys(DTYPE_BYTES) as Dtype[];

/**
 * Says whether a value names a supported dtype.
 *
 * @param value Anything, typically a `dtype` field read from a header.
 * @returns True when `value` is one of {@linkcode DTYPES}.
 */
export function isDtype(value: unknown): value is Dtype {
  return typeof value === "string" && Object.hasOwn(DTYPE_BYTES, value);
}

/**
 * The size in bytes of one element of a dtype.
 *
 * @param dtype A supported dtype.
 * @returns 8, 4, 2 or 1.
 *
 * @example Bytes of a tensor
 * ```ts
 * import { dtypeBytes } from "./dtype.ts";
 * const bytes = 3 * 4 * dtypeBytes("BF16"); // 24
 * ```
 */
export function dtypeBytes(dtype: Dtype): number {
  return DTYPE_BYTES[dtype];
}

/**
 * Widens one IEEE 754 binary16 value, given as its 16 bits, to a number. Exact: every f16 value,
 * subnormals included, is representable in f32.
 *
 * @param bits The half's bit pattern, 0 to 0xffff.
 * @returns The value; NaN for any NaN pattern, and -0 for 0x8000.
 *
 * @example Known values
 * ```ts
 * import { f16ToF32 } from "./dtype.ts";
 * f16ToF32(0x3c00); // 1
 * f16ToF32(0x0001); // 2 ** -24, the smallest subnormal
 * f16ToF32(0xfc00); // -Infinity
 * ```
 */
export function f16ToF32(bits: number): number {
  SCRATCH_U16[0] = bits;
  return SCRATCH_F16[0];
}

/**
 * Widens one bfloat16 value, given as its 16 bits, to a number. Exact: bf16 is the top half of an
 * f32.
 *
 * @param bits The bf16 bit pattern, 0 to 0xffff.
 * @returns The value; subnormals, infinities, NaN and -0 keep their meaning.
 *
 * @example Known values
 * ```ts
 * import { bf16ToF32 } from "./dtype.ts";
 * bf16ToF32(0x3f80); // 1
 * bf16ToF32(0xc000); // -2
 * ```
 */
export function bf16ToF32(bits: number): number {
  SCRATCH_U32[0] = (bits & 0xffff) << 16;
  return SCRATCH_F32[0];
}

const SCRATCH_U32 = new Uint32Array(1);
const SCRATCH_F32 = new Float32Array(SCRATCH_U32.buffer);
const SCRATCH_U16 = new Uint16Array(1);
const SCRATCH_F16 = new Float16Array(SCRATCH_U16.buffer);

/**
 * Widens an array of half-precision bit patterns (F16 or BF16) to f32, exactly.
 *
 * @param bits The 16-bit patterns, in host order.
 * @param dtype Which half format the bits hold.
 * @returns A new array of the widened values.
 */
export function widenHalf(bits: Uint16Array, dtype: "F16" | "BF16"): Float32Array {
  if (dtype === "F16") {
    return new Float32Array(new Float16Array(bits.buffer, bits.byteOffset, bits.length));
  }
  const out = new Float32Array(bits.length);
  const outBits = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) outBits[i] = bits[i] << 16;
  return out;
}
