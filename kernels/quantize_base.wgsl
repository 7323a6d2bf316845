// Packing frozen weights on the GPU, bit for bit as formats/base_quant.ts packs them on the host.
// A packed weight is [rows, cols] ([out, in]); its codes are rows of `row_words` u32, and element
// (r, c) belongs to block r * blocks_per_row + c / block. Formats (p.format): 0 f16, 1 bf16,
// 2 int8, 3 nf4. Unpacking (dequantize) lives in qmatmul.wgsl with the matmul's decoders.
//
// Every entry point binds (group 0):
//   0 codes    array<u32>, read_write   the packed codes written (absmax_quantize: the absmax
//                                       byte codes, four a u32)
//   1 scales   array<f32>, read_write   quantize_blocks: (blocks) absmax; absmax_mean and
//                                       absmax_quantize: [offset, absmax2 of each group]
//   2 count    atomic<u32>              non-finite source values are added here
//   3 inp      array<f32>, read         the f32 source (absmax_*: the (blocks) absmaxes)
//   4 book     array<f32>, read         the codebook (levels and thresholds, see below)
//   5 p        Params, uniform
//
// quantize_half     one invocation per u32 of codes (two halves)
// quantize_blocks   one workgroup per block (absmax, then its words of codes)
// absmax_mean       one workgroup: scales[0] = the mean of the absmaxes, summed in the order of
//                   the reference (absmaxMean)
// absmax_quantize   one workgroup per group of 256 absmaxes: scales[1 + g] and their byte codes
//
// Source element (r, c) of a dispatch, rows [row0, row0 + rows_here) and columns
// [col0, col0 + cols_here) of the packed matrix, lies at
//   inp[src_shift + (r - row0) * src_row + (c - col0) * src_col]
// (src_row = cols, src_col = 1 for an [out, in] source; 1 and rows for a transposed [in, out]
// one). Codes of row r start at code_shift + (r - code_row0) * row_words. Only integer
// operations, single f32 multiplies and comparisons decide a code, and divisions are done
// exactly (div_rn), so any conforming device writes the reference's bytes. Values are tested for
// NaN and infinity by their bits, since WGSL lets a compiler assume there are none.

struct Params {
  format: u32, rows: u32, cols: u32, row_words: u32,
  block: u32, blocks_per_row: u32, blocks: u32, double_quant: u32,
  row0: u32, rows_here: u32, col0: u32, cols_here: u32,
  src_shift: u32, src_row: u32, src_col: u32, code_shift: u32,
  code_row0: u32, pad0: u32, pad1: u32, pad2: u32,
}

// Offsets into the codebook buffer (formats/base_quant.ts builds the same one).
const NF4_LEVELS: u32 = 0u;
const NF4_THRESHOLDS: u32 = 16u;
const DYN_MAP: u32 = 32u;
const DYN_THRESHOLDS: u32 = 288u;
const INT8_LEVELS: u32 = 544u;
const INT8_THRESHOLDS: u32 = 800u;
const NF4_ZERO: u32 = 7u;
const GROUP: u32 = 256u;

const F16: u32 = 0u;
const BF16: u32 = 1u;
const INT8: u32 = 2u;
const NF4: u32 = 3u;

override WG: u32 = 64u;

@group(0) @binding(0) var<storage, read_write> codes: array<u32>;
@group(0) @binding(1) var<storage, read_write> scales: array<f32>;
@group(0) @binding(2) var<storage, read_write> count: atomic<u32>;
@group(0) @binding(3) var<storage, read> inp: array<f32>;
@group(0) @binding(4) var<storage, read> book: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;

var<workgroup> lanes: array<f32, 256>;
var<workgroup> bytes: array<u32, 256>;

fn is_finite(x: f32) -> bool {
  return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

// a / b rounded to the nearest f32 (ties to even), for a >= 0 and b > 0: WGSL's `/` may be 2.5
// ulp off, the host divides exactly. Long division of the significands in integers; subnormal
// operands or results (never met by weights) fall back to `/`.
fn div_rn(a: f32, b: f32) -> f32 {
  if (a == 0.0) {
    return 0.0;
  }
  let ua = bitcast<u32>(a);
  let ub = bitcast<u32>(b);
  let ea = i32(ua >> 23u);
  let eb = i32(ub >> 23u);
  if (ea == 0 || eb == 0 || ea == 255 || eb == 255) {
    return a / b;
  }
  var ma = (ua & 0x7fffffu) | 0x800000u;
  let mb = (ub & 0x7fffffu) | 0x800000u;
  var e = ea - eb + 127;
  if (ma < mb) {
    ma = ma << 1u;
    e = e - 1;
  }
  // 25 quotient bits (the significand and a rounding bit); the remainder is the sticky bit.
  var q = 0u;
  var r = ma;
  for (var i = 0u; i < 25u; i++) {
    q = q << 1u;
    if (r >= mb) {
      r = r - mb;
      q = q | 1u;
    }
    r = r << 1u;
  }
  let round_bit = q & 1u;
  q = q >> 1u;
  if (round_bit == 1u && (r != 0u || (q & 1u) == 1u)) {
    q = q + 1u;
  }
  if (q == 0x1000000u) {
    q = q >> 1u;
    e = e + 1;
  }
  if (e <= 0 || e >= 255) {
    return a / b;
  }
  return bitcast<f32>((u32(e) << 23u) | (q & 0x7fffffu));
}

// How many of the `n` ascending thresholds at book[first..] `v` is above (n + 1 a power of two).
fn count_below(first: u32, n: u32, v: f32) -> u32 {
  var pos = 0u;
  for (var step = (n + 1u) / 2u; step > 0u; step = step / 2u) {
    if (v > book[first + pos + step - 1u]) {
      pos = pos + step;
    }
  }
  return pos;
}

fn src_at(r: u32, c: u32) -> f32 {
  return inp[p.src_shift + (r - p.row0) * p.src_row + (c - p.col0) * p.src_col];
}

// A block's value: magnitudes below the smallest normal f32 count as 0 (tested on the bits), so
// that devices which flush subnormals and devices which keep them write the same codes.
fn block_value(r: u32, c: u32) -> f32 {
  let x = src_at(r, c);
  return select(x, 0.0, (bitcast<u32>(x) & 0x7f800000u) == 0u);
}

fn code_index(r: u32, w: u32) -> u32 {
  return p.code_shift + (r - p.code_row0) * p.row_words + w;
}

// The workgroup's index in a grid that may spill into a second dimension.
fn flat_group(wg: vec3u, groups: vec3u) -> u32 {
  return wg.x + wg.y * groups.x;
}

// f32 -> binary16 bits, nearest even; overflow to infinity, NaN to 0x7e00 (sign kept).
fn f16_bits(x: f32) -> u32 {
  let u = bitcast<u32>(x);
  let sign = (u >> 16u) & 0x8000u;
  let exp = i32((u >> 23u) & 0xffu);
  let mant = u & 0x7fffffu;
  if (exp == 255) {
    return sign | 0x7c00u | select(0u, 0x200u, mant != 0u);
  }
  let e = exp - 112;
  if (e >= 31) {
    return sign | 0x7c00u;
  }
  if (e <= 0) {
    let shift = u32(14 - e);
    if (shift > 25u) {
      return sign;
    }
    let m = mant | 0x800000u;
    let kept = m >> shift;
    let rest = m - (kept << shift);
    let halfway = 1u << (shift - 1u);
    let up = rest > halfway || (rest == halfway && (kept & 1u) == 1u);
    return sign | (kept + select(0u, 1u, up));
  }
  let h = (u32(e) << 10u) | (mant >> 13u);
  let rest = mant & 0x1fffu;
  let up = rest > 0x1000u || (rest == 0x1000u && (h & 1u) == 1u);
  return sign | (h + select(0u, 1u, up));
}

// f32 -> bfloat16 bits, nearest even; NaN stays a quiet NaN.
fn bf16_bits(x: f32) -> u32 {
  let u = bitcast<u32>(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    return (u >> 16u) | 0x40u;
  }
  return ((u + 0x7fffu + ((u >> 16u) & 1u)) >> 16u) & 0xffffu;
}

// The end (exclusive) of the words a dispatch writes in a row: up to its last column's word, or
// through the row's padding when that column is the row's last.
fn words_end(col_end: u32, per_word: u32) -> u32 {
  if (col_end == p.cols) {
    return p.row_words;
  }
  return col_end / per_word;
}

@compute @workgroup_size(WG)
fn quantize_half(
  @builtin(global_invocation_id) gid: vec3u,
  @builtin(num_workgroups) groups: vec3u,
) {
  let w0 = p.col0 / 2u;
  let per_row = words_end(p.col0 + p.cols_here, 2u) - w0;
  let index = gid.x + gid.y * groups.x * WG;
  if (index >= p.rows_here * per_row) {
    return;
  }
  let r = p.row0 + index / per_row;
  let w = w0 + index % per_row;
  var word = 0u;
  var bad = 0u;
  for (var e = 0u; e < 2u; e++) {
    let c = 2u * w + e;
    if (c < p.cols) {
      let x = src_at(r, c);
      bad += select(1u, 0u, is_finite(x));
      let h = select(bf16_bits(x), f16_bits(x), p.format == F16);
      word = word | (h << (16u * e));
    }
  }
  codes[code_index(r, w)] = word;
  if (bad != 0u) {
    atomicAdd(&count, bad);
  }
}

// The code of x in block terms: `inv` is fround(1 / absmax), 0 for a block of zeros.
fn block_code(x: f32, inv: f32) -> u32 {
  if (p.format == NF4) {
    if (inv == 0.0) {
      return NF4_ZERO;
    }
    return count_below(NF4_THRESHOLDS, 15u, x * inv);
  }
  if (inv == 0.0) {
    return 0u;
  }
  // Levels q / 127 for q = -127..127, in order: the count is q + 127.
  return (count_below(INT8_THRESHOLDS, 255u, x * inv) + 129u) & 0xffu;
}

@compute @workgroup_size(WG)
fn quantize_blocks(
  @builtin(workgroup_id) wg: vec3u,
  @builtin(num_workgroups) groups: vec3u,
  @builtin(local_invocation_index) t: u32,
) {
  let first_block = p.col0 / p.block;
  let per_row = (p.col0 + p.cols_here + p.block - 1u) / p.block - first_block;
  let index = flat_group(wg, groups);
  // Uniform per workgroup, so the barriers below are reached by all or none.
  if (index >= p.rows_here * per_row) {
    return;
  }
  let r = p.row0 + index / per_row;
  let b = first_block + index % per_row;
  let begin = b * p.block;
  let end = min(begin + p.block, p.cols);
  var m = 0.0;
  var bad = 0u;
  for (var c = begin + t; c < end; c += WG) {
    let x = block_value(r, c);
    if (is_finite(x)) {
      m = max(m, abs(x));
    } else {
      bad += 1u;
    }
  }
  if (bad != 0u) {
    atomicAdd(&count, bad);
  }
  lanes[t] = m;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (t < s) {
      lanes[t] = max(lanes[t], lanes[t + s]);
    }
    workgroupBarrier();
  }
  let amax = lanes[0];
  if (t == 0u) {
    scales[r * p.blocks_per_row + b] = amax;
  }
  let inv = select(0.0, div_rn(1.0, amax), amax > 0.0);
  let per_word = select(4u, 8u, p.format == NF4);
  let w_end = words_end(end, per_word);
  for (var w = begin / per_word + t; w < w_end; w += WG) {
    var word = 0u;
    for (var e = 0u; e < per_word; e++) {
      let c = w * per_word + e;
      if (c < end) {
        let code = block_code(block_value(r, c), inv);
        // nf4: the first value of a pair in the high nibble; int8: one byte a value.
        let shift = select(8u * e, 8u * (e / 2u) + 4u * (1u - e % 2u), p.format == NF4);
        word = word | (code << shift);
      }
    }
    codes[code_index(r, w)] = word;
  }
}

@compute @workgroup_size(256)
fn absmax_mean(@builtin(local_invocation_index) t: u32) {
  var sum = 0.0;
  for (var i = t; i < p.blocks; i += 256u) {
    sum = sum + inp[i];
  }
  lanes[t] = sum;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s = s / 2u) {
    if (t < s) {
      lanes[t] = lanes[t] + lanes[t + s];
    }
    workgroupBarrier();
  }
  if (t == 0u) {
    scales[0] = div_rn(lanes[0], f32(p.blocks));
  }
}

@compute @workgroup_size(256)
fn absmax_quantize(
  @builtin(workgroup_id) wg: vec3u,
  @builtin(num_workgroups) groups: vec3u,
  @builtin(local_invocation_index) t: u32,
) {
  let g = flat_group(wg, groups);
  if (g * GROUP >= p.blocks) {
    return;
  }
  let i = g * GROUP + t;
  let offset = scales[0];
  var centred = 0.0;
  if (i < p.blocks) {
    centred = inp[i] - offset;
  }
  lanes[t] = abs(centred);
  workgroupBarrier();
  for (var s = 128u; s > 0u; s = s / 2u) {
    if (t < s) {
      lanes[t] = max(lanes[t], lanes[t + s]);
    }
    workgroupBarrier();
  }
  let amax2 = lanes[0];
  if (t == 0u) {
    scales[1u + g] = amax2;
  }
  var code = 0u;
  if (i < p.blocks) {
    if (amax2 == 0.0) {
      code = count_below(DYN_THRESHOLDS, 255u, 0.0);
    } else {
      code = count_below(DYN_THRESHOLDS, 255u, centred * div_rn(1.0, amax2));
    }
  }
  bytes[t] = code;
  workgroupBarrier();
  if (t < GROUP / 4u && g * GROUP + 4u * t < p.blocks) {
    let at = 4u * t;
    codes[g * (GROUP / 4u) + t] = bytes[at] | (bytes[at + 1u] << 8u) | (bytes[at + 2u] << 16u) |
      (bytes[at + 3u] << 24u);
  }
}
