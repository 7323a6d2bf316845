// Prelude of qmatmul.wgsl on devices with `shader-f16`: f16 weights read as the f16 type.
enable f16;

// The codes again (the same buffer as binding 2), as pairs of halves.
@group(0) @binding(7) var<storage, read> codes_f16: array<vec2<f16>>;

// The two binary16 values in u32 `at` of the codes, low half first, as f32 (exact).
fn half_pair(at: u32) -> vec2f {
  return vec2f(codes_f16[at]);
}
