// SwiGLU of Llama's MLP (`act_fn(gate_proj(x)) * up_proj(x)` with act_fn = SiLU):
//   h = silu(gate) * up,   silu(g) = g * sigmoid(g)
// Every operand is a [rows, I] f32 matrix whose rows lie sizes.ld<k> elements apart (gate and up
// may be the two column blocks of one fused [rows, 2I] projection): element (r, c) of binding k
// lives at r * sizes.ld<k> + c + sizes.shift<k>, so each binding may be a window of a larger
// buffer.
//
// swiglu_forward (one invocation per element):
//   0 h [rows, I] (write)  1 gate [rows, I]  2 up [rows, I]  3 sizes
// swiglu_backward (one invocation per element):
//   0 dgate [rows, I] (write)  1 dup [rows, I] (write)  2 dh [rows, I]  3 gate [rows, I]
//   4 up [rows, I]  5 sizes
// dgate and dup may be two bindings of one buffer (the gradient of a fused projection): each
// invocation writes its own element of each.

struct Sizes {
  rows: u32,
  cols: u32,
  ld0: u32,
  ld1: u32,
  ld2: u32,
  ld3: u32,
  ld4: u32,
  shift0: u32,
  shift1: u32,
  shift2: u32,
  shift3: u32,
  shift4: u32,
}

override WG: u32 = 256;

// swiglu_forward
@group(0) @binding(0) var<storage, read_write> out0: array<f32>;
@group(0) @binding(1) var<storage, read> f_gate: array<f32>;
@group(0) @binding(2) var<storage, read> f_up: array<f32>;
@group(0) @binding(3) var<uniform> sizes3: Sizes;

// swiglu_backward
@group(0) @binding(1) var<storage, read_write> out1: array<f32>;
@group(0) @binding(2) var<storage, read> b_dh: array<f32>;
@group(0) @binding(3) var<storage, read> b_gate: array<f32>;
@group(0) @binding(4) var<storage, read> b_up: array<f32>;
@group(0) @binding(5) var<uniform> sizes5: Sizes;

// exp(-g) overflows to inf for g below about -88, and 1 / inf is the right limit 0.
fn sigmoid(g: f32) -> f32 {
  return 1.0 / (1.0 + exp(-g));
}

@compute @workgroup_size(WG)
fn swiglu_forward(@builtin(global_invocation_id) gid: vec3u,
                  @builtin(num_workgroups) groups: vec3u) {
  let s = sizes3;
  let i = gid.x + gid.y * groups.x * WG;
  if (i >= s.rows * s.cols) { return; }
  let r = i / s.cols;
  let c = i % s.cols;
  let g = f_gate[r * s.ld1 + c + s.shift1];
  out0[r * s.ld0 + c + s.shift0] = g * sigmoid(g) * f_up[r * s.ld2 + c + s.shift2];
}

@compute @workgroup_size(WG)
fn swiglu_backward(@builtin(global_invocation_id) gid: vec3u,
                   @builtin(num_workgroups) groups: vec3u) {
  let s = sizes5;
  let i = gid.x + gid.y * groups.x * WG;
  if (i >= s.rows * s.cols) { return; }
  let r = i / s.cols;
  let c = i % s.cols;
  let dh = b_dh[r * s.ld2 + c + s.shift2];
  let g = b_gate[r * s.ld3 + c + s.shift3];
  let up = b_up[r * s.ld4 + c + s.shift4];
  let sg = sigmoid(g);
  // silu'(g) = sigmoid(g) * (1 + g * (1 - sigmoid(g))); where sigmoid(g) is 0 or 1 in f32 it
  // is 0 or 1 too, and g * sigmoid(g) is formed first: no inf * 0 for huge g.
  out0[r * s.ld0 + c + s.shift0] = dh * up * (sg * (1.0 + g * (1.0 - sg)));
  out1[r * s.ld1 + c + s.shift1] = dh * (g * sg);
}
