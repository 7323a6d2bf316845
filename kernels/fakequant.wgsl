// Fake quantization of one coefficient tensor, bit for bit as formats/quantize.ts on the host.
//
// out:   [n] f32 bits, written: x' = dequantize(quantize(x))
// stats: [2] f32 bits, written: the scale, and the zero point (asymmetric; 0 otherwise)
// x:     [n] f32 bits, read from element in_shift
// p:     sizes, bit width and scheme
//
// The host's steps, each a float64 operation rounded to 53 bits, then f32() at the end:
//   symmetric, 2+ bits  scale = f32(M / L), c = L / M, q = rhe(x * c), x' = f32(q * scale)
//   symmetric, 1 bit    scale = f32(sum / n), the sum of |x| in index order, x' = ±scale
//   asymmetric          scale = f32((max - min) / T), q = rhe((x - min) / scale),
//                       x' = f32(q * scale + min)
// with M = max|x|, L = 2^(bits-1) - 1, T = 2^bits - 1 and rhe rounding half to even. Integer
// arithmetic only (drivers may flush f32 subnormals; WGSL division is not correctly rounded):
// each step's exact result is a 64-bit integer times a power of two plus a sticky bit for a
// non-zero remainder below it (`Wide`), which is all that rounding to 53 or 24 bits needs. Sums
// align two operands of up to 56 bits at bit 62, the bits shifted out of the smaller becoming
// the sticky bit; quotients (divisors below 2^24) run to 56 bits; a product is the sum of two
// exact partial products.
//
// One workgroup owns the tensor: max|x|, min and max are exact integer atomics on the f32 bits;
// the 1-bit sum is serial, in index order, as on the host.

override WG: u32 = 256u;

struct Params {
  n: u32,
  bits: u32,
  // 0 symmetric, 1 asymmetric.
  scheme: u32,
  in_shift: u32,
  out_shift: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@group(0) @binding(1) var<storage, read_write> stats: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<u32>;
@group(0) @binding(3) var<uniform> p: Params;

// (m + s) * 2^e, negated when `neg`: m a 64-bit integer (m.x the low word), s in (0, 1) when
// `sticky` and 0 otherwise.
struct Wide {
  m: vec2<u32>,
  e: i32,
  neg: bool,
  sticky: bool,
}

// Precision and smallest exponent of float64 and f32.
const F64_BITS = 53i;
const F64_MIN_E = -1074i;
const F32_BITS = 24i;
const F32_MIN_E = -149i;

fn shl64(a: vec2<u32>, s: u32) -> vec2<u32> {
  if (s == 0u) { return a; }
  if (s >= 64u) { return vec2<u32>(0u); }
  if (s >= 32u) { return vec2<u32>(0u, a.x << (s - 32u)); }
  return vec2<u32>(a.x << s, (a.y << s) | (a.x >> (32u - s)));
}

fn shr64(a: vec2<u32>, s: u32) -> vec2<u32> {
  if (s == 0u) { return a; }
  if (s >= 64u) { return vec2<u32>(0u); }
  if (s >= 32u) { return vec2<u32>(a.y >> (s - 32u), 0u); }
  return vec2<u32>((a.x >> s) | (a.y << (32u - s)), a.y >> s);
}

// Whether a has a set bit below bit s.
fn below(a: vec2<u32>, s: u32) -> bool {
  return any(shl64(shr64(a, s), s) != a);
}

fn add64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
  let lo = a.x + b.x;
  return vec2<u32>(lo, a.y + b.y + select(0u, 1u, lo < a.x));
}

fn sub64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
  return vec2<u32>(a.x - b.x, a.y - b.y - select(0u, 1u, a.x < b.x));
}

fn less64(a: vec2<u32>, b: vec2<u32>) -> bool {
  return a.y < b.y || (a.y == b.y && a.x < b.x);
}

// Position of the highest set bit; -1 for zero.
fn msb64(a: vec2<u32>) -> i32 {
  if (a.y != 0u) { return 63i - i32(countLeadingZeros(a.y)); }
  return 31i - i32(countLeadingZeros(a.x));
}

// 32 x 32 -> 64 bits, from 16-bit halves.
fn mul32(a: u32, b: u32) -> vec2<u32> {
  let a0 = a & 0xffffu;
  let a1 = a >> 16u;
  let b0 = b & 0xffffu;
  let b1 = b >> 16u;
  let mid = a0 * b1 + a1 * b0;
  let mid_carry = select(0u, 0x10000u, mid < a0 * b1);
  let lo = a0 * b0 + (mid << 16u);
  let lo_carry = select(0u, 1u, lo < a0 * b0);
  return vec2<u32>(lo, a1 * b1 + (mid >> 16u) + mid_carry + lo_carry);
}

fn integer(v: u32, neg: bool) -> Wide {
  return Wide(vec2<u32>(v, 0u), 0i, neg, false);
}

// The exact value of a finite f32 bit pattern.
fn from_f32(b: u32) -> Wide {
  let biased = i32((b >> 23u) & 0xffu);
  let frac = b & 0x7fffffu;
  let m = select(frac | 0x800000u, frac, biased == 0i);
  return Wide(vec2<u32>(m, 0u), max(biased, 1i) - 150i, (b >> 31u) == 1u, false);
}

fn is_zero(a: Wide) -> bool {
  return all(a.m == vec2<u32>(0u));
}

fn negated(a: Wide) -> Wide {
  return Wide(a.m, a.e, !a.neg, a.sticky);
}

// a with its highest bit at bit 62; a exact and non-zero.
fn at62(a: Wide) -> Wide {
  let s = 62i - msb64(a.m);
  return Wide(shl64(a.m, u32(s)), a.e - s, a.neg, false);
}

// a + b for exact a, b of at most 56 bits; signed zeros as IEEE adds them.
fn add(a: Wide, b: Wide) -> Wide {
  if (is_zero(a)) {
    var r = b;
    r.neg = b.neg && (a.neg || !is_zero(b));
    return r;
  }
  if (is_zero(b)) { return a; }
  var big = at62(a);
  var small = at62(b);
  if (small.e > big.e || (small.e == big.e && less64(big.m, small.m))) {
    let t = big;
    big = small;
    small = t;
  }
  let d = u32(min(big.e - small.e, 64i));
  let m = shr64(small.m, d);
  let lost = below(small.m, d);
  if (big.neg == small.neg) { return Wide(add64(big.m, m), big.e, big.neg, lost); }
  // big - (m + s) = (big - m - 1) + (1 - s). Bits are lost only when d > 6, and then the
  // difference still has 61 bits above the sticky one.
  let diff = sub64(sub64(big.m, m), vec2<u32>(select(0u, 1u, lost), 0u));
  return Wide(diff, big.e, big.neg && (lost || any(diff != vec2<u32>(0u))), lost);
}

// a * b for exact a of at most 53 bits and b of at most 24: two exact partial products, added.
fn mul(a: Wide, b: Wide) -> Wide {
  let neg = a.neg != b.neg;
  let lo = Wide(mul32(a.m.x, b.m.x), a.e + b.e, neg, false);
  let hi = Wide(mul32(a.m.y, b.m.x), a.e + b.e + 32i, neg, false);
  return add(lo, hi);
}

// a / b for exact a and non-zero b of at most 24 bits: long division, a byte at a time, until
// the quotient has 56 bits; the remainder is the sticky bit.
fn div(a: Wide, b: Wide) -> Wide {
  if (is_zero(a)) { return a; }
  let lead = 63i - msb64(a.m);
  let num = shl64(a.m, u32(lead));
  let d = b.m.x;
  var q = vec2<u32>(0u);
  var r = 0u;
  var e = a.e - lead - b.e;
  for (var i = 0u; i < 8u || msb64(q) < 55i; i++) {
    var byte = 0u;
    if (i < 8u) {
      byte = (select(num.x, num.y, i < 4u) >> (24u - 8u * (i % 4u))) & 0xffu;
    } else {
      e -= 8i;
    }
    r = (r << 8u) | byte;
    q = shl64(q, 8u) | vec2<u32>(r / d, 0u);
    r %= d;
  }
  return Wide(q, e, a.neg != b.neg, r != 0u);
}

// a rounded half to even to `bits` bits, or to a multiple of 2^min_e where that is coarser.
fn round_to(a: Wide, bits: i32, min_e: i32) -> Wide {
  let s = max(msb64(a.m) + 1i - bits, min_e - a.e);
  if (s <= 0i) { return a; }
  let us = u32(min(s, 65i));
  let kept = shr64(a.m, us);
  let half = (shr64(a.m, us - 1u).x & 1u) == 1u;
  let up = half && (a.sticky || below(a.m, us - 1u) || (kept.x & 1u) == 1u);
  return Wide(add64(kept, vec2<u32>(select(0u, 1u, up), 0u)), a.e + s, a.neg, false);
}

// A float64 operation's result.
fn f64(a: Wide) -> Wide {
  return round_to(a, F64_BITS, F64_MIN_E);
}

// The f32 bits nearest a (Math.fround; a Float32Array store).
fn to_f32(a: Wide) -> u32 {
  let r = round_to(a, F32_BITS, F32_MIN_E);
  let sign = select(0u, 0x80000000u, r.neg);
  let hb = msb64(r.m);
  if (hb < 0i) { return sign; }
  let top = r.e + hb;
  if (top > 127i) { return sign | 0x7f800000u; }
  if (top < -126i) { return sign | shl64(r.m, u32(r.e - F32_MIN_E)).x; }
  let m = select(shl64(r.m, u32(23i - hb)), shr64(r.m, u32(hb - 23i)), hb > 23i).x;
  return sign | (u32(top + 127i) << 23u) | (m & 0x7fffffu);
}

// |a| rounded half to even to an integer, saturating at 2^32 - 1.
fn rhe(a: Wide) -> u32 {
  let r = round_to(a, 64i, 0i);
  if (is_zero(r)) { return 0u; }
  if (msb64(r.m) + r.e >= 32i) { return 0xffffffffu; }
  return shl64(r.m, u32(r.e)).x;
}

// Orders f32 bit patterns as their values, -0 below +0 (Math.min/max's order).
fn order_key(b: u32) -> u32 {
  return select(b | 0x80000000u, ~b, (b >> 31u) == 1u);
}

fn from_key(k: u32) -> u32 {
  return select(~k, k & 0x7fffffffu, (k >> 31u) == 1u);
}

var<workgroup> wg_max_abs: atomic<u32>;
var<workgroup> wg_min_key: atomic<u32>;
var<workgroup> wg_max_key: atomic<u32>;
var<workgroup> wg_scale: u32;
var<workgroup> wg_zero: u32;
// c = L / M (symmetric, 2 bits or more), a float64.
var<workgroup> wg_c_m: vec2<u32>;
var<workgroup> wg_c_e: i32;

@compute @workgroup_size(WG)
fn fakequant_forward(@builtin(local_invocation_index) tid: u32) {
  if (tid == 0u) {
    atomicStore(&wg_max_abs, 0u);
    atomicStore(&wg_min_key, 0xffffffffu);
    atomicStore(&wg_max_key, 0u);
  }
  workgroupBarrier();
  var max_abs = 0u;
  var min_key = 0xffffffffu;
  var max_key = 0u;
  for (var i = tid; i < p.n; i += WG) {
    let b = x[p.in_shift + i];
    max_abs = max(max_abs, b & 0x7fffffffu);
    min_key = min(min_key, order_key(b));
    max_key = max(max_key, order_key(b));
  }
  atomicMax(&wg_max_abs, max_abs);
  atomicMin(&wg_min_key, min_key);
  atomicMax(&wg_max_key, max_key);
  workgroupBarrier();
  let amax = atomicLoad(&wg_max_abs);
  let finite = amax < 0x7f800000u;
  let asym = p.scheme == 1u;
  let one_bit = !asym && p.bits == 1u;
  let levels = (1u << (p.bits - 1u)) - 1u;
  let top = (1u << p.bits) - 1u;
  if (tid == 0u) {
    var scale = 0u;
    var zero = 0u;
    var c = integer(0u, false);
    if (finite && asym) {
      zero = from_key(atomicLoad(&wg_min_key));
      let range = f64(add(from_f32(from_key(atomicLoad(&wg_max_key))), negated(from_f32(zero))));
      scale = to_f32(f64(div(range, integer(top, false))));
    } else if (finite && one_bit) {
      var sum = integer(0u, false);
      for (var i = 0u; i < p.n; i++) {
        sum = f64(add(sum, from_f32(x[p.in_shift + i] & 0x7fffffffu)));
      }
      scale = to_f32(f64(div(sum, integer(p.n, false))));
    } else if (finite) {
      scale = to_f32(f64(div(from_f32(amax), integer(levels, false))));
      if (amax != 0u) {
        c = f64(div(integer(levels, false), from_f32(amax)));
      }
    }
    wg_scale = scale;
    wg_zero = zero;
    wg_c_m = c.m;
    wg_c_e = c.e;
    stats[0] = scale;
    stats[1] = zero;
  }
  workgroupBarrier();
  let scale = wg_scale;
  let scale_w = from_f32(scale);
  let zero_w = from_f32(wg_zero);
  let c = Wide(wg_c_m, wg_c_e, false, false);
  for (var i = tid; i < p.n; i += WG) {
    let v = from_f32(x[p.in_shift + i]);
    var r = 0x7fc00000u;
    if (finite && asym) {
      var q = 0u;
      if (scale != 0u) {
        q = min(rhe(f64(div(f64(add(v, negated(zero_w))), scale_w))), top);
      }
      r = to_f32(f64(add(mul(integer(q, false), scale_w), zero_w)));
    } else if (finite && one_bit) {
      r = select(scale, scale | 0x80000000u, v.neg && !is_zero(v));
    } else if (finite) {
      var q = 0u;
      if (amax != 0u) {
        q = min(rhe(f64(mul(c, v))), levels);
      }
      r = to_f32(f64(mul(integer(q, v.neg && q != 0u), scale_w)));
    }
    out[p.out_shift + i] = r;
  }
}
