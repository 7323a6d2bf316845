// SGD with momentum, elementwise over one parameter tensor, in the order PyTorch's SGD computes it
// (torch.optim.sgd._single_tensor_sgd), so runs match PyTorch to float32 rounding:
//
//   g = grad * gscale + weight_decay * param
//   buf = first ? g : momentum * buf + (1 - dampening) * g
//   g = nesterov ? g + momentum * buf : buf
//   param -= lr * g
//
// sgd_forward (momentum > 0):
//   0 param    f32[n]  read_write  updated in place
//   1 buf      f32[n]  read_write  momentum buffer (its old contents ignored on the first step)
//   2 grad     f32[n]  read
//   3 gscale   f32[1]  read        multiplier on grad (averaging, clipping), kept on the GPU so no
//                                   readback is needed inside a step
//   4 sizes    uniform SgdSizes
// sgd_forward_plain (momentum = 0, no buffer): param -= lr * (grad * gscale + weight_decay * param)
//   0 param, 1 grad, 2 gscale, 3 sizes

struct SgdSizes {
  n: u32,
  lr: f32,
  momentum: f32,
  dampening: f32,
  weight_decay: f32,
  first: u32,
  nesterov: u32,
}

@group(0) @binding(0) var<storage, read_write> param: array<f32>;
@group(0) @binding(1) var<storage, read_write> buf: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read> gscale: array<f32>;
@group(0) @binding(4) var<uniform> sizes: SgdSizes;

@group(0) @binding(1) var<storage, read> grad_plain: array<f32>;
@group(0) @binding(2) var<storage, read> gscale_plain: array<f32>;
@group(0) @binding(3) var<uniform> sizes_plain: SgdSizes;

override WG: u32 = 64;

// Big launches wrap into y: the linear index of one invocation across a 2-D grid.
fn linear(gid: vec3u, groups: vec3u) -> u32 {
  return gid.x + gid.y * groups.x * WG;
}

@compute @workgroup_size(WG)
fn sgd_forward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let i = linear(gid, groups);
  if (i >= sizes.n) {
    return;
  }
  let p = param[i];
  var g = grad[i] * gscale[0];
  g = g + sizes.weight_decay * p;
  var b = g;
  if (sizes.first == 0u) {
    b = buf[i] * sizes.momentum + (1.0 - sizes.dampening) * g;
  }
  buf[i] = b;
  if (sizes.nesterov != 0u) {
    g = g + sizes.momentum * b;
  } else {
    g = b;
  }
  param[i] = p - sizes.lr * g;
}

@compute @workgroup_size(WG)
fn sgd_forward_plain(@builtin(global_invocation_id) gid: vec3u,
                     @builtin(num_workgroups) groups: vec3u) {
  let i = linear(gid, groups);
  if (i >= sizes_plain.n) {
    return;
  }
  let p = param[i];
  let g = grad_plain[i] * gscale_plain[0] + sizes_plain.weight_decay * p;
  param[i] = p - sizes_plain.lr * g;
}
