// Batched decoding: many sequences of different lengths, one new token each, in one dispatch.
// A batched cache keeps each sequence in its own slot of `capacity` rows of one tensor per
// layer; row b of a decode step reads and writes only its own slot, up to its own length.
//
// decode_attention (one invocation per (row b, query head h); keys streamed in passes lo..hi):
//   0 out [B, NH * hd] f32 (vec4)   1 lse [B * NH] f32
//   2 q (vec4: row b at q.x + b * q.y)   3 k (vec4 cache)   4 v (vec4 cache)
//   5 rows [B] vec2u: (first cache row of b's slot, keys of b including the new one, >= 1)
//   6 attn_sizes
//   out[b, h] = softmax_j(q_b,h . k_j / sqrt(hd)) v_j over j < rows[b].y, cache row
//   rows[b].x + j, kv head h / (NH / KVH). Views are (first element, row stride) in floats, both
//   multiples of 4. A pass with lo > 0 resumes from the out and lse of the passes before it.
//
// copy_rows (one invocation per element): 0 dst f32 (read-write)  1 src f32  2 pairs [n] vec2u
//   3 copy_sizes: for pair p = (s, d) and e < width,
//   dst[dst_at.x + d * dst_at.y + e] (+)= src[src_at.x + s * src_at.y + e].
//
// move_rows (one invocation per element): 0 buf f32 (read-write)  1 moves [n] vec4u  2 move_sizes
//   for move p = (s, d, count, _): buf[d * width + e] = buf[s * width + e], e < count * width.
//   No move may read what another writes (the host checks it).
//
// rope_rows (one invocation per (row, head, pair), in place): 0 x f32  1 inv_freq [half] f32
//   2 positions [rows] u32  3 rope_sizes. As rope.wgsl, but row r turns by positions[r].

override WG: u32 = 64;
const HD4_MAX: u32 = 32u;

const NEG: f32 = -3.0e38;

struct AttnSizes {
  B: u32,
  NH: u32,
  KVH: u32,
  hd: u32,
  scale: f32,
  lo: u32,
  hi: u32,
  pad: u32,
  q: vec2u,
  k: vec2u,
  v: vec2u,
  out: vec2u,
}

@group(0) @binding(0) var<storage, read_write> attn_out: array<vec4f>;
@group(0) @binding(1) var<storage, read_write> attn_lse: array<f32>;
@group(0) @binding(2) var<storage, read> attn_q: array<vec4f>;
@group(0) @binding(3) var<storage, read> attn_k: array<vec4f>;
@group(0) @binding(4) var<storage, read> attn_v: array<vec4f>;
@group(0) @binding(5) var<storage, read> attn_rows: array<vec2u>;
@group(0) @binding(6) var<uniform> attn_sizes: AttnSizes;

@compute @workgroup_size(WG)
fn decode_attention(@builtin(global_invocation_id) gid: vec3u,
                    @builtin(num_workgroups) groups: vec3u) {
  let s = attn_sizes;
  let idx = gid.x + gid.y * groups.x * WG;
  if (idx >= s.B * s.NH) { return; }
  let b = idx / s.NH;
  let h = idx % s.NH;
  let kvh = h / (s.NH / s.KVH);
  let h4 = s.hd / 4u;
  let slot = attn_rows[b];
  let end = min(s.hi, slot.y);
  // This row's keys all lie in earlier passes: its out and lse stay as they are.
  if (s.lo >= end) { return; }
  let qo = (s.q.x + b * s.q.y) / 4u + h * h4;
  let oo = (s.out.x + b * s.out.y) / 4u + h * h4;
  var q: array<vec4f, HD4_MAX>;
  var acc: array<vec4f, HD4_MAX>;
  var m = NEG;
  var l = 0.0;
  for (var c = 0u; c < h4; c++) {
    q[c] = attn_q[qo + c];
    acc[c] = vec4f(0.0);
  }
  if (s.lo > 0u) {
    // Resume: out = acc / l and lse = m + log(l) so far, as (acc = out, m = lse, l = 1).
    m = attn_lse[idx];
    l = 1.0;
    for (var c = 0u; c < h4; c++) { acc[c] = attn_out[oo + c]; }
  }
  for (var j = s.lo; j < end; j++) {
    let row = slot.x + j;
    let ko = (s.k.x + row * s.k.y) / 4u + kvh * h4;
    let vo = (s.v.x + row * s.v.y) / 4u + kvh * h4;
    var dot4 = vec4f(0.0);
    for (var c = 0u; c < h4; c++) { dot4 += q[c] * attn_k[ko + c]; }
    let score = ((dot4.x + dot4.y) + (dot4.z + dot4.w)) * s.scale;
    let mb = max(m, score);
    let rescale = exp(m - mb);
    let p = exp(score - mb);
    m = mb;
    l = l * rescale + p;
    for (var c = 0u; c < h4; c++) { acc[c] = acc[c] * rescale + p * attn_v[vo + c]; }
  }
  let inv = 1.0 / l;
  for (var c = 0u; c < h4; c++) { attn_out[oo + c] = acc[c] * inv; }
  attn_lse[idx] = m + log(l);
}

struct CopySizes {
  n: u32,
  width: u32,
  accumulate: u32,
  pad: u32,
  src_at: vec2u,
  dst_at: vec2u,
}

@group(0) @binding(0) var<storage, read_write> copy_dst: array<f32>;
@group(0) @binding(1) var<storage, read> copy_src: array<f32>;
@group(0) @binding(2) var<storage, read> copy_pairs: array<vec2u>;
@group(0) @binding(3) var<uniform> copy_sizes: CopySizes;

@compute @workgroup_size(WG)
fn copy_rows(@builtin(global_invocation_id) gid: vec3u,
             @builtin(num_workgroups) groups: vec3u) {
  let s = copy_sizes;
  let idx = gid.x + gid.y * groups.x * WG;
  if (idx >= s.n * s.width) { return; }
  let pair = copy_pairs[idx / s.width];
  let e = idx % s.width;
  let value = copy_src[s.src_at.x + pair.x * s.src_at.y + e];
  let at = s.dst_at.x + pair.y * s.dst_at.y + e;
  if (s.accumulate != 0u) {
    copy_dst[at] = copy_dst[at] + value;
  } else {
    copy_dst[at] = value;
  }
}

struct MoveSizes {
  n: u32,
  width: u32,
  span: u32,
  pad: u32,
}

@group(0) @binding(0) var<storage, read_write> move_buf: array<f32>;
@group(0) @binding(1) var<storage, read> move_list: array<vec4u>;
@group(0) @binding(2) var<uniform> move_sizes: MoveSizes;

// x runs over the elements of one move (`span` = the longest move's), y over the moves.
@compute @workgroup_size(WG)
fn move_rows(@builtin(global_invocation_id) gid: vec3u) {
  let s = move_sizes;
  if (gid.y >= s.n) { return; }
  let mv = move_list[gid.y];
  let e = gid.x;
  if (e >= mv.z * s.width) { return; }
  move_buf[mv.y * s.width + e] = move_buf[mv.x * s.width + e];
}

struct RopeSizes {
  rows: u32,
  heads: u32,
  half: u32,
  ld: u32,
  shift: u32,
  zero: u32,
  pad0: u32,
  pad1: u32,
}

const INV_2PI: f32 = 0.15915494309189535;
const C1: f32 = 6.28125;
const C2: f32 = 0.0019378662109375;
const C3: f32 = -2.559031372584286e-6;

@group(0) @binding(0) var<storage, read_write> rope_x: array<f32>;
@group(0) @binding(1) var<storage, read> rope_inv_freq: array<f32>;
@group(0) @binding(2) var<storage, read> rope_positions: array<u32>;
@group(0) @binding(3) var<uniform> rope_sizes: RopeSizes;

// (cos, sin) of pos * freq, reduced into [-pi, pi] exactly as rope.wgsl does, so that a row
// turned here equals the same row turned there bit for bit.
fn rope_cos_sin(pos: f32, freq: f32) -> vec2f {
  let a = bitcast<f32>(bitcast<u32>(pos * freq) ^ rope_sizes.zero);
  let k = round(a * INV_2PI);
  let r = ((a - k * C1) - k * C2) - k * C3;
  let j = round(r * INV_2PI);
  let t = ((r - j * C1) - j * C2) - j * C3;
  return vec2f(cos(t), sin(t));
}

@compute @workgroup_size(WG)
fn rope_rows(@builtin(global_invocation_id) gid: vec3u,
             @builtin(num_workgroups) groups: vec3u) {
  let s = rope_sizes;
  let idx = gid.x + gid.y * groups.x * WG;
  let pairs = s.half * s.heads;
  if (idx >= s.rows * pairs) { return; }
  let i = idx % s.half;
  let head = (idx / s.half) % s.heads;
  let row = idx / pairs;
  let cs = rope_cos_sin(f32(rope_positions[row]), rope_inv_freq[i]);
  let a = row * s.ld + head * 2u * s.half + i + s.shift;
  let b = a + s.half;
  let x0 = rope_x[a];
  let x1 = rope_x[b];
  rope_x[a] = x0 * cs.x - x1 * cs.y;
  rope_x[b] = x1 * cs.x + x0 * cs.y;
}
