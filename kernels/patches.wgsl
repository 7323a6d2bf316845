// A vision transformer's token layout: images cut into patches (so the patch embedding's
// convolution, kernel = stride = P, is one matrix product), the class token prepended and the
// position embeddings added, and the class token's row of each example gathered for the head.
//
// Sizes: B images of C channels, H x W pixels, P x P patches, gh = H / P rows and gw = W / P
// columns of them (floor: the convolution drops a remainder), N = gh * gw patches, T = N + 1
// tokens of D features. Each binding may be a window of a larger buffer: element i of binding k
// lives at index i + sizes.s<k> of it.
//
// unfold_forward: row b * N + n of out is patch n (row-major over the gh x gw grid) of image b,
// its C * P * P values in the order of a conv weight [D, C, P, P] (channel, then row, column):
//   0 out [B * N, C * P * P] (write)   1 inp [B, C, H, W] (read)   2 sizes
// tokens_forward: out[b, 0] = cls + pos[0], out[b, 1 + n] = patches[b * N + n] + pos[1 + n]:
//   0 out [B, T, D] (write)   1 patches [B * N, D]   2 cls [D]   3 pos [T, D]   4 sizes
// tokens_backward: the patches' gradient, row b * N + n = dout[b, 1 + n]:
//   0 dpatches [B * N, D] (write)   1 dout [B, T, D]   2 sizes
// tokens_backward_params: dpos[t] += sum_b dout[b, t]; dcls += sum_b dout[b, 0]:
//   0 dpos [T, D] (+=)   1 dcls [D] (+=)   2 dout [B, T, D]   3 sizes
// class_rows_forward: out[b] = x[b, 0], the class token's row of each example:
//   0 out [B, D] (write)   1 x [B, T, D]   2 sizes
// class_rows_backward: dx[b, 0] += dout[b]; the other rows of dx are left alone:
//   0 dx [B, T, D] (+=)   1 dout [B, D]   2 sizes

struct Sizes {
  B: u32,
  C: u32,
  H: u32,
  W: u32,
  P: u32,
  gw: u32,
  N: u32,
  D: u32,
  total: u32,
  s0: u32,
  s1: u32,
  s2: u32,
  s3: u32,
}

override WG: u32 = 256;

fn linear(gid: vec3u, groups: vec3u) -> u32 {
  return gid.x + gid.y * groups.x * WG;
}

@group(0) @binding(0) var<storage, read_write> unfold_out: array<f32>;
@group(0) @binding(1) var<storage, read> unfold_inp: array<f32>;
@group(0) @binding(2) var<uniform> unfold_sizes: Sizes;

@compute @workgroup_size(WG)
fn unfold_forward(@builtin(global_invocation_id) gid: vec3u,
                  @builtin(num_workgroups) groups: vec3u) {
  let s = unfold_sizes;
  let e = linear(gid, groups);
  if (e >= s.total) { return; }
  let pp = s.P * s.P;
  let k = s.C * pp;
  let row = e / k;
  let col = e % k;
  let b = row / s.N;
  let n = row % s.N;
  let c = col / pp;
  let y = (n / s.gw) * s.P + (col % pp) / s.P;
  let x = (n % s.gw) * s.P + col % s.P;
  unfold_out[e + s.s0] = unfold_inp[((b * s.C + c) * s.H + y) * s.W + x + s.s1];
}

@group(0) @binding(0) var<storage, read_write> tok_out: array<f32>;
@group(0) @binding(1) var<storage, read> tok_patches: array<f32>;
@group(0) @binding(2) var<storage, read> tok_cls: array<f32>;
@group(0) @binding(3) var<storage, read> tok_pos: array<f32>;
@group(0) @binding(4) var<uniform> tok_sizes: Sizes;

@compute @workgroup_size(WG)
fn tokens_forward(@builtin(global_invocation_id) gid: vec3u,
                  @builtin(num_workgroups) groups: vec3u) {
  let s = tok_sizes;
  let e = linear(gid, groups);
  if (e >= s.total) { return; }
  let T = s.N + 1u;
  let d = e % s.D;
  let t = (e / s.D) % T;
  let b = e / (s.D * T);
  var v = tok_cls[d + s.s2];
  if (t > 0u) {
    v = tok_patches[(b * s.N + t - 1u) * s.D + d + s.s1];
  }
  tok_out[e + s.s0] = v + tok_pos[t * s.D + d + s.s3];
}

@group(0) @binding(0) var<storage, read_write> tokb_dpatches: array<f32>;
@group(0) @binding(1) var<storage, read> tokb_dout: array<f32>;
@group(0) @binding(2) var<uniform> tokb_sizes: Sizes;

@compute @workgroup_size(WG)
fn tokens_backward(@builtin(global_invocation_id) gid: vec3u,
                   @builtin(num_workgroups) groups: vec3u) {
  let s = tokb_sizes;
  let e = linear(gid, groups);
  if (e >= s.total) { return; }
  let d = e % s.D;
  let row = e / s.D;
  let b = row / s.N;
  let n = row % s.N;
  tokb_dpatches[e + s.s0] = tokb_dout[(b * (s.N + 1u) + 1u + n) * s.D + d + s.s1];
}

@group(0) @binding(0) var<storage, read_write> tokp_dpos: array<f32>;
@group(0) @binding(1) var<storage, read_write> tokp_dcls: array<f32>;
@group(0) @binding(2) var<storage, read> tokp_dout: array<f32>;
@group(0) @binding(3) var<uniform> tokp_sizes: Sizes;

// One invocation per element of pos: a column sum over the batch, in order.
@compute @workgroup_size(WG)
fn tokens_backward_params(@builtin(global_invocation_id) gid: vec3u,
                          @builtin(num_workgroups) groups: vec3u) {
  let s = tokp_sizes;
  let e = linear(gid, groups);
  if (e >= s.total) { return; }
  let TD = (s.N + 1u) * s.D;
  var sum = 0.0;
  for (var b = 0u; b < s.B; b++) {
    sum += tokp_dout[b * TD + e + s.s2];
  }
  tokp_dpos[e + s.s0] += sum;
  if (e < s.D) {
    tokp_dcls[e + s.s1] += sum;
  }
}

@group(0) @binding(0) var<storage, read_write> cls_out: array<f32>;
@group(0) @binding(1) var<storage, read> cls_x: array<f32>;
@group(0) @binding(2) var<uniform> cls_sizes: Sizes;

@compute @workgroup_size(WG)
fn class_rows_forward(@builtin(global_invocation_id) gid: vec3u,
                      @builtin(num_workgroups) groups: vec3u) {
  let s = cls_sizes;
  let e = linear(gid, groups);
  if (e >= s.total) { return; }
  let b = e / s.D;
  cls_out[e + s.s0] = cls_x[b * (s.N + 1u) * s.D + e % s.D + s.s1];
}

@group(0) @binding(0) var<storage, read_write> clsb_dx: array<f32>;
@group(0) @binding(1) var<storage, read> clsb_dout: array<f32>;
@group(0) @binding(2) var<uniform> clsb_sizes: Sizes;

@compute @workgroup_size(WG)
fn class_rows_backward(@builtin(global_invocation_id) gid: vec3u,
                       @builtin(num_workgroups) groups: vec3u) {
  let s = clsb_sizes;
  let e = linear(gid, groups);
  if (e >= s.total) { return; }
  let b = e / s.D;
  clsb_dx[b * (s.N + 1u) * s.D + e % s.D + s.s0] += clsb_dout[e + s.s1];
}
