/**
 * Post-training quantization of NOLA coefficients, per tensor, 1 to 8 bits, and the bit packing
 * adapter files store them in.
 *
 * Schemes (every value `x` of one tensor shares one scale):
 *
 * - `symmetric`, bits >= 2 (the authors' scheme): `L = 2^(bits-1) - 1` levels each side,
 *   `q = clamp(round(x * L / max|x|), -L, L)` (the authors' `round(x * c)`), stored as the code `q + L`
 *   (so codes run 0 .. 2L and code `2^bits - 1` is never used); `scale = f32(max|x| / L)`,
 *   `x' = f32(q * scale)` (the authors' `q / c` up to float rounding).
 * - `symmetric`, 1 bit (no level besides 0 exists above): sign and mean magnitude,
 *   `scale = f32(mean|x|)`, code 1 for `x >= 0` and 0 otherwise, `x' = f32(±scale)`.
 * - `asymmetric` (min-max): `2^bits - 1` steps from the minimum, `scale = f32((max - min) /
 *   (2^bits - 1))`, `zeroPoint = f32(min)` (the value of code 0, a float, so the whole range is
 *   used even when every value has one sign), `q = clamp(round((x - zeroPoint) / scale), 0,
 *   2^bits - 1)`, `x' = f32(q * scale + zeroPoint)`.
 *
 * Rounding is half to even (as `torch.round`), so the symmetric scheme maps `-x` to `-x'`. A
 * tensor of zeros (or, asymmetric, of one repeated value) gets scale 0 and comes back exactly.
 * Dequantization is a pure function of (code, scale, zeroPoint) computed in float64 and rounded
 * once to float32, so a loader reproduces {@link Quantized.dequantized} bit for bit.
 *
 * Every step is one float64 operation, in the order written in {@link quantize}: the symmetric
 * code rounds `x * c` with `c = L / max|x|` already rounded (the authors' form), so where
 * `x * L / max|x|` is exactly a half the rounding of `c` may decide the side (about one such tie
 * in sixteen). `kernels/fakequant.wgsl` repeats these steps bit for bit for quantization-aware
 * training, so a change here is a change there; float32 steps instead would move the 1-bit scale
 * of most tensors and the asymmetric scale of about one in seven.
 *
 * @module
 */

/** The two quantization schemes; see the module doc for their formulas. */
export type QuantScheme = "symmetric" | "asymmetric";

/** The schemes, for validating configuration. */
export const QUANT_SCHEMES: readonly QuantScheme[] = ["symmetric", "asymmetric"];

/** How to quantize: 1 to 8 bits per value, one of {@link QUANT_SCHEMES}. */
export interface QuantOptions {
  /** Bits per value, an integer from 1 to 8. */
  bits: number;
  /** `symmetric` (levels around 0) or `asymmetric` (min..max with a zero point). */
  scheme: QuantScheme;
}

/** One quantized tensor: a code per value and what turns codes back into values. */
export interface Quantized {
  /** Bits per code, as quantized. */
  bits: number;
  /** The scheme, as quantized. */
  scheme: QuantScheme;
  /** One code per value, each below `2^bits`. */
  codes: Uint8Array;
  /** The step between levels (symmetric 1-bit: the magnitude), a float32 value. */
  scale: number;
  /** Asymmetric only: the value of code 0, a float32 value. */
  zeroPoint?: number;
  /** What a loader gets back: {@link dequantize} of the codes. */
  dequantized: Float32Array;
}

/** Throws unless `options` names 1 to 8 bits and a known scheme. */
export function checkQuantOptions(options: QuantOptions): void {
  const { bits, scheme } = options;
  if (!Number.isSafeInteger(bits) || bits < 1 || bits > 8) {
    throw new RangeError(`Invalid quantization bits ${bits}: must be an integer from 1 to 8`);
  }
  if (!QUANT_SCHEMES.includes(scheme)) {
    throw new RangeError(
      `Invalid quantization scheme "${scheme}": expected one of ${QUANT_SCHEMES.join(", ")}`,
    );
  }
}

function roundHalfEven(x: number): number {
  const r = Math.round(x);
  // Math.round sends exact halves up; send them to the even neighbour instead.
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * Quantizes one tensor's values.
 *
 * @param values The values (finite).
 * @param options Bits (1 to 8) and scheme.
 * @returns Codes, scale, zero point (asymmetric) and the dequantized values.
 * @throws {RangeError} On invalid options or a non-finite value.
 *
 * @example 4-bit symmetric, as the paper stores coefficients
 * ```ts
 * import { quantize } from "./formats/quantize.ts";
 * const q = quantize(new Float32Array([0.5, -1, 0.25]), { bits: 4, scheme: "symmetric" });
 * console.log(q.codes, q.dequantized); // Uint8Array [11, 0, 9], Float32Array [0.571.., -1, 0.285..]
 * ```
 */
export function quantize(values: ArrayLike<number>, options: QuantOptions): Quantized {
  checkQuantOptions(options);
  const { bits, scheme } = options;
  const n = values.length;
  let min = Infinity;
  let max = -Infinity;
  let maxAbs = 0;
  let sumAbs = 0;
  for (let i = 0; i < n; i++) {
    const x = values[i];
    if (!Number.isFinite(x)) {
      throw new RangeError(`Cannot quantize value ${x} at index ${i}: not finite`);
    }
    min = Math.min(min, x);
    max = Math.max(max, x);
    maxAbs = Math.max(maxAbs, Math.abs(x));
    sumAbs += Math.abs(x);
  }
  const codes = new Uint8Array(n);
  let scale: number;
  let zeroPoint: number | undefined;
  if (scheme === "asymmetric") {
    const top = 2 ** bits - 1;
    zeroPoint = n === 0 ? 0 : Math.fround(min);
    scale = n === 0 ? 0 : Math.fround((max - zeroPoint) / top);
    for (let i = 0; i < n; i++) {
      codes[i] = scale === 0
        ? 0
        : Math.min(top, Math.max(0, roundHalfEven((values[i] - zeroPoint) / scale)));
    }
  } else if (bits === 1) {
    scale = n === 0 ? 0 : Math.fround(sumAbs / n);
    for (let i = 0; i < n; i++) codes[i] = values[i] >= 0 ? 1 : 0;
  } else {
    const levels = 2 ** (bits - 1) - 1;
    scale = Math.fround(maxAbs / levels);
    const c = levels / maxAbs;
    for (let i = 0; i < n; i++) {
      const q = maxAbs === 0 ? 0 : roundHalfEven(values[i] * c);
      codes[i] = Math.min(levels, Math.max(-levels, q)) + levels;
    }
  }
  const quantized: Quantized = { bits, scheme, codes, scale, dequantized: new Float32Array() };
  if (zeroPoint !== undefined) quantized.zeroPoint = zeroPoint;
  quantized.dequantized = dequantize(codes, quantized);
  return quantized;
}

/**
 * Turns codes back into values, exactly as {@link quantize} computed its `dequantized` array.
 *
 * @param codes One code per value.
 * @param options Bits, scheme, scale and (asymmetric) zero point, as stored.
 * @returns The values.
 * @throws {RangeError} On invalid options, a code of `2^bits` or more, or a missing zero point.
 *
 * @example Dequantizing stored codes
 * ```ts
 * import { dequantize } from "./formats/quantize.ts";
 * dequantize(new Uint8Array([0, 15]), { bits: 4, scheme: "asymmetric", scale: 0.5, zeroPoint: -1 });
 * // Float32Array [-1, 6.5]
 * ```
 */
export function dequantize(
  codes: Uint8Array,
  options: QuantOptions & { scale: number; zeroPoint?: number },
): Float32Array {
  checkQuantOptions(options);
  const { bits, scheme, scale } = options;
  if (!Number.isFinite(scale) || scale < 0) {
    throw new RangeError(`Invalid quantization scale ${scale}: must be finite and >= 0`);
  }
  const zeroPoint = options.zeroPoint;
  if (scheme === "asymmetric" && !Number.isFinite(zeroPoint)) {
    throw new RangeError(`Invalid quantization zero point ${zeroPoint}: must be finite`);
  }
  const out = new Float32Array(codes.length);
  const top = 2 ** bits - 1;
  const levels = 2 ** (bits - 1) - 1;
  for (let i = 0; i < codes.length; i++) {
    const c = codes[i];
    if (c > top) throw new RangeError(`Invalid ${bits}-bit code ${c} at index ${i}`);
    out[i] = scheme === "asymmetric"
      ? c * scale + zeroPoint!
      : bits === 1
      ? (c === 1 ? scale : -scale)
      : (c - levels) * scale;
  }
  return out;
}

/**
 * Packs codes of `bits` bits each into bytes, little-endian: code `i` occupies bits
 * `[i * bits, (i + 1) * bits)` of the stream, its least significant bit first, and stream bit `n`
 * is bit `n % 8` (value `2^(n % 8)`) of byte `floor(n / 8)`. Unused high bits of the last byte
 * are zero. Codes may straddle bytes (3, 5, 6, 7 bits).
 *
 * @param codes Codes, each below `2^bits`.
 * @param bits 1 to 8.
 * @returns `ceil(codes.length * bits / 8)` bytes.
 * @throws {RangeError} On invalid bits or a code that does not fit.
 *
 * @example Two 4-bit codes in one byte
 * ```ts
 * import { packBits } from "./formats/quantize.ts";
 * packBits(new Uint8Array([0x3, 0xa]), 4); // Uint8Array [0xa3]
 * ```
 */
export function packBits(codes: Uint8Array, bits: number): Uint8Array {
  checkBits(bits);
  const out = new Uint8Array(Math.ceil((codes.length * bits) / 8));
  for (let i = 0; i < codes.length; i++) {
    const c = codes[i];
    if (c >>> bits !== 0) {
      throw new RangeError(`Cannot pack code ${c} at index ${i} in ${bits} bits`);
    }
    const bit = i * bits;
    const byte = bit >>> 3;
    const shifted = c << (bit & 7);
    out[byte] |= shifted & 0xff;
    if (shifted > 0xff) out[byte + 1] |= shifted >>> 8;
  }
  return out;
}

/**
 * Reverses {@link packBits}.
 *
 * @param bytes Packed codes.
 * @param bits 1 to 8, as packed.
 * @param count How many codes to read.
 * @returns `count` codes.
 * @throws {RangeError} If `bytes` is not exactly `ceil(count * bits / 8)` long.
 *
 * @example
 * ```ts
 * import { unpackBits } from "./formats/quantize.ts";
 * unpackBits(new Uint8Array([0xa3]), 4, 2); // Uint8Array [0x3, 0xa]
 * ```
 */
export function unpackBits(bytes: Uint8Array, bits: number, count: number): Uint8Array {
  checkBits(bits);
  const need = Math.ceil((count * bits) / 8);
  if (!Number.isSafeInteger(count) || count < 0 || bytes.length !== need) {
    throw new RangeError(
      `Cannot unpack ${count} ${bits}-bit codes from ${bytes.length} bytes: expected ${need}`,
    );
  }
  const out = new Uint8Array(count);
  const mask = (1 << bits) - 1;
  for (let i = 0; i < count; i++) {
    const bit = i * bits;
    const byte = bit >>> 3;
    const word = bytes[byte] | ((bytes[byte + 1] ?? 0) << 8);
    out[i] = (word >>> (bit & 7)) & mask;
  }
  return out;
}

function checkBits(bits: number): void {
  if (!Number.isSafeInteger(bits) || bits < 1 || bits > 8) {
    throw new RangeError(`Invalid bit width ${bits}: must be an integer from 1 to 8`);
  }
}
