// Prelude of qmatmul.wgsl on devices with `shader-f16`: f16 weights read as the f16 type.
enable f16;

// The codes again (the same buffer as binding 2), as f16: pairs for the scalar entry points,
// fours for the tiled ones (one view per entry point).
@group(0) @binding(7) var<storage, read> codes_f16: array<vec2<f16>>;
@group(0) @binding(7) var<storage, read> codes_f16x4: array<vec4<f16>>;

// The two binary16 values in u32 `at` of the codes, low half first, as f32 (exact).
fn half_pair(at: u32) -> vec2f {
  return vec2f(codes_f16[at]);
}

// The eight binary16 values in vec4u `at4` of the codes, as f32 (exact).
fn half8(at4: u32) -> Eight {
  return Eight(vec4f(codes_f16x4[2u * at4]), vec4f(codes_f16x4[2u * at4 + 1u]));
}
