// Residual connections and the elementwise sums the backward passes accumulate with.
//
// Bindings (group 0), per entry point; n = sizes.n elements, all f32:
//   residual_forward:    0 out [n] (write)      1 a [n] (read)   2 b [n] (read)   3 sizes
//   residual_backward:   0 da [n] (+= dout)     1 db [n] (+= dout)  2 dout [n] (read)  3 sizes
//   residual_accumulate: 0 dst [n] (+= factor * src)   1 src [n] (read)   2 sizes
//   residual_scale:      0 dst [n] (*= factor)  1 sizes
// Each binding may be a window of a larger buffer: element i of binding k lives at index
// i + sizes.shift[k] of it, so one dispatch covers a range that fits in one binding.

struct Sizes {
  n: u32,
  shift0: u32,
  shift1: u32,
  shift2: u32,
  factor: f32,
}

override WG: u32 = 256;

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<uniform> sizes: Sizes;

@group(0) @binding(1) var<storage, read_write> db: array<f32>;
@group(0) @binding(2) var<storage, read> dout: array<f32>;

@group(0) @binding(2) var<uniform> sizes2: Sizes;

@group(0) @binding(1) var<uniform> sizes1: Sizes;

// Big launches wrap into y: the linear index of one invocation across a 2-D grid.
fn linear(gid: vec3u, groups: vec3u) -> u32 {
  return gid.x + gid.y * groups.x * WG;
}

@compute @workgroup_size(WG)
fn residual_forward(@builtin(global_invocation_id) gid: vec3u,
                    @builtin(num_workgroups) groups: vec3u) {
  let i = linear(gid, groups);
  if (i >= sizes.n) { return; }
  out[i + sizes.shift0] = a[i + sizes.shift1] + b[i + sizes.shift2];
}

@compute @workgroup_size(WG)
fn residual_backward(@builtin(global_invocation_id) gid: vec3u,
                     @builtin(num_workgroups) groups: vec3u) {
  let i = linear(gid, groups);
  if (i >= sizes.n) { return; }
  let g = dout[i + sizes.shift2];
  out[i + sizes.shift0] += g;
  db[i + sizes.shift1] += g;
}

@compute @workgroup_size(WG)
fn residual_accumulate(@builtin(global_invocation_id) gid: vec3u,
                       @builtin(num_workgroups) groups: vec3u) {
  let i = linear(gid, groups);
  if (i >= sizes2.n) { return; }
  out[i + sizes2.shift0] += sizes2.factor * a[i + sizes2.shift1];
}

@compute @workgroup_size(WG)
fn residual_scale(@builtin(global_invocation_id) gid: vec3u,
                  @builtin(num_workgroups) groups: vec3u) {
  let i = linear(gid, groups);
  if (i >= sizes1.n) { return; }
  out[i + sizes1.shift0] *= sizes1.factor;
}
