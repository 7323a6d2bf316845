// Token embedding read from a table kept 16-bit as the checkpoint stored it (f16 or bf16), widened
// in registers, plus an optional f32 position embedding:
//   out[b, t, c] = widen(table[tokens[b, t], c]) + (has_pos != 0 ? wpe[t + pos_offset, c] : 0)
// rows = B*T, C channels. The table is a packed weight (kernels/packed_tensor.ts): row v holds
// C 16-bit values, two a u32 word (the first in the low half, little-endian), padded to row_words
// words. It may be larger than one storage binding, so it is bound one window of vocabulary rows
// [v_begin, v_end) at a time; row v starts at word (v - v_begin) * row_words + shift.
//
// embedding_half_forward (one dispatch per window, one invocation per (row, channel); only rows
// whose token falls in the window are written, and the last window writes NaN for tokens >= V):
//   0 out [rows, C] f32 (write)  1 tokens [rows] u32  2 table window u32 words
//   3 wpe [P, C] f32 (any buffer when has_pos is 0)  4 sizes
// FORMAT (override): 0 f16, 1 bf16.

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
  row_words: u32,
  has_pos: u32,
}

override WG: u32 = 256;
override FORMAT: u32 = 0u;

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> tokens: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<u32>;
@group(0) @binding(3) var<storage, read> wpe: array<f32>;
@group(0) @binding(4) var<uniform> sizes: Sizes;

// The value in the high (odd) or low (even) half of a word.
fn widen(word: u32, high: bool) -> f32 {
  if (FORMAT == 1u) {
    // bf16 is the top half of an f32.
    return bitcast<f32>(select(word << 16u, word & 0xffff0000u, high));
  }
  let pair = unpack2x16float(word);
  return select(pair.x, pair.y, high);
}

@compute @workgroup_size(WG)
fn embedding_half_forward(@builtin(global_invocation_id) gid: vec3u,
                          @builtin(num_workgroups) groups: vec3u) {
  let i = gid.x + gid.y * groups.x * WG;
  let c = sizes.channels;
  if (i >= sizes.rows * c) { return; }
  let row = i / c;
  let ch = i % c;
  let tok = tokens[row];
  if (tok >= sizes.v_begin && tok < sizes.v_end) {
    let word = table[(tok - sizes.v_begin) * sizes.row_words + sizes.shift + ch / 2u];
    var value = widen(word, (ch & 1u) == 1u);
    if (sizes.has_pos != 0u) {
      value += wpe[(row % sizes.seq + sizes.pos_offset) * c + ch];
    }
    out[i] = value;
  } else if (tok >= sizes.vocab && sizes.last != 0u) {
    out[i] = bitcast<f32>(0x7fc00000u);
  }
}
