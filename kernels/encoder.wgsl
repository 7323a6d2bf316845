// GPT-2's input embedding: token embedding plus position embedding.
//   out[b, t, :] = wte[tokens[b, t], :] + wpe[t + pos_offset, :]
// rows = B*T, C channels. The token table may be larger than one storage binding, so it is bound
// one window of vocabulary rows [v_begin, v_end) at a time; wte row v lives at
// (v - v_begin) * C + shift of the window.
//
// encoder_forward (one dispatch per wte window, one invocation per (row, channel); only rows
// whose token falls in the window are written, and the last window writes NaN for tokens >= V):
//   0 out [rows, C] f32 (write)  1 tokens [rows] u32  2 wte window [v_end - v_begin, C] f32
//   3 wpe [P, C] f32  4 sizes
// encoder_backward (dwpe; one invocation per (t, channel), summing the batch in order of b):
//   0 dwpe [P, C] f32 (+=)  1 dout [rows, C] f32  2 sizes
// encoder_backward_wte (dwte; one dispatch per window, one invocation per (unique token,
// channel)): the host sorts positions by token into CSR lists, so every dwte element is written
// by one invocation that sums its positions in order: deterministic, no atomics.
//   0 dwte window [.., C] f32 (+=)  1 dout [rows, C] f32  2 unique [U] u32 (sorted token ids)
//   3 offsets [U + 1] u32  4 positions [rows] u32 (row indices grouped by token)  5 sizes

struct Sizes {
  rows: u32,
  seq: u32,
  channels: u32,
  pos_offset: u32,
  v_begin: u32,
  v_end: u32,
  shift: u32,
  vocab: u32,
  last: u32,
  u_begin: u32,
  u_count: u32,
}

override WG: u32 = 256;

@group(0) @binding(0) var<storage, read_write> out: array<f32>;

@group(0) @binding(1) var<storage, read> tokens: array<u32>;
@group(0) @binding(2) var<storage, read> wte: array<f32>;
@group(0) @binding(3) var<storage, read> wpe: array<f32>;
@group(0) @binding(4) var<uniform> sizes4: Sizes;

@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<uniform> sizes2: Sizes;

@group(0) @binding(2) var<storage, read> unique: array<u32>;
@group(0) @binding(3) var<storage, read> offsets: array<u32>;
@group(0) @binding(4) var<storage, read> positions: array<u32>;
@group(0) @binding(5) var<uniform> sizes5: Sizes;

fn linear(gid: vec3u, groups: vec3u) -> u32 {
  return gid.x + gid.y * groups.x * WG;
}

@compute @workgroup_size(WG)
fn encoder_forward(@builtin(global_invocation_id) gid: vec3u,
                   @builtin(num_workgroups) groups: vec3u) {
  let i = linear(gid, groups);
  let c = sizes4.channels;
  if (i >= sizes4.rows * c) { return; }
  let row = i / c;
  let ch = i % c;
  let tok = tokens[row];
  if (tok >= sizes4.v_begin && tok < sizes4.v_end) {
    let pos = row % sizes4.seq + sizes4.pos_offset;
    out[i] = wte[(tok - sizes4.v_begin) * c + ch + sizes4.shift] + wpe[pos * c + ch];
  } else if (tok >= sizes4.vocab && sizes4.last != 0u) {
    out[i] = bitcast<f32>(0x7fc00000u);
  }
}

@compute @workgroup_size(WG)
fn encoder_backward(@builtin(global_invocation_id) gid: vec3u,
                    @builtin(num_workgroups) groups: vec3u) {
  let i = linear(gid, groups);
  let c = sizes2.channels;
  let seq = sizes2.seq;
  if (i >= seq * c) { return; }
  let t = i / c;
  let ch = i % c;
  var sum = 0.0;
  for (var row = t; row < sizes2.rows; row += seq) { sum += dout[row * c + ch]; }
  out[(t + sizes2.pos_offset) * c + ch] += sum;
}

@compute @workgroup_size(WG)
fn encoder_backward_wte(@builtin(global_invocation_id) gid: vec3u,
                        @builtin(num_workgroups) groups: vec3u) {
  let i = linear(gid, groups);
  let c = sizes5.channels;
  if (i >= sizes5.u_count * c) { return; }
  let u = sizes5.u_begin + i / c;
  let ch = i % c;
  var sum = 0.0;
  for (var k = offsets[u]; k < offsets[u + 1u]; k++) { sum += dout[positions[k] * c + ch]; }
  out[(unique[u] - sizes5.v_begin) * c + ch + sizes5.shift] += sum;
}
