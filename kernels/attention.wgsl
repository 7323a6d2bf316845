// Causal multi-head self-attention of GPT-2, flash-attention style: no [T, T] score matrix is
// ever stored; each invocation owns one query row (forward, dq) or one key row (dk/dv) of one
// (batch, head) and streams over the other rows with an online softmax.
//
// hd = C / NH, scale = 1 / sqrt(hd). Element (b, t, c) of a [B, T, X] tensor is at
// (b * T + t) * X + c. Head h owns columns [h * hd, (h + 1) * hd) of q, k, v and out.
//
// attention_forward
//   @binding(0) out:  (B, T, C)       f32, row t - past holds query row t in [past, past + T)
//   @binding(1) lse:  (B, NH, T)      f32, log-sum-exp of each query row's scaled scores
//   @binding(2) qkv:  (B, Tmax, 3C)   f32, q | k | v; rows [0, past) are the KV cache (their q
//                                     part is never read), rows >= past + T are never read
//   @binding(3) sizes
// attention_backward_dq (training: past = 0, Tmax = T)
//   @binding(0) dqkv:  (B, T, 3C)     f32, += into the q part only
//   @binding(1) delta: (B, NH, T)     f32, written: D = sum over the head of dout * out
//   @binding(2) dout:  (B, T, C)      f32
//   @binding(3) qkv:   (B, T, 3C)     f32
//   @binding(4) out:   (B, T, C)      f32
//   @binding(5) lse:   (B, NH, T)     f32
//   @binding(6) sizes
// attention_backward_dkv (after attention_backward_dq, which writes delta)
//   @binding(0) dqkv:  (B, T, 3C)     f32, += into the k and v parts only
//   @binding(1) dout:  (B, T, C)      f32
//   @binding(2) qkv:   (B, T, 3C)     f32
//   @binding(3) lse:   (B, NH, T)     f32
//   @binding(4) delta: (B, NH, T)     f32
//   @binding(5) sizes
//
// Grid: x = blocks of WG rows, y = head, z = batch. Every invocation of a workgroup walks the
// same rows of the other side (a workgroup-uniform loop, masked per row): llvmpipe runs the
// lanes in lockstep anyway, and uniform addresses load as broadcasts.

struct Sizes {
  B: u32,
  T: u32,
  past: u32,
  Tmax: u32,
  C: u32,
  NH: u32,
  hd: u32,
  scale: f32,
}

override WG: u32 = 32;
// Keys scored per online-softmax step: the running sum and output are rescaled once a block.
override KB: u32 = 16;
// Largest head size: per-row vectors live in private arrays, which need a constant length.
const HD_MAX: u32 = 128u;
const KB_MAX: u32 = 64u;
// A finite stand-in for -inf, so that exp(NEG - m) is a clean 0 and never NaN.
const NEG: f32 = -3.0e38;

// ---------------------------------------------------------------------------------------------
// Forward

@group(0) @binding(0) var<storage, read_write> fwd_out: array<f32>;
@group(0) @binding(1) var<storage, read_write> fwd_lse: array<f32>;
@group(0) @binding(2) var<storage, read> fwd_qkv: array<f32>;
@group(0) @binding(3) var<uniform> fwd_sizes: Sizes;

@compute @workgroup_size(WG)
fn attention_forward(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3u,
) {
  let s = fwd_sizes;
  let h = wid.y;
  let b = wid.z;
  let C3 = 3u * s.C;
  let first = wid.x * WG;
  // Rows past T compute a copy of the last row, so the loops stay uniform, and store nothing.
  let r = min(first + lid, s.T - 1u);
  let t = s.past + r;
  let batch = b * s.Tmax * C3;
  let qo = batch + t * C3 + h * s.hd;
  let ko = batch + s.C + h * s.hd;
  let vo = ko + s.C;

  var q: array<f32, HD_MAX>;
  var acc: array<f32, HD_MAX>;
  for (var d = 0u; d < s.hd; d++) {
    q[d] = fwd_qkv[qo + d] * s.scale;
    acc[d] = 0.0;
  }
  var m = NEG;
  var l = 0.0;
  var p: array<f32, KB_MAX>;
  // Keys 0 ..= the workgroup's last query row.
  let end = s.past + min(first + WG, s.T);
  for (var j0 = 0u; j0 < end; j0 += KB) {
    let n = min(KB, end - j0);
    var mb = m;
    for (var k = 0u; k < n; k++) {
      let row = ko + (j0 + k) * C3;
      var dot = 0.0;
      for (var d = 0u; d < s.hd; d++) {
        dot += q[d] * fwd_qkv[row + d];
      }
      let valid = j0 + k <= t;
      p[k] = select(NEG, dot, valid);
      mb = max(mb, p[k]);
    }
    let rescale = exp(m - mb);
    m = mb;
    l *= rescale;
    for (var d = 0u; d < s.hd; d++) {
      acc[d] *= rescale;
    }
    for (var k = 0u; k < n; k++) {
      let e = exp(p[k] - m);
      l += e;
      let row = vo + (j0 + k) * C3;
      for (var d = 0u; d < s.hd; d++) {
        acc[d] += e * fwd_qkv[row + d];
      }
    }
  }
  if (first + lid < s.T) {
    let o = (b * s.T + r) * s.C + h * s.hd;
    let inv = 1.0 / l;
    for (var d = 0u; d < s.hd; d++) {
      fwd_out[o + d] = acc[d] * inv;
    }
    fwd_lse[(b * s.NH + h) * s.T + r] = m + log(l);
  }
}

// ---------------------------------------------------------------------------------------------
// Backward, pass 1: dq (one invocation per query row), and delta for pass 2.

@group(0) @binding(0) var<storage, read_write> dq_dqkv: array<f32>;
@group(0) @binding(1) var<storage, read_write> dq_delta: array<f32>;
@group(0) @binding(2) var<storage, read> dq_dout: array<f32>;
@group(0) @binding(3) var<storage, read> dq_qkv: array<f32>;
@group(0) @binding(4) var<storage, read> dq_out: array<f32>;
@group(0) @binding(5) var<storage, read> dq_lse: array<f32>;
@group(0) @binding(6) var<uniform> dq_sizes: Sizes;

@compute @workgroup_size(WG)
fn attention_backward_dq(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3u,
) {
  let s = dq_sizes;
  let h = wid.y;
  let b = wid.z;
  let C3 = 3u * s.C;
  let first = wid.x * WG;
  let i = min(first + lid, s.T - 1u);
  let qo = (b * s.T + i) * C3 + h * s.hd;
  let ko = b * s.T * C3 + s.C + h * s.hd;
  let vo = ko + s.C;
  let oo = (b * s.T + i) * s.C + h * s.hd;
  let stat = (b * s.NH + h) * s.T + i;

  var q: array<f32, HD_MAX>;
  var g: array<f32, HD_MAX>;
  var dq: array<f32, HD_MAX>;
  var delta = 0.0;
  for (var d = 0u; d < s.hd; d++) {
    q[d] = dq_qkv[qo + d] * s.scale;
    g[d] = dq_dout[oo + d];
    delta += g[d] * dq_out[oo + d];
    dq[d] = 0.0;
  }
  let lse = dq_lse[stat];
  let end = min(first + WG, s.T);
  for (var j = 0u; j < end; j++) {
    let krow = ko + j * C3;
    let vrow = vo + j * C3;
    var score = 0.0;
    var dp = 0.0;
    for (var d = 0u; d < s.hd; d++) {
      score += q[d] * dq_qkv[krow + d];
      dp += g[d] * dq_qkv[vrow + d];
    }
    let p = select(0.0, exp(score - lse), j <= i);
    let ds = p * (dp - delta);
    for (var d = 0u; d < s.hd; d++) {
      dq[d] += ds * dq_qkv[krow + d];
    }
  }
  if (first + lid < s.T) {
    for (var d = 0u; d < s.hd; d++) {
      dq_dqkv[qo + d] += dq[d] * s.scale;
    }
    dq_delta[stat] = delta;
  }
}

// ---------------------------------------------------------------------------------------------
// Backward, pass 2: dk and dv (one invocation per key row, over the query rows that see it).

@group(0) @binding(0) var<storage, read_write> kv_dqkv: array<f32>;
@group(0) @binding(1) var<storage, read> kv_dout: array<f32>;
@group(0) @binding(2) var<storage, read> kv_qkv: array<f32>;
@group(0) @binding(3) var<storage, read> kv_lse: array<f32>;
@group(0) @binding(4) var<storage, read> kv_delta: array<f32>;
@group(0) @binding(5) var<uniform> kv_sizes: Sizes;

@compute @workgroup_size(WG)
fn attention_backward_dkv(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3u,
) {
  let s = kv_sizes;
  let h = wid.y;
  let b = wid.z;
  let C3 = 3u * s.C;
  let first = wid.x * WG;
  let j = min(first + lid, s.T - 1u);
  let ko = (b * s.T + j) * C3 + s.C + h * s.hd;
  let vo = ko + s.C;
  let qo = b * s.T * C3 + h * s.hd;
  let go = b * s.T * s.C + h * s.hd;
  let stat = (b * s.NH + h) * s.T;

  var k: array<f32, HD_MAX>;
  var v: array<f32, HD_MAX>;
  var dk: array<f32, HD_MAX>;
  var dv: array<f32, HD_MAX>;
  for (var d = 0u; d < s.hd; d++) {
    k[d] = kv_qkv[ko + d] * s.scale;
    v[d] = kv_qkv[vo + d];
    dk[d] = 0.0;
    dv[d] = 0.0;
  }
  // Query rows from the workgroup's first key row on; earlier ones see none of its keys.
  for (var i = first; i < s.T; i++) {
    let qrow = qo + i * C3;
    let grow = go + i * s.C;
    var score = 0.0;
    var dp = 0.0;
    for (var d = 0u; d < s.hd; d++) {
      score += kv_qkv[qrow + d] * k[d];
      dp += kv_dout[grow + d] * v[d];
    }
    let p = select(0.0, exp(score - kv_lse[stat + i]), j <= i);
    let ds = p * (dp - kv_delta[stat + i]);
    for (var d = 0u; d < s.hd; d++) {
      dv[d] += p * kv_dout[grow + d];
      dk[d] += ds * kv_qkv[qrow + d];
    }
  }
  if (first + lid < s.T) {
    for (var d = 0u; d < s.hd; d++) {
      kv_dqkv[ko + d] += dk[d] * s.scale;
      kv_dqkv[vo + d] += dv[d];
    }
  }
}
