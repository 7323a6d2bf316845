// Matrix products with a frozen weight W kept packed (formats/base_quant.ts): f16, bf16, int8 or
// nf4, widened or dequantized in registers, accumulated in f32. W is [N, K] ([out, in]), its rows
// padded to 16 bytes. Prepend one of the preludes (qmatmul.ts picks it): both define
// `half_pair(at: u32) -> vec2f`, the two f16 values of u32 `at` of the codes, low half first, and
// `half8(at4: u32) -> Eight`, the eight of vec4u `at4`; qmatmul_f16.wgsl reads them as the f16
// type (binding 7), qmatmul_unpack.wgsl unpacks them.
//
// qmatmul_forward   y[M, N] (+)= x[M, K] · Wᵀ (+ bias)           16 x 16 outputs an invocation
// qmatmul_narrow    the same, 4 x 16 outputs an invocation (few rows: decoding)
// qmatmul_backward  dx[M, K] (+)= dy[M, N] · W                   16 x 32 outputs an invocation
// *_scalar          the same products, 4 x 4 outputs an invocation, any alignment
// dequantize        out = W as f32, [N, K] or transposed [K, N]  one invocation per element
//
// Bindings (group 0); element offsets and pitches from `p`:
//   0 out      array<f32>, read_write  y or dx, row i at off_out + i * ld_out; dequantize: out
//   1 inp      array<f32>, read        x or dy, row i at off_inp + i * ld_inp (inp4: the same as
//                                      vec4s, for the tiled entry points: off_inp and ld_inp are
//                                      multiples of 4)
//   2 codes    array<u32>, read        W's codes: row w_row0 + r at code_shift + r * row_words
//                                      (codes4: the same as vec4u, for the tiled entry points;
//                                      code_shift and row_words are multiples of 4)
//   3 scales   array<u32>, read        per block absmax (f32 bits), or with double quantization
//                                      its byte codes, four a u32; unused for 16-bit
//   4 scales2  array<f32>, read        [offset, absmax2 of each group of 256 blocks]
//   5 book     array<f32>, read        the codebook of formats/base_quant.ts (baseCodebook)
//   6 bias     array<f32>, read        bias[off_bias + j], read only with HAS_BIAS
//   7 codes    the codes once more, as f16 (declared by qmatmul_f16.wgsl only)
//   8 p        Params, uniform
//
// The format is the pipeline constant FORMAT (0 f16, 1 bf16, 2 int8, 3 nf4), so each pipeline
// compiles one decoder. int8 and nf4 rows are cut into blocks of `block` values (a power of two,
// at least 32), block (r, b) at r * blocks_per_row + b; the 16-bit formats have one block a row
// and no scale. On CPU drivers (llvmpipe) every invocation is a SIMD lane: loads of x, equal for
// the lanes of a workgroup, are cheap, while loads of W and table lookups are per lane, so each
// decoded weight is used for 16 rows.

struct Params {
  m: u32, n: u32, k: u32, flags: u32,
  ld_out: u32, ld_inp: u32, off_out: u32, off_inp: u32,
  off_bias: u32, row_words: u32, w_row0: u32, code_shift: u32,
  block: u32, blocks_per_row: u32, double_quant: u32, zero: u32,
}

const HAS_BIAS: u32 = 1u;
const ACCUMULATE: u32 = 2u;
const TRANSPOSE: u32 = 4u;

const F16: u32 = 0u;
const BF16: u32 = 1u;
const INT8: u32 = 2u;
const NF4: u32 = 3u;

// Offsets into the codebook (CODEBOOK_OFFSETS).
const NF4_LEVELS: u32 = 0u;
const DYN_MAP: u32 = 32u;
const INT8_LEVELS: u32 = 544u;
const GROUP: u32 = 256u;

override FORMAT: u32 = 3u;
override WG_X: u32 = 8u;
override WG_Y: u32 = 1u;

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(1) var<storage, read> inp4: array<vec4f>;
// One view of a binding per entry point: the scalar ones read codes as u32, the tiled ones as
// vec4u (one 16-byte load a column for 32 values of nf4); scales are u32 whatever they hold.
@group(0) @binding(2) var<storage, read> codes: array<u32>;
@group(0) @binding(2) var<storage, read> codes4: array<vec4u>;
@group(0) @binding(3) var<storage, read> scales: array<u32>;
@group(0) @binding(4) var<storage, read> scales2: array<f32>;
@group(0) @binding(5) var<storage, read> book: array<f32>;
@group(0) @binding(6) var<storage, read> bias: array<f32>;
@group(0) @binding(8) var<uniform> p: Params;

fn is_half() -> bool {
  return FORMAT == F16 || FORMAT == BF16;
}

// The absmax of block `blk` of W, as the reference decodes it.
fn block_scale(blk: u32) -> f32 {
  if (p.double_quant == 0u) {
    return bitcast<f32>(scales[blk]);
  }
  let code = (scales[blk / 4u] >> (8u * (blk % 4u))) & 0xffu;
  let prod = book[DYN_MAP + code] * scales2[1u + blk / GROUP];
  // OR-ing in a zero the compiler cannot see keeps it from fusing the product into the addition:
  // the reference rounds twice.
  return bitcast<f32>(bitcast<u32>(prod) | p.zero) + scales2[0];
}

// Rows of W are numbered from this dispatch's first, w_row0 (the products' N runs over them).
// The first u32 of codes of row r:
fn row_base(r: u32) -> u32 {
  return p.code_shift + r * p.row_words;
}

// The block index of block b of row r.
fn block_of(r: u32, b: u32) -> u32 {
  return (p.w_row0 + r) * p.blocks_per_row + b;
}

// NF4 levels (NF4_LEVELS of formats/base_quant.ts, the same f32 values) by a tree of selects on
// the code's bits: on CPU drivers a table lookup is a load per SIMD lane, several times slower.
fn nf4_levels(c: vec4u) -> vec4f {
  let b0 = (c & vec4u(1u)) != vec4u(0u);
  let b1 = (c & vec4u(2u)) != vec4u(0u);
  let b2 = (c & vec4u(4u)) != vec4u(0u);
  let b3 = (c & vec4u(8u)) != vec4u(0u);
  let l0 = select(vec4f(-1.0), vec4f(-0.69619280099868774), b0);
  let l1 = select(vec4f(-0.52507305145263672), vec4f(-0.39491748809814453), b0);
  let l2 = select(vec4f(-0.28444138169288635), vec4f(-0.18477343022823334), b0);
  let l3 = select(vec4f(-0.091050036251544952), vec4f(0.0), b0);
  let l4 = select(vec4f(0.079580299556255341), vec4f(0.16093020141124725), b0);
  let l5 = select(vec4f(0.24611230194568634), vec4f(0.33791524171829224), b0);
  let l6 = select(vec4f(0.44070982933044434), vec4f(0.56261700391769409), b0);
  let l7 = select(vec4f(0.72295683622360229), vec4f(1.0), b0);
  let m0 = select(l0, l1, b1);
  let m1 = select(l2, l3, b1);
  let m2 = select(l4, l5, b1);
  let m3 = select(l6, l7, b1);
  let n0 = select(m0, m1, b2);
  let n1 = select(m2, m3, b2);
  return select(n0, n1, b3);
}

// Four nf4 values of a word, the first of each byte in its high nibble: `shifts` picks them.
fn nf4_four(w: u32, shifts: vec4u) -> vec4f {
  return nf4_levels((vec4u(w) >> shifts) & vec4u(15u));
}

// The four int8 values of a word, as q (the 1/127 is folded into the block's scale).
fn int8_four(w: u32) -> vec4f {
  return vec4f(bitcast<vec4i>(vec4u(w) << vec4u(24u, 16u, 8u, 0u)) >> vec4u(24u));
}

fn bf16_two(w: u32) -> vec2f {
  return vec2f(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xffff0000u));
}

// What multiplies a block's values: its absmax (nf4), absmax / 127 (int8: the values are q), 1.
fn scale_of(blk: u32) -> f32 {
  if (is_half()) {
    return 1.0;
  }
  if (FORMAT == INT8) {
    return block_scale(blk) * book[INT8_LEVELS + 1u];
  }
  return block_scale(blk);
}

struct Eight {
  lo: vec4f,
  hi: vec4f,
}

fn bf16_eight(q: vec4u) -> Eight {
  return Eight(vec4f(bf16_two(q.x), bf16_two(q.y)), vec4f(bf16_two(q.z), bf16_two(q.w)));
}

// The eight 16-bit values in vec4u at4 of the codes.
fn halves8(at4: u32) -> Eight {
  if (FORMAT == BF16) {
    return bf16_eight(codes4[at4]);
  }
  return half8(at4);
}

// The codes of values k0 .. k0 + 31 of W row r (k0 a multiple of 32) for int8 and nf4; 16-bit
// values are loaded where they are decoded.
struct Words {
  a: vec4u,
  b: vec4u,
}

fn col_words(r: u32, k0: u32) -> Words {
  if (FORMAT == NF4) {
    return Words(codes4[(row_base(r) + k0 / 8u) / 4u], vec4u());
  }
  if (FORMAT == INT8) {
    let at = (row_base(r) + k0 / 4u) / 4u;
    return Words(codes4[at], codes4[at + 1u]);
  }
  return Words(vec4u(), vec4u());
}

// Values k0 + 8t .. k0 + 8t + 7 of W row r, unscaled, from its words (t = 0..3, a constant
// where it is called).
fn col_eight(r: u32, k0: u32, w: Words, t: u32) -> Eight {
  if (FORMAT == NF4) {
    let word = w.a[t];
    return Eight(nf4_four(word, vec4u(4u, 0u, 12u, 8u)), nf4_four(word, vec4u(20u, 16u, 28u, 24u)));
  }
  if (FORMAT == INT8) {
    let q = select(w.b, w.a, t < 2u);
    let i = 2u * (t % 2u);
    return Eight(int8_four(q[i]), int8_four(q[i + 1u]));
  }
  return halves8((row_base(r) + k0 / 2u) / 4u + t);
}

// W rows j (four output columns) at k0 + 8t .. k0 + 8t + 7, scaled by s: lo[q] and hi[q] hold
// the four columns' values at k0 + 8t + q and k0 + 8t + 4 + q.
struct Cols {
  lo: mat4x4f,
  hi: mat4x4f,
}

fn cols4(j: vec4u, k0: u32, t: u32, wa: Words, wb: Words, wc: Words, wd: Words, s: vec4f) -> Cols {
  let a = col_eight(j.x, k0, wa, t);
  let b = col_eight(j.y, k0, wb, t);
  let c = col_eight(j.z, k0, wc, t);
  let d = col_eight(j.w, k0, wd, t);
  let lo = transpose(mat4x4f(a.lo, b.lo, c.lo, d.lo));
  let hi = transpose(mat4x4f(a.hi, b.hi, c.hi, d.hi));
  return Cols(
    mat4x4f(lo[0] * s, lo[1] * s, lo[2] * s, lo[3] * s),
    mat4x4f(hi[0] * s, hi[1] * s, hi[2] * s, hi[3] * s),
  );
}

// x[i, k0 .. k0 + 7], zero past K; rows past M are clamped (never stored).
fn load_x8(i: u32, k0: u32) -> Eight {
  let at = (p.off_inp + min(i, p.m - 1u) * p.ld_inp + k0) / 4u;
  let k = vec4u(k0) + vec4u(0u, 1u, 2u, 3u);
  return Eight(
    select(vec4f(), inp4[at], k < vec4u(p.k)),
    select(vec4f(), inp4[at + 1u], k + vec4u(4u) < vec4u(p.k)),
  );
}

// acc + a · b for one output row: a holds 4 k of the row, b the matching 4 rows of 4 columns.
fn fma4(acc: vec4f, a: vec4f, b: mat4x4f) -> vec4f {
  return acc + a.x * b[0] + a.y * b[1] + a.z * b[2] + a.w * b[3];
}

fn fma8(acc: vec4f, x: Eight, w: Cols) -> vec4f {
  return fma4(fma4(acc, x.lo, w.lo), x.hi, w.hi);
}

fn store(i: u32, j: u32, v: f32) {
  if (i < p.m && j < p.n) {
    let at = p.off_out + i * p.ld_out + j;
    var r = v;
    if ((p.flags & HAS_BIAS) != 0u) {
      r += bias[p.off_bias + j];
    }
    if ((p.flags & ACCUMULATE) != 0u) {
      r += out[at];
    }
    out[at] = r;
  }
}

fn store4(i: u32, j: u32, v: vec4f) {
  store(i, j, v.x);
  store(i, j + 1u, v.y);
  store(i, j + 2u, v.z);
  store(i, j + 3u, v.w);
}

// Four W rows from j, clamped to the last (their results are never stored), and their scales in
// block b.
fn cols_at(j: u32) -> vec4u {
  return min(vec4u(j) + vec4u(0u, 1u, 2u, 3u), vec4u(p.n - 1u));
}

fn scales4(j: vec4u, b: u32) -> vec4f {
  return vec4f(scale_of(block_of(j.x, b)), scale_of(block_of(j.y, b)), scale_of(block_of(j.z, b)),
    scale_of(block_of(j.w, b)));
}

// 16 rows x 16 columns an invocation; the k loop runs block by block so each block's scales are
// decoded once, 32 values a step (one vec4u of nf4 codes a column). The body is written out, row
// by row and step by step (indexing private arrays is slow on CPU drivers): qmatmul_narrow and
// qmatmul_backward repeat the same lines for their tiles.
@compute @workgroup_size(WG_X, WG_Y)
fn qmatmul_forward(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let row = (wg.y * WG_Y + lid.y) * 16u;
  let col = (wg.x * WG_X + lid.x) * 16u;
  let j0 = cols_at(col);
  let j1 = cols_at(col + 4u);
  let j2 = cols_at(col + 8u);
  let j3 = cols_at(col + 12u);
  var c0_0: vec4f; var c0_1: vec4f; var c0_2: vec4f; var c0_3: vec4f;
  var c1_0: vec4f; var c1_1: vec4f; var c1_2: vec4f; var c1_3: vec4f;
  var c2_0: vec4f; var c2_1: vec4f; var c2_2: vec4f; var c2_3: vec4f;
  var c3_0: vec4f; var c3_1: vec4f; var c3_2: vec4f; var c3_3: vec4f;
  var c4_0: vec4f; var c4_1: vec4f; var c4_2: vec4f; var c4_3: vec4f;
  var c5_0: vec4f; var c5_1: vec4f; var c5_2: vec4f; var c5_3: vec4f;
  var c6_0: vec4f; var c6_1: vec4f; var c6_2: vec4f; var c6_3: vec4f;
  var c7_0: vec4f; var c7_1: vec4f; var c7_2: vec4f; var c7_3: vec4f;
  var c8_0: vec4f; var c8_1: vec4f; var c8_2: vec4f; var c8_3: vec4f;
  var c9_0: vec4f; var c9_1: vec4f; var c9_2: vec4f; var c9_3: vec4f;
  var c10_0: vec4f; var c10_1: vec4f; var c10_2: vec4f; var c10_3: vec4f;
  var c11_0: vec4f; var c11_1: vec4f; var c11_2: vec4f; var c11_3: vec4f;
  var c12_0: vec4f; var c12_1: vec4f; var c12_2: vec4f; var c12_3: vec4f;
  var c13_0: vec4f; var c13_1: vec4f; var c13_2: vec4f; var c13_3: vec4f;
  var c14_0: vec4f; var c14_1: vec4f; var c14_2: vec4f; var c14_3: vec4f;
  var c15_0: vec4f; var c15_1: vec4f; var c15_2: vec4f; var c15_3: vec4f;
  for (var b = 0u; b < p.blocks_per_row; b++) {
    let s0 = scales4(j0, b);
    let s1 = scales4(j1, b);
    let s2 = scales4(j2, b);
    let s3 = scales4(j3, b);
    let k_end = min(b * p.block + p.block, p.k);
    for (var k0 = b * p.block; k0 < k_end; k0 += 32u) {
      let q0 = col_words(j0.x, k0); let q1 = col_words(j0.y, k0); let q2 = col_words(j0.z, k0); let q3 = col_words(j0.w, k0);
      let q4 = col_words(j1.x, k0); let q5 = col_words(j1.y, k0); let q6 = col_words(j1.z, k0); let q7 = col_words(j1.w, k0);
      let q8 = col_words(j2.x, k0); let q9 = col_words(j2.y, k0); let q10 = col_words(j2.z, k0); let q11 = col_words(j2.w, k0);
      let q12 = col_words(j3.x, k0); let q13 = col_words(j3.y, k0); let q14 = col_words(j3.z, k0); let q15 = col_words(j3.w, k0);
      let w0_0 = cols4(j0, k0, 0u, q0, q1, q2, q3, s0);
      let w0_1 = cols4(j1, k0, 0u, q4, q5, q6, q7, s1);
      let w0_2 = cols4(j2, k0, 0u, q8, q9, q10, q11, s2);
      let w0_3 = cols4(j3, k0, 0u, q12, q13, q14, q15, s3);
      let x0_0 = load_x8(row + 0u, k0 + 0u);
      c0_0 = fma8(c0_0, x0_0, w0_0); c0_1 = fma8(c0_1, x0_0, w0_1); c0_2 = fma8(c0_2, x0_0, w0_2); c0_3 = fma8(c0_3, x0_0, w0_3);
      let x0_1 = load_x8(row + 1u, k0 + 0u);
      c1_0 = fma8(c1_0, x0_1, w0_0); c1_1 = fma8(c1_1, x0_1, w0_1); c1_2 = fma8(c1_2, x0_1, w0_2); c1_3 = fma8(c1_3, x0_1, w0_3);
      let x0_2 = load_x8(row + 2u, k0 + 0u);
      c2_0 = fma8(c2_0, x0_2, w0_0); c2_1 = fma8(c2_1, x0_2, w0_1); c2_2 = fma8(c2_2, x0_2, w0_2); c2_3 = fma8(c2_3, x0_2, w0_3);
      let x0_3 = load_x8(row + 3u, k0 + 0u);
      c3_0 = fma8(c3_0, x0_3, w0_0); c3_1 = fma8(c3_1, x0_3, w0_1); c3_2 = fma8(c3_2, x0_3, w0_2); c3_3 = fma8(c3_3, x0_3, w0_3);
      let x0_4 = load_x8(row + 4u, k0 + 0u);
      c4_0 = fma8(c4_0, x0_4, w0_0); c4_1 = fma8(c4_1, x0_4, w0_1); c4_2 = fma8(c4_2, x0_4, w0_2); c4_3 = fma8(c4_3, x0_4, w0_3);
      let x0_5 = load_x8(row + 5u, k0 + 0u);
      c5_0 = fma8(c5_0, x0_5, w0_0); c5_1 = fma8(c5_1, x0_5, w0_1); c5_2 = fma8(c5_2, x0_5, w0_2); c5_3 = fma8(c5_3, x0_5, w0_3);
      let x0_6 = load_x8(row + 6u, k0 + 0u);
      c6_0 = fma8(c6_0, x0_6, w0_0); c6_1 = fma8(c6_1, x0_6, w0_1); c6_2 = fma8(c6_2, x0_6, w0_2); c6_3 = fma8(c6_3, x0_6, w0_3);
      let x0_7 = load_x8(row + 7u, k0 + 0u);
      c7_0 = fma8(c7_0, x0_7, w0_0); c7_1 = fma8(c7_1, x0_7, w0_1); c7_2 = fma8(c7_2, x0_7, w0_2); c7_3 = fma8(c7_3, x0_7, w0_3);
      let x0_8 = load_x8(row + 8u, k0 + 0u);
      c8_0 = fma8(c8_0, x0_8, w0_0); c8_1 = fma8(c8_1, x0_8, w0_1); c8_2 = fma8(c8_2, x0_8, w0_2); c8_3 = fma8(c8_3, x0_8, w0_3);
      let x0_9 = load_x8(row + 9u, k0 + 0u);
      c9_0 = fma8(c9_0, x0_9, w0_0); c9_1 = fma8(c9_1, x0_9, w0_1); c9_2 = fma8(c9_2, x0_9, w0_2); c9_3 = fma8(c9_3, x0_9, w0_3);
      let x0_10 = load_x8(row + 10u, k0 + 0u);
      c10_0 = fma8(c10_0, x0_10, w0_0); c10_1 = fma8(c10_1, x0_10, w0_1); c10_2 = fma8(c10_2, x0_10, w0_2); c10_3 = fma8(c10_3, x0_10, w0_3);
      let x0_11 = load_x8(row + 11u, k0 + 0u);
      c11_0 = fma8(c11_0, x0_11, w0_0); c11_1 = fma8(c11_1, x0_11, w0_1); c11_2 = fma8(c11_2, x0_11, w0_2); c11_3 = fma8(c11_3, x0_11, w0_3);
      let x0_12 = load_x8(row + 12u, k0 + 0u);
      c12_0 = fma8(c12_0, x0_12, w0_0); c12_1 = fma8(c12_1, x0_12, w0_1); c12_2 = fma8(c12_2, x0_12, w0_2); c12_3 = fma8(c12_3, x0_12, w0_3);
      let x0_13 = load_x8(row + 13u, k0 + 0u);
      c13_0 = fma8(c13_0, x0_13, w0_0); c13_1 = fma8(c13_1, x0_13, w0_1); c13_2 = fma8(c13_2, x0_13, w0_2); c13_3 = fma8(c13_3, x0_13, w0_3);
      let x0_14 = load_x8(row + 14u, k0 + 0u);
      c14_0 = fma8(c14_0, x0_14, w0_0); c14_1 = fma8(c14_1, x0_14, w0_1); c14_2 = fma8(c14_2, x0_14, w0_2); c14_3 = fma8(c14_3, x0_14, w0_3);
      let x0_15 = load_x8(row + 15u, k0 + 0u);
      c15_0 = fma8(c15_0, x0_15, w0_0); c15_1 = fma8(c15_1, x0_15, w0_1); c15_2 = fma8(c15_2, x0_15, w0_2); c15_3 = fma8(c15_3, x0_15, w0_3);
      let w1_0 = cols4(j0, k0, 1u, q0, q1, q2, q3, s0);
      let w1_1 = cols4(j1, k0, 1u, q4, q5, q6, q7, s1);
      let w1_2 = cols4(j2, k0, 1u, q8, q9, q10, q11, s2);
      let w1_3 = cols4(j3, k0, 1u, q12, q13, q14, q15, s3);
      let x1_0 = load_x8(row + 0u, k0 + 8u);
      c0_0 = fma8(c0_0, x1_0, w1_0); c0_1 = fma8(c0_1, x1_0, w1_1); c0_2 = fma8(c0_2, x1_0, w1_2); c0_3 = fma8(c0_3, x1_0, w1_3);
      let x1_1 = load_x8(row + 1u, k0 + 8u);
      c1_0 = fma8(c1_0, x1_1, w1_0); c1_1 = fma8(c1_1, x1_1, w1_1); c1_2 = fma8(c1_2, x1_1, w1_2); c1_3 = fma8(c1_3, x1_1, w1_3);
      let x1_2 = load_x8(row + 2u, k0 + 8u);
      c2_0 = fma8(c2_0, x1_2, w1_0); c2_1 = fma8(c2_1, x1_2, w1_1); c2_2 = fma8(c2_2, x1_2, w1_2); c2_3 = fma8(c2_3, x1_2, w1_3);
      let x1_3 = load_x8(row + 3u, k0 + 8u);
      c3_0 = fma8(c3_0, x1_3, w1_0); c3_1 = fma8(c3_1, x1_3, w1_1); c3_2 = fma8(c3_2, x1_3, w1_2); c3_3 = fma8(c3_3, x1_3, w1_3);
      let x1_4 = load_x8(row + 4u, k0 + 8u);
      c4_0 = fma8(c4_0, x1_4, w1_0); c4_1 = fma8(c4_1, x1_4, w1_1); c4_2 = fma8(c4_2, x1_4, w1_2); c4_3 = fma8(c4_3, x1_4, w1_3);
      let x1_5 = load_x8(row + 5u, k0 + 8u);
      c5_0 = fma8(c5_0, x1_5, w1_0); c5_1 = fma8(c5_1, x1_5, w1_1); c5_2 = fma8(c5_2, x1_5, w1_2); c5_3 = fma8(c5_3, x1_5, w1_3);
      let x1_6 = load_x8(row + 6u, k0 + 8u);
      c6_0 = fma8(c6_0, x1_6, w1_0); c6_1 = fma8(c6_1, x1_6, w1_1); c6_2 = fma8(c6_2, x1_6, w1_2); c6_3 = fma8(c6_3, x1_6, w1_3);
      let x1_7 = load_x8(row + 7u, k0 + 8u);
      c7_0 = fma8(c7_0, x1_7, w1_0); c7_1 = fma8(c7_1, x1_7, w1_1); c7_2 = fma8(c7_2, x1_7, w1_2); c7_3 = fma8(c7_3, x1_7, w1_3);
      let x1_8 = load_x8(row + 8u, k0 + 8u);
      c8_0 = fma8(c8_0, x1_8, w1_0); c8_1 = fma8(c8_1, x1_8, w1_1); c8_2 = fma8(c8_2, x1_8, w1_2); c8_3 = fma8(c8_3, x1_8, w1_3);
      let x1_9 = load_x8(row + 9u, k0 + 8u);
      c9_0 = fma8(c9_0, x1_9, w1_0); c9_1 = fma8(c9_1, x1_9, w1_1); c9_2 = fma8(c9_2, x1_9, w1_2); c9_3 = fma8(c9_3, x1_9, w1_3);
      let x1_10 = load_x8(row + 10u, k0 + 8u);
      c10_0 = fma8(c10_0, x1_10, w1_0); c10_1 = fma8(c10_1, x1_10, w1_1); c10_2 = fma8(c10_2, x1_10, w1_2); c10_3 = fma8(c10_3, x1_10, w1_3);
      let x1_11 = load_x8(row + 11u, k0 + 8u);
      c11_0 = fma8(c11_0, x1_11, w1_0); c11_1 = fma8(c11_1, x1_11, w1_1); c11_2 = fma8(c11_2, x1_11, w1_2); c11_3 = fma8(c11_3, x1_11, w1_3);
      let x1_12 = load_x8(row + 12u, k0 + 8u);
      c12_0 = fma8(c12_0, x1_12, w1_0); c12_1 = fma8(c12_1, x1_12, w1_1); c12_2 = fma8(c12_2, x1_12, w1_2); c12_3 = fma8(c12_3, x1_12, w1_3);
      let x1_13 = load_x8(row + 13u, k0 + 8u);
      c13_0 = fma8(c13_0, x1_13, w1_0); c13_1 = fma8(c13_1, x1_13, w1_1); c13_2 = fma8(c13_2, x1_13, w1_2); c13_3 = fma8(c13_3, x1_13, w1_3);
      let x1_14 = load_x8(row + 14u, k0 + 8u);
      c14_0 = fma8(c14_0, x1_14, w1_0); c14_1 = fma8(c14_1, x1_14, w1_1); c14_2 = fma8(c14_2, x1_14, w1_2); c14_3 = fma8(c14_3, x1_14, w1_3);
      let x1_15 = load_x8(row + 15u, k0 + 8u);
      c15_0 = fma8(c15_0, x1_15, w1_0); c15_1 = fma8(c15_1, x1_15, w1_1); c15_2 = fma8(c15_2, x1_15, w1_2); c15_3 = fma8(c15_3, x1_15, w1_3);
      let w2_0 = cols4(j0, k0, 2u, q0, q1, q2, q3, s0);
      let w2_1 = cols4(j1, k0, 2u, q4, q5, q6, q7, s1);
      let w2_2 = cols4(j2, k0, 2u, q8, q9, q10, q11, s2);
      let w2_3 = cols4(j3, k0, 2u, q12, q13, q14, q15, s3);
      let x2_0 = load_x8(row + 0u, k0 + 16u);
      c0_0 = fma8(c0_0, x2_0, w2_0); c0_1 = fma8(c0_1, x2_0, w2_1); c0_2 = fma8(c0_2, x2_0, w2_2); c0_3 = fma8(c0_3, x2_0, w2_3);
      let x2_1 = load_x8(row + 1u, k0 + 16u);
      c1_0 = fma8(c1_0, x2_1, w2_0); c1_1 = fma8(c1_1, x2_1, w2_1); c1_2 = fma8(c1_2, x2_1, w2_2); c1_3 = fma8(c1_3, x2_1, w2_3);
      let x2_2 = load_x8(row + 2u, k0 + 16u);
      c2_0 = fma8(c2_0, x2_2, w2_0); c2_1 = fma8(c2_1, x2_2, w2_1); c2_2 = fma8(c2_2, x2_2, w2_2); c2_3 = fma8(c2_3, x2_2, w2_3);
      let x2_3 = load_x8(row + 3u, k0 + 16u);
      c3_0 = fma8(c3_0, x2_3, w2_0); c3_1 = fma8(c3_1, x2_3, w2_1); c3_2 = fma8(c3_2, x2_3, w2_2); c3_3 = fma8(c3_3, x2_3, w2_3);
      let x2_4 = load_x8(row + 4u, k0 + 16u);
      c4_0 = fma8(c4_0, x2_4, w2_0); c4_1 = fma8(c4_1, x2_4, w2_1); c4_2 = fma8(c4_2, x2_4, w2_2); c4_3 = fma8(c4_3, x2_4, w2_3);
      let x2_5 = load_x8(row + 5u, k0 + 16u);
      c5_0 = fma8(c5_0, x2_5, w2_0); c5_1 = fma8(c5_1, x2_5, w2_1); c5_2 = fma8(c5_2, x2_5, w2_2); c5_3 = fma8(c5_3, x2_5, w2_3);
      let x2_6 = load_x8(row + 6u, k0 + 16u);
      c6_0 = fma8(c6_0, x2_6, w2_0); c6_1 = fma8(c6_1, x2_6, w2_1); c6_2 = fma8(c6_2, x2_6, w2_2); c6_3 = fma8(c6_3, x2_6, w2_3);
      let x2_7 = load_x8(row + 7u, k0 + 16u);
      c7_0 = fma8(c7_0, x2_7, w2_0); c7_1 = fma8(c7_1, x2_7, w2_1); c7_2 = fma8(c7_2, x2_7, w2_2); c7_3 = fma8(c7_3, x2_7, w2_3);
      let x2_8 = load_x8(row + 8u, k0 + 16u);
      c8_0 = fma8(c8_0, x2_8, w2_0); c8_1 = fma8(c8_1, x2_8, w2_1); c8_2 = fma8(c8_2, x2_8, w2_2); c8_3 = fma8(c8_3, x2_8, w2_3);
      let x2_9 = load_x8(row + 9u, k0 + 16u);
      c9_0 = fma8(c9_0, x2_9, w2_0); c9_1 = fma8(c9_1, x2_9, w2_1); c9_2 = fma8(c9_2, x2_9, w2_2); c9_3 = fma8(c9_3, x2_9, w2_3);
      let x2_10 = load_x8(row + 10u, k0 + 16u);
      c10_0 = fma8(c10_0, x2_10, w2_0); c10_1 = fma8(c10_1, x2_10, w2_1); c10_2 = fma8(c10_2, x2_10, w2_2); c10_3 = fma8(c10_3, x2_10, w2_3);
      let x2_11 = load_x8(row + 11u, k0 + 16u);
      c11_0 = fma8(c11_0, x2_11, w2_0); c11_1 = fma8(c11_1, x2_11, w2_1); c11_2 = fma8(c11_2, x2_11, w2_2); c11_3 = fma8(c11_3, x2_11, w2_3);
      let x2_12 = load_x8(row + 12u, k0 + 16u);
      c12_0 = fma8(c12_0, x2_12, w2_0); c12_1 = fma8(c12_1, x2_12, w2_1); c12_2 = fma8(c12_2, x2_12, w2_2); c12_3 = fma8(c12_3, x2_12, w2_3);
      let x2_13 = load_x8(row + 13u, k0 + 16u);
      c13_0 = fma8(c13_0, x2_13, w2_0); c13_1 = fma8(c13_1, x2_13, w2_1); c13_2 = fma8(c13_2, x2_13, w2_2); c13_3 = fma8(c13_3, x2_13, w2_3);
      let x2_14 = load_x8(row + 14u, k0 + 16u);
      c14_0 = fma8(c14_0, x2_14, w2_0); c14_1 = fma8(c14_1, x2_14, w2_1); c14_2 = fma8(c14_2, x2_14, w2_2); c14_3 = fma8(c14_3, x2_14, w2_3);
      let x2_15 = load_x8(row + 15u, k0 + 16u);
      c15_0 = fma8(c15_0, x2_15, w2_0); c15_1 = fma8(c15_1, x2_15, w2_1); c15_2 = fma8(c15_2, x2_15, w2_2); c15_3 = fma8(c15_3, x2_15, w2_3);
      let w3_0 = cols4(j0, k0, 3u, q0, q1, q2, q3, s0);
      let w3_1 = cols4(j1, k0, 3u, q4, q5, q6, q7, s1);
      let w3_2 = cols4(j2, k0, 3u, q8, q9, q10, q11, s2);
      let w3_3 = cols4(j3, k0, 3u, q12, q13, q14, q15, s3);
      let x3_0 = load_x8(row + 0u, k0 + 24u);
      c0_0 = fma8(c0_0, x3_0, w3_0); c0_1 = fma8(c0_1, x3_0, w3_1); c0_2 = fma8(c0_2, x3_0, w3_2); c0_3 = fma8(c0_3, x3_0, w3_3);
      let x3_1 = load_x8(row + 1u, k0 + 24u);
      c1_0 = fma8(c1_0, x3_1, w3_0); c1_1 = fma8(c1_1, x3_1, w3_1); c1_2 = fma8(c1_2, x3_1, w3_2); c1_3 = fma8(c1_3, x3_1, w3_3);
      let x3_2 = load_x8(row + 2u, k0 + 24u);
      c2_0 = fma8(c2_0, x3_2, w3_0); c2_1 = fma8(c2_1, x3_2, w3_1); c2_2 = fma8(c2_2, x3_2, w3_2); c2_3 = fma8(c2_3, x3_2, w3_3);
      let x3_3 = load_x8(row + 3u, k0 + 24u);
      c3_0 = fma8(c3_0, x3_3, w3_0); c3_1 = fma8(c3_1, x3_3, w3_1); c3_2 = fma8(c3_2, x3_3, w3_2); c3_3 = fma8(c3_3, x3_3, w3_3);
      let x3_4 = load_x8(row + 4u, k0 + 24u);
      c4_0 = fma8(c4_0, x3_4, w3_0); c4_1 = fma8(c4_1, x3_4, w3_1); c4_2 = fma8(c4_2, x3_4, w3_2); c4_3 = fma8(c4_3, x3_4, w3_3);
      let x3_5 = load_x8(row + 5u, k0 + 24u);
      c5_0 = fma8(c5_0, x3_5, w3_0); c5_1 = fma8(c5_1, x3_5, w3_1); c5_2 = fma8(c5_2, x3_5, w3_2); c5_3 = fma8(c5_3, x3_5, w3_3);
      let x3_6 = load_x8(row + 6u, k0 + 24u);
      c6_0 = fma8(c6_0, x3_6, w3_0); c6_1 = fma8(c6_1, x3_6, w3_1); c6_2 = fma8(c6_2, x3_6, w3_2); c6_3 = fma8(c6_3, x3_6, w3_3);
      let x3_7 = load_x8(row + 7u, k0 + 24u);
      c7_0 = fma8(c7_0, x3_7, w3_0); c7_1 = fma8(c7_1, x3_7, w3_1); c7_2 = fma8(c7_2, x3_7, w3_2); c7_3 = fma8(c7_3, x3_7, w3_3);
      let x3_8 = load_x8(row + 8u, k0 + 24u);
      c8_0 = fma8(c8_0, x3_8, w3_0); c8_1 = fma8(c8_1, x3_8, w3_1); c8_2 = fma8(c8_2, x3_8, w3_2); c8_3 = fma8(c8_3, x3_8, w3_3);
      let x3_9 = load_x8(row + 9u, k0 + 24u);
      c9_0 = fma8(c9_0, x3_9, w3_0); c9_1 = fma8(c9_1, x3_9, w3_1); c9_2 = fma8(c9_2, x3_9, w3_2); c9_3 = fma8(c9_3, x3_9, w3_3);
      let x3_10 = load_x8(row + 10u, k0 + 24u);
      c10_0 = fma8(c10_0, x3_10, w3_0); c10_1 = fma8(c10_1, x3_10, w3_1); c10_2 = fma8(c10_2, x3_10, w3_2); c10_3 = fma8(c10_3, x3_10, w3_3);
      let x3_11 = load_x8(row + 11u, k0 + 24u);
      c11_0 = fma8(c11_0, x3_11, w3_0); c11_1 = fma8(c11_1, x3_11, w3_1); c11_2 = fma8(c11_2, x3_11, w3_2); c11_3 = fma8(c11_3, x3_11, w3_3);
      let x3_12 = load_x8(row + 12u, k0 + 24u);
      c12_0 = fma8(c12_0, x3_12, w3_0); c12_1 = fma8(c12_1, x3_12, w3_1); c12_2 = fma8(c12_2, x3_12, w3_2); c12_3 = fma8(c12_3, x3_12, w3_3);
      let x3_13 = load_x8(row + 13u, k0 + 24u);
      c13_0 = fma8(c13_0, x3_13, w3_0); c13_1 = fma8(c13_1, x3_13, w3_1); c13_2 = fma8(c13_2, x3_13, w3_2); c13_3 = fma8(c13_3, x3_13, w3_3);
      let x3_14 = load_x8(row + 14u, k0 + 24u);
      c14_0 = fma8(c14_0, x3_14, w3_0); c14_1 = fma8(c14_1, x3_14, w3_1); c14_2 = fma8(c14_2, x3_14, w3_2); c14_3 = fma8(c14_3, x3_14, w3_3);
      let x3_15 = load_x8(row + 15u, k0 + 24u);
      c15_0 = fma8(c15_0, x3_15, w3_0); c15_1 = fma8(c15_1, x3_15, w3_1); c15_2 = fma8(c15_2, x3_15, w3_2); c15_3 = fma8(c15_3, x3_15, w3_3);
    }
  }
  store4(row + 0u, col + 0u, c0_0); store4(row + 0u, col + 4u, c0_1); store4(row + 0u, col + 8u, c0_2); store4(row + 0u, col + 12u, c0_3);
  store4(row + 1u, col + 0u, c1_0); store4(row + 1u, col + 4u, c1_1); store4(row + 1u, col + 8u, c1_2); store4(row + 1u, col + 12u, c1_3);
  store4(row + 2u, col + 0u, c2_0); store4(row + 2u, col + 4u, c2_1); store4(row + 2u, col + 8u, c2_2); store4(row + 2u, col + 12u, c2_3);
  store4(row + 3u, col + 0u, c3_0); store4(row + 3u, col + 4u, c3_1); store4(row + 3u, col + 8u, c3_2); store4(row + 3u, col + 12u, c3_3);
  store4(row + 4u, col + 0u, c4_0); store4(row + 4u, col + 4u, c4_1); store4(row + 4u, col + 8u, c4_2); store4(row + 4u, col + 12u, c4_3);
  store4(row + 5u, col + 0u, c5_0); store4(row + 5u, col + 4u, c5_1); store4(row + 5u, col + 8u, c5_2); store4(row + 5u, col + 12u, c5_3);
  store4(row + 6u, col + 0u, c6_0); store4(row + 6u, col + 4u, c6_1); store4(row + 6u, col + 8u, c6_2); store4(row + 6u, col + 12u, c6_3);
  store4(row + 7u, col + 0u, c7_0); store4(row + 7u, col + 4u, c7_1); store4(row + 7u, col + 8u, c7_2); store4(row + 7u, col + 12u, c7_3);
  store4(row + 8u, col + 0u, c8_0); store4(row + 8u, col + 4u, c8_1); store4(row + 8u, col + 8u, c8_2); store4(row + 8u, col + 12u, c8_3);
  store4(row + 9u, col + 0u, c9_0); store4(row + 9u, col + 4u, c9_1); store4(row + 9u, col + 8u, c9_2); store4(row + 9u, col + 12u, c9_3);
  store4(row + 10u, col + 0u, c10_0); store4(row + 10u, col + 4u, c10_1); store4(row + 10u, col + 8u, c10_2); store4(row + 10u, col + 12u, c10_3);
  store4(row + 11u, col + 0u, c11_0); store4(row + 11u, col + 4u, c11_1); store4(row + 11u, col + 8u, c11_2); store4(row + 11u, col + 12u, c11_3);
  store4(row + 12u, col + 0u, c12_0); store4(row + 12u, col + 4u, c12_1); store4(row + 12u, col + 8u, c12_2); store4(row + 12u, col + 12u, c12_3);
  store4(row + 13u, col + 0u, c13_0); store4(row + 13u, col + 4u, c13_1); store4(row + 13u, col + 8u, c13_2); store4(row + 13u, col + 12u, c13_3);
  store4(row + 14u, col + 0u, c14_0); store4(row + 14u, col + 4u, c14_1); store4(row + 14u, col + 8u, c14_2); store4(row + 14u, col + 12u, c14_3);
  store4(row + 15u, col + 0u, c15_0); store4(row + 15u, col + 4u, c15_1); store4(row + 15u, col + 8u, c15_2); store4(row + 15u, col + 12u, c15_3);
}

// 4 rows x 16 columns an invocation, for products of a few rows.
@compute @workgroup_size(WG_X, WG_Y)
fn qmatmul_narrow(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let row = (wg.y * WG_Y + lid.y) * 4u;
  let col = (wg.x * WG_X + lid.x) * 16u;
  let j0 = cols_at(col);
  let j1 = cols_at(col + 4u);
  let j2 = cols_at(col + 8u);
  let j3 = cols_at(col + 12u);
  var c0_0: vec4f; var c0_1: vec4f; var c0_2: vec4f; var c0_3: vec4f;
  var c1_0: vec4f; var c1_1: vec4f; var c1_2: vec4f; var c1_3: vec4f;
  var c2_0: vec4f; var c2_1: vec4f; var c2_2: vec4f; var c2_3: vec4f;
  var c3_0: vec4f; var c3_1: vec4f; var c3_2: vec4f; var c3_3: vec4f;
  for (var b = 0u; b < p.blocks_per_row; b++) {
    let s0 = scales4(j0, b);
    let s1 = scales4(j1, b);
    let s2 = scales4(j2, b);
    let s3 = scales4(j3, b);
    let k_end = min(b * p.block + p.block, p.k);
    for (var k0 = b * p.block; k0 < k_end; k0 += 32u) {
      let q0 = col_words(j0.x, k0); let q1 = col_words(j0.y, k0); let q2 = col_words(j0.z, k0); let q3 = col_words(j0.w, k0);
      let q4 = col_words(j1.x, k0); let q5 = col_words(j1.y, k0); let q6 = col_words(j1.z, k0); let q7 = col_words(j1.w, k0);
      let q8 = col_words(j2.x, k0); let q9 = col_words(j2.y, k0); let q10 = col_words(j2.z, k0); let q11 = col_words(j2.w, k0);
      let q12 = col_words(j3.x, k0); let q13 = col_words(j3.y, k0); let q14 = col_words(j3.z, k0); let q15 = col_words(j3.w, k0);
      let w0_0 = cols4(j0, k0, 0u, q0, q1, q2, q3, s0);
      let w0_1 = cols4(j1, k0, 0u, q4, q5, q6, q7, s1);
      let w0_2 = cols4(j2, k0, 0u, q8, q9, q10, q11, s2);
      let w0_3 = cols4(j3, k0, 0u, q12, q13, q14, q15, s3);
      let x0_0 = load_x8(row + 0u, k0 + 0u);
      c0_0 = fma8(c0_0, x0_0, w0_0); c0_1 = fma8(c0_1, x0_0, w0_1); c0_2 = fma8(c0_2, x0_0, w0_2); c0_3 = fma8(c0_3, x0_0, w0_3);
      let x0_1 = load_x8(row + 1u, k0 + 0u);
      c1_0 = fma8(c1_0, x0_1, w0_0); c1_1 = fma8(c1_1, x0_1, w0_1); c1_2 = fma8(c1_2, x0_1, w0_2); c1_3 = fma8(c1_3, x0_1, w0_3);
      let x0_2 = load_x8(row + 2u, k0 + 0u);
      c2_0 = fma8(c2_0, x0_2, w0_0); c2_1 = fma8(c2_1, x0_2, w0_1); c2_2 = fma8(c2_2, x0_2, w0_2); c2_3 = fma8(c2_3, x0_2, w0_3);
      let x0_3 = load_x8(row + 3u, k0 + 0u);
      c3_0 = fma8(c3_0, x0_3, w0_0); c3_1 = fma8(c3_1, x0_3, w0_1); c3_2 = fma8(c3_2, x0_3, w0_2); c3_3 = fma8(c3_3, x0_3, w0_3);
      let w1_0 = cols4(j0, k0, 1u, q0, q1, q2, q3, s0);
      let w1_1 = cols4(j1, k0, 1u, q4, q5, q6, q7, s1);
      let w1_2 = cols4(j2, k0, 1u, q8, q9, q10, q11, s2);
      let w1_3 = cols4(j3, k0, 1u, q12, q13, q14, q15, s3);
      let x1_0 = load_x8(row + 0u, k0 + 8u);
      c0_0 = fma8(c0_0, x1_0, w1_0); c0_1 = fma8(c0_1, x1_0, w1_1); c0_2 = fma8(c0_2, x1_0, w1_2); c0_3 = fma8(c0_3, x1_0, w1_3);
      let x1_1 = load_x8(row + 1u, k0 + 8u);
      c1_0 = fma8(c1_0, x1_1, w1_0); c1_1 = fma8(c1_1, x1_1, w1_1); c1_2 = fma8(c1_2, x1_1, w1_2); c1_3 = fma8(c1_3, x1_1, w1_3);
      let x1_2 = load_x8(row + 2u, k0 + 8u);
      c2_0 = fma8(c2_0, x1_2, w1_0); c2_1 = fma8(c2_1, x1_2, w1_1); c2_2 = fma8(c2_2, x1_2, w1_2); c2_3 = fma8(c2_3, x1_2, w1_3);
      let x1_3 = load_x8(row + 3u, k0 + 8u);
      c3_0 = fma8(c3_0, x1_3, w1_0); c3_1 = fma8(c3_1, x1_3, w1_1); c3_2 = fma8(c3_2, x1_3, w1_2); c3_3 = fma8(c3_3, x1_3, w1_3);
      let w2_0 = cols4(j0, k0, 2u, q0, q1, q2, q3, s0);
      let w2_1 = cols4(j1, k0, 2u, q4, q5, q6, q7, s1);
      let w2_2 = cols4(j2, k0, 2u, q8, q9, q10, q11, s2);
      let w2_3 = cols4(j3, k0, 2u, q12, q13, q14, q15, s3);
      let x2_0 = load_x8(row + 0u, k0 + 16u);
      c0_0 = fma8(c0_0, x2_0, w2_0); c0_1 = fma8(c0_1, x2_0, w2_1); c0_2 = fma8(c0_2, x2_0, w2_2); c0_3 = fma8(c0_3, x2_0, w2_3);
      let x2_1 = load_x8(row + 1u, k0 + 16u);
      c1_0 = fma8(c1_0, x2_1, w2_0); c1_1 = fma8(c1_1, x2_1, w2_1); c1_2 = fma8(c1_2, x2_1, w2_2); c1_3 = fma8(c1_3, x2_1, w2_3);
      let x2_2 = load_x8(row + 2u, k0 + 16u);
      c2_0 = fma8(c2_0, x2_2, w2_0); c2_1 = fma8(c2_1, x2_2, w2_1); c2_2 = fma8(c2_2, x2_2, w2_2); c2_3 = fma8(c2_3, x2_2, w2_3);
      let x2_3 = load_x8(row + 3u, k0 + 16u);
      c3_0 = fma8(c3_0, x2_3, w2_0); c3_1 = fma8(c3_1, x2_3, w2_1); c3_2 = fma8(c3_2, x2_3, w2_2); c3_3 = fma8(c3_3, x2_3, w2_3);
      let w3_0 = cols4(j0, k0, 3u, q0, q1, q2, q3, s0);
      let w3_1 = cols4(j1, k0, 3u, q4, q5, q6, q7, s1);
      let w3_2 = cols4(j2, k0, 3u, q8, q9, q10, q11, s2);
      let w3_3 = cols4(j3, k0, 3u, q12, q13, q14, q15, s3);
      let x3_0 = load_x8(row + 0u, k0 + 24u);
      c0_0 = fma8(c0_0, x3_0, w3_0); c0_1 = fma8(c0_1, x3_0, w3_1); c0_2 = fma8(c0_2, x3_0, w3_2); c0_3 = fma8(c0_3, x3_0, w3_3);
      let x3_1 = load_x8(row + 1u, k0 + 24u);
      c1_0 = fma8(c1_0, x3_1, w3_0); c1_1 = fma8(c1_1, x3_1, w3_1); c1_2 = fma8(c1_2, x3_1, w3_2); c1_3 = fma8(c1_3, x3_1, w3_3);
      let x3_2 = load_x8(row + 2u, k0 + 24u);
      c2_0 = fma8(c2_0, x3_2, w3_0); c2_1 = fma8(c2_1, x3_2, w3_1); c2_2 = fma8(c2_2, x3_2, w3_2); c2_3 = fma8(c2_3, x3_2, w3_3);
      let x3_3 = load_x8(row + 3u, k0 + 24u);
      c3_0 = fma8(c3_0, x3_3, w3_0); c3_1 = fma8(c3_1, x3_3, w3_1); c3_2 = fma8(c3_2, x3_3, w3_2); c3_3 = fma8(c3_3, x3_3, w3_3);
    }
  }
  store4(row + 0u, col + 0u, c0_0); store4(row + 0u, col + 4u, c0_1); store4(row + 0u, col + 8u, c0_2); store4(row + 0u, col + 12u, c0_3);
  store4(row + 1u, col + 0u, c1_0); store4(row + 1u, col + 4u, c1_1); store4(row + 1u, col + 8u, c1_2); store4(row + 1u, col + 12u, c1_3);
  store4(row + 2u, col + 0u, c2_0); store4(row + 2u, col + 4u, c2_1); store4(row + 2u, col + 8u, c2_2); store4(row + 2u, col + 12u, c2_3);
  store4(row + 3u, col + 0u, c3_0); store4(row + 3u, col + 4u, c3_1); store4(row + 3u, col + 8u, c3_2); store4(row + 3u, col + 12u, c3_3);
}

struct Row32 {
  v0: vec4f, v1: vec4f, v2: vec4f, v3: vec4f, v4: vec4f, v5: vec4f, v6: vec4f, v7: vec4f,
}

// Values k0 .. k0 + 31 of W row r, times s (k0 a multiple of 32, so all in one block).
fn row32(r: u32, k0: u32, s: f32) -> Row32 {
  if (is_half()) {
    let at = (row_base(r) + k0 / 2u) / 4u;
    let a = halves8(at);
    let b = halves8(at + 1u);
    let c = halves8(at + 2u);
    let d = halves8(at + 3u);
    return Row32(a.lo, a.hi, b.lo, b.hi, c.lo, c.hi, d.lo, d.hi);
  }
  let w = col_words(r, k0);
  let a = col_eight(r, k0, w, 0u);
  let b = col_eight(r, k0, w, 1u);
  let c = col_eight(r, k0, w, 2u);
  let d = col_eight(r, k0, w, 3u);
  return Row32(a.lo * s, a.hi * s, b.lo * s, b.hi * s, c.lo * s, c.hi * s, d.lo * s, d.hi * s);
}

// dy[i, n0 .. n0 + 3], zero past N; rows past M are clamped (never stored).
fn load_dy4(i: u32, n0: u32) -> vec4f {
  let v = inp4[(p.off_inp + min(i, p.m - 1u) * p.ld_inp + n0) / 4u];
  return select(vec4f(), v, vec4u(n0) + vec4u(0u, 1u, 2u, 3u) < vec4u(p.n));
}

// 16 rows x 32 columns (k) an invocation, four W rows (n) a step. In the backward, `p.n` is the
// reduction (W's rows) and the output has `p.k` columns.
@compute @workgroup_size(WG_X, WG_Y)
fn qmatmul_backward(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let row = (wg.y * WG_Y + lid.y) * 16u;
  let col = (wg.x * WG_X + lid.x) * 32u;
  // Columns past K hold nothing to store; reading them could run past W's last row.
  let kc = min(col, (p.k - 1u) / 32u * 32u);
  let blk = kc / p.block;
  var c0_0: vec4f; var c0_1: vec4f; var c0_2: vec4f; var c0_3: vec4f; var c0_4: vec4f; var c0_5: vec4f; var c0_6: vec4f; var c0_7: vec4f;
  var c1_0: vec4f; var c1_1: vec4f; var c1_2: vec4f; var c1_3: vec4f; var c1_4: vec4f; var c1_5: vec4f; var c1_6: vec4f; var c1_7: vec4f;
  var c2_0: vec4f; var c2_1: vec4f; var c2_2: vec4f; var c2_3: vec4f; var c2_4: vec4f; var c2_5: vec4f; var c2_6: vec4f; var c2_7: vec4f;
  var c3_0: vec4f; var c3_1: vec4f; var c3_2: vec4f; var c3_3: vec4f; var c3_4: vec4f; var c3_5: vec4f; var c3_6: vec4f; var c3_7: vec4f;
  var c4_0: vec4f; var c4_1: vec4f; var c4_2: vec4f; var c4_3: vec4f; var c4_4: vec4f; var c4_5: vec4f; var c4_6: vec4f; var c4_7: vec4f;
  var c5_0: vec4f; var c5_1: vec4f; var c5_2: vec4f; var c5_3: vec4f; var c5_4: vec4f; var c5_5: vec4f; var c5_6: vec4f; var c5_7: vec4f;
  var c6_0: vec4f; var c6_1: vec4f; var c6_2: vec4f; var c6_3: vec4f; var c6_4: vec4f; var c6_5: vec4f; var c6_6: vec4f; var c6_7: vec4f;
  var c7_0: vec4f; var c7_1: vec4f; var c7_2: vec4f; var c7_3: vec4f; var c7_4: vec4f; var c7_5: vec4f; var c7_6: vec4f; var c7_7: vec4f;
  var c8_0: vec4f; var c8_1: vec4f; var c8_2: vec4f; var c8_3: vec4f; var c8_4: vec4f; var c8_5: vec4f; var c8_6: vec4f; var c8_7: vec4f;
  var c9_0: vec4f; var c9_1: vec4f; var c9_2: vec4f; var c9_3: vec4f; var c9_4: vec4f; var c9_5: vec4f; var c9_6: vec4f; var c9_7: vec4f;
  var c10_0: vec4f; var c10_1: vec4f; var c10_2: vec4f; var c10_3: vec4f; var c10_4: vec4f; var c10_5: vec4f; var c10_6: vec4f; var c10_7: vec4f;
  var c11_0: vec4f; var c11_1: vec4f; var c11_2: vec4f; var c11_3: vec4f; var c11_4: vec4f; var c11_5: vec4f; var c11_6: vec4f; var c11_7: vec4f;
  var c12_0: vec4f; var c12_1: vec4f; var c12_2: vec4f; var c12_3: vec4f; var c12_4: vec4f; var c12_5: vec4f; var c12_6: vec4f; var c12_7: vec4f;
  var c13_0: vec4f; var c13_1: vec4f; var c13_2: vec4f; var c13_3: vec4f; var c13_4: vec4f; var c13_5: vec4f; var c13_6: vec4f; var c13_7: vec4f;
  var c14_0: vec4f; var c14_1: vec4f; var c14_2: vec4f; var c14_3: vec4f; var c14_4: vec4f; var c14_5: vec4f; var c14_6: vec4f; var c14_7: vec4f;
  var c15_0: vec4f; var c15_1: vec4f; var c15_2: vec4f; var c15_3: vec4f; var c15_4: vec4f; var c15_5: vec4f; var c15_6: vec4f; var c15_7: vec4f;
  for (var n0 = 0u; n0 < p.n; n0 += 4u) {
    let r = min(vec4u(n0) + vec4u(0u, 1u, 2u, 3u), vec4u(p.n - 1u));
    let w0 = row32(r.x, kc, scale_of(block_of(r.x, blk)));
    let w1 = row32(r.y, kc, scale_of(block_of(r.y, blk)));
    let w2 = row32(r.z, kc, scale_of(block_of(r.z, blk)));
    let w3 = row32(r.w, kc, scale_of(block_of(r.w, blk)));
    let b0 = mat4x4f(w0.v0, w1.v0, w2.v0, w3.v0);
    let b1 = mat4x4f(w0.v1, w1.v1, w2.v1, w3.v1);
    let b2 = mat4x4f(w0.v2, w1.v2, w2.v2, w3.v2);
    let b3 = mat4x4f(w0.v3, w1.v3, w2.v3, w3.v3);
    let b4 = mat4x4f(w0.v4, w1.v4, w2.v4, w3.v4);
    let b5 = mat4x4f(w0.v5, w1.v5, w2.v5, w3.v5);
    let b6 = mat4x4f(w0.v6, w1.v6, w2.v6, w3.v6);
    let b7 = mat4x4f(w0.v7, w1.v7, w2.v7, w3.v7);
    let d0 = load_dy4(row + 0u, n0);
    c0_0 = fma4(c0_0, d0, b0); c0_1 = fma4(c0_1, d0, b1); c0_2 = fma4(c0_2, d0, b2); c0_3 = fma4(c0_3, d0, b3); c0_4 = fma4(c0_4, d0, b4); c0_5 = fma4(c0_5, d0, b5); c0_6 = fma4(c0_6, d0, b6); c0_7 = fma4(c0_7, d0, b7);
    let d1 = load_dy4(row + 1u, n0);
    c1_0 = fma4(c1_0, d1, b0); c1_1 = fma4(c1_1, d1, b1); c1_2 = fma4(c1_2, d1, b2); c1_3 = fma4(c1_3, d1, b3); c1_4 = fma4(c1_4, d1, b4); c1_5 = fma4(c1_5, d1, b5); c1_6 = fma4(c1_6, d1, b6); c1_7 = fma4(c1_7, d1, b7);
    let d2 = load_dy4(row + 2u, n0);
    c2_0 = fma4(c2_0, d2, b0); c2_1 = fma4(c2_1, d2, b1); c2_2 = fma4(c2_2, d2, b2); c2_3 = fma4(c2_3, d2, b3); c2_4 = fma4(c2_4, d2, b4); c2_5 = fma4(c2_5, d2, b5); c2_6 = fma4(c2_6, d2, b6); c2_7 = fma4(c2_7, d2, b7);
    let d3 = load_dy4(row + 3u, n0);
    c3_0 = fma4(c3_0, d3, b0); c3_1 = fma4(c3_1, d3, b1); c3_2 = fma4(c3_2, d3, b2); c3_3 = fma4(c3_3, d3, b3); c3_4 = fma4(c3_4, d3, b4); c3_5 = fma4(c3_5, d3, b5); c3_6 = fma4(c3_6, d3, b6); c3_7 = fma4(c3_7, d3, b7);
    let d4 = load_dy4(row + 4u, n0);
    c4_0 = fma4(c4_0, d4, b0); c4_1 = fma4(c4_1, d4, b1); c4_2 = fma4(c4_2, d4, b2); c4_3 = fma4(c4_3, d4, b3); c4_4 = fma4(c4_4, d4, b4); c4_5 = fma4(c4_5, d4, b5); c4_6 = fma4(c4_6, d4, b6); c4_7 = fma4(c4_7, d4, b7);
    let d5 = load_dy4(row + 5u, n0);
    c5_0 = fma4(c5_0, d5, b0); c5_1 = fma4(c5_1, d5, b1); c5_2 = fma4(c5_2, d5, b2); c5_3 = fma4(c5_3, d5, b3); c5_4 = fma4(c5_4, d5, b4); c5_5 = fma4(c5_5, d5, b5); c5_6 = fma4(c5_6, d5, b6); c5_7 = fma4(c5_7, d5, b7);
    let d6 = load_dy4(row + 6u, n0);
    c6_0 = fma4(c6_0, d6, b0); c6_1 = fma4(c6_1, d6, b1); c6_2 = fma4(c6_2, d6, b2); c6_3 = fma4(c6_3, d6, b3); c6_4 = fma4(c6_4, d6, b4); c6_5 = fma4(c6_5, d6, b5); c6_6 = fma4(c6_6, d6, b6); c6_7 = fma4(c6_7, d6, b7);
    let d7 = load_dy4(row + 7u, n0);
    c7_0 = fma4(c7_0, d7, b0); c7_1 = fma4(c7_1, d7, b1); c7_2 = fma4(c7_2, d7, b2); c7_3 = fma4(c7_3, d7, b3); c7_4 = fma4(c7_4, d7, b4); c7_5 = fma4(c7_5, d7, b5); c7_6 = fma4(c7_6, d7, b6); c7_7 = fma4(c7_7, d7, b7);
    let d8 = load_dy4(row + 8u, n0);
    c8_0 = fma4(c8_0, d8, b0); c8_1 = fma4(c8_1, d8, b1); c8_2 = fma4(c8_2, d8, b2); c8_3 = fma4(c8_3, d8, b3); c8_4 = fma4(c8_4, d8, b4); c8_5 = fma4(c8_5, d8, b5); c8_6 = fma4(c8_6, d8, b6); c8_7 = fma4(c8_7, d8, b7);
    let d9 = load_dy4(row + 9u, n0);
    c9_0 = fma4(c9_0, d9, b0); c9_1 = fma4(c9_1, d9, b1); c9_2 = fma4(c9_2, d9, b2); c9_3 = fma4(c9_3, d9, b3); c9_4 = fma4(c9_4, d9, b4); c9_5 = fma4(c9_5, d9, b5); c9_6 = fma4(c9_6, d9, b6); c9_7 = fma4(c9_7, d9, b7);
    let d10 = load_dy4(row + 10u, n0);
    c10_0 = fma4(c10_0, d10, b0); c10_1 = fma4(c10_1, d10, b1); c10_2 = fma4(c10_2, d10, b2); c10_3 = fma4(c10_3, d10, b3); c10_4 = fma4(c10_4, d10, b4); c10_5 = fma4(c10_5, d10, b5); c10_6 = fma4(c10_6, d10, b6); c10_7 = fma4(c10_7, d10, b7);
    let d11 = load_dy4(row + 11u, n0);
    c11_0 = fma4(c11_0, d11, b0); c11_1 = fma4(c11_1, d11, b1); c11_2 = fma4(c11_2, d11, b2); c11_3 = fma4(c11_3, d11, b3); c11_4 = fma4(c11_4, d11, b4); c11_5 = fma4(c11_5, d11, b5); c11_6 = fma4(c11_6, d11, b6); c11_7 = fma4(c11_7, d11, b7);
    let d12 = load_dy4(row + 12u, n0);
    c12_0 = fma4(c12_0, d12, b0); c12_1 = fma4(c12_1, d12, b1); c12_2 = fma4(c12_2, d12, b2); c12_3 = fma4(c12_3, d12, b3); c12_4 = fma4(c12_4, d12, b4); c12_5 = fma4(c12_5, d12, b5); c12_6 = fma4(c12_6, d12, b6); c12_7 = fma4(c12_7, d12, b7);
    let d13 = load_dy4(row + 13u, n0);
    c13_0 = fma4(c13_0, d13, b0); c13_1 = fma4(c13_1, d13, b1); c13_2 = fma4(c13_2, d13, b2); c13_3 = fma4(c13_3, d13, b3); c13_4 = fma4(c13_4, d13, b4); c13_5 = fma4(c13_5, d13, b5); c13_6 = fma4(c13_6, d13, b6); c13_7 = fma4(c13_7, d13, b7);
    let d14 = load_dy4(row + 14u, n0);
    c14_0 = fma4(c14_0, d14, b0); c14_1 = fma4(c14_1, d14, b1); c14_2 = fma4(c14_2, d14, b2); c14_3 = fma4(c14_3, d14, b3); c14_4 = fma4(c14_4, d14, b4); c14_5 = fma4(c14_5, d14, b5); c14_6 = fma4(c14_6, d14, b6); c14_7 = fma4(c14_7, d14, b7);
    let d15 = load_dy4(row + 15u, n0);
    c15_0 = fma4(c15_0, d15, b0); c15_1 = fma4(c15_1, d15, b1); c15_2 = fma4(c15_2, d15, b2); c15_3 = fma4(c15_3, d15, b3); c15_4 = fma4(c15_4, d15, b4); c15_5 = fma4(c15_5, d15, b5); c15_6 = fma4(c15_6, d15, b6); c15_7 = fma4(c15_7, d15, b7);
  }
  store4k(row + 0u, col + 0u, c0_0); store4k(row + 0u, col + 4u, c0_1); store4k(row + 0u, col + 8u, c0_2); store4k(row + 0u, col + 12u, c0_3); store4k(row + 0u, col + 16u, c0_4); store4k(row + 0u, col + 20u, c0_5); store4k(row + 0u, col + 24u, c0_6); store4k(row + 0u, col + 28u, c0_7);
  store4k(row + 1u, col + 0u, c1_0); store4k(row + 1u, col + 4u, c1_1); store4k(row + 1u, col + 8u, c1_2); store4k(row + 1u, col + 12u, c1_3); store4k(row + 1u, col + 16u, c1_4); store4k(row + 1u, col + 20u, c1_5); store4k(row + 1u, col + 24u, c1_6); store4k(row + 1u, col + 28u, c1_7);
  store4k(row + 2u, col + 0u, c2_0); store4k(row + 2u, col + 4u, c2_1); store4k(row + 2u, col + 8u, c2_2); store4k(row + 2u, col + 12u, c2_3); store4k(row + 2u, col + 16u, c2_4); store4k(row + 2u, col + 20u, c2_5); store4k(row + 2u, col + 24u, c2_6); store4k(row + 2u, col + 28u, c2_7);
  store4k(row + 3u, col + 0u, c3_0); store4k(row + 3u, col + 4u, c3_1); store4k(row + 3u, col + 8u, c3_2); store4k(row + 3u, col + 12u, c3_3); store4k(row + 3u, col + 16u, c3_4); store4k(row + 3u, col + 20u, c3_5); store4k(row + 3u, col + 24u, c3_6); store4k(row + 3u, col + 28u, c3_7);
  store4k(row + 4u, col + 0u, c4_0); store4k(row + 4u, col + 4u, c4_1); store4k(row + 4u, col + 8u, c4_2); store4k(row + 4u, col + 12u, c4_3); store4k(row + 4u, col + 16u, c4_4); store4k(row + 4u, col + 20u, c4_5); store4k(row + 4u, col + 24u, c4_6); store4k(row + 4u, col + 28u, c4_7);
  store4k(row + 5u, col + 0u, c5_0); store4k(row + 5u, col + 4u, c5_1); store4k(row + 5u, col + 8u, c5_2); store4k(row + 5u, col + 12u, c5_3); store4k(row + 5u, col + 16u, c5_4); store4k(row + 5u, col + 20u, c5_5); store4k(row + 5u, col + 24u, c5_6); store4k(row + 5u, col + 28u, c5_7);
  store4k(row + 6u, col + 0u, c6_0); store4k(row + 6u, col + 4u, c6_1); store4k(row + 6u, col + 8u, c6_2); store4k(row + 6u, col + 12u, c6_3); store4k(row + 6u, col + 16u, c6_4); store4k(row + 6u, col + 20u, c6_5); store4k(row + 6u, col + 24u, c6_6); store4k(row + 6u, col + 28u, c6_7);
  store4k(row + 7u, col + 0u, c7_0); store4k(row + 7u, col + 4u, c7_1); store4k(row + 7u, col + 8u, c7_2); store4k(row + 7u, col + 12u, c7_3); store4k(row + 7u, col + 16u, c7_4); store4k(row + 7u, col + 20u, c7_5); store4k(row + 7u, col + 24u, c7_6); store4k(row + 7u, col + 28u, c7_7);
  store4k(row + 8u, col + 0u, c8_0); store4k(row + 8u, col + 4u, c8_1); store4k(row + 8u, col + 8u, c8_2); store4k(row + 8u, col + 12u, c8_3); store4k(row + 8u, col + 16u, c8_4); store4k(row + 8u, col + 20u, c8_5); store4k(row + 8u, col + 24u, c8_6); store4k(row + 8u, col + 28u, c8_7);
  store4k(row + 9u, col + 0u, c9_0); store4k(row + 9u, col + 4u, c9_1); store4k(row + 9u, col + 8u, c9_2); store4k(row + 9u, col + 12u, c9_3); store4k(row + 9u, col + 16u, c9_4); store4k(row + 9u, col + 20u, c9_5); store4k(row + 9u, col + 24u, c9_6); store4k(row + 9u, col + 28u, c9_7);
  store4k(row + 10u, col + 0u, c10_0); store4k(row + 10u, col + 4u, c10_1); store4k(row + 10u, col + 8u, c10_2); store4k(row + 10u, col + 12u, c10_3); store4k(row + 10u, col + 16u, c10_4); store4k(row + 10u, col + 20u, c10_5); store4k(row + 10u, col + 24u, c10_6); store4k(row + 10u, col + 28u, c10_7);
  store4k(row + 11u, col + 0u, c11_0); store4k(row + 11u, col + 4u, c11_1); store4k(row + 11u, col + 8u, c11_2); store4k(row + 11u, col + 12u, c11_3); store4k(row + 11u, col + 16u, c11_4); store4k(row + 11u, col + 20u, c11_5); store4k(row + 11u, col + 24u, c11_6); store4k(row + 11u, col + 28u, c11_7);
  store4k(row + 12u, col + 0u, c12_0); store4k(row + 12u, col + 4u, c12_1); store4k(row + 12u, col + 8u, c12_2); store4k(row + 12u, col + 12u, c12_3); store4k(row + 12u, col + 16u, c12_4); store4k(row + 12u, col + 20u, c12_5); store4k(row + 12u, col + 24u, c12_6); store4k(row + 12u, col + 28u, c12_7);
  store4k(row + 13u, col + 0u, c13_0); store4k(row + 13u, col + 4u, c13_1); store4k(row + 13u, col + 8u, c13_2); store4k(row + 13u, col + 12u, c13_3); store4k(row + 13u, col + 16u, c13_4); store4k(row + 13u, col + 20u, c13_5); store4k(row + 13u, col + 24u, c13_6); store4k(row + 13u, col + 28u, c13_7);
  store4k(row + 14u, col + 0u, c14_0); store4k(row + 14u, col + 4u, c14_1); store4k(row + 14u, col + 8u, c14_2); store4k(row + 14u, col + 12u, c14_3); store4k(row + 14u, col + 16u, c14_4); store4k(row + 14u, col + 20u, c14_5); store4k(row + 14u, col + 24u, c14_6); store4k(row + 14u, col + 28u, c14_7);
  store4k(row + 15u, col + 0u, c15_0); store4k(row + 15u, col + 4u, c15_1); store4k(row + 15u, col + 8u, c15_2); store4k(row + 15u, col + 12u, c15_3); store4k(row + 15u, col + 16u, c15_4); store4k(row + 15u, col + 20u, c15_5); store4k(row + 15u, col + 24u, c15_6); store4k(row + 15u, col + 28u, c15_7);
}

// Element (r, c) of W, decoded and scaled: any alignment.
fn w_at(r: u32, c: u32) -> f32 {
  let base = row_base(r);
  var v: f32;
  if (FORMAT == NF4) {
    let byte = (codes[base + c / 8u] >> (8u * ((c / 2u) % 4u))) & 0xffu;
    v = book[NF4_LEVELS + ((byte >> select(0u, 4u, c % 2u == 0u)) & 15u)];
  } else if (FORMAT == INT8) {
    let byte = (codes[base + c / 4u] >> (8u * (c % 4u))) & 0xffu;
    v = f32(bitcast<i32>(byte << 24u) >> 24u);
  } else {
    let two = select(half_pair(base + c / 2u), bf16_two(codes[base + c / 2u]), FORMAT == BF16);
    v = select(two.x, two.y, c % 2u == 1u);
  }
  return v * scale_of(block_of(r, c / p.block));
}

// 4 x 4 outputs an invocation with scalar loads: y = x · Wᵀ (the forward).
@compute @workgroup_size(WG_X, WG_Y)
fn qmatmul_forward_scalar(
  @builtin(workgroup_id) wg: vec3u,
  @builtin(local_invocation_id) lid: vec3u,
) {
  let row = (wg.y * WG_Y + lid.y) * 4u;
  let col = (wg.x * WG_X + lid.x) * 4u;
  let rows = min(vec4u(row) + vec4u(0u, 1u, 2u, 3u), vec4u(p.m - 1u)) * p.ld_inp + p.off_inp;
  let j = cols_at(col);
  var c0 = vec4f();
  var c1 = vec4f();
  var c2 = vec4f();
  var c3 = vec4f();
  for (var k = 0u; k < p.k; k++) {
    let w = vec4f(w_at(j.x, k), w_at(j.y, k), w_at(j.z, k), w_at(j.w, k));
    c0 += inp[rows.x + k] * w;
    c1 += inp[rows.y + k] * w;
    c2 += inp[rows.z + k] * w;
    c3 += inp[rows.w + k] * w;
  }
  store4(row, col, c0);
  store4(row + 1u, col, c1);
  store4(row + 2u, col, c2);
  store4(row + 3u, col, c3);
}

// 4 x 4 outputs an invocation with scalar loads: dx = dy · W (the backward; output columns k).
@compute @workgroup_size(WG_X, WG_Y)
fn qmatmul_backward_scalar(
  @builtin(workgroup_id) wg: vec3u,
  @builtin(local_invocation_id) lid: vec3u,
) {
  let row = (wg.y * WG_Y + lid.y) * 4u;
  let col = (wg.x * WG_X + lid.x) * 4u;
  let rows = min(vec4u(row) + vec4u(0u, 1u, 2u, 3u), vec4u(p.m - 1u)) * p.ld_inp + p.off_inp;
  let k = min(vec4u(col) + vec4u(0u, 1u, 2u, 3u), vec4u(p.k - 1u));
  var c0 = vec4f();
  var c1 = vec4f();
  var c2 = vec4f();
  var c3 = vec4f();
  for (var n = 0u; n < p.n; n++) {
    let w = vec4f(w_at(n, k.x), w_at(n, k.y), w_at(n, k.z), w_at(n, k.w));
    c0 += inp[rows.x + n] * w;
    c1 += inp[rows.y + n] * w;
    c2 += inp[rows.z + n] * w;
    c3 += inp[rows.w + n] * w;
  }
  store4k(row, col, c0);
  store4k(row + 1u, col, c1);
  store4k(row + 2u, col, c2);
  store4k(row + 3u, col, c3);
}

// The backward's store: output columns run to K.
fn store_k(i: u32, k: u32, v: f32) {
  if (i < p.m && k < p.k) {
    let at = p.off_out + i * p.ld_out + k;
    var r = v;
    if ((p.flags & ACCUMULATE) != 0u) {
      r += out[at];
    }
    out[at] = r;
  }
}

fn store4k(i: u32, k: u32, v: vec4f) {
  store_k(i, k, v.x);
  store_k(i, k + 1u, v.y);
  store_k(i, k + 2u, v.z);
  store_k(i, k + 3u, v.w);
}

// Element (r, c) of W as f32, exactly as the reference unpacks it: level times absmax, one
// rounding (int8 levels are q / 127 from the codebook). Written [r, c], or [c, r] with TRANSPOSE.
// Rows of this dispatch: m, from w_row0.
@compute @workgroup_size(64)
fn dequantize(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let index = gid.x + gid.y * groups.x * 64u;
  if (index >= p.m * p.k) {
    return;
  }
  let r = index / p.k;
  let c = index % p.k;
  let base = row_base(r);
  var v: f32;
  if (FORMAT == NF4) {
    let byte = (codes[base + c / 8u] >> (8u * ((c / 2u) % 4u))) & 0xffu;
    let code = (byte >> select(0u, 4u, c % 2u == 0u)) & 15u;
    v = book[NF4_LEVELS + code] * block_scale(block_of(r, c / p.block));
  } else if (FORMAT == INT8) {
    let byte = (codes[base + c / 4u] >> (8u * (c % 4u))) & 0xffu;
    v = book[INT8_LEVELS + byte] * block_scale(block_of(r, c / p.block));
  } else {
    let two = select(half_pair(base + c / 2u), bf16_two(codes[base + c / 2u]), FORMAT == BF16);
    v = select(two.x, two.y, c % 2u == 1u);
  }
  if ((p.flags & TRANSPOSE) != 0u) {
    out[p.off_out + c * p.ld_out + r] = v;
  } else {
    out[p.off_out + r * p.ld_out + c] = v;
  }
}
