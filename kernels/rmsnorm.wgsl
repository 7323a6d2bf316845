// RMS normalization over the last dimension C of row-major [rows, C] activations (rows = B*T), as
// Hugging Face's LlamaRMSNorm computes it in f32:
//   out = weight * (x * rstd),   rstd = inverseSqrt(mean(x^2) + eps)
// Row bindings may be windows of larger buffers: row r, channel c of a binding lives at
// r * C + c + sizes.shift_<binding>.
//
// rmsnorm_forward (one workgroup per row):
//   0 out [rows, C] f32 (write)  1 rstd [rows] f32 (write)  2 inp [rows, C] f32  3 weight [C] f32
//   4 sizes
// rmsnorm_backward (one workgroup per row):
//   0 dinp [rows, C] f32 (+=)  1 inp [rows, C]  2 weight [C]  3 rstd [rows]  4 dout [rows, C]
//   5 sizes
// rmsnorm_backward_params (pass 1, one invocation per (channel, chunk of rows)):
//   0 partial [chunks, C] f32 (write: sum of dout * x * rstd over the chunk)
//   1 inp [rows, C]  2 rstd [rows]  3 dout [rows, C]  4 sizes
// rmsnorm_backward_finish (pass 2, one invocation per channel, chunks summed in order):
//   0 dweight [C] f32 (+=)  1 partial [chunks, C]  2 sizes

struct Sizes {
  rows: u32,
  channels: u32,
  chunk_rows: u32,
  chunks: u32,
  shift_inp: u32,
  shift_out: u32,
  shift_rstd: u32,
  shift_dout: u32,
  eps: f32,
}

override WG: u32 = 128;

// rmsnorm_forward
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read_write> rstd_out: array<f32>;
@group(0) @binding(2) var<storage, read> f_inp: array<f32>;
@group(0) @binding(3) var<storage, read> f_weight: array<f32>;
@group(0) @binding(4) var<uniform> sizes4: Sizes;

// rmsnorm_backward
@group(0) @binding(1) var<storage, read> b_inp: array<f32>;
@group(0) @binding(2) var<storage, read> b_weight: array<f32>;
@group(0) @binding(3) var<storage, read> b_rstd: array<f32>;
@group(0) @binding(4) var<storage, read> b_dout: array<f32>;
@group(0) @binding(5) var<uniform> sizes5: Sizes;

// rmsnorm_backward_params
@group(0) @binding(1) var<storage, read> p_inp: array<f32>;
@group(0) @binding(2) var<storage, read> p_rstd: array<f32>;
@group(0) @binding(3) var<storage, read> p_dout: array<f32>;

// rmsnorm_backward_finish
@group(0) @binding(1) var<storage, read> partial: array<f32>;
@group(0) @binding(2) var<uniform> sizes2: Sizes;

var<workgroup> red: array<f32, WG>;

fn reduce_sum(lid: u32, a: f32) -> f32 {
  red[lid] = a;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) {
      red[lid] += red[lid + stride];
    }
    workgroupBarrier();
  }
  let result = red[0];
  workgroupBarrier();
  return result;
}

@compute @workgroup_size(WG)
fn rmsnorm_forward(@builtin(workgroup_id) wid: vec3u,
                   @builtin(num_workgroups) groups: vec3u,
                   @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * groups.x;
  if (row >= sizes4.rows) { return; }
  let c = sizes4.channels;
  let x0 = row * c + sizes4.shift_inp;
  var sq = 0.0;
  for (var i = lid; i < c; i += WG) {
    let x = f_inp[x0 + i];
    sq += x * x;
  }
  let rstd = inverseSqrt(reduce_sum(lid, sq) / f32(c) + sizes4.eps);
  let y0 = row * c + sizes4.shift_out;
  for (var i = lid; i < c; i += WG) {
    // HF's order: normalize, then scale by the weight.
    out[y0 + i] = f_weight[i] * (f_inp[x0 + i] * rstd);
  }
  if (lid == 0u) {
    rstd_out[row + sizes4.shift_rstd] = rstd;
  }
}

@compute @workgroup_size(WG)
fn rmsnorm_backward(@builtin(workgroup_id) wid: vec3u,
                    @builtin(num_workgroups) groups: vec3u,
                    @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * groups.x;
  if (row >= sizes5.rows) { return; }
  let c = sizes5.channels;
  let x0 = row * c + sizes5.shift_inp;
  let g0 = row * c + sizes5.shift_dout;
  let rstd = b_rstd[row + sizes5.shift_rstd];
  var dnorm_norm_sum = 0.0;
  for (var i = lid; i < c; i += WG) {
    dnorm_norm_sum += b_weight[i] * b_dout[g0 + i] * b_inp[x0 + i] * rstd;
  }
  let mean_dn = reduce_sum(lid, dnorm_norm_sum) / f32(c);
  let y0 = row * c + sizes5.shift_out;
  for (var i = lid; i < c; i += WG) {
    let norm = b_inp[x0 + i] * rstd;
    out[y0 + i] += (b_weight[i] * b_dout[g0 + i] - norm * mean_dn) * rstd;
  }
}

@compute @workgroup_size(WG)
fn rmsnorm_backward_params(@builtin(global_invocation_id) gid: vec3u) {
  let n = gid.x;
  let chunk = gid.y;
  let c = sizes4.channels;
  if (n >= c || chunk >= sizes4.chunks) { return; }
  let begin = chunk * sizes4.chunk_rows;
  let end = min(begin + sizes4.chunk_rows, sizes4.rows);
  var dw = 0.0;
  for (var m = begin; m < end; m++) {
    let norm = p_inp[m * c + n + sizes4.shift_inp] * p_rstd[m + sizes4.shift_rstd];
    dw += p_dout[m * c + n + sizes4.shift_dout] * norm;
  }
  out[chunk * c + n] = dw;
}

@compute @workgroup_size(WG)
fn rmsnorm_backward_finish(@builtin(global_invocation_id) gid: vec3u) {
  let n = gid.x;
  let c = sizes2.channels;
  if (n >= c) { return; }
  var dw = 0.0;
  for (var chunk = 0u; chunk < sizes2.chunks; chunk++) {
    dw += partial[chunk * c + n];
  }
  out[n] += dw;
}
