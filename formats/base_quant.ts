/**
 * Frozen base weights in fewer bytes: the packed formats the quantized-matmul kernels read, and
 * the host reference of packing and unpacking them (every step a float32 operation written out,
 * so the GPU quantizer reproduces the packed bytes bit for bit). `docs/base-quantization.md`
 * describes the formats byte by byte.
 *
 * A weight is a `[rows, cols]` matrix stored `[out, in]` (a `linear` layout; a `conv1d` weight is
 * transposed when packed), row after row, each row padded with zero bytes to a multiple of 16:
 *
 * - `f16`, `bf16`: two bytes a value, little-endian, as a checkpoint stores them.
 * - `int8`: one signed byte `q` a value, `x' = fround(fround(q / 127) * absmax)`.
 * - `nf4`: one nibble a value, two a byte, the first value of a pair in the HIGH nibble (as
 *   bitsandbytes packs them), `x' = fround(NF4_LEVELS[code] * absmax)`.
 *
 * `int8` and `nf4` cut each row into blocks of `blockSize` values (a power of two from 32 to
 * 4096, 64 by default), the last block of a row holding what is left. A block's `absmax` is the
 * largest |x| in it; its values are normalized as `v = fround(x * fround(1 / absmax))` (as
 * bitsandbytes does) and each takes the code of its nearest level, NF4's sixteen or int8's
 * `q / 127` for q = -127..127 (`v` above the midpoint of two neighbouring levels goes up, a tie
 * goes down). A block of zeros has absmax 0 and every code the one for 0. Magnitudes below the
 * smallest normal f32 (2^-126) count as 0, so devices that flush subnormals write the same bytes.
 *
 * Double quantization (QLoRA; on by default for `nf4`) stores each absmax in one byte: `offset`,
 * the mean of the tensor's absmaxes (summed in the order {@link absmaxMean} gives), is subtracted,
 * and the centred values, in groups of 256, are coded in bitsandbytes' signed 8-bit dynamic map
 * ({@link DYNAMIC_MAP}) against the group's own largest magnitude `absmax2` (f32), the same way a
 * block's values are coded against its absmax. A block's absmax is then
 * `fround(fround(DYNAMIC_MAP[code] * absmax2) + offset)`.
 *
 * @module
 */

/** A packed format of frozen weights. */
export type BaseFormat = "f16" | "bf16" | "int8" | "nf4";

/** Every packed format, in the order messages list them. */
export const BASE_FORMATS: readonly BaseFormat[] = ["f16", "bf16", "int8", "nf4"];

/** The smallest normal float32: int8 and nf4 blocks count smaller magnitudes as 0. */
export const F32_MIN_NORMAL = 2 ** -126;

/** The largest finite float32. */
const F32_MAX = 3.4028234663852886e38;

/** Values of one double-quantization group. */
export const ABSMAX_GROUP = 256;

/** Partial sums of {@link absmaxMean} (the GPU reduces with this many threads). */
export const MEAN_LANES = 256;

/** Row pitch of every format is a multiple of this many bytes (a vec4 of u32). */
export const ROW_ALIGN = 16;

/**
 * The sixteen NormalFloat levels of QLoRA (Dettmers et al. 2023, appendix E; bitsandbytes'
 * `NF4` code), as float32 values, code 0 to 15. Code 7 is exactly 0.
 */
export const NF4_LEVELS: Float32Array = Float32Array.from([
  -1,
  -0.6961928009986877,
  -0.5250730514526367,
  -0.39491748809814453,
  -0.28444138169288635,
  -0.18477343022823334,
  -0.09105003625154495,
  0,
  0.07958029955625534,
  0.16093020141124725,
  0.24611230194568634,
  0.33791524171829224,
  0.44070982933044434,
  0.5626170039176941,
  0.7229568362236023,
  1,
]);

/** The code of 0 in {@link NF4_LEVELS}. */
export const NF4_ZERO = 7;

/** `fround` of the float64 midpoint of each pair of neighbouring levels, ascending. */
function midpoints(levels: Float32Array): Float32Array {
  const out = new Float32Array(levels.length - 1);
  for (let i = 0; i < out.length; i++) out[i] = (levels[i] + levels[i + 1]) / 2;
  return out;
}

/** The 15 decision thresholds of NF4: code = how many of them `v` is above. */
export const NF4_THRESHOLDS: Float32Array = midpoints(NF4_LEVELS);

/**
 * bitsandbytes' signed 8-bit dynamic map (`create_dynamic_map(signed=True)`), which double
 * quantization codes the centred absmaxes in: for `i` = 0..6, the `2^i` midpoints of `2^i + 1`
 * evenly spaced points from 0.1 to 1, times `10^(i - 6)`, with both signs; then 0 and 1; sorted.
 * Computed here in float64 and rounded once to float32 (bitsandbytes computes them in float32
 * steps, so a value may differ from its table in the last bit). The most negative value is
 * about -0.993: a centred absmax equal to `-absmax2` comes back 0.7 % of `absmax2` too high.
 */
export const DYNAMIC_MAP: Float32Array = (() => {
  const values = [0, 1];
  for (let i = 0; i < 7; i++) {
    const n = 2 ** i;
    for (let t = 0; t < n; t++) {
      const mean = 0.1 + (0.9 * (2 * t + 1)) / (2 * n);
      values.push(10 ** (i - 6) * mean, -(10 ** (i - 6)) * mean);
    }
  }
  return Float32Array.from(values.sort((a, b) => a - b));
})();

/** The code of 0 in {@link DYNAMIC_MAP}. */
export const DYNAMIC_ZERO: number = DYNAMIC_MAP.indexOf(0);

/** The 255 decision thresholds of {@link DYNAMIC_MAP}. */
export const DYNAMIC_THRESHOLDS: Float32Array = midpoints(DYNAMIC_MAP);

/** int8 levels by code byte (two's complement): `fround(q / 127)`, -128 coded as -127. */
export const INT8_LEVELS: Float32Array = (() => {
  const out = new Float32Array(256);
  for (let b = 0; b < 256; b++) out[b] = Math.max(-127, b < 128 ? b : b - 256) / 127;
  return out;
})();

/**
 * The 254 decision thresholds of int8, between the levels `q / 127` for q = -127..127, and a last
 * one (the largest f32) that no normalized value reaches, so that a binary search takes 8 steps.
 */
export const INT8_THRESHOLDS: Float32Array = (() => {
  const levels = new Float32Array(255);
  for (let q = -127; q <= 127; q++) levels[q + 127] = q / 127;
  const out = new Float32Array(255);
  out.set(midpoints(levels));
  out[254] = F32_MAX;
  return out;
})();

/** How to pack a weight. */
export interface BaseQuantOptions {
  /** The format. */
  format: BaseFormat;
  /** int8/nf4: values a block, a power of two from 32 to 4096; default 64. */
  blockSize?: number;
  /** int8/nf4: store each absmax in a byte (QLoRA); default true for nf4, false for int8. */
  doubleQuant?: boolean;
}

/** Where every part of a packed `[rows, cols]` weight lies, and how many bytes it takes. */
export interface PackedLayout {
  /** The format of the codes. */
  format: BaseFormat;
  /** Rows: output features. */
  rows: number;
  /** Columns: input features. */
  cols: number;
  /** Values a block (0 for 16-bit formats). */
  blockSize: number;
  /** Whether the absmaxes are stored as byte codes (second-level quantization). */
  doubleQuant: boolean;
  /** Bytes from one row of codes to the next (a multiple of {@link ROW_ALIGN}). */
  rowBytes: number;
  /** Blocks a row: `ceil(cols / blockSize)` (0 for 16-bit formats). */
  blocksPerRow: number;
  /** Blocks in all, `rows * blocksPerRow`: absmaxes, row by row. */
  blocks: number;
  /** Double-quantization groups, `ceil(blocks / 256)` (0 without). */
  groups: number;
  /** Bytes of the codes: `rows * rowBytes`. */
  codeBytes: number;
  /** Bytes of the absmaxes: 4 a block, or with double quantization 1 a block padded to 4. */
  scaleBytes: number;
  /** Bytes of the second level: 4 for the offset and 4 a group (0 without). */
  scale2Bytes: number;
  /** All of it. */
  bytes: number;
}

/** A packed weight on the host: its layout and its bytes. */
export interface PackedWeight extends PackedLayout {
  /** `rows * rowBytes` bytes of codes (16-bit values, int8 bytes or nf4 nibbles). */
  codes: Uint8Array;
  /** Without double quantization: `blocks` f32 absmaxes. */
  absmax?: Float32Array;
  /** With double quantization: `blocks` codes in {@link DYNAMIC_MAP}. */
  absmaxCodes?: Uint8Array;
  /** With double quantization: `groups` f32 scales of the centred absmaxes. */
  absmax2?: Float32Array;
  /** With double quantization: the mean subtracted from every absmax. */
  offset?: number;
}

/**
 * The layout of a packed weight, checked.
 *
 * @param rows Output features (rows of the `[out, in]` matrix).
 * @param cols Input features.
 * @param options Format, block size, double quantization.
 * @returns Sizes and byte counts.
 * @throws {RangeError} On a size that is not a positive integer, an unknown format or a block
 * size that is not a power of two from 32 to 4096.
 *
 * @example Bytes of a 4096 x 4096 NF4 weight
 * ```ts
 * import { packedLayout } from "./formats/base_quant.ts";
 * console.log(packedLayout(4096, 4096, { format: "nf4" }).bytes); // 8654852
 * ```
 */
export function packedLayout(rows: number, cols: number, options: BaseQuantOptions): PackedLayout {
  const { format } = options;
  if (!BASE_FORMATS.includes(format)) {
    throw new RangeError(
      `Unknown base weight format "${format}": expected one of ${BASE_FORMATS.join(", ")}`,
    );
  }
  for (const [name, v] of [["rows", rows], ["cols", cols]] as const) {
    if (!Number.isSafeInteger(v) || v < 1) {
      throw new RangeError(`Cannot pack a weight with ${v} ${name}: expected an integer >= 1`);
    }
  }
  const half = format === "f16" || format === "bf16";
  const blockSize = half ? 0 : options.blockSize ?? 64;
  if (
    !half && !(Number.isSafeInteger(blockSize) && blockSize >= 32 && blockSize <= 4096 &&
      (blockSize & (blockSize - 1)) === 0)
  ) {
    throw new RangeError(
      `Invalid block size ${options.blockSize} for ${format}: expected a power of two from 32 ` +
        `to 4096 (64 is QLoRA's)`,
    );
  }
  const doubleQuant = half ? false : options.doubleQuant ?? format === "nf4";
  const valueBits = half ? 16 : format === "int8" ? 8 : 4;
  const rowBytes = align(Math.ceil((cols * valueBits) / 8), ROW_ALIGN);
  const blocksPerRow = half ? 0 : Math.ceil(cols / blockSize);
  const blocks = rows * blocksPerRow;
  const groups = doubleQuant ? Math.ceil(blocks / ABSMAX_GROUP) : 0;
  const codeBytes = rows * rowBytes;
  const scaleBytes = doubleQuant ? align(blocks, 4) : 4 * blocks;
  const scale2Bytes = doubleQuant ? 4 * (1 + groups) : 0;
  return {
    format,
    rows,
    cols,
    blockSize,
    doubleQuant,
    rowBytes,
    blocksPerRow,
    blocks,
    groups,
    codeBytes,
    scaleBytes,
    scale2Bytes,
    bytes: codeBytes + scaleBytes + scale2Bytes,
  };
}

/**
 * Packs a weight: the float32 reference of what the GPU quantizer writes.
 *
 * @param values `rows * cols` values, row-major `[out, in]` (or `[in, out]` with `transposed`).
 * @param shape `[rows, cols]` of the packed `[out, in]` matrix.
 * @param options Format, block size, double quantization, and `transposed` for a `conv1d`
 * weight stored `[in, out]`.
 * @returns The layout and its bytes.
 * @throws {RangeError} On a bad layout (see {@link packedLayout}), a length that does not match,
 * or a value that is not finite.
 *
 * @example Pack and unpack one NF4 row
 * ```ts
 * import { packWeight, unpackWeight } from "./formats/base_quant.ts";
 * const p = packWeight(new Float32Array([0.5, -1, 0.25]), [1, 3], { format: "nf4" });
 * console.log(p.codes[0].toString(16), unpackWeight(p)); // "d0" [0.5626.., -1, 0.2461..]
 * ```
 */
export function packWeight(
  values: ArrayLike<number>,
  shape: readonly [number, number],
  options: BaseQuantOptions & { transposed?: boolean },
): PackedWeight {
  const [rows, cols] = shape;
  const layout = packedLayout(rows, cols, options);
  if (values.length !== rows * cols) {
    throw new RangeError(
      `Cannot pack ${values.length} values as a [${rows}, ${cols}] weight (${rows * cols} values)`,
    );
  }
  const at = options.transposed
    ? (r: number, c: number) => values[c * rows + r]
    : (r: number, c: number) => values[r * cols + c];
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i])) {
      throw new RangeError(`Cannot pack value ${values[i]} at index ${i}: not finite`);
    }
  }
  const codes = new Uint8Array(layout.codeBytes);
  const { format, blockSize, blocksPerRow } = layout;
  if (format === "f16" || format === "bf16") {
    const halves = new DataView(codes.buffer);
    const convert = format === "f16" ? f32ToF16Bits : f32ToBf16Bits;
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        halves.setUint16(r * layout.rowBytes + 2 * c, convert(at(r, c)), true);
      }
    }
    return { ...layout, codes };
  }
  const absmax = new Float32Array(layout.blocks);
  const value = (r: number, c: number) => {
    const x = at(r, c);
    return Math.abs(x) < F32_MIN_NORMAL ? 0 : x;
  };
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < blocksPerRow; b++) {
      const end = Math.min(cols, (b + 1) * blockSize);
      let m = 0;
      for (let c = b * blockSize; c < end; c++) m = Math.max(m, Math.abs(value(r, c)));
      absmax[r * blocksPerRow + b] = m;
      const inv = m === 0 ? 0 : Math.fround(1 / m);
      for (let c = b * blockSize; c < end; c++) {
        const code = m === 0
          ? (format === "nf4" ? NF4_ZERO : 0)
          : format === "nf4"
          ? countBelow(NF4_THRESHOLDS, Math.fround(value(r, c) * inv))
          : int8Code(Math.fround(value(r, c) * inv));
        if (format === "nf4") {
          codes[r * layout.rowBytes + (c >> 1)] |= (c & 1) === 0 ? code << 4 : code;
        } else {
          codes[r * layout.rowBytes + c] = code;
        }
      }
    }
  }
  if (!layout.doubleQuant) return { ...layout, codes, absmax };
  return { ...layout, codes, ...doubleQuantize(absmax) };
}

/**
 * Codes the absmaxes of a tensor in bytes (QLoRA's double quantization): the mean is subtracted,
 * and each group of 256 centred values is coded in {@link DYNAMIC_MAP} against its largest
 * magnitude.
 *
 * @param absmax The tensor's block absmaxes, in block order.
 * @returns One code a block, one scale a group, and the mean.
 */
export function doubleQuantize(
  absmax: Float32Array,
): { absmaxCodes: Uint8Array; absmax2: Float32Array; offset: number } {
  const offset = absmaxMean(absmax);
  const groups = Math.ceil(absmax.length / ABSMAX_GROUP);
  const absmaxCodes = new Uint8Array(absmax.length);
  const absmax2 = new Float32Array(groups);
  for (let g = 0; g < groups; g++) {
    const end = Math.min(absmax.length, (g + 1) * ABSMAX_GROUP);
    let scale = 0;
    for (let i = g * ABSMAX_GROUP; i < end; i++) {
      scale = Math.max(scale, Math.abs(Math.fround(absmax[i] - offset)));
    }
    absmax2[g] = scale;
    const inv = scale === 0 ? 0 : Math.fround(1 / scale);
    for (let i = g * ABSMAX_GROUP; i < end; i++) {
      const centred = Math.fround(absmax[i] - offset);
      absmaxCodes[i] = scale === 0
        ? DYNAMIC_ZERO
        : countBelow(DYNAMIC_THRESHOLDS, Math.fround(centred * inv));
    }
  }
  return { absmaxCodes, absmax2, offset };
}

/**
 * The mean of a tensor's absmaxes, in the order the GPU sums them: {@link MEAN_LANES} partial
 * sums, partial `t` adding values `t, t + 256, t + 512, ...` in turn from 0; then halving,
 * `partial[t] += partial[t + s]` for `s` = 128, 64, ..., 1; the total divided by the count. Every
 * step rounds to float32.
 *
 * @param values The absmaxes (at least one).
 * @returns The float32 mean.
 */
export function absmaxMean(values: Float32Array): number {
  const partial = new Float64Array(MEAN_LANES);
  for (let i = 0; i < values.length; i++) {
    const t = i % MEAN_LANES;
    partial[t] = Math.fround(partial[t] + values[i]);
  }
  for (let s = MEAN_LANES / 2; s >= 1; s >>= 1) {
    for (let t = 0; t < s; t++) partial[t] = Math.fround(partial[t] + partial[t + s]);
  }
  return Math.fround(partial[0] / values.length);
}

/**
 * Every block's absmax as the kernels use it: stored, or decoded from double quantization.
 *
 * @param packed A packed int8 or nf4 weight.
 * @returns `blocks` float32 values.
 */
export function blockAbsmax(packed: PackedWeight): Float32Array {
  if (!packed.doubleQuant) return packed.absmax ?? new Float32Array();
  const { absmaxCodes, absmax2, offset } = packed;
  const out = new Float32Array(packed.blocks);
  for (let i = 0; i < out.length; i++) {
    const decoded = Math.fround(
      DYNAMIC_MAP[absmaxCodes![i]] * absmax2![Math.floor(i / ABSMAX_GROUP)],
    );
    out[i] = decoded + offset!;
  }
  return out;
}

/**
 * Unpacks a weight to float32: the reference of the GPU dequantize kernel, bit for bit.
 *
 * @param packed A packed weight.
 * @returns `rows * cols` values, row-major `[out, in]`.
 *
 * @example An int8 round trip is within half a step of each block's absmax / 127
 * ```ts
 * import { packWeight, unpackWeight } from "./formats/base_quant.ts";
 * const w = new Float32Array([0.3, -0.01, 0.2, 0.05]);
 * console.log(unpackWeight(packWeight(w, [2, 2], { format: "int8" })));
 * ```
 */
export function unpackWeight(packed: PackedWeight): Float32Array {
  const { rows, cols, rowBytes, format, blockSize, blocksPerRow, codes } = packed;
  const out = new Float32Array(rows * cols);
  if (format === "f16" || format === "bf16") {
    const halves = new DataView(codes.buffer, codes.byteOffset, codes.byteLength);
    const widen = format === "f16" ? f16BitsToF32 : bf16BitsToF32;
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        out[r * cols + c] = widen(halves.getUint16(r * rowBytes + 2 * c, true));
      }
    }
    return out;
  }
  const absmax = blockAbsmax(packed);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const scale = absmax[r * blocksPerRow + Math.floor(c / blockSize)];
      const level = format === "nf4"
        ? NF4_LEVELS[(codes[r * rowBytes + (c >> 1)] >> ((c & 1) === 0 ? 4 : 0)) & 15]
        : INT8_LEVELS[codes[r * rowBytes + c]];
      out[r * cols + c] = level * scale;
    }
  }
  return out;
}

/** How many of the ascending `thresholds` `v` is strictly above. */
function countBelow(thresholds: Float32Array, v: number): number {
  let lo = 0;
  let hi = thresholds.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (v > thresholds[mid]) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The int8 code byte of a normalized value: its nearest level `q / 127`, ties down. */
function int8Code(v: number): number {
  return (countBelow(INT8_THRESHOLDS, v) - 127) & 0xff;
}

const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);

/**
 * The IEEE binary16 nearest to a number (ties to even), as its 16 bits: overflow gives an
 * infinity, NaN gives 0x7e00 with the sign, subnormals are kept.
 *
 * @param x A number; it is first rounded to float32, as a GPU holds it.
 * @returns The half's bits.
 *
 * @example
 * ```ts
 * import { f32ToF16Bits } from "./formats/base_quant.ts";
 * f32ToF16Bits(1); // 0x3c00
 * f32ToF16Bits(65520); // 0x7c00 (rounds to infinity)
 * ```
 */
export function f32ToF16Bits(x: number): number {
  F32[0] = x;
  const u = U32[0];
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  const mant = u & 0x7fffff;
  if (exp === 255) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0);
  const e = exp - 112; // rebias 127 -> 15
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal half: the 24-bit significand shifted right past the exponent's floor.
    const shift = 14 - e;
    if (shift > 25) return sign;
    const m = mant | 0x800000;
    const kept = m >>> shift;
    const rest = m - (kept << shift);
    const halfway = 1 << (shift - 1);
    const up = rest > halfway || (rest === halfway && (kept & 1) === 1);
    return sign | (kept + (up ? 1 : 0));
  }
  const h = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  const up = rest > 0x1000 || (rest === 0x1000 && (h & 1) === 1);
  return sign | (h + (up ? 1 : 0));
}

/**
 * The bfloat16 nearest to a number (ties to even), as its 16 bits: the top half of the float32,
 * rounded; NaN stays NaN (quiet), overflow gives an infinity.
 *
 * @param x A number; it is first rounded to float32.
 * @returns The bf16 bits.
 *
 * @example
 * ```ts
 * import { f32ToBf16Bits } from "./formats/base_quant.ts";
 * f32ToBf16Bits(1); // 0x3f80
 * ```
 */
export function f32ToBf16Bits(x: number): number {
  F32[0] = x;
  const u = U32[0];
  if ((u & 0x7fffffff) > 0x7f800000) return (u >>> 16) | 0x40;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** A binary16 value from its bits (exact). */
function f16BitsToF32(bits: number): number {
  F16_BITS[0] = bits;
  return F16_VALUE[0];
}

/** A bfloat16 value from its bits (exact). */
function bf16BitsToF32(bits: number): number {
  U32[0] = bits << 16;
  return F32[0];
}

const F16_BITS = new Uint16Array(1);
const F16_VALUE = new Float16Array(F16_BITS.buffer);

/**
 * Packs 16-bit values as a checkpoint stores them (F16 or BF16, row-major `[rows, cols]`) into
 * the padded rows of a packed weight, without converting them.
 *
 * @param bits `rows * cols` half bit patterns.
 * @param shape `[rows, cols]`.
 * @param format `f16` or `bf16`.
 * @returns The packed weight (its codes are `bits` itself, rows padded to 16 bytes).
 */
export function packHalfBits(
  bits: Uint16Array,
  shape: readonly [number, number],
  format: "f16" | "bf16",
): PackedWeight {
  const [rows, cols] = shape;
  const layout = packedLayout(rows, cols, { format });
  if (bits.length !== rows * cols) {
    throw new RangeError(
      `Cannot pack ${bits.length} values as a [${rows}, ${cols}] weight (${rows * cols} values)`,
    );
  }
  const codes = new Uint8Array(layout.codeBytes);
  const src = new Uint8Array(bits.buffer, bits.byteOffset, bits.byteLength);
  for (let r = 0; r < rows; r++) {
    codes.set(src.subarray(r * cols * 2, (r + 1) * cols * 2), r * layout.rowBytes);
  }
  return { ...layout, codes };
}

function align(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

/**
 * Where each table lies in {@link baseCodebook}, in f32 elements (the WGSL kernels use the same
 * offsets).
 */
export const CODEBOOK_OFFSETS = {
  nf4Levels: 0,
  nf4Thresholds: 16,
  dynamicMap: 32,
  dynamicThresholds: 288,
  int8Levels: 544,
  int8Thresholds: 800,
  length: 1056,
} as const;

/**
 * Every table the GPU kernels code and decode with, in one f32 array uploaded once per device,
 * so the host and the GPU use the very same constants.
 *
 * @returns {@link CODEBOOK_OFFSETS}`.length` values.
 */
export function baseCodebook(): Float32Array {
  const book = new Float32Array(CODEBOOK_OFFSETS.length);
  book.set(NF4_LEVELS, CODEBOOK_OFFSETS.nf4Levels);
  book.set(NF4_THRESHOLDS, CODEBOOK_OFFSETS.nf4Thresholds);
  book.set(DYNAMIC_MAP, CODEBOOK_OFFSETS.dynamicMap);
  book.set(DYNAMIC_THRESHOLDS, CODEBOOK_OFFSETS.dynamicThresholds);
  book.set(INT8_LEVELS, CODEBOOK_OFFSETS.int8Levels);
  book.set(INT8_THRESHOLDS, CODEBOOK_OFFSETS.int8Thresholds);
  return book;
}
