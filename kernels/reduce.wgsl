// Column sums of a row-major matrix: the bias gradient of a linear layer,
// dbias[n] += sum_m dout[m, n]. Deterministic: a fixed order, no atomics.
//
// reduce_backward (pass 1, one invocation per (column, chunk of rows)):
//   0 partial [chunks, N] f32 (write): partial[c, n] = sum of dout rows c*R .. c*R+R-1
//   1 dout    [M, N] f32 (read): a window of the rows; row m at index m * N + n + sizes.shift
//   2 sizes
// reduce_backward_finish (pass 2, one invocation per column):
//   0 dbias   [N] f32 (+= sum over c of partial[c, n], in order of c)
//   1 partial [chunks, N] f32 (read)
//   2 sizes

struct Sizes {
  rows: u32,
  cols: u32,
  chunk_rows: u32,
  chunks: u32,
  shift: u32,
}

override WG: u32 = 64;

@group(0) @binding(0) var<storage, read_write> partial: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<uniform> sizes: Sizes;

@group(0) @binding(0) var<storage, read_write> dbias: array<f32>;
@group(0) @binding(1) var<storage, read> partial_in: array<f32>;

@compute @workgroup_size(WG)
fn reduce_backward(@builtin(global_invocation_id) gid: vec3u) {
  let n = gid.x;
  let c = gid.y;
  if (n >= sizes.cols || c >= sizes.chunks) { return; }
  let begin = c * sizes.chunk_rows;
  let end = min(begin + sizes.chunk_rows, sizes.rows);
  var sum = 0.0;
  for (var m = begin; m < end; m++) {
    sum += dout[m * sizes.cols + n + sizes.shift];
  }
  partial[c * sizes.cols + n] = sum;
}

@compute @workgroup_size(WG)
fn reduce_backward_finish(@builtin(global_invocation_id) gid: vec3u) {
  let n = gid.x;
  if (n >= sizes.cols) { return; }
  var sum = 0.0;
  for (var c = 0u; c < sizes.chunks; c++) {
    sum += partial_in[c * sizes.cols + n];
  }
  dbias[n] += sum;
}
