// Layer normalization over the last dimension C of row-major [rows, C] activations (rows = B*T):
//   out = (x - mean) * rstd * weight + bias,   rstd = 1 / sqrt(var + eps) (biased variance)
// Row bindings may be windows of larger buffers: row r, channel c of a binding lives at
// r * C + c + sizes.shift_<binding>.
//
// layernorm_forward (one workgroup per row):
//   0 out [rows, C] f32 (write)  1 mean [rows] f32 (write)  2 rstd [rows] f32 (write)
//   3 inp [rows, C] f32  4 weight [C] f32  5 bias [C] f32  6 sizes
// layernorm_backward (one workgroup per row):
//   0 dinp [rows, C] f32 (+=)  1 inp [rows, C]  2 weight [C]  3 mean [rows]  4 rstd [rows]
//   5 dout [rows, C]  6 sizes
// layernorm_backward_params (pass 1, one invocation per (channel, chunk of rows)):
//   0 partial [chunks, 2, C] f32 (write: sum of dout * norm, then sum of dout, over the chunk)
//   1 inp [rows, C]  2 mean [rows]  3 rstd [rows]  4 dout [rows, C]  5 sizes
// layernorm_backward_finish (pass 2, one invocation per channel, chunks summed in order):
//   0 dweight [C] f32 (+=)  1 dbias [C] f32 (+=)  2 partial [chunks, 2, C]  3 sizes

struct Sizes {
  rows: u32,
  channels: u32,
  chunk_rows: u32,
  chunks: u32,
  shift_inp: u32,
  shift_out: u32,
  shift_mean: u32,
  shift_rstd: u32,
  shift_dout: u32,
  eps: f32,
}

override WG: u32 = 128;

// layernorm_forward
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read_write> mean_out: array<f32>;
@group(0) @binding(2) var<storage, read_write> rstd_out: array<f32>;
@group(0) @binding(3) var<storage, read> f_inp: array<f32>;
@group(0) @binding(4) var<storage, read> f_weight: array<f32>;
@group(0) @binding(5) var<storage, read> f_bias: array<f32>;
@group(0) @binding(6) var<uniform> sizes6: Sizes;

// layernorm_backward
@group(0) @binding(1) var<storage, read> b_inp: array<f32>;
@group(0) @binding(2) var<storage, read> b_weight: array<f32>;
@group(0) @binding(3) var<storage, read> b_mean: array<f32>;
@group(0) @binding(4) var<storage, read> b_rstd: array<f32>;
@group(0) @binding(5) var<storage, read> b_dout: array<f32>;

// layernorm_backward_params
@group(0) @binding(1) var<storage, read> p_inp: array<f32>;
@group(0) @binding(2) var<storage, read> p_mean: array<f32>;
@group(0) @binding(3) var<storage, read> p_rstd: array<f32>;
@group(0) @binding(4) var<storage, read> p_dout: array<f32>;
@group(0) @binding(5) var<uniform> sizes5: Sizes;

// layernorm_backward_finish
@group(0) @binding(1) var<storage, read_write> dbias: array<f32>;
@group(0) @binding(2) var<storage, read> partial: array<f32>;
@group(0) @binding(3) var<uniform> sizes3: Sizes;

var<workgroup> red_a: array<f32, WG>;
var<workgroup> red_b: array<f32, WG>;

fn reduce_sum2(lid: u32, a: f32, b: f32) -> vec2f {
  red_a[lid] = a;
  red_b[lid] = b;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) {
      red_a[lid] += red_a[lid + stride];
      red_b[lid] += red_b[lid + stride];
    }
    workgroupBarrier();
  }
  let result = vec2f(red_a[0], red_b[0]);
  workgroupBarrier();
  return result;
}

@compute @workgroup_size(WG)
fn layernorm_forward(@builtin(workgroup_id) wid: vec3u,
                     @builtin(num_workgroups) groups: vec3u,
                     @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * groups.x;
  if (row >= sizes6.rows) { return; }
  let c = sizes6.channels;
  let x0 = row * c + sizes6.shift_inp;
  var sum = 0.0;
  for (var i = lid; i < c; i += WG) { sum += f_inp[x0 + i]; }
  let mean = reduce_sum2(lid, sum, 0.0).x / f32(c);
  // Two passes over the row: the variance of centred values, free of cancellation.
  var sq = 0.0;
  for (var i = lid; i < c; i += WG) {
    let d = f_inp[x0 + i] - mean;
    sq += d * d;
  }
  let rstd = 1.0 / sqrt(reduce_sum2(lid, sq, 0.0).x / f32(c) + sizes6.eps);
  let y0 = row * c + sizes6.shift_out;
  for (var i = lid; i < c; i += WG) {
    out[y0 + i] = (f_inp[x0 + i] - mean) * rstd * f_weight[i] + f_bias[i];
  }
  if (lid == 0u) {
    mean_out[row + sizes6.shift_mean] = mean;
    rstd_out[row + sizes6.shift_rstd] = rstd;
  }
}

@compute @workgroup_size(WG)
fn layernorm_backward(@builtin(workgroup_id) wid: vec3u,
                      @builtin(num_workgroups) groups: vec3u,
                      @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * groups.x;
  if (row >= sizes6.rows) { return; }
  let c = sizes6.channels;
  let x0 = row * c + sizes6.shift_inp;
  let g0 = row * c + sizes6.shift_dout;
  let mean = b_mean[row + sizes6.shift_mean];
  let rstd = b_rstd[row + sizes6.shift_rstd];
  var dnorm_sum = 0.0;
  var dnorm_norm_sum = 0.0;
  for (var i = lid; i < c; i += WG) {
    let norm = (b_inp[x0 + i] - mean) * rstd;
    let dnorm = b_weight[i] * b_dout[g0 + i];
    dnorm_sum += dnorm;
    dnorm_norm_sum += dnorm * norm;
  }
  let sums = reduce_sum2(lid, dnorm_sum, dnorm_norm_sum) / f32(c);
  let y0 = row * c + sizes6.shift_out;
  for (var i = lid; i < c; i += WG) {
    let norm = (b_inp[x0 + i] - mean) * rstd;
    let dnorm = b_weight[i] * b_dout[g0 + i];
    out[y0 + i] += (dnorm - sums.x - norm * sums.y) * rstd;
  }
}

@compute @workgroup_size(WG)
fn layernorm_backward_params(@builtin(global_invocation_id) gid: vec3u) {
  let n = gid.x;
  let chunk = gid.y;
  let c = sizes5.channels;
  if (n >= c || chunk >= sizes5.chunks) { return; }
  let begin = chunk * sizes5.chunk_rows;
  let end = min(begin + sizes5.chunk_rows, sizes5.rows);
  var dw = 0.0;
  var db = 0.0;
  for (var m = begin; m < end; m++) {
    let g = p_dout[m * c + n + sizes5.shift_dout];
    let norm = (p_inp[m * c + n + sizes5.shift_inp] - p_mean[m + sizes5.shift_mean]) *
      p_rstd[m + sizes5.shift_rstd];
    dw += g * norm;
    db += g;
  }
  out[chunk * 2u * c + n] = dw;
  out[chunk * 2u * c + c + n] = db;
}

@compute @workgroup_size(WG)
fn layernorm_backward_finish(@builtin(global_invocation_id) gid: vec3u) {
  let n = gid.x;
  let c = sizes3.channels;
  if (n >= c) { return; }
  var dw = 0.0;
  var db = 0.0;
  for (var chunk = 0u; chunk < sizes3.chunks; chunk++) {
    dw += partial[chunk * 2u * c + n];
    db += partial[chunk * 2u * c + c + n];
  }
  out[n] += dw;
  dbias[n] += db;
}
