// GELU and its backward, in the two forms models use, chosen by the EXACT override:
// - EXACT = false, the tanh approximation of GPT-2 (`gelu_new`, `gelu_pytorch_tanh`):
//     gelu(x) = 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))
// - EXACT = true, the exact form of BERT, ViT and PyTorch's default `nn.GELU()`:
//     gelu(x) = x * Phi(x),  Phi(x) = 0.5 * erfc(-x / sqrt(2))
//     gelu'(x) = Phi(x) + x * exp(-x^2 / 2) / sqrt(2 pi)
//   WGSL has no erf: erfc(z), z >= 0, is the Chebyshev fit of Numerical Recipes (2nd ed.,
//   section 6.2), t * exp(-z^2 + P(t)) with t = 1 / (1 + z / 2), whose error relative to erfc is
//   under 1.2e-7 for every z >= 0. Being relative to erfc, it stays small in the tail, where
//   x * Phi(x) is tiny (x < 0) and where 1 - Phi(x) is (x > 0).
//
// Bindings (group 0), n = sizes.n elements, all f32:
//   gelu_forward:  0 out [n] (write)                           1 inp [n] (read)  2 sizes
//   gelu_backward: 0 dinp [n] (+= dout * gelu'(inp))  1 inp [n] (read)  2 dout [n] (read)
//                  3 sizes
// Each binding may be a window of a larger buffer: element i of binding k lives at index
// i + sizes.shift[k] of it.

struct Sizes {
  n: u32,
  shift0: u32,
  shift1: u32,
  shift2: u32,
}

override WG: u32 = 256;
override EXACT: bool = false;

const SQRT_2_OVER_PI: f32 = 0.7978845608028654;
const CUBIC: f32 = 0.044715;
// Past |u| = 10, tanh(u) is 1 to within f32 rounding; past |x| = 10 so is the tanh form's slope.
const TANH_MAX: f32 = 10.0;
const INV_SQRT2: f32 = 0.7071067811865476;
const INV_SQRT_2PI: f32 = 0.3989422804014327;
// Past |x| = 14 (z = 9.9), erfc(z) < 1e-43: Phi is 0 or 1 in f32 and the density term is 0.
const ERF_MAX: f32 = 14.0;

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(2) var<uniform> sizes: Sizes;

@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<uniform> sizes3: Sizes;

fn linear(gid: vec3u, groups: vec3u) -> u32 {
  return gid.x + gid.y * groups.x * WG;
}

// Some drivers evaluate tanh through exp and return NaN for large arguments.
fn safe_tanh(u: f32) -> f32 {
  return tanh(clamp(u, -TANH_MAX, TANH_MAX));
}

// erfc(z) for z >= 0.
fn erfc_pos(z: f32) -> f32 {
  let t = 1.0 / (1.0 + 0.5 * z);
  var p = 0.17087277;
  p = p * t - 0.82215223;
  p = p * t + 1.48851587;
  p = p * t - 1.13520398;
  p = p * t + 0.27886807;
  p = p * t - 0.18628806;
  p = p * t + 0.09678418;
  p = p * t + 0.37409196;
  p = p * t + 1.00002368;
  p = p * t - 1.26551223;
  return t * exp(p - z * z);
}

// Phi(x), the standard normal CDF, for |x| <= ERF_MAX.
fn normal_cdf(x: f32) -> f32 {
  let tail = 0.5 * erfc_pos(abs(x) * INV_SQRT2);
  return select(tail, 1.0 - tail, x >= 0.0);
}

fn gelu(x: f32) -> f32 {
  if (EXACT) {
    return x * normal_cdf(clamp(x, -ERF_MAX, ERF_MAX));
  }
  return 0.5 * x * (1.0 + safe_tanh(SQRT_2_OVER_PI * (x + CUBIC * x * x * x)));
}

// gelu'(x). Past the clamp the slope is 0 or 1 in f32, and x * x could overflow into inf * 0.
fn gelu_slope(inp_x: f32) -> f32 {
  if (EXACT) {
    let x = clamp(inp_x, -ERF_MAX, ERF_MAX);
    return normal_cdf(x) + x * INV_SQRT_2PI * exp(-0.5 * x * x);
  }
  let x = clamp(inp_x, -TANH_MAX, TANH_MAX);
  let t = safe_tanh(SQRT_2_OVER_PI * (x + CUBIC * x * x * x));
  let sech2 = 1.0 - t * t;
  return 0.5 * (1.0 + t) + 0.5 * x * sech2 * SQRT_2_OVER_PI * (1.0 + 3.0 * CUBIC * x * x);
}

@compute @workgroup_size(WG)
fn gelu_forward(@builtin(global_invocation_id) gid: vec3u,
                @builtin(num_workgroups) groups: vec3u) {
  let i = linear(gid, groups);
  if (i >= sizes.n) { return; }
  out[i + sizes.shift0] = gelu(inp[i + sizes.shift1]);
}

@compute @workgroup_size(WG)
fn gelu_backward(@builtin(global_invocation_id) gid: vec3u,
                 @builtin(num_workgroups) groups: vec3u) {
  let i = linear(gid, groups);
  if (i >= sizes3.n) { return; }
  out[i + sizes3.shift0] += dout[i + sizes3.shift2] * gelu_slope(inp[i + sizes3.shift1]);
}
