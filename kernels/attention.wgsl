// Causal multi-head self-attention of GPT-2, flash-attention style: no [T, T] score matrix is
// ever stored; each invocation owns one query row (forward, dq) or one key row (dk/dv) of one
// (batch, head) and streams over rows [lo, hi) of the other side with an online softmax. The
// `_vec4` entry points at the end do the same 4 rows an invocation, for hd % 4 == 0.
//
// hd = C / NH, scale = 1 / sqrt(hd). Element (b, t, c) of a [B, T, X] tensor is at
// (b * T + t) * X + c. Head h owns columns [h * hd, (h + 1) * hd) of q, k, v and out.
//
// attention_forward: one pass per key range [lo, hi), in order; a pass with lo > 0 resumes
// from the previous passes' out and lse (rows with no key in the range are left alone).
//   @binding(0) out:  (B, T, C)       f32, row t - past holds query row t in [past, past + T)
//   @binding(1) lse:  (B, NH, T)      f32, log-sum-exp of each query row's scaled scores
//   @binding(2) qkv:  (B, Tmax, 3C)   f32, q | k | v; rows [0, past) are the KV cache (their q
//                                     part is never read), rows >= past + T are never read
//   @binding(3) sizes
// attention_backward_dq (training: past = 0, Tmax = T): one pass per key range [lo, hi).
//   @binding(0) dqkv:  (B, T, 3C)     f32, += into the q part only
//   @binding(1) delta: (B, NH, T)     f32, written by the pass with lo = 0: sum of dout * out
//                                     over the head
//   @binding(2) dout:  (B, T, C)      f32
//   @binding(3) qkv:   (B, T, 3C)     f32
//   @binding(4) out:   (B, T, C)      f32
//   @binding(5) lse:   (B, NH, T)     f32
//   @binding(6) sizes
// attention_backward_dkv (after the dq passes): one pass per query range [lo, hi).
//   @binding(0) dqkv:  (B, T, 3C)     f32, += into the k and v parts only
//   @binding(1) dout:  (B, T, C)      f32
//   @binding(2) qkv:   (B, T, 3C)     f32
//   @binding(3) lse:   (B, NH, T)     f32
//   @binding(4) delta: (B, NH, T)     f32
//   @binding(5) sizes
//
// Grid: x = blocks of WG rows, y = head, z = batch. Every invocation of a workgroup walks the
// same rows of the other side (a workgroup-uniform loop, masked per row): llvmpipe runs lanes
// in lockstep anyway. Head vectors are handled four channels at a time, zero past hd. The host
// bounds hi - lo because llvmpipe ends every loop of an invocation once all of them together
// have run 65535 iterations (LP_MAX_TGSI_LOOP_ITERATIONS), silently.

struct Sizes {
  B: u32,
  T: u32,
  past: u32,
  Tmax: u32,
  C: u32,
  NH: u32,
  hd: u32,
  scale: f32,
  lo: u32,
  hi: u32,
}

override WG: u32 = 16;
// Keys scored per online-softmax step: the running sum and output are rescaled once a block.
override KB: u32 = 16;
// Largest head size / 4: head vectors live in private arrays, which need a constant length.
const HD4_MAX: u32 = 32u;
const KB_MAX: u32 = 64u;
// A finite stand-in for -inf, so that exp(NEG - m) is a clean 0 and never NaN.
const NEG: f32 = -3.0e38;

// Lanes of channels [4c, 4c + 4) that lie inside the head.
fn lanes(c: u32, hd: u32) -> vec4<bool> {
  return vec4u(4u * c) + vec4u(0u, 1u, 2u, 3u) < vec4u(hd);
}

// ---------------------------------------------------------------------------------------------
// Forward

@group(0) @binding(0) var<storage, read_write> fwd_out: array<f32>;
@group(0) @binding(1) var<storage, read_write> fwd_lse: array<f32>;
@group(0) @binding(2) var<storage, read> fwd_qkv: array<f32>;
@group(0) @binding(3) var<uniform> fwd_sizes: Sizes;

fn fwd_qkv4(i: u32, keep: vec4<bool>) -> vec4f {
  let x = vec4f(fwd_qkv[i], fwd_qkv[i + 1u], fwd_qkv[i + 2u], fwd_qkv[i + 3u]);
  return select(vec4f(0.0), x, keep);
}

fn fwd_out4(i: u32, keep: vec4<bool>) -> vec4f {
  let x = vec4f(fwd_out[i], fwd_out[i + 1u], fwd_out[i + 2u], fwd_out[i + 3u]);
  return select(vec4f(0.0), x, keep);
}

@compute @workgroup_size(WG)
fn attention_forward(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3u,
) {
  let s = fwd_sizes;
  let h = wid.y;
  let b = wid.z;
  let C3 = 3u * s.C;
  let h4 = (s.hd + 3u) / 4u;
  let first = wid.x * WG;
  // Rows past T compute a copy of the last row, so the loops stay uniform, and store nothing.
  let r = min(first + lid, s.T - 1u);
  let t = s.past + r;
  let batch = b * s.Tmax * C3;
  let qo = batch + t * C3 + h * s.hd;
  let ko = batch + s.C + h * s.hd;
  let vo = ko + s.C;
  let oo = (b * s.T + r) * s.C + h * s.hd;
  let stat = (b * s.NH + h) * s.T + r;

  var q: array<vec4f, HD4_MAX>;
  var acc: array<vec4f, HD4_MAX>;
  var m = NEG;
  var l = 0.0;
  for (var c = 0u; c < h4; c++) {
    let keep = lanes(c, s.hd);
    q[c] = fwd_qkv4(qo + 4u * c, keep) * s.scale;
    acc[c] = vec4f(0.0);
  }
  if (s.lo > 0u) {
    // out = acc / l and lse = m + log(l) so far: the same state as (acc = out, m = lse, l = 1).
    m = fwd_lse[stat];
    l = 1.0;
    for (var c = 0u; c < h4; c++) {
      acc[c] = fwd_out4(oo + 4u * c, lanes(c, s.hd));
    }
  }
  var p: array<f32, KB_MAX>;
  // Keys lo ..= the workgroup's last query row, and below hi.
  let end = min(s.hi, s.past + min(first + WG, s.T));
  for (var j0 = s.lo; j0 < end; j0 += KB) {
    let n = min(KB, end - j0);
    var mb = m;
    for (var k = 0u; k < n; k++) {
      let row = ko + (j0 + k) * C3;
      var score = 0.0;
      for (var c = 0u; c < h4; c++) {
        score += dot(q[c], fwd_qkv4(row + 4u * c, lanes(c, s.hd)));
      }
      p[k] = select(NEG, score, j0 + k <= t);
      mb = max(mb, p[k]);
    }
    let rescale = exp(m - mb);
    m = mb;
    l *= rescale;
    for (var c = 0u; c < h4; c++) {
      acc[c] *= rescale;
    }
    for (var k = 0u; k < n; k++) {
      let e = exp(p[k] - m);
      l += e;
      let row = vo + (j0 + k) * C3;
      for (var c = 0u; c < h4; c++) {
        acc[c] += e * fwd_qkv4(row + 4u * c, lanes(c, s.hd));
      }
    }
  }
  if (first + lid < s.T && t >= s.lo) {
    let inv = 1.0 / l;
    for (var c = 0u; c < h4; c++) {
      let o = acc[c] * inv;
      for (var e = 0u; e < min(4u, s.hd - 4u * c); e++) {
        fwd_out[oo + 4u * c + e] = o[e];
      }
    }
    fwd_lse[stat] = m + log(l);
  }
}

// ---------------------------------------------------------------------------------------------
// Backward, dq passes: one invocation per query row, over keys [lo, hi); delta for dk/dv.

@group(0) @binding(0) var<storage, read_write> dq_dqkv: array<f32>;
@group(0) @binding(1) var<storage, read_write> dq_delta: array<f32>;
@group(0) @binding(2) var<storage, read> dq_dout: array<f32>;
@group(0) @binding(3) var<storage, read> dq_qkv: array<f32>;
@group(0) @binding(4) var<storage, read> dq_out: array<f32>;
@group(0) @binding(5) var<storage, read> dq_lse: array<f32>;
@group(0) @binding(6) var<uniform> dq_sizes: Sizes;

fn dq_qkv4(i: u32, keep: vec4<bool>) -> vec4f {
  let x = vec4f(dq_qkv[i], dq_qkv[i + 1u], dq_qkv[i + 2u], dq_qkv[i + 3u]);
  return select(vec4f(0.0), x, keep);
}

fn dq_dout4(i: u32, keep: vec4<bool>) -> vec4f {
  let x = vec4f(dq_dout[i], dq_dout[i + 1u], dq_dout[i + 2u], dq_dout[i + 3u]);
  return select(vec4f(0.0), x, keep);
}

fn dq_out4(i: u32, keep: vec4<bool>) -> vec4f {
  let x = vec4f(dq_out[i], dq_out[i + 1u], dq_out[i + 2u], dq_out[i + 3u]);
  return select(vec4f(0.0), x, keep);
}

@compute @workgroup_size(WG)
fn attention_backward_dq(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3u,
) {
  let s = dq_sizes;
  let h = wid.y;
  let b = wid.z;
  let C3 = 3u * s.C;
  let h4 = (s.hd + 3u) / 4u;
  let first = wid.x * WG;
  let i = min(first + lid, s.T - 1u);
  let qo = (b * s.T + i) * C3 + h * s.hd;
  let ko = b * s.T * C3 + s.C + h * s.hd;
  let vo = ko + s.C;
  let oo = (b * s.T + i) * s.C + h * s.hd;
  let stat = (b * s.NH + h) * s.T + i;

  var q: array<vec4f, HD4_MAX>;
  var g: array<vec4f, HD4_MAX>;
  var dq: array<vec4f, HD4_MAX>;
  var delta = 0.0;
  for (var c = 0u; c < h4; c++) {
    let keep = lanes(c, s.hd);
    q[c] = dq_qkv4(qo + 4u * c, keep) * s.scale;
    g[c] = dq_dout4(oo + 4u * c, keep);
    delta += dot(g[c], dq_out4(oo + 4u * c, keep));
    dq[c] = vec4f(0.0);
  }
  let lse = dq_lse[stat];
  let end = min(s.hi, min(first + WG, s.T));
  for (var j = s.lo; j < end; j++) {
    let krow = ko + j * C3;
    let vrow = vo + j * C3;
    var score = 0.0;
    var dp = 0.0;
    for (var c = 0u; c < h4; c++) {
      let keep = lanes(c, s.hd);
      score += dot(q[c], dq_qkv4(krow + 4u * c, keep));
      dp += dot(g[c], dq_qkv4(vrow + 4u * c, keep));
    }
    let p = select(0.0, exp(score - lse), j <= i);
    let ds = p * (dp - delta);
    for (var c = 0u; c < h4; c++) {
      dq[c] += ds * dq_qkv4(krow + 4u * c, lanes(c, s.hd));
    }
  }
  if (first + lid < s.T) {
    if (i >= s.lo) {
      for (var c = 0u; c < h4; c++) {
        let d = dq[c] * s.scale;
        for (var e = 0u; e < min(4u, s.hd - 4u * c); e++) {
          dq_dqkv[qo + 4u * c + e] += d[e];
        }
      }
    }
    if (s.lo == 0u) {
      dq_delta[stat] = delta;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Backward, dk/dv passes: one invocation per key row, over the query rows in [lo, hi) that see
// it.

@group(0) @binding(0) var<storage, read_write> kv_dqkv: array<f32>;
@group(0) @binding(1) var<storage, read> kv_dout: array<f32>;
@group(0) @binding(2) var<storage, read> kv_qkv: array<f32>;
@group(0) @binding(3) var<storage, read> kv_lse: array<f32>;
@group(0) @binding(4) var<storage, read> kv_delta: array<f32>;
@group(0) @binding(5) var<uniform> kv_sizes: Sizes;

fn kv_qkv4(i: u32, keep: vec4<bool>) -> vec4f {
  let x = vec4f(kv_qkv[i], kv_qkv[i + 1u], kv_qkv[i + 2u], kv_qkv[i + 3u]);
  return select(vec4f(0.0), x, keep);
}

fn kv_dout4(i: u32, keep: vec4<bool>) -> vec4f {
  let x = vec4f(kv_dout[i], kv_dout[i + 1u], kv_dout[i + 2u], kv_dout[i + 3u]);
  return select(vec4f(0.0), x, keep);
}

@compute @workgroup_size(WG)
fn attention_backward_dkv(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3u,
) {
  let s = kv_sizes;
  let h = wid.y;
  let b = wid.z;
  let C3 = 3u * s.C;
  let h4 = (s.hd + 3u) / 4u;
  let first = wid.x * WG;
  let j = min(first + lid, s.T - 1u);
  let ko = (b * s.T + j) * C3 + s.C + h * s.hd;
  let vo = ko + s.C;
  let qo = b * s.T * C3 + h * s.hd;
  let go = b * s.T * s.C + h * s.hd;
  let stat = (b * s.NH + h) * s.T;

  var k: array<vec4f, HD4_MAX>;
  var v: array<vec4f, HD4_MAX>;
  var dk: array<vec4f, HD4_MAX>;
  var dv: array<vec4f, HD4_MAX>;
  for (var c = 0u; c < h4; c++) {
    let keep = lanes(c, s.hd);
    k[c] = kv_qkv4(ko + 4u * c, keep) * s.scale;
    v[c] = kv_qkv4(vo + 4u * c, keep);
    dk[c] = vec4f(0.0);
    dv[c] = vec4f(0.0);
  }
  // Query rows before the workgroup's first key row see none of its keys.
  for (var i = max(s.lo, first); i < s.hi; i++) {
    let qrow = qo + i * C3;
    let grow = go + i * s.C;
    var score = 0.0;
    var dp = 0.0;
    for (var c = 0u; c < h4; c++) {
      let keep = lanes(c, s.hd);
      score += dot(kv_qkv4(qrow + 4u * c, keep), k[c]);
      dp += dot(kv_dout4(grow + 4u * c, keep), v[c]);
    }
    let p = select(0.0, exp(score - kv_lse[stat + i]), j <= i);
    let ds = p * (dp - kv_delta[stat + i]);
    for (var c = 0u; c < h4; c++) {
      let keep = lanes(c, s.hd);
      dv[c] += p * kv_dout4(grow + 4u * c, keep);
      dk[c] += ds * kv_qkv4(qrow + 4u * c, keep);
    }
  }
  if (first + lid < s.T && j < s.hi) {
    for (var c = 0u; c < h4; c++) {
      let dkc = dk[c] * s.scale;
      for (var e = 0u; e < min(4u, s.hd - 4u * c); e++) {
        kv_dqkv[ko + 4u * c + e] += dkc[e];
        kv_dqkv[vo + 4u * c + e] += dv[c][e];
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// vec4 variants, for hd % 4 == 0 (every real model): q, k, v, out, dout and dqkv are read as
// vec4s (one lane loop on llvmpipe per four floats instead of per float), an invocation owns 4
// consecutive rows, and the other side streams 4 rows a step. The 4 x 4 score tile of a step
// is built from mat4x4s of four rows' channel vec4s, so every loaded vec4 feeds four rows, and
// the loops over channels are uniform in trip count (h4) so that the tiles stay in registers.
// Same bindings, passes and results as the scalar kernels above; shapes in vec4 units below
// (C4 = C / 4, h4 = hd / 4). Rows past T compute copies of row T - 1 and store nothing.

@group(0) @binding(0) var<storage, read_write> v4_out: array<vec4f>;
@group(0) @binding(2) var<storage, read> v4_qkv: array<vec4f>;

// Four rows' channel vec4 c, as the columns of a matrix: `x * m` dots x with every row.
fn fwd_rows(at: vec4u, c: u32) -> mat4x4f {
  return mat4x4f(v4_qkv[at.x + c], v4_qkv[at.y + c], v4_qkv[at.z + c], v4_qkv[at.w + c]);
}

const STEP: vec4u = vec4u(0u, 1u, 2u, 3u);

@compute @workgroup_size(WG)
fn attention_forward_vec4(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3u,
) {
  let s = fwd_sizes;
  let h = wid.y;
  let b = wid.z;
  let C4 = s.C / 4u;
  let C3 = 3u * C4;
  let h4 = s.hd / 4u;
  let first = (wid.x * WG + lid) * 4u;
  let r = min(vec4u(first) + STEP, vec4u(s.T - 1u));
  let t = vec4u(s.past) + r;
  let batch = b * s.Tmax * C3 + h * h4;
  let qo = vec4u(batch) + t * C3;
  let ko = batch + C4;
  let vo = ko + C4;
  let oo = (vec4u(b * s.T) + r) * C4 + h * h4;
  let stat = vec4u((b * s.NH + h) * s.T) + r;

  var a0: array<vec4f, HD4_MAX>;
  var a1: array<vec4f, HD4_MAX>;
  var a2: array<vec4f, HD4_MAX>;
  var a3: array<vec4f, HD4_MAX>;
  var m = vec4f(NEG);
  var l = vec4f(0.0);
  if (s.lo > 0u) {
    // Resume: out = acc / l and lse = m + log(l) so far, as (acc = out, m = lse, l = 1).
    m = vec4f(fwd_lse[stat.x], fwd_lse[stat.y], fwd_lse[stat.z], fwd_lse[stat.w]);
    l = vec4f(1.0);
    for (var c = 0u; c < h4; c++) {
      a0[c] = v4_out[oo.x + c];
      a1[c] = v4_out[oo.y + c];
      a2[c] = v4_out[oo.z + c];
      a3[c] = v4_out[oo.w + c];
    }
  } else {
    for (var c = 0u; c < h4; c++) {
      a0[c] = vec4f(0.0);
      a1[c] = vec4f(0.0);
      a2[c] = vec4f(0.0);
      a3[c] = vec4f(0.0);
    }
  }
  // Keys lo ..= the last query row, below hi; loads clamp to end - 1 so that rows past
  // past + T (never written, maybe garbage) are not read.
  let end = min(s.hi, t.w + 1u);
  for (var j0 = s.lo; j0 < end; j0 += 4u) {
    let j = vec4u(j0) + STEP;
    let kr = min(j, vec4u(end - 1u)) * C3;
    let k = vec4u(ko) + kr;
    var s0 = vec4f(0.0);
    var s1 = vec4f(0.0);
    var s2 = vec4f(0.0);
    var s3 = vec4f(0.0);
    for (var c = 0u; c < h4; c++) {
      let q = fwd_rows(qo, c);
      s0 += v4_qkv[k.x + c] * q;
      s1 += v4_qkv[k.y + c] * q;
      s2 += v4_qkv[k.z + c] * q;
      s3 += v4_qkv[k.w + c] * q;
    }
    // s_k[i]: key j0 + k against query row i.
    let hit = j < vec4u(s.hi);
    s0 = select(vec4f(NEG), s0 * s.scale, (vec4u(j.x) <= t) & vec4(hit.x));
    s1 = select(vec4f(NEG), s1 * s.scale, (vec4u(j.y) <= t) & vec4(hit.y));
    s2 = select(vec4f(NEG), s2 * s.scale, (vec4u(j.z) <= t) & vec4(hit.z));
    s3 = select(vec4f(NEG), s3 * s.scale, (vec4u(j.w) <= t) & vec4(hit.w));
    let mb = max(max(m, max(s0, s1)), max(s2, s3));
    let rescale = exp(m - mb);
    let p0 = exp(s0 - mb);
    let p1 = exp(s1 - mb);
    let p2 = exp(s2 - mb);
    let p3 = exp(s3 - mb);
    m = mb;
    l = l * rescale + ((p0 + p1) + (p2 + p3));
    // Row i of pt: query row i's weights of the four keys.
    let pt = transpose(mat4x4f(p0, p1, p2, p3));
    let v = vec4u(vo) + kr;
    for (var c = 0u; c < h4; c++) {
      let vm = fwd_rows(v, c);
      a0[c] = a0[c] * rescale.x + vm * pt[0];
      a1[c] = a1[c] * rescale.y + vm * pt[1];
      a2[c] = a2[c] * rescale.z + vm * pt[2];
      a3[c] = a3[c] * rescale.w + vm * pt[3];
    }
  }
  let inv = 1.0 / l;
  let keep = (vec4u(first) + STEP < vec4u(s.T)) & (t >= vec4u(s.lo));
  for (var c = 0u; c < h4; c++) {
    if (keep.x) { v4_out[oo.x + c] = a0[c] * inv.x; }
    if (keep.y) { v4_out[oo.y + c] = a1[c] * inv.y; }
    if (keep.z) { v4_out[oo.z + c] = a2[c] * inv.z; }
    if (keep.w) { v4_out[oo.w + c] = a3[c] * inv.w; }
  }
  let lse = m + log(l);
  if (keep.x) { fwd_lse[stat.x] = lse.x; }
  if (keep.y) { fwd_lse[stat.y] = lse.y; }
  if (keep.z) { fwd_lse[stat.z] = lse.z; }
  if (keep.w) { fwd_lse[stat.w] = lse.w; }
}

@group(0) @binding(0) var<storage, read_write> dq4_dqkv: array<vec4f>;
@group(0) @binding(2) var<storage, read> dq4_dout: array<vec4f>;
@group(0) @binding(3) var<storage, read> dq4_qkv: array<vec4f>;
@group(0) @binding(4) var<storage, read> dq4_out: array<vec4f>;

fn dq_rows(at: vec4u, c: u32) -> mat4x4f {
  return mat4x4f(dq4_qkv[at.x + c], dq4_qkv[at.y + c], dq4_qkv[at.z + c], dq4_qkv[at.w + c]);
}

fn dq_grad_rows(at: vec4u, c: u32) -> mat4x4f {
  return mat4x4f(dq4_dout[at.x + c], dq4_dout[at.y + c], dq4_dout[at.z + c], dq4_dout[at.w + c]);
}

@compute @workgroup_size(WG)
fn attention_backward_dq_vec4(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3u,
) {
  let s = dq_sizes;
  let h = wid.y;
  let b = wid.z;
  let C4 = s.C / 4u;
  let C3 = 3u * C4;
  let h4 = s.hd / 4u;
  let first = (wid.x * WG + lid) * 4u;
  let i = min(vec4u(first) + STEP, vec4u(s.T - 1u));
  let batch = b * s.T * C3 + h * h4;
  let qo = vec4u(batch) + i * C3;
  let ko = batch + C4;
  let vo = ko + C4;
  let go = (vec4u(b * s.T) + i) * C4 + h * h4;
  let stat = vec4u((b * s.NH + h) * s.T) + i;

  var d0: array<vec4f, HD4_MAX>;
  var d1: array<vec4f, HD4_MAX>;
  var d2: array<vec4f, HD4_MAX>;
  var d3: array<vec4f, HD4_MAX>;
  var delta = vec4f(0.0);
  for (var c = 0u; c < h4; c++) {
    delta += vec4f(
      dot(dq4_dout[go.x + c], dq4_out[go.x + c]),
      dot(dq4_dout[go.y + c], dq4_out[go.y + c]),
      dot(dq4_dout[go.z + c], dq4_out[go.z + c]),
      dot(dq4_dout[go.w + c], dq4_out[go.w + c]),
    );
    d0[c] = vec4f(0.0);
    d1[c] = vec4f(0.0);
    d2[c] = vec4f(0.0);
    d3[c] = vec4f(0.0);
  }
  let lse = vec4f(dq_lse[stat.x], dq_lse[stat.y], dq_lse[stat.z], dq_lse[stat.w]);
  let end = min(s.hi, i.w + 1u);
  for (var j0 = s.lo; j0 < end; j0 += 4u) {
    let j = vec4u(j0) + STEP;
    let kr = min(j, vec4u(end - 1u)) * C3;
    let k = vec4u(ko) + kr;
    let v = vec4u(vo) + kr;
    var s0 = vec4f(0.0);
    var s1 = vec4f(0.0);
    var s2 = vec4f(0.0);
    var s3 = vec4f(0.0);
    var e0 = vec4f(0.0);
    var e1 = vec4f(0.0);
    var e2 = vec4f(0.0);
    var e3 = vec4f(0.0);
    for (var c = 0u; c < h4; c++) {
      let q = dq_rows(qo, c);
      let g = dq_grad_rows(go, c);
      s0 += dq4_qkv[k.x + c] * q;
      s1 += dq4_qkv[k.y + c] * q;
      s2 += dq4_qkv[k.z + c] * q;
      s3 += dq4_qkv[k.w + c] * q;
      e0 += dq4_qkv[v.x + c] * g;
      e1 += dq4_qkv[v.y + c] * g;
      e2 += dq4_qkv[v.z + c] * g;
      e3 += dq4_qkv[v.w + c] * g;
    }
    // x_k[n]: key j0 + k against query row n; ds = p (dp - delta).
    let hit = j < vec4u(s.hi);
    let p0 = select(vec4f(0.0), exp(s0 * s.scale - lse), (vec4u(j.x) <= i) & vec4(hit.x));
    let p1 = select(vec4f(0.0), exp(s1 * s.scale - lse), (vec4u(j.y) <= i) & vec4(hit.y));
    let p2 = select(vec4f(0.0), exp(s2 * s.scale - lse), (vec4u(j.z) <= i) & vec4(hit.z));
    let p3 = select(vec4f(0.0), exp(s3 * s.scale - lse), (vec4u(j.w) <= i) & vec4(hit.w));
    let ds0 = p0 * (e0 - delta);
    let ds1 = p1 * (e1 - delta);
    let ds2 = p2 * (e2 - delta);
    let ds3 = p3 * (e3 - delta);
    let ds = transpose(mat4x4f(ds0, ds1, ds2, ds3));
    for (var c = 0u; c < h4; c++) {
      let km = dq_rows(k, c);
      d0[c] += km * ds[0];
      d1[c] += km * ds[1];
      d2[c] += km * ds[2];
      d3[c] += km * ds[3];
    }
  }
  let keep = vec4u(first) + STEP < vec4u(s.T);
  let write = keep & (i >= vec4u(s.lo));
  for (var c = 0u; c < h4; c++) {
    if (write.x) { dq4_dqkv[qo.x + c] += d0[c] * s.scale; }
    if (write.y) { dq4_dqkv[qo.y + c] += d1[c] * s.scale; }
    if (write.z) { dq4_dqkv[qo.z + c] += d2[c] * s.scale; }
    if (write.w) { dq4_dqkv[qo.w + c] += d3[c] * s.scale; }
  }
  if (s.lo == 0u) {
    if (keep.x) { dq_delta[stat.x] = delta.x; }
    if (keep.y) { dq_delta[stat.y] = delta.y; }
    if (keep.z) { dq_delta[stat.z] = delta.z; }
    if (keep.w) { dq_delta[stat.w] = delta.w; }
  }
}

@group(0) @binding(0) var<storage, read_write> kv4_dqkv: array<vec4f>;
@group(0) @binding(1) var<storage, read> kv4_dout: array<vec4f>;
@group(0) @binding(2) var<storage, read> kv4_qkv: array<vec4f>;

fn kv_rows(at: vec4u, c: u32) -> mat4x4f {
  return mat4x4f(kv4_qkv[at.x + c], kv4_qkv[at.y + c], kv4_qkv[at.z + c], kv4_qkv[at.w + c]);
}

fn kv_grad_rows(at: vec4u, c: u32) -> mat4x4f {
  return mat4x4f(kv4_dout[at.x + c], kv4_dout[at.y + c], kv4_dout[at.z + c], kv4_dout[at.w + c]);
}

@compute @workgroup_size(WG)
fn attention_backward_dkv_vec4(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3u,
) {
  let s = kv_sizes;
  let h = wid.y;
  let b = wid.z;
  let C4 = s.C / 4u;
  let C3 = 3u * C4;
  let h4 = s.hd / 4u;
  let first = (wid.x * WG + lid) * 4u;
  let j = min(vec4u(first) + STEP, vec4u(s.T - 1u));
  let batch = b * s.T * C3 + h * h4;
  let ko = vec4u(batch + C4) + j * C3;
  let vo = ko + vec4u(C4);
  let qo = batch;
  let go = b * s.T * C4 + h * h4;
  let stat = (b * s.NH + h) * s.T;

  var dk0: array<vec4f, HD4_MAX>;
  var dk1: array<vec4f, HD4_MAX>;
  var dk2: array<vec4f, HD4_MAX>;
  var dk3: array<vec4f, HD4_MAX>;
  var dv0: array<vec4f, HD4_MAX>;
  var dv1: array<vec4f, HD4_MAX>;
  var dv2: array<vec4f, HD4_MAX>;
  var dv3: array<vec4f, HD4_MAX>;
  for (var c = 0u; c < h4; c++) {
    dk0[c] = vec4f(0.0);
    dk1[c] = vec4f(0.0);
    dk2[c] = vec4f(0.0);
    dk3[c] = vec4f(0.0);
    dv0[c] = vec4f(0.0);
    dv1[c] = vec4f(0.0);
    dv2[c] = vec4f(0.0);
    dv3[c] = vec4f(0.0);
  }
  // Query rows before this invocation's first key row see none of its keys.
  for (var i0 = max(s.lo, j.x); i0 < s.hi; i0 += 4u) {
    let i = vec4u(i0) + STEP;
    let ir = min(i, vec4u(s.hi - 1u));
    let q = vec4u(qo) + ir * C3;
    let g = vec4u(go) + ir * C4;
    var s0 = vec4f(0.0);
    var s1 = vec4f(0.0);
    var s2 = vec4f(0.0);
    var s3 = vec4f(0.0);
    var e0 = vec4f(0.0);
    var e1 = vec4f(0.0);
    var e2 = vec4f(0.0);
    var e3 = vec4f(0.0);
    for (var c = 0u; c < h4; c++) {
      let qm = kv_rows(q, c);
      let gm = kv_grad_rows(g, c);
      s0 += kv4_qkv[ko.x + c] * qm;
      s1 += kv4_qkv[ko.y + c] * qm;
      s2 += kv4_qkv[ko.z + c] * qm;
      s3 += kv4_qkv[ko.w + c] * qm;
      e0 += kv4_qkv[vo.x + c] * gm;
      e1 += kv4_qkv[vo.y + c] * gm;
      e2 += kv4_qkv[vo.z + c] * gm;
      e3 += kv4_qkv[vo.w + c] * gm;
    }
    // x_k[n]: this invocation's key row k against query row i0 + n.
    let at = vec4u(stat) + ir;
    let lse = vec4f(kv_lse[at.x], kv_lse[at.y], kv_lse[at.z], kv_lse[at.w]);
    let delta = vec4f(kv_delta[at.x], kv_delta[at.y], kv_delta[at.z], kv_delta[at.w]);
    let seen = i < vec4u(s.hi);
    let p0 = select(vec4f(0.0), exp(s0 * s.scale - lse), (vec4u(j.x) <= i) & seen);
    let p1 = select(vec4f(0.0), exp(s1 * s.scale - lse), (vec4u(j.y) <= i) & seen);
    let p2 = select(vec4f(0.0), exp(s2 * s.scale - lse), (vec4u(j.z) <= i) & seen);
    let p3 = select(vec4f(0.0), exp(s3 * s.scale - lse), (vec4u(j.w) <= i) & seen);
    let ds0 = p0 * (e0 - delta);
    let ds1 = p1 * (e1 - delta);
    let ds2 = p2 * (e2 - delta);
    let ds3 = p3 * (e3 - delta);
    for (var c = 0u; c < h4; c++) {
      let qm = kv_rows(q, c);
      let gm = kv_grad_rows(g, c);
      dk0[c] += qm * ds0;
      dk1[c] += qm * ds1;
      dk2[c] += qm * ds2;
      dk3[c] += qm * ds3;
      dv0[c] += gm * p0;
      dv1[c] += gm * p1;
      dv2[c] += gm * p2;
      dv3[c] += gm * p3;
    }
  }
  let keep = (vec4u(first) + STEP < vec4u(s.T)) & (j < vec4u(s.hi));
  for (var c = 0u; c < h4; c++) {
    if (keep.x) {
      kv4_dqkv[ko.x + c] += dk0[c] * s.scale;
      kv4_dqkv[vo.x + c] += dv0[c];
    }
    if (keep.y) {
      kv4_dqkv[ko.y + c] += dk1[c] * s.scale;
      kv4_dqkv[vo.y + c] += dv1[c];
    }
    if (keep.z) {
      kv4_dqkv[ko.z + c] += dk2[c] * s.scale;
      kv4_dqkv[vo.z + c] += dv2[c];
    }
    if (keep.w) {
      kv4_dqkv[ko.w + c] += dk3[c] * s.scale;
      kv4_dqkv[vo.w + c] += dv3[c];
    }
  }
}
