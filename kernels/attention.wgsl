// Self-attention with grouped-query heads, causal (decoders) or over every token (CAUSAL = false:
// vision transformers, encoders), flash-attention style: no [T, T] score matrix is ever stored;
// each invocation owns one query row (forward, dq) or one key row (dk/dv) of one (batch, head)
// and streams over rows [lo, hi) of the other side with an online softmax. The `_vec4` entry
// points at the end do the same 4 rows an invocation, for hd % 4 == 0.
//
// Causal: query row t sees key rows 0 ..= t. Not causal: every query row sees every key row
// [0, past + T). Where this file says which rows see which, the CAUSAL case is described; the
// other drops the bound, and then every row of a pass is written.
//
// NH query heads, KVH key/value heads (NH % KVH == 0): query head h reads kv head
// h / (NH / KVH). scale = 1 / sqrt(hd). q, k and v are matrix views into their bindings: row n
// of a view (first, ld) starts at element first + n * ld, and head h owns its elements
// [h * hd, (h + 1) * hd). Row t of batch element b is view row b * Tq + t for q, b * Tmax + t for
// k and v. GPT-2's fused [T, 3C] c_attn output is q = (0, 3C), k = (C, 3C), v = (2C, 3C) of one
// buffer with KVH = NH. out and dout are dense (B, T, NH * hd); lse and delta (B, NH, T).
//
// attention_forward: one pass per key range [lo, hi), in order; a pass with lo > 0 resumes
// from the previous passes' out and lse (rows with no key in the range are left alone).
//   @binding(0) out:  (B, T, NH * hd)  f32, row r holds query row t = past + r
//   @binding(1) lse:  (B, NH, T)       f32, log-sum-exp of each query row's scaled scores
//   @binding(2) q:    view, (B, Tq) rows of NH * hd; rows [0, T) read
//   @binding(3) k:    view, (B, Tmax) rows of KVH * hd; rows [0, past) are the KV cache,
//   @binding(4) v:    likewise            rows >= past + T are never read
//   @binding(5) sizes
// attention_backward_dq (training: past = 0, Tq = Tmax = T): one pass per key range [lo, hi).
//   @binding(0) dq:    view like q         f32, += into
//   @binding(1) delta: (B, NH, T)         f32, written by the pass with lo = 0: sum of
//                                         dout * out over the head
//   @binding(2) dout:  (B, T, NH * hd)    f32
//   @binding(3) q, @binding(4) k, @binding(5) v: the forward's views
//   @binding(6) out:   (B, T, NH * hd)    f32
//   @binding(7) lse:   (B, NH, T)         f32
//   @binding(8) sizes
// attention_backward_dkv (after the dq passes): one invocation per key row of a kv head, summing
// over the query heads [g0, g1) of its group and the query rows [lo, hi), one pass per range.
//   @binding(0) dk:    view like k         f32, += into
//   @binding(1) dv:    view like v         f32, += into (may share dk's buffer: other elements)
//   @binding(2) dout:  (B, T, NH * hd)    f32
//   @binding(3) q, @binding(4) k, @binding(5) v: the forward's views
//   @binding(6) lse:   (B, NH, T)         f32
//   @binding(7) delta: (B, NH, T)         f32
//   @binding(8) sizes
//
// Grid: x = blocks of WG rows, y = head (query heads; kv heads for dk/dv), z = batch. Every
// invocation of a workgroup walks the same rows of the other side (a workgroup-uniform loop,
// masked per row): llvmpipe runs lanes in lockstep anyway. Head vectors are handled four
// channels at a time, zero past hd. The host bounds the streamed rows of a pass because llvmpipe
// ends every loop of an invocation once all of them together have run 65535 iterations
// (LP_MAX_TGSI_LOOP_ITERATIONS), silently.

struct Sizes {
  B: u32,
  T: u32,
  past: u32,
  Tmax: u32,
  Tq: u32,
  NH: u32,
  KVH: u32,
  hd: u32,
  scale: f32,
  lo: u32,
  hi: u32,
  g0: u32,
  g1: u32,
  q: vec2u,
  k: vec2u,
  v: vec2u,
  dq: vec2u,
  dk: vec2u,
  dv: vec2u,
}

override WG: u32 = 16;
// Keys scored per online-softmax step: the running sum and output are rescaled once a block.
override KB: u32 = 16;
// Whether query row t sees only key rows 0 ..= t (a pipeline constant: the masks fold away).
override CAUSAL: bool = true;
// Largest head size / 4: head vectors live in private arrays, which need a constant length.
const HD4_MAX: u32 = 32u;
const KB_MAX: u32 = 64u;
// A finite stand-in for -inf, so that exp(NEG - m) is a clean 0 and never NaN.
const NEG: f32 = -3.0e38;

// Lanes of channels [4c, 4c + 4) that lie inside the head.
fn lanes(c: u32, hd: u32) -> vec4<bool> {
  return vec4u(4u * c) + vec4u(0u, 1u, 2u, 3u) < vec4u(hd);
}

// Element of head `h`'s channel 0 in row `row` of view `at` (first, ld).
fn head_at(at: vec2u, row: u32, h: u32, hd: u32) -> u32 {
  return at.x + row * at.y + h * hd;
}

// Whether query row `t` sees key row `j`, one pair or four.
fn sees(j: u32, t: u32) -> bool {
  return !CAUSAL || j <= t;
}

fn sees4(j: vec4u, t: vec4u) -> vec4<bool> {
  return vec4(!CAUSAL) | (j <= t);
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
  let kvh = h / (s.NH / s.KVH);
  let b = wid.z;
  let h4 = (s.hd + 3u) / 4u;
  let first = wid.x * WG;
  // Rows past T compute a copy of the last row, so the loops stay uniform, and store nothing.
  let r = min(first + lid, s.T - 1u);
  let t = s.past + r;
  let qo = head_at(s.q, b * s.Tq + r, h, s.hd);
  let ko = head_at(s.k, b * s.Tmax, kvh, s.hd);
  let vo = head_at(s.v, b * s.Tmax, kvh, s.hd);
  let oo = ((b * s.T + r) * s.NH + h) * s.hd;
  let stat = (b * s.NH + h) * s.T + r;

  var q: array<vec4f, HD4_MAX>;
  var acc: array<vec4f, HD4_MAX>;
  var m = NEG;
  var l = 0.0;
  for (var c = 0u; c < h4; c++) {
    let keep = lanes(c, s.hd);
    q[c] = fwd_q4(qo + 4u * c, keep) * s.scale;
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
  let end = min(s.hi, s.past + select(s.T, min(first + WG, s.T), CAUSAL));
  for (var j0 = s.lo; j0 < end; j0 += KB) {
    let n = min(KB, end - j0);
    var mb = m;
    for (var k = 0u; k < n; k++) {
      let row = ko + (j0 + k) * s.k.y;
      var score = 0.0;
      for (var c = 0u; c < h4; c++) {
        score += dot(q[c], fwd_k4(row + 4u * c, lanes(c, s.hd)));
      }
      p[k] = select(NEG, score, sees(j0 + k, t));
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
      let row = vo + (j0 + k) * s.v.y;
      for (var c = 0u; c < h4; c++) {
        acc[c] += e * fwd_v4(row + 4u * c, lanes(c, s.hd));
      }
    }
  }
  if (first + lid < s.T && (!CAUSAL || t >= s.lo)) {
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
fn attention_backward_dq(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3u,
) {
  let s = dq_sizes;
  let h = wid.y;
  let kvh = h / (s.NH / s.KVH);
  let b = wid.z;
  let h4 = (s.hd + 3u) / 4u;
  let first = wid.x * WG;
  let i = min(first + lid, s.T - 1u);
  let qo = head_at(s.q, b * s.T + i, h, s.hd);
  let ko = head_at(s.k, b * s.T, kvh, s.hd);
  let vo = head_at(s.v, b * s.T, kvh, s.hd);
  let oo = ((b * s.T + i) * s.NH + h) * s.hd;
  let stat = (b * s.NH + h) * s.T + i;

  var q: array<vec4f, HD4_MAX>;
  var g: array<vec4f, HD4_MAX>;
  var dq: array<vec4f, HD4_MAX>;
  var delta = 0.0;
  for (var c = 0u; c < h4; c++) {
    let keep = lanes(c, s.hd);
    q[c] = dq_q4(qo + 4u * c, keep) * s.scale;
    g[c] = dq_dout4(oo + 4u * c, keep);
    delta += dot(g[c], dq_out4(oo + 4u * c, keep));
    dq[c] = vec4f(0.0);
  }
  let lse = dq_lse[stat];
  let end = min(s.hi, select(s.T, min(first + WG, s.T), CAUSAL));
  for (var j = s.lo; j < end; j++) {
    let krow = ko + j * s.k.y;
    let vrow = vo + j * s.v.y;
    var score = 0.0;
    var dp = 0.0;
    for (var c = 0u; c < h4; c++) {
      let keep = lanes(c, s.hd);
      score += dot(q[c], dq_k4(krow + 4u * c, keep));
      dp += dot(g[c], dq_v4(vrow + 4u * c, keep));
    }
    let p = select(0.0, exp(score - lse), sees(j, i));
    let ds = p * (dp - delta);
    for (var c = 0u; c < h4; c++) {
      dq[c] += ds * dq_k4(krow + 4u * c, lanes(c, s.hd));
    }
  }
  if (first + lid < s.T) {
    if (!CAUSAL || i >= s.lo) {
      let at = head_at(s.dq, b * s.T + i, h, s.hd);
      for (var c = 0u; c < h4; c++) {
        let d = dq[c] * s.scale;
        for (var e = 0u; e < min(4u, s.hd - 4u * c); e++) {
          dq_dq[at + 4u * c + e] += d[e];
        }
      }
    }
    if (s.lo == 0u) {
      dq_delta[stat] = delta;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Backward, dk/dv passes: one invocation per key row of a kv head, over the query heads
// [g0, g1) of its group and, for each, the query rows in [lo, hi) that see the key.

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
fn attention_backward_dkv(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3u,
) {
  let s = kv_sizes;
  let kvh = wid.y;
  let group = s.NH / s.KVH;
  let b = wid.z;
  let h4 = (s.hd + 3u) / 4u;
  let first = wid.x * WG;
  let j = min(first + lid, s.T - 1u);
  let ko = head_at(s.k, b * s.T + j, kvh, s.hd);
  let vo = head_at(s.v, b * s.T + j, kvh, s.hd);

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
  for (var gh = s.g0; gh < s.g1; gh++) {
    let h = kvh * group + gh;
    let qo = head_at(s.q, b * s.T, h, s.hd);
    let go = (b * s.T * s.NH + h) * s.hd;
    let gw = s.NH * s.hd;
    let stat = (b * s.NH + h) * s.T;
    // Query rows before the workgroup's first key row see none of its keys.
    for (var i = select(s.lo, max(s.lo, first), CAUSAL); i < s.hi; i++) {
      let qrow = qo + i * s.q.y;
      let grow = go + i * gw;
      var score = 0.0;
      var dp = 0.0;
      for (var c = 0u; c < h4; c++) {
        let keep = lanes(c, s.hd);
        score += dot(kv_q4(qrow + 4u * c, keep), k[c]);
        dp += dot(kv_dout4(grow + 4u * c, keep), v[c]);
      }
      let p = select(0.0, exp(score - kv_lse[stat + i]), sees(j, i));
      let ds = p * (dp - kv_delta[stat + i]);
      for (var c = 0u; c < h4; c++) {
        let keep = lanes(c, s.hd);
        dv[c] += p * kv_dout4(grow + 4u * c, keep);
        dk[c] += ds * kv_q4(qrow + 4u * c, keep);
      }
    }
  }
  if (first + lid < s.T && (!CAUSAL || j < s.hi)) {
    let dko = head_at(s.dk, b * s.T + j, kvh, s.hd);
    let dvo = head_at(s.dv, b * s.T + j, kvh, s.hd);
    for (var c = 0u; c < h4; c++) {
      let dkc = dk[c] * s.scale;
      for (var e = 0u; e < min(4u, s.hd - 4u * c); e++) {
        kv_dk[dko + 4u * c + e] += dkc[e];
        kv_dv[dvo + 4u * c + e] += dv[c][e];
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// vec4 variants, for hd % 4 == 0 (every real model) and views whose first elements and row
// strides are multiples of 4: q, k, v, out, dout and the gradients are read as vec4s (one lane
// loop on llvmpipe per four floats instead of per float), an invocation owns 4 consecutive rows,
// and the other side streams 4 rows a step. The 4 x 4 score tile of a step is built from
// mat4x4s of four rows' channel vec4s, so every loaded vec4 feeds four rows, and the loops over
// channels are uniform in trip count (h4) so that the tiles stay in registers. Same bindings,
// passes and results as the scalar kernels above; offsets in vec4 units below (h4 = hd / 4).
// Rows past T compute copies of row T - 1 and store nothing.

const STEP: vec4u = vec4u(0u, 1u, 2u, 3u);

// Head h's channel 0 in four rows of view `at`, in vec4 units.
fn heads_at(at: vec2u, rows: vec4u, h: u32, h4: u32) -> vec4u {
  let a = at / 4u;
  return vec4u(a.x + h * h4) + rows * a.y;
}

@group(0) @binding(0) var<storage, read_write> v4_out: array<vec4f>;
@group(0) @binding(2) var<storage, read> v4_q: array<vec4f>;
@group(0) @binding(3) var<storage, read> v4_k: array<vec4f>;
@group(0) @binding(4) var<storage, read> v4_v: array<vec4f>;

// Four rows' channel vec4 c, as the columns of a matrix: `x * m` dots x with every row.
fn fwd_q_rows(at: vec4u, c: u32) -> mat4x4f {
  return mat4x4f(v4_q[at.x + c], v4_q[at.y + c], v4_q[at.z + c], v4_q[at.w + c]);
}

fn fwd_v_rows(at: vec4u, c: u32) -> mat4x4f {
  return mat4x4f(v4_v[at.x + c], v4_v[at.y + c], v4_v[at.z + c], v4_v[at.w + c]);
}

@compute @workgroup_size(WG)
fn attention_forward_vec4(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3u,
) {
  let s = fwd_sizes;
  let h = wid.y;
  let kvh = h / (s.NH / s.KVH);
  let b = wid.z;
  let h4 = s.hd / 4u;
  let C4 = s.NH * h4;
  let first = (wid.x * WG + lid) * 4u;
  let r = min(vec4u(first) + STEP, vec4u(s.T - 1u));
  let t = vec4u(s.past) + r;
  let qo = heads_at(s.q, vec4u(b * s.Tq) + r, h, h4);
  let ko = heads_at(s.k, vec4u(b * s.Tmax), kvh, h4).x;
  let vo = heads_at(s.v, vec4u(b * s.Tmax), kvh, h4).x;
  let kld = s.k.y / 4u;
  let vld = s.v.y / 4u;
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
  let end = min(s.hi, select(s.past + s.T, t.w + 1u, CAUSAL));
  for (var j0 = s.lo; j0 < end; j0 += 4u) {
    let j = vec4u(j0) + STEP;
    let kr = min(j, vec4u(end - 1u));
    let k = vec4u(ko) + kr * kld;
    var s0 = vec4f(0.0);
    var s1 = vec4f(0.0);
    var s2 = vec4f(0.0);
    var s3 = vec4f(0.0);
    for (var c = 0u; c < h4; c++) {
      let q = fwd_q_rows(qo, c);
      s0 += v4_k[k.x + c] * q;
      s1 += v4_k[k.y + c] * q;
      s2 += v4_k[k.z + c] * q;
      s3 += v4_k[k.w + c] * q;
    }
    // s_k[i]: key j0 + k against query row i.
    let hit = j < vec4u(s.hi);
    s0 = select(vec4f(NEG), s0 * s.scale, sees4(vec4u(j.x), t) & vec4(hit.x));
    s1 = select(vec4f(NEG), s1 * s.scale, sees4(vec4u(j.y), t) & vec4(hit.y));
    s2 = select(vec4f(NEG), s2 * s.scale, sees4(vec4u(j.z), t) & vec4(hit.z));
    s3 = select(vec4f(NEG), s3 * s.scale, sees4(vec4u(j.w), t) & vec4(hit.w));
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
    let v = vec4u(vo) + kr * vld;
    for (var c = 0u; c < h4; c++) {
      let vm = fwd_v_rows(v, c);
      a0[c] = a0[c] * rescale.x + vm * pt[0];
      a1[c] = a1[c] * rescale.y + vm * pt[1];
      a2[c] = a2[c] * rescale.z + vm * pt[2];
      a3[c] = a3[c] * rescale.w + vm * pt[3];
    }
  }
  let inv = 1.0 / l;
  let keep = (vec4u(first) + STEP < vec4u(s.T)) & (vec4(!CAUSAL) | (t >= vec4u(s.lo)));
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

@group(0) @binding(0) var<storage, read_write> dq4_dq: array<vec4f>;
@group(0) @binding(2) var<storage, read> dq4_dout: array<vec4f>;
@group(0) @binding(3) var<storage, read> dq4_q: array<vec4f>;
@group(0) @binding(4) var<storage, read> dq4_k: array<vec4f>;
@group(0) @binding(5) var<storage, read> dq4_v: array<vec4f>;
@group(0) @binding(6) var<storage, read> dq4_out: array<vec4f>;

fn dq_q_rows(at: vec4u, c: u32) -> mat4x4f {
  return mat4x4f(dq4_q[at.x + c], dq4_q[at.y + c], dq4_q[at.z + c], dq4_q[at.w + c]);
}

fn dq_k_rows(at: vec4u, c: u32) -> mat4x4f {
  return mat4x4f(dq4_k[at.x + c], dq4_k[at.y + c], dq4_k[at.z + c], dq4_k[at.w + c]);
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
  let kvh = h / (s.NH / s.KVH);
  let b = wid.z;
  let h4 = s.hd / 4u;
  let C4 = s.NH * h4;
  let first = (wid.x * WG + lid) * 4u;
  let i = min(vec4u(first) + STEP, vec4u(s.T - 1u));
  let qo = heads_at(s.q, vec4u(b * s.T) + i, h, h4);
  let ko = heads_at(s.k, vec4u(b * s.T), kvh, h4).x;
  let vo = heads_at(s.v, vec4u(b * s.T), kvh, h4).x;
  let kld = s.k.y / 4u;
  let vld = s.v.y / 4u;
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
  let end = min(s.hi, select(s.T, i.w + 1u, CAUSAL));
  for (var j0 = s.lo; j0 < end; j0 += 4u) {
    let j = vec4u(j0) + STEP;
    let kr = min(j, vec4u(end - 1u));
    let k = vec4u(ko) + kr * kld;
    let v = vec4u(vo) + kr * vld;
    var s0 = vec4f(0.0);
    var s1 = vec4f(0.0);
    var s2 = vec4f(0.0);
    var s3 = vec4f(0.0);
    var e0 = vec4f(0.0);
    var e1 = vec4f(0.0);
    var e2 = vec4f(0.0);
    var e3 = vec4f(0.0);
    for (var c = 0u; c < h4; c++) {
      let q = dq_q_rows(qo, c);
      let g = dq_grad_rows(go, c);
      s0 += dq4_k[k.x + c] * q;
      s1 += dq4_k[k.y + c] * q;
      s2 += dq4_k[k.z + c] * q;
      s3 += dq4_k[k.w + c] * q;
      e0 += dq4_v[v.x + c] * g;
      e1 += dq4_v[v.y + c] * g;
      e2 += dq4_v[v.z + c] * g;
      e3 += dq4_v[v.w + c] * g;
    }
    // x_k[n]: key j0 + k against query row n; ds = p (dp - delta).
    let hit = j < vec4u(s.hi);
    let p0 = select(vec4f(0.0), exp(s0 * s.scale - lse), sees4(vec4u(j.x), i) & vec4(hit.x));
    let p1 = select(vec4f(0.0), exp(s1 * s.scale - lse), sees4(vec4u(j.y), i) & vec4(hit.y));
    let p2 = select(vec4f(0.0), exp(s2 * s.scale - lse), sees4(vec4u(j.z), i) & vec4(hit.z));
    let p3 = select(vec4f(0.0), exp(s3 * s.scale - lse), sees4(vec4u(j.w), i) & vec4(hit.w));
    let ds0 = p0 * (e0 - delta);
    let ds1 = p1 * (e1 - delta);
    let ds2 = p2 * (e2 - delta);
    let ds3 = p3 * (e3 - delta);
    let ds = transpose(mat4x4f(ds0, ds1, ds2, ds3));
    for (var c = 0u; c < h4; c++) {
      let km = dq_k_rows(k, c);
      d0[c] += km * ds[0];
      d1[c] += km * ds[1];
      d2[c] += km * ds[2];
      d3[c] += km * ds[3];
    }
  }
  let keep = vec4u(first) + STEP < vec4u(s.T);
  let write = keep & (vec4(!CAUSAL) | (i >= vec4u(s.lo)));
  let at = heads_at(s.dq, vec4u(b * s.T) + i, h, h4);
  for (var c = 0u; c < h4; c++) {
    if (write.x) { dq4_dq[at.x + c] += d0[c] * s.scale; }
    if (write.y) { dq4_dq[at.y + c] += d1[c] * s.scale; }
    if (write.z) { dq4_dq[at.z + c] += d2[c] * s.scale; }
    if (write.w) { dq4_dq[at.w + c] += d3[c] * s.scale; }
  }
  if (s.lo == 0u) {
    if (keep.x) { dq_delta[stat.x] = delta.x; }
    if (keep.y) { dq_delta[stat.y] = delta.y; }
    if (keep.z) { dq_delta[stat.z] = delta.z; }
    if (keep.w) { dq_delta[stat.w] = delta.w; }
  }
}

@group(0) @binding(0) var<storage, read_write> kv4_dk: array<vec4f>;
@group(0) @binding(1) var<storage, read_write> kv4_dv: array<vec4f>;
@group(0) @binding(2) var<storage, read> kv4_dout: array<vec4f>;
@group(0) @binding(3) var<storage, read> kv4_q: array<vec4f>;
@group(0) @binding(4) var<storage, read> kv4_k: array<vec4f>;
@group(0) @binding(5) var<storage, read> kv4_v: array<vec4f>;

fn kv_q_rows(at: vec4u, c: u32) -> mat4x4f {
  return mat4x4f(kv4_q[at.x + c], kv4_q[at.y + c], kv4_q[at.z + c], kv4_q[at.w + c]);
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
  let kvh = wid.y;
  let group = s.NH / s.KVH;
  let b = wid.z;
  let h4 = s.hd / 4u;
  let C4 = s.NH * h4;
  let first = (wid.x * WG + lid) * 4u;
  let j = min(vec4u(first) + STEP, vec4u(s.T - 1u));
  let ko = heads_at(s.k, vec4u(b * s.T) + j, kvh, h4);
  let vo = heads_at(s.v, vec4u(b * s.T) + j, kvh, h4);
  let qld = s.q.y / 4u;

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
  // The query heads of this kv head's group, summed in order: one writer per gradient element.
  for (var gh = s.g0; gh < s.g1; gh++) {
    let h = kvh * group + gh;
    let qo = heads_at(s.q, vec4u(b * s.T), h, h4).x;
    let go = b * s.T * C4 + h * h4;
    let stat = (b * s.NH + h) * s.T;
    // Query rows before this invocation's first key row see none of its keys.
    for (var i0 = select(s.lo, max(s.lo, j.x), CAUSAL); i0 < s.hi; i0 += 4u) {
      let i = vec4u(i0) + STEP;
      let ir = min(i, vec4u(s.hi - 1u));
      let q = vec4u(qo) + ir * qld;
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
        let qm = kv_q_rows(q, c);
        let gm = kv_grad_rows(g, c);
        s0 += kv4_k[ko.x + c] * qm;
        s1 += kv4_k[ko.y + c] * qm;
        s2 += kv4_k[ko.z + c] * qm;
        s3 += kv4_k[ko.w + c] * qm;
        e0 += kv4_v[vo.x + c] * gm;
        e1 += kv4_v[vo.y + c] * gm;
        e2 += kv4_v[vo.z + c] * gm;
        e3 += kv4_v[vo.w + c] * gm;
      }
      // x_k[n]: this invocation's key row k against query row i0 + n.
      let at = vec4u(stat) + ir;
      let lse = vec4f(kv_lse[at.x], kv_lse[at.y], kv_lse[at.z], kv_lse[at.w]);
      let delta = vec4f(kv_delta[at.x], kv_delta[at.y], kv_delta[at.z], kv_delta[at.w]);
      let seen = i < vec4u(s.hi);
      let p0 = select(vec4f(0.0), exp(s0 * s.scale - lse), sees4(vec4u(j.x), i) & seen);
      let p1 = select(vec4f(0.0), exp(s1 * s.scale - lse), sees4(vec4u(j.y), i) & seen);
      let p2 = select(vec4f(0.0), exp(s2 * s.scale - lse), sees4(vec4u(j.z), i) & seen);
      let p3 = select(vec4f(0.0), exp(s3 * s.scale - lse), sees4(vec4u(j.w), i) & seen);
      let ds0 = p0 * (e0 - delta);
      let ds1 = p1 * (e1 - delta);
      let ds2 = p2 * (e2 - delta);
      let ds3 = p3 * (e3 - delta);
      for (var c = 0u; c < h4; c++) {
        let qm = kv_q_rows(q, c);
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
  }
  let keep = (vec4u(first) + STEP < vec4u(s.T)) & (vec4(!CAUSAL) | (j < vec4u(s.hi)));
  let dko = heads_at(s.dk, vec4u(b * s.T) + j, kvh, h4);
  let dvo = heads_at(s.dv, vec4u(b * s.T) + j, kvh, h4);
  for (var c = 0u; c < h4; c++) {
    if (keep.x) {
      kv4_dk[dko.x + c] += dk0[c] * s.scale;
      kv4_dv[dvo.x + c] += dv0[c];
    }
    if (keep.y) {
      kv4_dk[dko.y + c] += dk1[c] * s.scale;
      kv4_dv[dvo.y + c] += dv1[c];
    }
    if (keep.z) {
      kv4_dk[dko.z + c] += dk2[c] * s.scale;
      kv4_dv[dvo.z + c] += dv2[c];
    }
    if (keep.w) {
      kv4_dk[dko.w + c] += dk3[c] * s.scale;
      kv4_dv[dvo.w + c] += dv3[c];
    }
  }
}
