// NOLA factor combination and coefficient gradients, regenerating every basis element where it
// is used (spec v1): no kernel here ever reads or writes a count x rows x cols basis tensor.
// Prepend kernels/philox.wgsl.
//
// n = params.n = rows * cols elements of one factor matrix (A: r x in, B: out x r), row-major;
// basis_i[e] = basis_uniform(key, factor, first + i, e, scale). All f32 unless noted.
//
// nola_forward (combine), one invocation per (chunk, counter block of 4 elements):
//   0 out  [chunks, n] (write)  chunks == 1: the factor itself,
//                                  out[e] = a0[e] + sum_{i<count} coeffs[i] * basis_i[e];
//                               chunks > 1: partial sums without a0, chunk c covering
//                                  i in [c * chunk, min((c + 1) * chunk, count))
//   1 coeffs [count] (read)
//   2 params
// nola_forward_reduce, one invocation per counter block: the second, fixed-order pass
//   0 out  [n] (write)          out[e] = a0[e] + sum_{c<chunks} partial[c, e]
//   1 partial [chunks, n] (read)
//   2 params
// nola_backward (gradient), one workgroup per basis index:
//   0 dcoeffs [count] (+=)      dcoeffs[i] += sum_e grad[e] * basis_i[e]
//   1 grad [n] (read)
//   2 params
// a0[e] = basis_uniform(key, BASIS_FACTOR_A0, 0, e, a0_scale) when has_a0, else 0.
// Each binding may be a window of a larger buffer: element i of binding 0 lives at
// i + params.shift0, of binding 1 at i + params.shift1.

struct Params {
  key: vec2u,
  factor: u32,
  // Number of coefficients (bases).
  count: u32,
  // Elements of one factor matrix.
  n: u32,
  scale: f32,
  a0_scale: f32,
  has_a0: u32,
  // Bases per chunk and number of chunks (nola_forward, nola_forward_reduce).
  chunk: u32,
  chunks: u32,
  shift0: u32,
  shift1: u32,
}

// A power of two: nola_backward halves it in its tree reduction.
override WG: u32 = 64;

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> coeffs: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

@group(0) @binding(1) var<storage, read> partial_sums: array<f32>;
@group(0) @binding(1) var<storage, read> grad: array<f32>;

// The A0 values of one counter block, or zeros when the factor has no A0 term.
fn a0_block(block: u32) -> vec4f {
  if (params.has_a0 == 0u) {
    return vec4f(0.0);
  }
  let words = philox4x32_10(vec4u(block, 0u, BASIS_FACTOR_A0, 0u), params.key);
  return basis_uniform4(words, params.a0_scale);
}

fn store_block(base: u32, block: u32, values: vec4f) {
  let first = block * 4u;
  for (var lane = 0u; lane < 4u; lane++) {
    if (first + lane < params.n) {
      out[params.shift0 + base + first + lane] = values[lane];
    }
  }
}

@compute @workgroup_size(WG)
fn nola_forward(
  @builtin(global_invocation_id) gid: vec3u,
  @builtin(num_workgroups) groups: vec3u,
) {
  // Large launches spill into a second grid dimension past 65535 workgroups.
  let id = gid.x + gid.y * groups.x * WG;
  let blocks = (params.n + 3u) / 4u;
  if (id >= blocks * params.chunks) {
    return;
  }
  let c = id / blocks;
  let block = id - c * blocks;
  let begin = c * params.chunk;
  let end = min(begin + params.chunk, params.count);
  // One Philox call yields the four elements of this block for one basis.
  var acc = vec4f(0.0);
  if (params.chunks == 1u) {
    acc = a0_block(block);
  }
  for (var i = begin; i < end; i++) {
    let words = philox4x32_10(vec4u(block, i, params.factor, 0u), params.key);
    acc += coeffs[params.shift1 + i] * basis_uniform4(words, params.scale);
  }
  store_block(c * params.n, block, acc);
}

@compute @workgroup_size(WG)
fn nola_forward_reduce(
  @builtin(global_invocation_id) gid: vec3u,
  @builtin(num_workgroups) groups: vec3u,
) {
  let block = gid.x + gid.y * groups.x * WG;
  if (block >= (params.n + 3u) / 4u) {
    return;
  }
  var acc = a0_block(block);
  let first = block * 4u;
  for (var c = 0u; c < params.chunks; c++) {
    let base = params.shift1 + c * params.n + first;
    for (var lane = 0u; lane < 4u; lane++) {
      if (first + lane < params.n) {
        acc[lane] += partial_sums[base + lane];
      }
    }
  }
  store_block(0u, block, acc);
}

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn nola_backward(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) groups: vec3u,
) {
  // Workgroup-uniform, so every invocation reaches the barriers or none does.
  let i = wid.x + wid.y * groups.x;
  if (i >= params.count) {
    return;
  }
  let blocks = (params.n + 3u) / 4u;
  var acc = 0.0;
  for (var block = lid; block < blocks; block += WG) {
    let words = philox4x32_10(vec4u(block, i, params.factor, 0u), params.key);
    let values = basis_uniform4(words, params.scale);
    let first = block * 4u;
    for (var lane = 0u; lane < 4u; lane++) {
      if (first + lane < params.n) {
        acc += grad[params.shift1 + first + lane] * values[lane];
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
    out[params.shift0 + i] += partial[0];
  }
}
