// Running totals of the weighted loss over micro-batches, accumulated on the GPU so the trainer
// reads them only every few steps. One workgroup per micro-batch: per-invocation sums over a
// fixed stride, then a fixed tree (deterministic), then one exact fixed-point addition.
//
// The totals are signed 64-bit fixed-point numbers with 32 fractional bits (two u32 words, low
// first): adding to them is exact and order-free, so thousands of steps never drift the way an
// f32 running sum does, and no compiler reassociation can undo it (a Kahan sum's can).
//
// lossacc_forward:
//   0 acc      u32[8]  read_write  [loss lo, loss hi, weight lo, weight hi, tokens, micro-batches,
//                                   non-finite micro-batches, 0]; loss += sum_t w_t * loss_t,
//                                   weight += sum_t w_t, tokens += #{t : w_t != 0}
//   1 losses   f32[n]  read        element t at index t + sizes.shift_losses
//   2 weights  f32[n]  read        element t at index t + sizes.shift_weights; ignored (every
//                                   w_t = 1) when sizes.has_weights is 0
//   3 sizes    uniform Sizes
// Tokens with w_t = 0 are skipped, whatever their loss. A micro-batch whose sums are NaN,
// infinite, or of magnitude 2^31 or more adds nothing to the two sums and counts as non-finite.

struct Sizes {
  n: u32,
  shift_losses: u32,
  shift_weights: u32,
  has_weights: u32,
}

override WG: u32 = 256;

@group(0) @binding(0) var<storage, read_write> acc: array<u32>;
@group(0) @binding(1) var<storage, read> losses: array<f32>;
@group(0) @binding(2) var<storage, read> weights: array<f32>;
@group(0) @binding(3) var<uniform> sizes: Sizes;

var<workgroup> red_loss: array<f32, WG>;
var<workgroup> red_weight: array<f32, WG>;
var<workgroup> red_count: array<u32, WG>;

// Finite (from the bits: a compiler may assume floats are) and below 2^31 in magnitude.
fn representable(x: f32) -> bool {
  let bits = bitcast<u32>(x);
  return (bits & 0x7f800000u) != 0x7f800000u && abs(x) < 2147483648.0;
}

// The 32.32 fixed-point encoding of x (|x| < 2^31), as (lo, hi) in two's complement.
fn to_fixed(x: f32) -> vec2u {
  let a = abs(x);
  let whole = floor(a);
  // a - floor(a) is exact, and scaling by 2^32 is exact: only bits below 2^-32 are dropped.
  var lo = u32((a - whole) * 4294967296.0);
  var hi = u32(whole);
  if (x < 0.0) {
    lo = ~lo + 1u;
    hi = ~hi + select(0u, 1u, lo == 0u);
  }
  return vec2u(lo, hi);
}

fn add_fixed(at: u32, x: vec2u) {
  let lo = acc[at] + x.x;
  acc[at + 1u] = acc[at + 1u] + x.y + select(0u, 1u, lo < x.x);
  acc[at] = lo;
}

@compute @workgroup_size(WG)
fn lossacc_forward(@builtin(local_invocation_index) lid: u32) {
  var loss = 0.0;
  var weight = 0.0;
  var count = 0u;
  for (var t = lid; t < sizes.n; t += WG) {
    var w = 1.0;
    if (sizes.has_weights != 0u) { w = weights[t + sizes.shift_weights]; }
    if (w != 0.0) {
      loss += w * losses[t + sizes.shift_losses];
      weight += w;
      count += 1u;
    }
  }
  red_loss[lid] = loss;
  red_weight[lid] = weight;
  red_count[lid] = count;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) {
      red_loss[lid] += red_loss[lid + stride];
      red_weight[lid] += red_weight[lid + stride];
      red_count[lid] += red_count[lid + stride];
    }
    workgroupBarrier();
  }
  if (lid != 0u) { return; }
  let total_loss = red_loss[0];
  let total_weight = red_weight[0];
  acc[4] += red_count[0];
  acc[5] += 1u;
  if (representable(total_loss) && representable(total_weight)) {
    add_fixed(0u, to_fixed(total_loss));
    add_fixed(2u, to_fixed(total_weight));
  } else {
    acc[6] += 1u;
  }
}
