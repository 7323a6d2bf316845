// Prelude of qmatmul.wgsl on devices without `shader-f16` (and for every format but f16).

// The two binary16 values in u32 `at` of the codes, low half first, as f32 (exact).
fn half_pair(at: u32) -> vec2f {
  return unpack2x16float(codes[at]);
}

// The eight binary16 values in vec4u `at4` of the codes, as f32 (exact).
fn half8(at4: u32) -> Eight {
  let q = codes4[at4];
  return Eight(
    vec4f(unpack2x16float(q.x), unpack2x16float(q.y)),
    vec4f(unpack2x16float(q.z), unpack2x16float(q.w)),
  );
}
