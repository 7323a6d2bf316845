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
// The vec4 entry points bind a and b as array<vec4f> (a4, b4) and need every offset, leading
// dimension and batch stride of A and B to be a multiple of 4.
//
// Variants: matmul_blocked (registers only, any layout), matmul_vec4_{nn,nt,tn,tt} (registers,
// vec4 loads: on CPU drivers every load is a per-lane loop, so fewer and wider loads win) and
// matmul_tiled (classic shared-memory tiling for real GPUs).

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

// Columns q of the result are op(A)[i0..i0+3, k0+q]: vectors over 4 rows, zero past K.
fn load_a4(base: u32, i0: u32, k0: u32, trans: bool) -> mat4x4f {
  var t: mat4x4f;
  if (trans) {
    for (var q = 0u; q < 4u; q++) { t[q] = a4[(base + min(k0 + q, p.k - 1u) * p.lda + i0) / 4u]; }
  } else {
    for (var r = 0u; r < 4u; r++) { t[r] = a4[(base + min(i0 + r, p.m - 1u) * p.lda + k0) / 4u]; }
    t = transpose(t);
  }
  for (var q = 0u; q < 4u; q++) { t[q] = select(vec4f(), t[q], k0 + q < p.k); }
  return t;
}

// Columns q of the result are op(B)[k0+q, j0..j0+3]: vectors over 4 columns, zero past K.
fn load_b4(base: u32, k0: u32, j0: u32, trans: bool) -> mat4x4f {
  var t: mat4x4f;
  if (trans) {
    for (var s = 0u; s < 4u; s++) { t[s] = b4[(base + min(j0 + s, p.n - 1u) * p.ldb + k0) / 4u]; }
    t = transpose(t);
  } else {
    for (var q = 0u; q < 4u; q++) { t[q] = b4[(base + min(k0 + q, p.k - 1u) * p.ldb + j0) / 4u]; }
  }
  for (var q = 0u; q < 4u; q++) { t[q] = select(vec4f(), t[q], k0 + q < p.k); }
  return t;
}

// 4x8 outputs an invocation from vec4 loads, four k a step. `ta`/`tb` are constants at every
// call site, so each entry point compiles to one layout without branches in the loop.
fn vec4_main(wg: vec3u, lid: vec3u, ta: bool, tb: bool) {
  let row = (wg.y * WG_Y + lid.y) * 4u;
  let col = (wg.x * WG_X + lid.x) * 8u;
  let base_a = p.off_a + wg.z * p.stride_a;
  let base_b = p.off_b + wg.z * p.stride_b;
  var acc0: mat4x4f;
  var acc1: mat4x4f;
  for (var k0 = 0u; k0 < p.k; k0 += 4u) {
    let at = load_a4(base_a, row, k0, ta);
    let b0 = load_b4(base_b, k0, col, tb);
    let b1 = load_b4(base_b, k0, col + 4u, tb);
    for (var q = 0u; q < 4u; q++) {
      let av = at[q];
      acc0[0] += av.x * b0[q];
      acc0[1] += av.y * b0[q];
      acc0[2] += av.z * b0[q];
      acc0[3] += av.w * b0[q];
      acc1[0] += av.x * b1[q];
      acc1[1] += av.y * b1[q];
      acc1[2] += av.z * b1[q];
      acc1[3] += av.w * b1[q];
    }
  }
  for (var r = 0u; r < 4u; r++) {
    store_c4(wg.z, row + r, col, acc0[r]);
    store_c4(wg.z, row + r, col + 4u, acc1[r]);
  }
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
