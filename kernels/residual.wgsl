// The residual connection of GPT-2's blocks: out = a + b.
//
// Bindings (group 0); n = sizes.n elements, all f32:
//   residual_forward:    0 out [n] (write)      1 a [n] (read)   2 b [n] (read)   3 sizes
// Each binding may be a window of a larger buffer: element i of binding k lives at index
// i + sizes.shift[k] of it, so one dispatch covers a range that fits in one binding.

struct Sizes {
  n: u32,
  shift0: u32,
  shift1: u32,
  shift2: u32,
}

override WG: u32 = 256;

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<uniform> sizes: Sizes;

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
