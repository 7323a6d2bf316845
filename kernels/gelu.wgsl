// GELU, the tanh approximation GPT-2 uses:
//   gelu(x) = 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))
//
// Bindings (group 0), n = sizes.n elements, all f32:
//   gelu_forward:  0 out [n] (write)             1 inp [n] (read)                  2 sizes
//   gelu_backward: 0 dinp [n] (+= dout * gelu'(inp))  1 inp [n] (read)  2 dout [n] (read)  3 sizes
// Each binding may be a window of a larger buffer: element i of binding k lives at index
// i + sizes.shift[k] of it.

struct Sizes {
  n: u32,
  shift0: u32,
  shift1: u32,
  shift2: u32,
}

override WG: u32 = 256;

const SQRT_2_OVER_PI: f32 = 0.7978845608028654;
const CUBIC: f32 = 0.044715;

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(2) var<uniform> sizes: Sizes;

@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<uniform> sizes3: Sizes;

fn linear(gid: vec3u, groups: vec3u) -> u32 {
  return gid.x + gid.y * groups.x * WG;
}

// Some drivers evaluate tanh through exp and return NaN for large arguments; past |u| = 10,
// tanh(u) is 1 to within f32 rounding anyway.
fn safe_tanh(u: f32) -> f32 {
  return tanh(clamp(u, -10.0, 10.0));
}

@compute @workgroup_size(WG)
fn gelu_forward(@builtin(global_invocation_id) gid: vec3u,
                @builtin(num_workgroups) groups: vec3u) {
  let i = linear(gid, groups);
  if (i >= sizes.n) { return; }
  let x = inp[i + sizes.shift1];
  let t = safe_tanh(SQRT_2_OVER_PI * (x + CUBIC * x * x * x));
  out[i + sizes.shift0] = 0.5 * x * (1.0 + t);
}

@compute @workgroup_size(WG)
fn gelu_backward(@builtin(global_invocation_id) gid: vec3u,
                 @builtin(num_workgroups) groups: vec3u) {
  let i = linear(gid, groups);
  if (i >= sizes3.n) { return; }
  // Past |x| = 10 the derivative is 0 or 1 in f32, and x * x could overflow into inf * 0.
  let x = clamp(inp[i + sizes3.shift1], -10.0, 10.0);
  let t = safe_tanh(SQRT_2_OVER_PI * (x + CUBIC * x * x * x));
  let sech2 = 1.0 - t * t;
  let local = 0.5 * (1.0 + t) + 0.5 * x * sech2 * SQRT_2_OVER_PI * (1.0 + 3.0 * CUBIC * x * x);
  out[i + sizes3.shift0] += dout[i + sizes3.shift2] * local;
}
