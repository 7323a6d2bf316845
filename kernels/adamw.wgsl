// AdamW update, elementwise over one parameter tensor, in the order PyTorch's AdamW computes it
// (so ten steps match a PyTorch run to float32 rounding).
//
// Bindings:
//   0 param    f32[n]  read_write  updated in place
//   1 m        f32[n]  read_write  first moment
//   2 v        f32[n]  read_write  second moment
//   3 grad     f32[n]  read
//   4 gscale   f32[1]  read        multiplier on grad (accumulation average, clipping), on the GPU
//                                   so no readback is needed inside a step
//   5 sizes    uniform AdamwSizes

struct AdamwSizes {
  n: u32,
  lr: f32,
  beta1: f32,
  beta2: f32,
  eps: f32,
  weight_decay: f32,
  // 1 - beta1^t and sqrt(1 - beta2^t), computed on the host in float64.
  bias_correction1: f32,
  bias_correction2_sqrt: f32,
}

@group(0) @binding(0) var<storage, read_write> param: array<f32>;
@group(0) @binding(1) var<storage, read_write> m: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read> grad: array<f32>;
@group(0) @binding(4) var<storage, read> gscale: array<f32>;
@group(0) @binding(5) var<uniform> sizes: AdamwSizes;

override WG: u32 = 64;

@compute @workgroup_size(WG)
fn adamw_forward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let i = gid.x + gid.y * groups.x * WG;
  if (i >= sizes.n) {
    return;
  }
  let g = grad[i] * gscale[0];
  var p = param[i] * (1.0 - sizes.lr * sizes.weight_decay);
  let mi = m[i] + (g - m[i]) * (1.0 - sizes.beta1);
  let vi = v[i] * sizes.beta2 + (1.0 - sizes.beta2) * g * g;
  let denom = sqrt(vi) / sizes.bias_correction2_sqrt + sizes.eps;
  p = p - (sizes.lr / sizes.bias_correction1) * (mi / denom);
  m[i] = mi;
  v[i] = vi;
  param[i] = p;
}
