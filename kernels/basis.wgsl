// Basis matrices of NOLA spec v1, generated on the GPU. Prepend kernels/philox.wgsl.
//
// basis_forward  out: (n) f32, element e of basis `index` of `factor` (row-major rows x cols).
// basis_sums     out: (count, 2) f32, for basis index + b: (sum of its n elements, sum of their
//                squares). Reduces in place so that generation, not memory, is what it measures.
//
// One thread makes one counter block (four elements) per Philox call.

@group(0) @binding(0) var<storage, read_write> out: array<f32>;

struct Params {
  key: vec2u,
  factor: u32,
  // First basis index (basis_sums: of the range).
  index: u32,
  // Elements of one basis matrix.
  n: u32,
  scale: f32,
  // 0 = uniform, 1 = normal.
  normal: u32,
  // basis_sums: number of bases in the range.
  count: u32,
}
@group(0) @binding(1) var<uniform> params: Params;

override WG: u32 = 64;

fn basis_block(index: u32, block: u32) -> vec4f {
  let words = philox4x32_10(vec4u(block, index, params.factor, 0u), params.key);
  if (params.normal != 0u) {
    return basis_normal4(words, params.scale);
  }
  return basis_uniform4(words, params.scale);
}

@compute @workgroup_size(WG)
fn basis_forward(
  @builtin(global_invocation_id) gid: vec3u,
  @builtin(num_workgroups) groups: vec3u,
) {
  // Large matrices spill into a second grid dimension past 65535 workgroups.
  let block = gid.x + gid.y * groups.x * WG;
  let first = block * 4u;
  if (block >= (params.n + 3u) / 4u) {
    return;
  }
  let values = basis_block(params.index, block);
  for (var lane = 0u; lane < 4u; lane++) {
    if (first + lane < params.n) {
      out[first + lane] = values[lane];
    }
  }
}

var<workgroup> partial: array<vec2f, WG>;

@compute @workgroup_size(WG)
fn basis_sums(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) groups: vec3u,
) {
  // One workgroup per basis; workgroup-uniform, so every thread reaches the barriers or none.
  let b = wid.x + wid.y * groups.x;
  if (b >= params.count) {
    return;
  }
  let blocks = (params.n + 3u) / 4u;
  var acc = vec2f(0.0);
  for (var block = lid; block < blocks; block += WG) {
    let values = basis_block(params.index + b, block);
    for (var lane = 0u; lane < 4u; lane++) {
      if (block * 4u + lane < params.n) {
        acc += vec2f(values[lane], values[lane] * values[lane]);
      }
    }
  }
  partial[lid] = acc;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) {
      partial[lid] += partial[lid + stride];
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    out[2u * b] = partial[0].x;
    out[2u * b + 1u] = partial[0].y;
  }
}
