// Prelude of qmatmul.wgsl on devices without `shader-f16` (and for every format but f16).

// The two binary16 values in u32 `at` of the codes, low half first, as f32 (exact).
fn half_pair(at: u32) -> vec2f {
  return unpack2x16float(codes[at]);
}
