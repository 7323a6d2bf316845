// Global gradient norm over a list of gradient tensors, and the gradient scale that clips it
// (torch.nn.utils.clip_grad_norm_ semantics), without leaving the GPU. Deterministic: every sum
// runs in a fixed order (no atomics), so the same gradients give the same bits.
//
// Non-finite values are found from their bits, not with x != x (WGSL lets a compiler assume no
// NaN or infinity), and carried as bit patterns through u32 storage so no float store may
// canonicalise them.
//
// gradnorm_forward (pass 1, one workgroup per chunk of one gradient tensor):
//   0 partial  u32[parts]  write  partial[out_offset + w] = bits of the chunk's sum of squares,
//                                  or of NaN / +Inf when the chunk holds a NaN / an infinity
//   1 grad     f32[n]      read   a window: element e at index e + sizes.shift
//   2 sizes    uniform PartSizes
// gradnorm_finish (pass 2, one workgroup):
//   0 norm     u32[1]      write  bits of sqrt(sum of partials): NaN if any gradient is NaN, else
//                                  +Inf if any is infinite or the sum overflows
//   1 scale    u32[1]      write  bits of base * min(1, max_norm / (norm * base + 1e-6)) when
//                                  clipping, base when not, NaN when the norm is not finite
//   2 partial  u32[parts]  read
//   3 sizes    uniform FinishSizes

struct PartSizes {
  n: u32,
  shift: u32,
  chunk: u32,
  out_offset: u32,
}

struct FinishSizes {
  parts: u32,
  clip: u32,
  max_norm: f32,
  base_scale: f32,
}

const NAN_BITS: u32 = 0x7fc00000u;
const INF_BITS: u32 = 0x7f800000u;
const EXP_MASK: u32 = 0x7f800000u;
const FLAG_INF: u32 = 1u;
const FLAG_NAN: u32 = 2u;

override WG: u32 = 256;

@group(0) @binding(0) var<storage, read_write> partial: array<u32>;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<uniform> part_sizes: PartSizes;

@group(0) @binding(0) var<storage, read_write> norm_out: array<u32>;
@group(0) @binding(1) var<storage, read_write> scale_out: array<u32>;
@group(0) @binding(2) var<storage, read> partial_in: array<u32>;
@group(0) @binding(3) var<uniform> finish_sizes: FinishSizes;

var<workgroup> red_sum: array<f32, WG>;
var<workgroup> red_flag: array<u32, WG>;

fn flag_of(bits: u32) -> u32 {
  if ((bits & EXP_MASK) != EXP_MASK) { return 0u; }
  if ((bits & 0x007fffffu) != 0u) { return FLAG_NAN; }
  return FLAG_INF;
}

// Tree reduction in a fixed order; every invocation of the workgroup must call it.
fn reduce(lid: u32, sum: f32, flag: u32) -> vec2u {
  red_sum[lid] = sum;
  red_flag[lid] = flag;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) {
      red_sum[lid] += red_sum[lid + stride];
      red_flag[lid] |= red_flag[lid + stride];
    }
    workgroupBarrier();
  }
  return vec2u(bitcast<u32>(red_sum[0]), red_flag[0]);
}

// An overflowed sum is an infinity like any other.
fn bits_with_flags(sum_bits: u32, flag: u32) -> u32 {
  let f = flag | flag_of(sum_bits);
  if ((f & FLAG_NAN) != 0u) { return NAN_BITS; }
  if ((f & FLAG_INF) != 0u) { return INF_BITS; }
  return sum_bits;
}

@compute @workgroup_size(WG)
fn gradnorm_forward(@builtin(local_invocation_index) lid: u32,
                    @builtin(workgroup_id) wid: vec3u,
                    @builtin(num_workgroups) groups: vec3u) {
  let w = wid.x + wid.y * groups.x;
  let begin = w * part_sizes.chunk;
  // Uniform per workgroup, so the barriers below stay in uniform control flow.
  let end = min(begin + part_sizes.chunk, part_sizes.n);
  var sum = 0.0;
  var flag = 0u;
  for (var e = begin + lid; e < end; e += WG) {
    let g = grad[e + part_sizes.shift];
    flag |= flag_of(bitcast<u32>(g));
    sum += g * g;
  }
  let r = reduce(lid, sum, flag);
  if (lid == 0u && begin < part_sizes.n) {
    partial[part_sizes.out_offset + w] = bits_with_flags(r.x, r.y);
  }
}

@compute @workgroup_size(WG)
fn gradnorm_finish(@builtin(local_invocation_index) lid: u32) {
  var sum = 0.0;
  var flag = 0u;
  for (var p = lid; p < finish_sizes.parts; p += WG) {
    let bits = partial_in[p];
    flag |= flag_of(bits);
    if (flag_of(bits) == 0u) { sum += bitcast<f32>(bits); }
  }
  let r = reduce(lid, sum, flag);
  if (lid != 0u) { return; }
  let sum_bits = bits_with_flags(r.x, r.y);
  if (flag_of(sum_bits) != 0u) {
    norm_out[0] = sum_bits;
    scale_out[0] = NAN_BITS;
    return;
  }
  let norm = sqrt(bitcast<f32>(sum_bits));
  norm_out[0] = bitcast<u32>(norm);
  let base = finish_sizes.base_scale;
  var scale = base;
  if (finish_sizes.clip != 0u) {
    scale = base * min(1.0, finish_sizes.max_norm / (norm * base + 1e-6));
  }
  scale_out[0] = bitcast<u32>(scale);
}
