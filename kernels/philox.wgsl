// Philox4x32-10 and NOLA basis generation spec v1 ("philox4x32-10/v1"), as a function library.
// No bindings and no entry point: kernels that regenerate basis elements prepend this file to
// their own source. Must stay bit-identical to adapters/basis_spec.ts; the rule itself is
// written out in docs/basis-spec-v1.md.

const PHILOX_M0: u32 = 0xD2511F53u;
const PHILOX_M1: u32 = 0xCD9E8D57u;
const PHILOX_W0: u32 = 0x9E3779B9u;
const PHILOX_W1: u32 = 0xBB67AE85u;

// Counter word 2 of each factor.
const BASIS_FACTOR_A: u32 = 0u;
const BASIS_FACTOR_B: u32 = 1u;
const BASIS_FACTOR_A0: u32 = 2u;

// WGSL has no 32x32->64 multiply: assemble the high word from 16-bit partial products, each
// below 2^32; the carry out of the middle column is at most 2.
fn philox_mulhi(a: u32, b: u32) -> u32 {
  let al = a & 0xFFFFu;
  let ah = a >> 16u;
  let bl = b & 0xFFFFu;
  let bh = b >> 16u;
  let lh = al * bh;
  let hl = ah * bl;
  let mid = ((al * bl) >> 16u) + (lh & 0xFFFFu) + (hl & 0xFFFFu);
  return ah * bh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
}

fn philox_round(ctr: vec4u, key: vec2u) -> vec4u {
  let hi0 = philox_mulhi(PHILOX_M0, ctr.x);
  let hi1 = philox_mulhi(PHILOX_M1, ctr.z);
  return vec4u(hi1 ^ ctr.y ^ key.x, PHILOX_M1 * ctr.z, hi0 ^ ctr.w ^ key.y, PHILOX_M0 * ctr.x);
}

// Random123's philox4x32 with R = 10: the key is bumped between rounds, not after the last.
fn philox4x32_10(ctr: vec4u, key: vec2u) -> vec4u {
  var c = philox_round(ctr, key);
  var k = key;
  for (var round = 1u; round < 10u; round++) {
    k += vec2u(PHILOX_W0, PHILOX_W1);
    c = philox_round(c, k);
  }
  return c;
}

// The counter block holding element `element` of basis `index` of `factor`; the element is word
// `element % 4` of the block's output.
fn basis_counter(factor: u32, index: u32, element: u32) -> vec4u {
  return vec4u(element >> 2u, index, factor, 0u);
}

// (2u - 1) * scale with u = (word >> 8) * 2^-24. The integer 2 * (word >> 8) - 2^24 fits in 25
// bits and scaling by 2^-24 is exact, so the one rounding is the final product; reassociation
// or contraction into an fma cannot change the bits.
fn basis_uniform_word(word: u32, scale: f32) -> f32 {
  let centered = f32(i32(word >> 8u) * 2 - 16777216);
  return centered * 5.9604644775390625e-8 * scale;
}

// Box-Muller over two words: standard deviation `scale`. Not bit-exact across devices (log, sin
// and cos are not correctly rounded); u1 in (0, 1] keeps log finite and theta in [-pi, pi) is
// the range where WGSL bounds the error of sin and cos.
fn basis_normal_pair(first: u32, second: u32, scale: f32) -> vec2f {
  let u1 = f32((first >> 8u) + 1u) * 5.9604644775390625e-8;
  let theta = 3.14159265358979 * (f32(i32(second >> 8u) * 2 - 16777216) * 5.9604644775390625e-8);
  let r = sqrt(-2.0 * log(u1)) * scale;
  return vec2f(r * cos(theta), r * sin(theta));
}

// The four uniform values of one counter block, elements 4 * block .. 4 * block + 3.
fn basis_uniform4(words: vec4u, scale: f32) -> vec4f {
  return vec4f(
    basis_uniform_word(words.x, scale),
    basis_uniform_word(words.y, scale),
    basis_uniform_word(words.z, scale),
    basis_uniform_word(words.w, scale),
  );
}

// The four normal values of one counter block.
fn basis_normal4(words: vec4u, scale: f32) -> vec4f {
  return vec4f(basis_normal_pair(words.x, words.y, scale), basis_normal_pair(words.z, words.w, scale));
}

// One uniform basis element; kernels that need all four words of a block should call
// philox4x32_10 once and use basis_uniform4 instead.
fn basis_uniform(key: vec2u, factor: u32, index: u32, element: u32, scale: f32) -> f32 {
  let words = philox4x32_10(basis_counter(factor, index, element), key);
  return basis_uniform_word(words[element & 3u], scale);
}
