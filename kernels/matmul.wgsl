// Batched matrix multiply: C = alpha * op(A) · op(B) (+ bias over rows) (+ C if accumulating).
//
// Bindings (group 0), all f32, element offsets and strides from `p`; batch index z = workgroup z:
//   0 c     array<f32>, read_write  C[z, i, j]  at off_c + z*stride_c + i*ldc + j      (M x N)
//   1 a     array<f32>, read        op(A)[z, i, k] at off_a + z*stride_a + i*lda + k  (M x K)
//                                   or, transposed,  off_a + z*stride_a + k*lda + i
//   2 b     array<f32>, read        op(B)[z, k, j] at off_b + z*stride_b + k*ldb + j  (K x N)
//                                   or, transposed,  off_b + z*stride_b + j*ldb + k
//   3 bias  array<f32>, read        bias[j] at off_bias + j (N), read only with HAS_BIAS
//   4 p     Params, uniform         sizes, strides, offsets, flags, alpha
// The vec4 and wide entry points bind a and b as array<vec4f> (a4, b4) and need every offset, leading
// dimension and batch stride of A and B to be a multiple of 4.
//
// Variants: matmul_blocked (4x4 registers, scalar loads, any layout); matmul_vec4_{nn,nt,tn,tt}
// (8x8) and matmul_wide_{nn,nt,tn} (16x32), registers with vec4 loads; matmul_tiled (classic
// shared-memory tiling for real GPUs). On CPU drivers (llvmpipe) every storage or shared-memory
// load becomes a loop over the SIMD lanes, so the speed there is set by flops per load: wide,
// register-only tiles win and shared memory loses.

struct Params {
  m: u32, n: u32, k: u32, flags: u32,
  lda: u32, ldb: u32, ldc: u32, alpha: f32,
  stride_a: u32, stride_b: u32, stride_c: u32, off_bias: u32,
  off_a: u32, off_b: u32, off_c: u32, pad: u32,
}

const TRANS_A: u32 = 1u;
const TRANS_B: u32 = 2u;
const HAS_BIAS: u32 = 4u;
const ACCUMULATE: u32 = 8u;

@group(0) @binding(0) var<storage, read_write> c: array<f32>;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(1) var<storage, read> a4: array<vec4f>;
@group(0) @binding(2) var<storage, read> b4: array<vec4f>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

// Workgroup shape of the register-blocked variants.
override WG_X: u32 = 8u;
override WG_Y: u32 = 1u;

fn store_c(z: u32, i: u32, j: u32, v: f32) {
  if (i < p.m && j < p.n) {
    let at = p.off_c + z * p.stride_c + i * p.ldc + j;
    var r = p.alpha * v;
    if ((p.flags & HAS_BIAS) != 0u) { r += bias[p.off_bias + j]; }
    if ((p.flags & ACCUMULATE) != 0u) { r += c[at]; }
    c[at] = r;
  }
}

fn store_c4(z: u32, i: u32, j: u32, v: vec4f) {
  store_c(z, i, j, v.x);
  store_c(z, i, j + 1u, v.y);
  store_c(z, i, j + 2u, v.z);
  store_c(z, i, j + 3u, v.w);
}

// Element strides of op(A) along (i, k) and of op(B) along (k, j).
fn strides_a() -> vec2u {
  return select(vec2u(p.lda, 1u), vec2u(1u, p.lda), (p.flags & TRANS_A) != 0u);
}
fn strides_b() -> vec2u {
  return select(vec2u(p.ldb, 1u), vec2u(1u, p.ldb), (p.flags & TRANS_B) != 0u);
}

// 4x4 outputs an invocation, scalar loads at any stride. Out-of-range rows and columns are
// clamped rather than branched on (their results are never stored), so the K loop has no checks.
@compute @workgroup_size(WG_X, WG_Y)
fn matmul_blocked(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let sa = strides_a();
  let sb = strides_b();
  let row = (wg.y * WG_Y + lid.y) * 4u;
  let col = (wg.x * WG_X + lid.x) * 4u;
  let rows = min(vec4u(row) + vec4u(0u, 1u, 2u, 3u), vec4u(p.m - 1u));
  let cols = min(vec4u(col) + vec4u(0u, 1u, 2u, 3u), vec4u(p.n - 1u));
  let ia = vec4u(p.off_a + wg.z * p.stride_a) + rows * sa.x;
  let ib = vec4u(p.off_b + wg.z * p.stride_b) + cols * sb.y;
  var ka = 0u;
  var kb = 0u;
  var c0 = vec4f();
  var c1 = vec4f();
  var c2 = vec4f();
  var c3 = vec4f();
  for (var kk = 0u; kk < p.k; kk++) {
    let bv = vec4f(b[ib.x + kb], b[ib.y + kb], b[ib.z + kb], b[ib.w + kb]);
    c0 += a[ia.x + ka] * bv;
    c1 += a[ia.y + ka] * bv;
    c2 += a[ia.z + ka] * bv;
    c3 += a[ia.w + ka] * bv;
    ka += sa.y;
    kb += sb.x;
  }
  store_c4(wg.z, row, col, c0);
  store_c4(wg.z, row + 1u, col, c1);
  store_c4(wg.z, row + 2u, col, c2);
  store_c4(wg.z, row + 3u, col, c3);
}

// Rows r of the result are op(A)[i0 + r, k0..k0+3] (vectors over k), zero past K. Rows past M
// are clamped (never stored); vec4s past N or M read harmless values that are never stored.
fn load_a(base: u32, i0: u32, k0: u32, trans: bool) -> mat4x4f {
  var t: mat4x4f;
  if (trans) {
    let k1 = min(k0 + 1u, p.k - 1u);
    let k2 = min(k0 + 2u, p.k - 1u);
    let k3 = min(k0 + 3u, p.k - 1u);
    t = transpose(mat4x4f(
      a4[(base + k0 * p.lda + i0) / 4u],
      a4[(base + k1 * p.lda + i0) / 4u],
      a4[(base + k2 * p.lda + i0) / 4u],
      a4[(base + k3 * p.lda + i0) / 4u],
    ));
  } else {
    let m1 = p.m - 1u;
    t = mat4x4f(
      a4[(base + min(i0, m1) * p.lda + k0) / 4u],
      a4[(base + min(i0 + 1u, m1) * p.lda + k0) / 4u],
      a4[(base + min(i0 + 2u, m1) * p.lda + k0) / 4u],
      a4[(base + min(i0 + 3u, m1) * p.lda + k0) / 4u],
    );
  }
  let km = vec4<bool>(k0 < p.k, k0 + 1u < p.k, k0 + 2u < p.k, k0 + 3u < p.k);
  return mat4x4f(
    select(vec4f(), t[0], km),
    select(vec4f(), t[1], km),
    select(vec4f(), t[2], km),
    select(vec4f(), t[3], km),
  );
}

// Rows q of the result are op(B)[k0 + q, j0..j0+3] (vectors over columns), zero past K.
fn load_b(base: u32, k0: u32, j0: u32, trans: bool) -> mat4x4f {
  var t: mat4x4f;
  if (trans) {
    let n1 = p.n - 1u;
    t = transpose(mat4x4f(
      b4[(base + min(j0, n1) * p.ldb + k0) / 4u],
      b4[(base + min(j0 + 1u, n1) * p.ldb + k0) / 4u],
      b4[(base + min(j0 + 2u, n1) * p.ldb + k0) / 4u],
      b4[(base + min(j0 + 3u, n1) * p.ldb + k0) / 4u],
    ));
  } else {
    let k1 = min(k0 + 1u, p.k - 1u);
    let k2 = min(k0 + 2u, p.k - 1u);
    let k3 = min(k0 + 3u, p.k - 1u);
    t = mat4x4f(
      b4[(base + k0 * p.ldb + j0) / 4u],
      b4[(base + k1 * p.ldb + j0) / 4u],
      b4[(base + k2 * p.ldb + j0) / 4u],
      b4[(base + k3 * p.ldb + j0) / 4u],
    );
  }
  return mat4x4f(
    select(vec4f(), t[0], k0 < p.k),
    select(vec4f(), t[1], k0 + 1u < p.k),
    select(vec4f(), t[2], k0 + 2u < p.k),
    select(vec4f(), t[3], k0 + 3u < p.k),
  );
}

// acc + a · b for one output row: a holds 4 k of the row, b the matching 4 rows of 4 columns.
fn fma4(acc: vec4f, a: vec4f, b: mat4x4f) -> vec4f {
  return acc + a.x * b[0] + a.y * b[1] + a.z * b[2] + a.w * b[3];
}

// 8x8 outputs an invocation from vec4 loads, four k a step. `ta`/`tb` are constants at every
// call site, so each entry point compiles to one layout without branches in the loop. Written
// out rather than looped: indexing private arrays is slow on CPU drivers.
fn vec4_main(wg: vec3u, lid: vec3u, ta: bool, tb: bool) {
  let row = (wg.y * WG_Y + lid.y) * 8u;
  let col = (wg.x * WG_X + lid.x) * 8u;
  let base_a = p.off_a + wg.z * p.stride_a;
  let base_b = p.off_b + wg.z * p.stride_b;
  var c0_0: vec4f; var c0_1: vec4f; var c1_0: vec4f; var c1_1: vec4f;
  var c2_0: vec4f; var c2_1: vec4f; var c3_0: vec4f; var c3_1: vec4f;
  var c4_0: vec4f; var c4_1: vec4f; var c5_0: vec4f; var c5_1: vec4f;
  var c6_0: vec4f; var c6_1: vec4f; var c7_0: vec4f; var c7_1: vec4f;
  for (var k0 = 0u; k0 < p.k; k0 += 4u) {
    let a0 = load_a(base_a, row, k0, ta);
    let a1 = load_a(base_a, row + 4u, k0, ta);
    let b0 = load_b(base_b, k0, col, tb);
    let b1 = load_b(base_b, k0, col + 4u, tb);
    c0_0 = fma4(c0_0, a0[0], b0); c0_1 = fma4(c0_1, a0[0], b1);
    c1_0 = fma4(c1_0, a0[1], b0); c1_1 = fma4(c1_1, a0[1], b1);
    c2_0 = fma4(c2_0, a0[2], b0); c2_1 = fma4(c2_1, a0[2], b1);
    c3_0 = fma4(c3_0, a0[3], b0); c3_1 = fma4(c3_1, a0[3], b1);
    c4_0 = fma4(c4_0, a1[0], b0); c4_1 = fma4(c4_1, a1[0], b1);
    c5_0 = fma4(c5_0, a1[1], b0); c5_1 = fma4(c5_1, a1[1], b1);
    c6_0 = fma4(c6_0, a1[2], b0); c6_1 = fma4(c6_1, a1[2], b1);
    c7_0 = fma4(c7_0, a1[3], b0); c7_1 = fma4(c7_1, a1[3], b1);
  }
  store_c4(wg.z, row, col, c0_0); store_c4(wg.z, row, col + 4u, c0_1);
  store_c4(wg.z, row + 1u, col, c1_0); store_c4(wg.z, row + 1u, col + 4u, c1_1);
  store_c4(wg.z, row + 2u, col, c2_0); store_c4(wg.z, row + 2u, col + 4u, c2_1);
  store_c4(wg.z, row + 3u, col, c3_0); store_c4(wg.z, row + 3u, col + 4u, c3_1);
  store_c4(wg.z, row + 4u, col, c4_0); store_c4(wg.z, row + 4u, col + 4u, c4_1);
  store_c4(wg.z, row + 5u, col, c5_0); store_c4(wg.z, row + 5u, col + 4u, c5_1);
  store_c4(wg.z, row + 6u, col, c6_0); store_c4(wg.z, row + 6u, col + 4u, c6_1);
  store_c4(wg.z, row + 7u, col, c7_0); store_c4(wg.z, row + 7u, col + 4u, c7_1);
}

@compute @workgroup_size(WG_X, WG_Y)
fn matmul_vec4_nn(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  vec4_main(wg, lid, false, false);
}

@compute @workgroup_size(WG_X, WG_Y)
fn matmul_vec4_nt(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  vec4_main(wg, lid, false, true);
}

@compute @workgroup_size(WG_X, WG_Y)
fn matmul_vec4_tn(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  vec4_main(wg, lid, true, false);
}

@compute @workgroup_size(WG_X, WG_Y)
fn matmul_vec4_tt(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  vec4_main(wg, lid, true, true);
}

// 16x32 outputs an invocation (128 vec4 accumulators): 3 flops a loaded float where vec4_main
// has 1, which is what pays on CPU drivers; the price is a long first compile there. Generated
// text, same scheme as vec4_main; Aᵀ·Bᵀ has no entry point (the host uses vec4 for it).
fn wide_main(wg: vec3u, lid: vec3u, ta: bool, tb: bool) {
  let row = (wg.y * WG_Y + lid.y) * 16u;
  let col = (wg.x * WG_X + lid.x) * 32u;
  let base_a = p.off_a + wg.z * p.stride_a;
  let base_b = p.off_b + wg.z * p.stride_b;
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
  for (var k0 = 0u; k0 < p.k; k0 += 4u) {
    let a0 = load_a(base_a, row + 0u, k0, ta);
    let a1 = load_a(base_a, row + 4u, k0, ta);
    let a2 = load_a(base_a, row + 8u, k0, ta);
    let a3 = load_a(base_a, row + 12u, k0, ta);
    let b0 = load_b(base_b, k0, col + 0u, tb);
    let b1 = load_b(base_b, k0, col + 4u, tb);
    let b2 = load_b(base_b, k0, col + 8u, tb);
    let b3 = load_b(base_b, k0, col + 12u, tb);
    let b4 = load_b(base_b, k0, col + 16u, tb);
    let b5 = load_b(base_b, k0, col + 20u, tb);
    let b6 = load_b(base_b, k0, col + 24u, tb);
    let b7 = load_b(base_b, k0, col + 28u, tb);
    c0_0 = fma4(c0_0, a0[0], b0); c0_1 = fma4(c0_1, a0[0], b1); c0_2 = fma4(c0_2, a0[0], b2); c0_3 = fma4(c0_3, a0[0], b3); c0_4 = fma4(c0_4, a0[0], b4); c0_5 = fma4(c0_5, a0[0], b5); c0_6 = fma4(c0_6, a0[0], b6); c0_7 = fma4(c0_7, a0[0], b7);
    c1_0 = fma4(c1_0, a0[1], b0); c1_1 = fma4(c1_1, a0[1], b1); c1_2 = fma4(c1_2, a0[1], b2); c1_3 = fma4(c1_3, a0[1], b3); c1_4 = fma4(c1_4, a0[1], b4); c1_5 = fma4(c1_5, a0[1], b5); c1_6 = fma4(c1_6, a0[1], b6); c1_7 = fma4(c1_7, a0[1], b7);
    c2_0 = fma4(c2_0, a0[2], b0); c2_1 = fma4(c2_1, a0[2], b1); c2_2 = fma4(c2_2, a0[2], b2); c2_3 = fma4(c2_3, a0[2], b3); c2_4 = fma4(c2_4, a0[2], b4); c2_5 = fma4(c2_5, a0[2], b5); c2_6 = fma4(c2_6, a0[2], b6); c2_7 = fma4(c2_7, a0[2], b7);
    c3_0 = fma4(c3_0, a0[3], b0); c3_1 = fma4(c3_1, a0[3], b1); c3_2 = fma4(c3_2, a0[3], b2); c3_3 = fma4(c3_3, a0[3], b3); c3_4 = fma4(c3_4, a0[3], b4); c3_5 = fma4(c3_5, a0[3], b5); c3_6 = fma4(c3_6, a0[3], b6); c3_7 = fma4(c3_7, a0[3], b7);
    c4_0 = fma4(c4_0, a1[0], b0); c4_1 = fma4(c4_1, a1[0], b1); c4_2 = fma4(c4_2, a1[0], b2); c4_3 = fma4(c4_3, a1[0], b3); c4_4 = fma4(c4_4, a1[0], b4); c4_5 = fma4(c4_5, a1[0], b5); c4_6 = fma4(c4_6, a1[0], b6); c4_7 = fma4(c4_7, a1[0], b7);
    c5_0 = fma4(c5_0, a1[1], b0); c5_1 = fma4(c5_1, a1[1], b1); c5_2 = fma4(c5_2, a1[1], b2); c5_3 = fma4(c5_3, a1[1], b3); c5_4 = fma4(c5_4, a1[1], b4); c5_5 = fma4(c5_5, a1[1], b5); c5_6 = fma4(c5_6, a1[1], b6); c5_7 = fma4(c5_7, a1[1], b7);
    c6_0 = fma4(c6_0, a1[2], b0); c6_1 = fma4(c6_1, a1[2], b1); c6_2 = fma4(c6_2, a1[2], b2); c6_3 = fma4(c6_3, a1[2], b3); c6_4 = fma4(c6_4, a1[2], b4); c6_5 = fma4(c6_5, a1[2], b5); c6_6 = fma4(c6_6, a1[2], b6); c6_7 = fma4(c6_7, a1[2], b7);
    c7_0 = fma4(c7_0, a1[3], b0); c7_1 = fma4(c7_1, a1[3], b1); c7_2 = fma4(c7_2, a1[3], b2); c7_3 = fma4(c7_3, a1[3], b3); c7_4 = fma4(c7_4, a1[3], b4); c7_5 = fma4(c7_5, a1[3], b5); c7_6 = fma4(c7_6, a1[3], b6); c7_7 = fma4(c7_7, a1[3], b7);
    c8_0 = fma4(c8_0, a2[0], b0); c8_1 = fma4(c8_1, a2[0], b1); c8_2 = fma4(c8_2, a2[0], b2); c8_3 = fma4(c8_3, a2[0], b3); c8_4 = fma4(c8_4, a2[0], b4); c8_5 = fma4(c8_5, a2[0], b5); c8_6 = fma4(c8_6, a2[0], b6); c8_7 = fma4(c8_7, a2[0], b7);
    c9_0 = fma4(c9_0, a2[1], b0); c9_1 = fma4(c9_1, a2[1], b1); c9_2 = fma4(c9_2, a2[1], b2); c9_3 = fma4(c9_3, a2[1], b3); c9_4 = fma4(c9_4, a2[1], b4); c9_5 = fma4(c9_5, a2[1], b5); c9_6 = fma4(c9_6, a2[1], b6); c9_7 = fma4(c9_7, a2[1], b7);
    c10_0 = fma4(c10_0, a2[2], b0); c10_1 = fma4(c10_1, a2[2], b1); c10_2 = fma4(c10_2, a2[2], b2); c10_3 = fma4(c10_3, a2[2], b3); c10_4 = fma4(c10_4, a2[2], b4); c10_5 = fma4(c10_5, a2[2], b5); c10_6 = fma4(c10_6, a2[2], b6); c10_7 = fma4(c10_7, a2[2], b7);
    c11_0 = fma4(c11_0, a2[3], b0); c11_1 = fma4(c11_1, a2[3], b1); c11_2 = fma4(c11_2, a2[3], b2); c11_3 = fma4(c11_3, a2[3], b3); c11_4 = fma4(c11_4, a2[3], b4); c11_5 = fma4(c11_5, a2[3], b5); c11_6 = fma4(c11_6, a2[3], b6); c11_7 = fma4(c11_7, a2[3], b7);
    c12_0 = fma4(c12_0, a3[0], b0); c12_1 = fma4(c12_1, a3[0], b1); c12_2 = fma4(c12_2, a3[0], b2); c12_3 = fma4(c12_3, a3[0], b3); c12_4 = fma4(c12_4, a3[0], b4); c12_5 = fma4(c12_5, a3[0], b5); c12_6 = fma4(c12_6, a3[0], b6); c12_7 = fma4(c12_7, a3[0], b7);
    c13_0 = fma4(c13_0, a3[1], b0); c13_1 = fma4(c13_1, a3[1], b1); c13_2 = fma4(c13_2, a3[1], b2); c13_3 = fma4(c13_3, a3[1], b3); c13_4 = fma4(c13_4, a3[1], b4); c13_5 = fma4(c13_5, a3[1], b5); c13_6 = fma4(c13_6, a3[1], b6); c13_7 = fma4(c13_7, a3[1], b7);
    c14_0 = fma4(c14_0, a3[2], b0); c14_1 = fma4(c14_1, a3[2], b1); c14_2 = fma4(c14_2, a3[2], b2); c14_3 = fma4(c14_3, a3[2], b3); c14_4 = fma4(c14_4, a3[2], b4); c14_5 = fma4(c14_5, a3[2], b5); c14_6 = fma4(c14_6, a3[2], b6); c14_7 = fma4(c14_7, a3[2], b7);
    c15_0 = fma4(c15_0, a3[3], b0); c15_1 = fma4(c15_1, a3[3], b1); c15_2 = fma4(c15_2, a3[3], b2); c15_3 = fma4(c15_3, a3[3], b3); c15_4 = fma4(c15_4, a3[3], b4); c15_5 = fma4(c15_5, a3[3], b5); c15_6 = fma4(c15_6, a3[3], b6); c15_7 = fma4(c15_7, a3[3], b7);
  }
  store_c4(wg.z, row + 0u, col + 0u, c0_0); store_c4(wg.z, row + 0u, col + 4u, c0_1); store_c4(wg.z, row + 0u, col + 8u, c0_2); store_c4(wg.z, row + 0u, col + 12u, c0_3); store_c4(wg.z, row + 0u, col + 16u, c0_4); store_c4(wg.z, row + 0u, col + 20u, c0_5); store_c4(wg.z, row + 0u, col + 24u, c0_6); store_c4(wg.z, row + 0u, col + 28u, c0_7);
  store_c4(wg.z, row + 1u, col + 0u, c1_0); store_c4(wg.z, row + 1u, col + 4u, c1_1); store_c4(wg.z, row + 1u, col + 8u, c1_2); store_c4(wg.z, row + 1u, col + 12u, c1_3); store_c4(wg.z, row + 1u, col + 16u, c1_4); store_c4(wg.z, row + 1u, col + 20u, c1_5); store_c4(wg.z, row + 1u, col + 24u, c1_6); store_c4(wg.z, row + 1u, col + 28u, c1_7);
  store_c4(wg.z, row + 2u, col + 0u, c2_0); store_c4(wg.z, row + 2u, col + 4u, c2_1); store_c4(wg.z, row + 2u, col + 8u, c2_2); store_c4(wg.z, row + 2u, col + 12u, c2_3); store_c4(wg.z, row + 2u, col + 16u, c2_4); store_c4(wg.z, row + 2u, col + 20u, c2_5); store_c4(wg.z, row + 2u, col + 24u, c2_6); store_c4(wg.z, row + 2u, col + 28u, c2_7);
  store_c4(wg.z, row + 3u, col + 0u, c3_0); store_c4(wg.z, row + 3u, col + 4u, c3_1); store_c4(wg.z, row + 3u, col + 8u, c3_2); store_c4(wg.z, row + 3u, col + 12u, c3_3); store_c4(wg.z, row + 3u, col + 16u, c3_4); store_c4(wg.z, row + 3u, col + 20u, c3_5); store_c4(wg.z, row + 3u, col + 24u, c3_6); store_c4(wg.z, row + 3u, col + 28u, c3_7);
  store_c4(wg.z, row + 4u, col + 0u, c4_0); store_c4(wg.z, row + 4u, col + 4u, c4_1); store_c4(wg.z, row + 4u, col + 8u, c4_2); store_c4(wg.z, row + 4u, col + 12u, c4_3); store_c4(wg.z, row + 4u, col + 16u, c4_4); store_c4(wg.z, row + 4u, col + 20u, c4_5); store_c4(wg.z, row + 4u, col + 24u, c4_6); store_c4(wg.z, row + 4u, col + 28u, c4_7);
  store_c4(wg.z, row + 5u, col + 0u, c5_0); store_c4(wg.z, row + 5u, col + 4u, c5_1); store_c4(wg.z, row + 5u, col + 8u, c5_2); store_c4(wg.z, row + 5u, col + 12u, c5_3); store_c4(wg.z, row + 5u, col + 16u, c5_4); store_c4(wg.z, row + 5u, col + 20u, c5_5); store_c4(wg.z, row + 5u, col + 24u, c5_6); store_c4(wg.z, row + 5u, col + 28u, c5_7);
  store_c4(wg.z, row + 6u, col + 0u, c6_0); store_c4(wg.z, row + 6u, col + 4u, c6_1); store_c4(wg.z, row + 6u, col + 8u, c6_2); store_c4(wg.z, row + 6u, col + 12u, c6_3); store_c4(wg.z, row + 6u, col + 16u, c6_4); store_c4(wg.z, row + 6u, col + 20u, c6_5); store_c4(wg.z, row + 6u, col + 24u, c6_6); store_c4(wg.z, row + 6u, col + 28u, c6_7);
  store_c4(wg.z, row + 7u, col + 0u, c7_0); store_c4(wg.z, row + 7u, col + 4u, c7_1); store_c4(wg.z, row + 7u, col + 8u, c7_2); store_c4(wg.z, row + 7u, col + 12u, c7_3); store_c4(wg.z, row + 7u, col + 16u, c7_4); store_c4(wg.z, row + 7u, col + 20u, c7_5); store_c4(wg.z, row + 7u, col + 24u, c7_6); store_c4(wg.z, row + 7u, col + 28u, c7_7);
  store_c4(wg.z, row + 8u, col + 0u, c8_0); store_c4(wg.z, row + 8u, col + 4u, c8_1); store_c4(wg.z, row + 8u, col + 8u, c8_2); store_c4(wg.z, row + 8u, col + 12u, c8_3); store_c4(wg.z, row + 8u, col + 16u, c8_4); store_c4(wg.z, row + 8u, col + 20u, c8_5); store_c4(wg.z, row + 8u, col + 24u, c8_6); store_c4(wg.z, row + 8u, col + 28u, c8_7);
  store_c4(wg.z, row + 9u, col + 0u, c9_0); store_c4(wg.z, row + 9u, col + 4u, c9_1); store_c4(wg.z, row + 9u, col + 8u, c9_2); store_c4(wg.z, row + 9u, col + 12u, c9_3); store_c4(wg.z, row + 9u, col + 16u, c9_4); store_c4(wg.z, row + 9u, col + 20u, c9_5); store_c4(wg.z, row + 9u, col + 24u, c9_6); store_c4(wg.z, row + 9u, col + 28u, c9_7);
  store_c4(wg.z, row + 10u, col + 0u, c10_0); store_c4(wg.z, row + 10u, col + 4u, c10_1); store_c4(wg.z, row + 10u, col + 8u, c10_2); store_c4(wg.z, row + 10u, col + 12u, c10_3); store_c4(wg.z, row + 10u, col + 16u, c10_4); store_c4(wg.z, row + 10u, col + 20u, c10_5); store_c4(wg.z, row + 10u, col + 24u, c10_6); store_c4(wg.z, row + 10u, col + 28u, c10_7);
  store_c4(wg.z, row + 11u, col + 0u, c11_0); store_c4(wg.z, row + 11u, col + 4u, c11_1); store_c4(wg.z, row + 11u, col + 8u, c11_2); store_c4(wg.z, row + 11u, col + 12u, c11_3); store_c4(wg.z, row + 11u, col + 16u, c11_4); store_c4(wg.z, row + 11u, col + 20u, c11_5); store_c4(wg.z, row + 11u, col + 24u, c11_6); store_c4(wg.z, row + 11u, col + 28u, c11_7);
  store_c4(wg.z, row + 12u, col + 0u, c12_0); store_c4(wg.z, row + 12u, col + 4u, c12_1); store_c4(wg.z, row + 12u, col + 8u, c12_2); store_c4(wg.z, row + 12u, col + 12u, c12_3); store_c4(wg.z, row + 12u, col + 16u, c12_4); store_c4(wg.z, row + 12u, col + 20u, c12_5); store_c4(wg.z, row + 12u, col + 24u, c12_6); store_c4(wg.z, row + 12u, col + 28u, c12_7);
  store_c4(wg.z, row + 13u, col + 0u, c13_0); store_c4(wg.z, row + 13u, col + 4u, c13_1); store_c4(wg.z, row + 13u, col + 8u, c13_2); store_c4(wg.z, row + 13u, col + 12u, c13_3); store_c4(wg.z, row + 13u, col + 16u, c13_4); store_c4(wg.z, row + 13u, col + 20u, c13_5); store_c4(wg.z, row + 13u, col + 24u, c13_6); store_c4(wg.z, row + 13u, col + 28u, c13_7);
  store_c4(wg.z, row + 14u, col + 0u, c14_0); store_c4(wg.z, row + 14u, col + 4u, c14_1); store_c4(wg.z, row + 14u, col + 8u, c14_2); store_c4(wg.z, row + 14u, col + 12u, c14_3); store_c4(wg.z, row + 14u, col + 16u, c14_4); store_c4(wg.z, row + 14u, col + 20u, c14_5); store_c4(wg.z, row + 14u, col + 24u, c14_6); store_c4(wg.z, row + 14u, col + 28u, c14_7);
  store_c4(wg.z, row + 15u, col + 0u, c15_0); store_c4(wg.z, row + 15u, col + 4u, c15_1); store_c4(wg.z, row + 15u, col + 8u, c15_2); store_c4(wg.z, row + 15u, col + 12u, c15_3); store_c4(wg.z, row + 15u, col + 16u, c15_4); store_c4(wg.z, row + 15u, col + 20u, c15_5); store_c4(wg.z, row + 15u, col + 24u, c15_6); store_c4(wg.z, row + 15u, col + 28u, c15_7);
}

@compute @workgroup_size(WG_X, WG_Y)
fn matmul_wide_nn(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  wide_main(wg, lid, false, false);
}

@compute @workgroup_size(WG_X, WG_Y)
fn matmul_wide_nt(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  wide_main(wg, lid, false, true);
}

@compute @workgroup_size(WG_X, WG_Y)
fn matmul_wide_tn(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  wide_main(wg, lid, true, false);
}

// Shared-memory tiling: a 64x64 tile of C a workgroup of 16x16, 4x4 outputs an invocation at
// rows ty + 16r and columns tx + 16s (conflict-free shared reads), 16 k a stage.
const TILE: u32 = 64u;
const TILE_K: u32 = 16u;
var<workgroup> tile_a: array<f32, 1024>; // [TILE_K][TILE] of op(A), k-major
var<workgroup> tile_b: array<f32, 1024>; // [TILE_K][TILE] of op(B), k-major

@compute @workgroup_size(16, 16)
fn matmul_tiled(
  @builtin(workgroup_id) wg: vec3u,
  @builtin(local_invocation_id) lid: vec3u,
  @builtin(local_invocation_index) li: u32,
) {
  let sa = strides_a();
  let sb = strides_b();
  let ta = (p.flags & TRANS_A) != 0u;
  let tb = (p.flags & TRANS_B) != 0u;
  let i0 = wg.y * TILE;
  let j0 = wg.x * TILE;
  let base_a = p.off_a + wg.z * p.stride_a;
  let base_b = p.off_b + wg.z * p.stride_b;
  var acc: array<vec4f, 4>;
  for (var k0 = 0u; k0 < p.k; k0 += TILE_K) {
    for (var e = 0u; e < 4u; e++) {
      let idx = li + e * 256u;
      // Neighbouring invocations read neighbouring addresses in either layout.
      let r = select(idx / TILE_K, idx % TILE, ta);
      let q = select(idx % TILE_K, idx / TILE, ta);
      let i = i0 + r;
      let kk = k0 + q;
      var v = 0.0;
      if (i < p.m && kk < p.k) { v = a[base_a + i * sa.x + kk * sa.y]; }
      tile_a[q * TILE + r] = v;
      let s = select(idx % TILE, idx / TILE_K, tb);
      let qb = select(idx / TILE, idx % TILE_K, tb);
      let j = j0 + s;
      let kb = k0 + qb;
      var w = 0.0;
      if (j < p.n && kb < p.k) { w = b[base_b + kb * sb.x + j * sb.y]; }
      tile_b[qb * TILE + s] = w;
    }
    workgroupBarrier();
    for (var q = 0u; q < TILE_K; q++) {
      let av = vec4f(
        tile_a[q * TILE + lid.y],
        tile_a[q * TILE + lid.y + 16u],
        tile_a[q * TILE + lid.y + 32u],
        tile_a[q * TILE + lid.y + 48u],
      );
      let bv = vec4f(
        tile_b[q * TILE + lid.x],
        tile_b[q * TILE + lid.x + 16u],
        tile_b[q * TILE + lid.x + 32u],
        tile_b[q * TILE + lid.x + 48u],
      );
      acc[0] += av.x * bv;
      acc[1] += av.y * bv;
      acc[2] += av.z * bv;
      acc[3] += av.w * bv;
    }
    workgroupBarrier();
  }
  for (var r = 0u; r < 4u; r++) {
    for (var s = 0u; s < 4u; s++) {
      store_c(wg.z, i0 + lid.y + 16u * r, j0 + lid.x + 16u * s, acc[r][s]);
    }
  }
}
