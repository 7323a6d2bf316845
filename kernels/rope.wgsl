// Rotary position embeddings as Hugging Face's Llama applies them (`rotate_half`, not
// interleaved): in each head of hd = 2 * half values, element i < half pairs with i + half, and
// the pair turns by the angle pos * inv_freq[i]:
//   x'[i]        = x[i] * cos - x[i + half] * sin
//   x'[i + half] = x[i + half] * cos + x[i] * sin
// rope_backward applies the transpose (the same with sin negated) to a gradient. Rows are
// batch-major (rows = B * T): row r of a window has position past + (row0 + r) % T.
//
// rope_forward, rope_backward (one invocation per (row, head, pair), in place):
//   0 x [rows, ld] f32 (read-write: the heads * hd values from element shift of each row)
//   1 inv_freq [half] f32
//   2 sizes
//
// Precision. The angle is the f32 product f32(pos) * inv_freq[i], as HF computes it. WGSL's
// sin and cos are only specified on [-pi, pi] (and there only to 2^-11), so the angle is first
// reduced into [-pi, pi] by 2 pi in three parts (Cody-Waite): C1 and C2 have 9 and 8 significant
// bits, so k * C1 and k * C2 are exact for angles below 2^18, a - k * C1 is exact (Sterbenz),
// and the reduced angle is within 2.5e-7 of the exact remainder however large the position.

struct Sizes {
  rows: u32,
  heads: u32,
  half: u32,
  ld: u32,
  shift: u32,
  seq: u32,
  row0: u32,
  past: u32,
  zero: u32,
}

override WG: u32 = 256;

const INV_2PI: f32 = 0.15915494309189535;
const C1: f32 = 6.28125;
const C2: f32 = 0.0019378662109375;
const C3: f32 = -2.559031372584286e-6;

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(2) var<uniform> sizes: Sizes;

// (cos, sin) of the f32 product a = pos * freq.
fn cos_sin(pos: f32, freq: f32) -> vec2f {
  // sizes.zero is 0, but the compiler cannot know it: the product is rounded to f32 before the
  // reduction uses it, never fused into its first subtraction (which would move the angle by up
  // to half an ulp of it, 1.2e-4 at 4096).
  let a = bitcast<f32>(bitcast<u32>(pos * freq) ^ sizes.zero);
  let k = round(a * INV_2PI);
  let r = ((a - k * C1) - k * C2) - k * C3;
  // a * INV_2PI is rounded at the scale of k, which may leave r up to 0.02 past pi at 2^18: one
  // more turn brings it into [-pi, pi] (r - C1 is exact again).
  let j = round(r * INV_2PI);
  let t = ((r - j * C1) - j * C2) - j * C3;
  return vec2f(cos(t), sin(t));
}

fn rotate(gid: vec3u, groups: vec3u, sign: f32) {
  let idx = gid.x + gid.y * groups.x * WG;
  let half = sizes.half;
  let pairs = half * sizes.heads;
  if (idx >= sizes.rows * pairs) { return; }
  let i = idx % half;
  let head = (idx / half) % sizes.heads;
  let row = idx / pairs;
  let pos = sizes.past + (sizes.row0 + row) % sizes.seq;
  let cs = cos_sin(f32(pos), inv_freq[i]);
  let s = sign * cs.y;
  let a = row * sizes.ld + head * 2u * half + i + sizes.shift;
  let b = a + half;
  let x0 = x[a];
  let x1 = x[b];
  x[a] = x0 * cs.x - x1 * s;
  x[b] = x1 * cs.x + x0 * s;
}

@compute @workgroup_size(WG)
fn rope_forward(@builtin(global_invocation_id) gid: vec3u,
                @builtin(num_workgroups) groups: vec3u) {
  rotate(gid, groups, 1.0);
}

@compute @workgroup_size(WG)
fn rope_backward(@builtin(global_invocation_id) gid: vec3u,
                 @builtin(num_workgroups) groups: vec3u) {
  rotate(gid, groups, -1.0);
}
