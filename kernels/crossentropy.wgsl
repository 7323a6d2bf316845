// Fused softmax + cross-entropy with label smoothing, the language-model loss (llm.c style: the
// logits gradient overwrites the logits in place). One workgroup per row; WG a power of two.
//
// For row r with logits x [V], target t, weight w, smoothing eps, lse = log(sum_v exp(x_v)):
//   loss_r  = (1 - eps) * (lse - x_t) + eps * (lse - mean_v x_v)     (PyTorch's label_smoothing)
//   dx_v    = w * (softmax(x)_v - (1 - eps) * [v == t] - eps / V)
//
// Bindings (group 0), rows = sizes.rows of this window:
//   0 losses  [rows] f32 (write; the unweighted loss of every row, at r + sizes.shift_losses)
//   1 logits  [rows, stride] f32, V valid columns a row (read; crossentropy_backward overwrites
//             them with the gradient; columns V .. stride-1 are left alone)
//   2 targets [rows] u32 (read; a target >= V gives a NaN loss)
//   3 weights [rows] f32 (read; crossentropy_backward only, 0 masks a row)
//   4 sizes
// crossentropy_forward computes the losses only and leaves the logits untouched.

struct Sizes {
  rows: u32,
  vocab: u32,
  shift_logits: u32,
  shift_losses: u32,
  shift_targets: u32,
  shift_weights: u32,
  eps: f32,
  // Elements from one row to the next (>= vocab: rows may be padded for aligned loads).
  stride: u32,
}

override WG: u32 = 256;

@group(0) @binding(0) var<storage, read_write> losses: array<f32>;
@group(0) @binding(1) var<storage, read_write> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
@group(0) @binding(3) var<storage, read> weights: array<f32>;
@group(0) @binding(4) var<uniform> sizes: Sizes;

var<workgroup> red_a: array<f32, WG>;
var<workgroup> red_b: array<f32, WG>;

fn reduce_max(lid: u32, value: f32) -> f32 {
  red_a[lid] = value;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) { red_a[lid] = max(red_a[lid], red_a[lid + stride]); }
    workgroupBarrier();
  }
  let result = red_a[0];
  workgroupBarrier();
  return result;
}

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

fn row_loss(row: u32, lid: u32, grad: bool) {
  let vocab = sizes.vocab;
  let base = sizes.shift_logits + row * sizes.stride;
  let tgt = targets[row + sizes.shift_targets];
  var x_target = 0.0;
  if (tgt < vocab) { x_target = logits[base + tgt]; }

  var local_max = -3.4028234663852886e38;
  for (var v = lid; v < vocab; v += WG) { local_max = max(local_max, logits[base + v]); }
  // Every read of x_t is done once this barrier passes, before any gradient is written.
  let m = reduce_max(lid, local_max);

  var local_exp = 0.0;
  var local_sum = 0.0;
  for (var v = lid; v < vocab; v += WG) {
    let x = logits[base + v];
    local_exp += exp(x - m);
    local_sum += x - m;
  }
  let sums = reduce_sum2(lid, local_exp, local_sum);
  let eps = sizes.eps;

  if (lid == 0u) {
    // Relative to the max, so that logits far from zero lose no digits to lse's magnitude.
    let log_sum = log(sums.x);
    let nll = log_sum - (x_target - m);
    let mean_nll = log_sum - sums.y / f32(vocab);
    var loss = (1.0 - eps) * nll + eps * mean_nll;
    if (tgt >= vocab) { loss = bitcast<f32>(0x7fc00000u); }
    losses[row + sizes.shift_losses] = loss;
  }
  if (!grad) { return; }
  let w = weights[row + sizes.shift_weights];
  let inv_sum = 1.0 / sums.x;
  let uniform_q = eps / f32(vocab);
  for (var v = lid; v < vocab; v += WG) {
    let p = exp(logits[base + v] - m) * inv_sum;
    var q = uniform_q;
    if (v == tgt) { q += 1.0 - eps; }
    logits[base + v] = w * (p - q);
  }
}

@compute @workgroup_size(WG)
fn crossentropy_forward(@builtin(workgroup_id) wid: vec3u,
                        @builtin(num_workgroups) groups: vec3u,
                        @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * groups.x;
  if (row >= sizes.rows) { return; }
  row_loss(row, lid, false);
}

@compute @workgroup_size(WG)
fn crossentropy_backward(@builtin(workgroup_id) wid: vec3u,
                         @builtin(num_workgroups) groups: vec3u,
                         @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * groups.x;
  if (row >= sizes.rows) { return; }
  row_loss(row, lid, true);
}
