// Causal multi-head self-attention of GPT-2, flash-attention style: no [T, T] score matrix is
// ever stored; each invocation owns one query row (forward, dq) or one key row (dk/dv) of one
// (batch, head) and streams over rows [lo, hi) of the other side with an online softmax.
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
