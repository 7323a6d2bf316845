// Self-attention over every token (no causal mask), as vision transformers and encoders use it:
// out = softmax(q k^T / sqrt(hd)) v per head, forward and backward, flash-attention style (no
// [T, T] score matrix is stored). Each invocation owns one query row (forward, dq) or one key row
// (dk/dv) of one (batch, head) and walks every row of the other side once, with an online
// softmax in the forward. The host bounds T so that one walk stays under llvmpipe's 65535 loop
// iterations an invocation (LP_MAX_TGSI_LOOP_ITERATIONS).
//
// NH heads of hd channels; scale = 1 / sqrt(hd). Every matrix operand is a view into its
// binding, (first, ld): row n starts at element first + n * ld and head h owns its elements
// [h * hd, (h + 1) * hd). Row t of batch element b is view row b * T + t. A fused [T, 3C] qkv
// projection is q = (0, 3C), k = (C, 3C), v = (2C, 3C) of one buffer. lse and delta are dense
// (B, NH, T) from element sizes.stat of their bindings.
//
// attention_full_forward:
//   @binding(0) out: view (B * T rows of NH * hd) f32, written
//   @binding(1) lse: (B, NH, T) f32, written: log-sum-exp of each query row's scaled scores
//   @binding(2) q, @binding(3) k, @binding(4) v: views (B * T rows of NH * hd)
//   @binding(5) sizes
// attention_full_backward_dq: one invocation per query row; writes delta for dk/dv.
//   @binding(0) dq:    view, += into
//   @binding(1) delta: (B, NH, T) f32, written: sum of dout * out over the head's channels
//   @binding(2) dout:  view like out
//   @binding(3) q, @binding(4) k, @binding(5) v: the forward's views
//   @binding(6) out:   the forward's output view
//   @binding(7) lse:   the forward's lse
//   @binding(8) sizes
// attention_full_backward_dkv (after dq): one invocation per key row.
//   @binding(0) dk: view, += into
//   @binding(1) dv: view, += into (may share dk's buffer: other elements)
//   @binding(2) dout, @binding(3) q, @binding(4) k, @binding(5) v
//   @binding(6) lse, @binding(7) delta
//   @binding(8) sizes
//
// Grid: x = blocks of WG rows, y = head, z = batch. Rows past T compute a copy of row T - 1 so
// the loops stay uniform, and store nothing. Head vectors are handled four channels at a time,
// zero past hd.

struct Sizes {
  T: u32,
  NH: u32,
  hd: u32,
  scale: f32,
  stat: u32,
  q: vec2u,
  k: vec2u,
  v: vec2u,
  o: vec2u,
  g: vec2u,
  dq: vec2u,
  dk: vec2u,
  dv: vec2u,
}

override WG: u32 = 16;
// Largest head size / 4: head vectors live in private arrays, which need a constant length.
const HD4_MAX: u32 = 32u;
// A finite stand-in for -inf, so that exp(NEG - m) is a clean 0 and never NaN.
const NEG: f32 = -3.0e38;

fn lanes(c: u32, hd: u32) -> vec4<bool> {
  return vec4u(4u * c) + vec4u(0u, 1u, 2u, 3u) < vec4u(hd);
}

// Element of head h's channel 0 in row `row` of view `at` (first, ld).
fn head_at(at: vec2u, row: u32, h: u32, hd: u32) -> u32 {
  return at.x + row * at.y + h * hd;
}

// ---------------------------------------------------------------------------------------------
// Forward

@group(0) @binding(0) var<storage, read_write> fwd_out: array<f32>;
@group(0) @binding(1) var<storage, read_write> fwd_lse: array<f32>;
@group(0) @binding(2) var<storage, read> fwd_q: array<f32>;
@group(0) @binding(3) var<storage, read> fwd_k: array<f32>;
@group(0) @binding(4) var<storage, read> fwd_v: array<f32>;
@group(0) @binding(5) var<uniform> fwd_sizes: Sizes;

fn fwd_q4(i: u32, keep: vec4<bool>) -> vec4f {
  return select(vec4f(0.0), vec4f(fwd_q[i], fwd_q[i + 1u], fwd_q[i + 2u], fwd_q[i + 3u]), keep);
}

fn fwd_k4(i: u32, keep: vec4<bool>) -> vec4f {
  return select(vec4f(0.0), vec4f(fwd_k[i], fwd_k[i + 1u], fwd_k[i + 2u], fwd_k[i + 3u]), keep);
}

fn fwd_v4(i: u32, keep: vec4<bool>) -> vec4f {
  return select(vec4f(0.0), vec4f(fwd_v[i], fwd_v[i + 1u], fwd_v[i + 2u], fwd_v[i + 3u]), keep);
}

@compute @workgroup_size(WG)
fn attention_full_forward(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3u,
) {
  let s = fwd_sizes;
  let h = wid.y;
  let b = wid.z;
  let h4 = (s.hd + 3u) / 4u;
  let i = min(wid.x * WG + lid, s.T - 1u);
  let qo = head_at(s.q, b * s.T + i, h, s.hd);

  var q: array<vec4f, HD4_MAX>;
  var acc: array<vec4f, HD4_MAX>;
  for (var c = 0u; c < h4; c++) {
    q[c] = fwd_q4(qo + 4u * c, lanes(c, s.hd)) * s.scale;
    acc[c] = vec4f(0.0);
  }
  var m = NEG;
  var l = 0.0;
  for (var j = 0u; j < s.T; j++) {
    let ko = head_at(s.k, b * s.T + j, h, s.hd);
    var score = 0.0;
    for (var c = 0u; c < h4; c++) {
      score += dot(q[c], fwd_k4(ko + 4u * c, lanes(c, s.hd)));
    }
    let mj = max(m, score);
    let rescale = exp(m - mj);
    let e = exp(score - mj);
    m = mj;
    l = l * rescale + e;
    let vo = head_at(s.v, b * s.T + j, h, s.hd);
    for (var c = 0u; c < h4; c++) {
      acc[c] = acc[c] * rescale + e * fwd_v4(vo + 4u * c, lanes(c, s.hd));
    }
  }
  if (wid.x * WG + lid < s.T) {
    let oo = head_at(s.o, b * s.T + i, h, s.hd);
    let inv = 1.0 / l;
    for (var c = 0u; c < h4; c++) {
      let o = acc[c] * inv;
      for (var e = 0u; e < min(4u, s.hd - 4u * c); e++) {
        fwd_out[oo + 4u * c + e] = o[e];
      }
    }
    fwd_lse[s.stat + (b * s.NH + h) * s.T + i] = m + log(l);
  }
}

// ---------------------------------------------------------------------------------------------
// Backward, dq: one invocation per query row; delta for dk/dv.

@group(0) @binding(0) var<storage, read_write> dq_dq: array<f32>;
@group(0) @binding(1) var<storage, read_write> dq_delta: array<f32>;
@group(0) @binding(2) var<storage, read> dq_dout: array<f32>;
@group(0) @binding(3) var<storage, read> dq_q: array<f32>;
@group(0) @binding(4) var<storage, read> dq_k: array<f32>;
@group(0) @binding(5) var<storage, read> dq_v: array<f32>;
@group(0) @binding(6) var<storage, read> dq_out: array<f32>;
@group(0) @binding(7) var<storage, read> dq_lse: array<f32>;
@group(0) @binding(8) var<uniform> dq_sizes: Sizes;

fn dq_q4(i: u32, keep: vec4<bool>) -> vec4f {
  return select(vec4f(0.0), vec4f(dq_q[i], dq_q[i + 1u], dq_q[i + 2u], dq_q[i + 3u]), keep);
}

fn dq_k4(i: u32, keep: vec4<bool>) -> vec4f {
  return select(vec4f(0.0), vec4f(dq_k[i], dq_k[i + 1u], dq_k[i + 2u], dq_k[i + 3u]), keep);
}

fn dq_v4(i: u32, keep: vec4<bool>) -> vec4f {
  return select(vec4f(0.0), vec4f(dq_v[i], dq_v[i + 1u], dq_v[i + 2u], dq_v[i + 3u]), keep);
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
fn attention_full_backward_dq(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3u,
) {
  let s = dq_sizes;
  let h = wid.y;
  let b = wid.z;
  let h4 = (s.hd + 3u) / 4u;
  let i = min(wid.x * WG + lid, s.T - 1u);
  let qo = head_at(s.q, b * s.T + i, h, s.hd);
  let go = head_at(s.g, b * s.T + i, h, s.hd);
  let oo = head_at(s.o, b * s.T + i, h, s.hd);
  let stat = (b * s.NH + h) * s.T + i;

  var q: array<vec4f, HD4_MAX>;
  var g: array<vec4f, HD4_MAX>;
  var dq: array<vec4f, HD4_MAX>;
  var delta = 0.0;
  for (var c = 0u; c < h4; c++) {
    let keep = lanes(c, s.hd);
    q[c] = dq_q4(qo + 4u * c, keep) * s.scale;
    g[c] = dq_dout4(go + 4u * c, keep);
    delta += dot(g[c], dq_out4(oo + 4u * c, keep));
    dq[c] = vec4f(0.0);
  }
  let lse = dq_lse[s.stat + stat];
  for (var j = 0u; j < s.T; j++) {
    let krow = head_at(s.k, b * s.T + j, h, s.hd);
    let vrow = head_at(s.v, b * s.T + j, h, s.hd);
    var score = 0.0;
    var dp = 0.0;
    for (var c = 0u; c < h4; c++) {
      let keep = lanes(c, s.hd);
      score += dot(q[c], dq_k4(krow + 4u * c, keep));
      dp += dot(g[c], dq_v4(vrow + 4u * c, keep));
    }
    let ds = exp(score - lse) * (dp - delta);
    for (var c = 0u; c < h4; c++) {
      dq[c] += ds * dq_k4(krow + 4u * c, lanes(c, s.hd));
    }
  }
  if (wid.x * WG + lid < s.T) {
    let at = head_at(s.dq, b * s.T + i, h, s.hd);
    for (var c = 0u; c < h4; c++) {
      let d = dq[c] * s.scale;
      for (var e = 0u; e < min(4u, s.hd - 4u * c); e++) {
        dq_dq[at + 4u * c + e] += d[e];
      }
    }
    dq_delta[stat] = delta;
  }
}

// ---------------------------------------------------------------------------------------------
// Backward, dk and dv: one invocation per key row, over every query row.

@group(0) @binding(0) var<storage, read_write> kv_dk: array<f32>;
@group(0) @binding(1) var<storage, read_write> kv_dv: array<f32>;
@group(0) @binding(2) var<storage, read> kv_dout: array<f32>;
@group(0) @binding(3) var<storage, read> kv_q: array<f32>;
@group(0) @binding(4) var<storage, read> kv_k: array<f32>;
@group(0) @binding(5) var<storage, read> kv_v: array<f32>;
@group(0) @binding(6) var<storage, read> kv_lse: array<f32>;
@group(0) @binding(7) var<storage, read> kv_delta: array<f32>;
@group(0) @binding(8) var<uniform> kv_sizes: Sizes;

fn kv_q4(i: u32, keep: vec4<bool>) -> vec4f {
  return select(vec4f(0.0), vec4f(kv_q[i], kv_q[i + 1u], kv_q[i + 2u], kv_q[i + 3u]), keep);
}

fn kv_k4(i: u32, keep: vec4<bool>) -> vec4f {
  return select(vec4f(0.0), vec4f(kv_k[i], kv_k[i + 1u], kv_k[i + 2u], kv_k[i + 3u]), keep);
}

fn kv_v4(i: u32, keep: vec4<bool>) -> vec4f {
  return select(vec4f(0.0), vec4f(kv_v[i], kv_v[i + 1u], kv_v[i + 2u], kv_v[i + 3u]), keep);
}

fn kv_dout4(i: u32, keep: vec4<bool>) -> vec4f {
  let x = vec4f(kv_dout[i], kv_dout[i + 1u], kv_dout[i + 2u], kv_dout[i + 3u]);
  return select(vec4f(0.0), x, keep);
}

@compute @workgroup_size(WG)
fn attention_full_backward_dkv(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3u,
) {
  let s = kv_sizes;
  let h = wid.y;
  let b = wid.z;
  let h4 = (s.hd + 3u) / 4u;
  let j = min(wid.x * WG + lid, s.T - 1u);
  let ko = head_at(s.k, b * s.T + j, h, s.hd);
  let vo = head_at(s.v, b * s.T + j, h, s.hd);
  let stat = s.stat + (b * s.NH + h) * s.T;

  var k: array<vec4f, HD4_MAX>;
  var v: array<vec4f, HD4_MAX>;
  var dk: array<vec4f, HD4_MAX>;
  var dv: array<vec4f, HD4_MAX>;
  for (var c = 0u; c < h4; c++) {
    let keep = lanes(c, s.hd);
    k[c] = kv_k4(ko + 4u * c, keep) * s.scale;
    v[c] = kv_v4(vo + 4u * c, keep);
    dk[c] = vec4f(0.0);
    dv[c] = vec4f(0.0);
  }
  for (var i = 0u; i < s.T; i++) {
    let qrow = head_at(s.q, b * s.T + i, h, s.hd);
    let grow = head_at(s.g, b * s.T + i, h, s.hd);
    var score = 0.0;
    var dp = 0.0;
    for (var c = 0u; c < h4; c++) {
      let keep = lanes(c, s.hd);
      score += dot(kv_q4(qrow + 4u * c, keep), k[c]);
      dp += dot(kv_dout4(grow + 4u * c, keep), v[c]);
    }
    let p = exp(score - kv_lse[stat + i]);
    let ds = p * (dp - kv_delta[(b * s.NH + h) * s.T + i]);
    for (var c = 0u; c < h4; c++) {
      let keep = lanes(c, s.hd);
      dv[c] += p * kv_dout4(grow + 4u * c, keep);
      dk[c] += ds * kv_q4(qrow + 4u * c, keep);
    }
  }
  if (wid.x * WG + lid < s.T) {
    let dko = head_at(s.dk, b * s.T + j, h, s.hd);
    let dvo = head_at(s.dv, b * s.T + j, h, s.hd);
    for (var c = 0u; c < h4; c++) {
      let dkc = dk[c] * s.scale;
      for (var e = 0u; e < min(4u, s.hd - 4u * c); e++) {
        kv_dk[dko + 4u * c + e] += dkc[e];
        kv_dv[dvo + 4u * c + e] += dv[c][e];
      }
    }
  }
}
