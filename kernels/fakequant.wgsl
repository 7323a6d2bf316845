// Fake quantization of one coefficient tensor, bit for bit as adapters/quantize.ts on the host.
//
// out:   [n] f32, stored as its u32 bit pattern: x' = dequantize(quantize(x)), written
// stats: [2] f32 bits: the scale, and the zero point (asymmetric; 0 otherwise), written
// x:     [n] f32 bits, read (from element in_shift)
// p:     sizes, bit width and scheme
//
// The host computes in float64: `max|x| / L`, `L / max|x|`, `x * c`, the sequential sum of |x|
// (1 bit), `max - min`, `(x - min) / scale`, `q * scale + min`, each rounded to 53 bits, then rounds
// to f32. An f32 GPU cannot reproduce that (ties of round-half-even, double rounding), so this
// kernel emulates exactly those float64 operations with integer arithmetic: a value is a 53-bit
// mantissa, an exponent and a sign; intermediate results are exact 128-bit integers rounded once.
// Inputs are read as bits so subnormals are never flushed. One workgroup owns the tensor; the
// max/min reductions are exact (integer atomics on order-preserving keys), the 1-bit sum is
// serial in index order as on the host.

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

// A float64 value: mantissa m (m.x low 32 bits, m.y high 21) times 2^e; zero iff m == 0 (always
// +0). Non-zero mantissas are normalized to [2^52, 2^53).
struct F {
  m: vec2<u32>,
  e: i32,
  neg: bool,
}

const ZERO = F(vec2<u32>(0u, 0u), 0, false);

fn is_zero(a: F) -> bool {
  return a.m.x == 0u && a.m.y == 0u;
}

// Word k of w (k < 4), without a dynamically indexed array (slow on CPU drivers).
fn word(w: vec4<u32>, k: u32) -> u32 {
  return select(select(w.w, w.z, k == 2u), select(w.y, w.x, k == 0u), k < 2u);
}

fn bit_at(w: vec4<u32>, pos: u32) -> bool {
  return ((word(w, pos / 32u) >> (pos % 32u)) & 1u) == 1u;
}

fn shl(w: vec4<u32>, s: u32) -> vec4<u32> {
  if (s >= 128u) {
    return vec4<u32>(0u);
  }
  var t = w;
  for (var k = s / 32u; k > 0u; k--) {
    t = vec4<u32>(0u, t.xyz);
  }
  let b = s % 32u;
  if (b != 0u) {
    t = (t << vec4<u32>(b)) | (vec4<u32>(0u, t.xyz) >> vec4<u32>(32u - b));
  }
  return t;
}

// Whether any of the bits below position s is set.
fn low_nonzero(w: vec4<u32>, s: u32) -> bool {
  if (s == 0u) {
    return false;
  }
  if (s >= 128u) {
    return any(w != vec4<u32>(0u));
  }
  return any(shl(w, 128u - s) != vec4<u32>(0u));
}

// Shift right; with `jam`, lost bits are ORed into bit 0 (a sticky bit far below any rounding
// position, so later rounding of sums and differences stays correct).
fn shr(w: vec4<u32>, s: u32, jam: bool) -> vec4<u32> {
  var t = vec4<u32>(0u);
  if (s < 128u) {
    t = w;
    for (var k = s / 32u; k > 0u; k--) {
      t = vec4<u32>(t.yzw, 0u);
    }
    let b = s % 32u;
    if (b != 0u) {
      t = (t >> vec4<u32>(b)) | (vec4<u32>(t.yzw, 0u) << vec4<u32>(32u - b));
    }
  }
  if (jam && low_nonzero(w, s)) {
    t.x |= 1u;
  }
  return t;
}

fn add128(a: vec4<u32>, b: vec4<u32>) -> vec4<u32> {
  var r = a + b;
  var c = select(0u, 1u, r.x < a.x);
  r.y += c;
  c = select(0u, 1u, r.y < a.y || (c == 1u && r.y == a.y));
  r.z += c;
  c = select(0u, 1u, r.z < a.z || (c == 1u && r.z == a.z));
  r.w += c;
  return r;
}

// a - b for a >= b.
fn sub128(a: vec4<u32>, b: vec4<u32>) -> vec4<u32> {
  var r = a - b;
  var borrow = select(0u, 1u, a.x < b.x);
  let y = a.y - b.y;
  r.y = y - borrow;
  borrow = select(0u, 1u, a.y < b.y || (borrow == 1u && y == 0u));
  let z = a.z - b.z;
  r.z = z - borrow;
  borrow = select(0u, 1u, a.z < b.z || (borrow == 1u && z == 0u));
  r.w = a.w - b.w - borrow;
  return r;
}

fn greater128(a: vec4<u32>, b: vec4<u32>) -> bool {
  if (a.w != b.w) {
    return a.w > b.w;
  }
  if (a.z != b.z) {
    return a.z > b.z;
  }
  if (a.y != b.y) {
    return a.y > b.y;
  }
  return a.x > b.x;
}

fn high_bit(w: vec4<u32>) -> i32 {
  if (w.w != 0u) {
    return 127i - i32(countLeadingZeros(w.w));
  }
  if (w.z != 0u) {
    return 95i - i32(countLeadingZeros(w.z));
  }
  if (w.y != 0u) {
    return 63i - i32(countLeadingZeros(w.y));
  }
  return 31i - i32(countLeadingZeros(w.x));
}

// Rounds the exact value w * 2^e (w a 128-bit integer, sticky in bit 0) to 53 bits, half to even.
fn round53(w: vec4<u32>, e: i32, neg: bool) -> F {
  let hb = high_bit(w);
  if (hb < 0i) {
    return ZERO;
  }
  if (hb <= 52i) {
    let t = shl(w, u32(52i - hb));
    return F(t.xy, e - (52i - hb), neg);
  }
  let s = u32(hb - 52i);
  var m = shr(w, s, false).xy;
  var ee = e + i32(s);
  if (bit_at(w, s - 1u) && (low_nonzero(w, s - 1u) || (m.x & 1u) == 1u)) {
    m.x += 1u;
    if (m.x == 0u) {
      m.y += 1u;
    }
    if (m.y == (1u << 21u)) {
      m = vec2<u32>(0u, 1u << 20u);
      ee += 1i;
    }
  }
  return F(m, ee, neg);
}

fn from_u32(v: u32, e: i32, neg: bool) -> F {
  return round53(vec4<u32>(v, 0u, 0u, 0u), e, neg);
}

// The exact value of an f32 bit pattern (finite); mant * 2^exp with mant < 2^24.
fn f32_mant(b: u32) -> u32 {
  let mag = b & 0x7fffffffu;
  let f = mag & 0x7fffffu;
  return select(f | 0x800000u, f, (mag >> 23u) == 0u);
}

fn f32_exp(b: u32) -> i32 {
  let ex = i32((b & 0x7fffffffu) >> 23u);
  return select(ex - 150i, -149i, ex == 0i);
}

fn from_f32(b: u32) -> F {
  return from_u32(f32_mant(b), f32_exp(b), (b >> 31u) == 1u);
}

fn negate(a: F) -> F {
  return F(a.m, a.e, !a.neg && !is_zero(a));
}

fn add(a: F, b: F) -> F {
  if (is_zero(a)) {
    return b;
  }
  if (is_zero(b)) {
    return a;
  }
  let top = max(a.e, b.e);
  // 64 guard bits below each mantissa before aligning.
  let wa = shr(shl(vec4<u32>(a.m, 0u, 0u), 64u), u32(min(top - a.e, 200i)), true);
  let wb = shr(shl(vec4<u32>(b.m, 0u, 0u), 64u), u32(min(top - b.e, 200i)), true);
  if (a.neg == b.neg) {
    return round53(add128(wa, wb), top - 64i, a.neg);
  }
  if (greater128(wa, wb)) {
    return round53(sub128(wa, wb), top - 64i, a.neg);
  }
  if (greater128(wb, wa)) {
    return round53(sub128(wb, wa), top - 64i, b.neg);
  }
  return ZERO;
}

fn mul32(a: u32, b: u32) -> vec2<u32> {
  let a0 = a & 0xffffu;
  let a1 = a >> 16u;
  let b0 = b & 0xffffu;
  let b1 = b >> 16u;
  let p00 = a0 * b0;
  let p01 = a0 * b1;
  let p10 = a1 * b0;
  let p11 = a1 * b1;
  let mid = p01 + p10;
  let mid_carry = select(0u, 1u, mid < p01);
  let lo = p00 + (mid << 16u);
  let lo_carry = select(0u, 1u, lo < p00);
  return vec2<u32>(lo, p11 + (mid >> 16u) + (mid_carry << 16u) + lo_carry);
}

// a * v * 2^ev, exactly rounded; v an unsigned integer.
fn mul_u32(a: F, v: u32, ev: i32, neg: bool) -> F {
  let lo = mul32(a.m.x, v);
  let hi = mul32(a.m.y, v);
  let w = add128(vec4<u32>(lo, 0u, 0u), vec4<u32>(0u, hi, 0u));
  return round53(w, a.e + ev, a.neg != neg);
}

// a / (d * 2^ed), exactly rounded; 0 < d < 2^31. Long division of a's mantissa widened by
// K = bitlen(d) + 3 bits: the quotient then has 56 to 57 bits (fits 64), the remainder is sticky.
fn div_u32(a: F, d: u32, ed: i32) -> F {
  let wide = 35u - countLeadingZeros(d);
  var q = vec2<u32>(0u);
  var r = 0u;
  for (var pos = 52u + wide; pos < 0x80000000u; pos--) {
    var nb = 0u;
    if (pos >= wide) {
      let mp = pos - wide;
      if (mp < 32u) {
        nb = (a.m.x >> mp) & 1u;
      } else {
        nb = (a.m.y >> (mp - 32u)) & 1u;
      }
    }
    r = (r << 1u) | nb;
    q = vec2<u32>(q.x << 1u, (q.y << 1u) | (q.x >> 31u));
    if (r >= d) {
      r -= d;
      q.x |= 1u;
    }
    if (pos == 0u) {
      break;
    }
  }
  if (r != 0u) {
    q.x |= 1u;
  }
  return round53(vec4<u32>(q, 0u, 0u), a.e - i32(wide) - ed, a.neg);
}

// a + b for non-negative a, b: the 1-bit scheme's serial sum, kept to 64-bit words (8 guard
// bits, sticky jammed) because one invocation runs it over the whole tensor.
fn add_pos(a: F, b: F) -> F {
  if (is_zero(a)) {
    return b;
  }
  if (is_zero(b)) {
    return a;
  }
  var big = a;
  var small = b;
  if (b.e > a.e) {
    big = b;
    small = a;
  }
  let d = u32(min(big.e - small.e, 100i));
  let l = vec2<u32>(big.m.x << 8u, (big.m.y << 8u) | (big.m.x >> 24u));
  var t = vec2<u32>(small.m.x << 8u, (small.m.y << 8u) | (small.m.x >> 24u));
  var lost = false;
  if (d >= 64u) {
    lost = true;
    t = vec2<u32>(0u);
  } else if (d >= 32u) {
    let k = d - 32u;
    lost = t.x != 0u || (k > 0u && (t.y << (32u - k)) != 0u);
    t = vec2<u32>(t.y >> k, 0u);
  } else if (d > 0u) {
    lost = (t.x << (32u - d)) != 0u;
    t = vec2<u32>((t.x >> d) | (t.y << (32u - d)), t.y >> d);
  }
  if (lost) {
    t.x |= 1u;
  }
  let lo = l.x + t.x;
  let sum = vec2<u32>(lo, l.y + t.y + select(0u, 1u, lo < l.x));
  return round53(vec4<u32>(sum, 0u, 0u), big.e - 8i, false);
}

// |a| rounded to an integer half to even (as quantize.ts's roundHalfEven), saturating at 2^31.
fn round_int(a: F) -> u32 {
  if (is_zero(a)) {
    return 0u;
  }
  if (a.e >= 0i) {
    return 0x80000000u;
  }
  let s = u32(-a.e);
  if (s >= 54u) {
    return 0u;
  }
  let w = vec4<u32>(a.m, 0u, 0u);
  let ip = shr(w, s, false);
  if (ip.y != 0u || ip.x >= 0x80000000u) {
    return 0x80000000u;
  }
  var q = ip.x;
  if (bit_at(w, s - 1u) && (low_nonzero(w, s - 1u) || (q & 1u) == 1u)) {
    q += 1u;
  }
  return q;
}

// The f32 nearest a (Math.fround), as bits; subnormal results rounded as IEEE does.
fn to_f32(a: F) -> u32 {
  if (is_zero(a)) {
    return 0u;
  }
  let sign = select(0u, 0x80000000u, a.neg);
  let biased = a.e + 29i + 23i + 127i;
  if (biased >= 255i) {
    return sign | 0x7f800000u;
  }
  var s = 29u;
  if (biased <= 0i) {
    s = u32(29i + 1i - biased);
    if (s > 54u) {
      return sign;
    }
  }
  let w = vec4<u32>(a.m, 0u, 0u);
  var m = shr(w, s, false).x;
  if (bit_at(w, s - 1u) && (low_nonzero(w, s - 1u) || (m & 1u) == 1u)) {
    m += 1u;
  }
  if (biased <= 0i) {
    // A carry into bit 23 lands on the smallest normal, which these bits spell correctly.
    return sign | m;
  }
  var ex = u32(biased);
  if (m == (1u << 24u)) {
    m >>= 1u;
    ex += 1u;
    if (ex >= 255u) {
      return sign | 0x7f800000u;
    }
  }
  return sign | (ex << 23u) | (m & 0x7fffffu);
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
// The float64 multiplier L / max|x| (symmetric, 2 bits or more).
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
  let lo = from_key(atomicLoad(&wg_min_key));
  let hi = from_key(atomicLoad(&wg_max_key));
  let asym = p.scheme == 1u;
  let one_bit = !asym && p.bits == 1u;
  let levels = (1u << (p.bits - 1u)) - 1u;
  let top = (1u << p.bits) - 1u;
  if (tid == 0u) {
    var scale = 0u;
    var zero = 0u;
    if (p.n > 0u && amax < 0x7f800000u) {
      if (asym) {
        zero = lo;
        scale = to_f32(div_u32(add(from_f32(hi), negate(from_f32(lo))), top, 0i));
      } else if (one_bit) {
        var sum = ZERO;
        for (var i = 0u; i < p.n; i++) {
          sum = add_pos(sum, from_f32(x[p.in_shift + i] & 0x7fffffffu));
        }
        scale = to_f32(div_u32(sum, p.n, 0i));
      } else {
        scale = to_f32(div_u32(from_f32(amax), levels, 0i));
        if (amax != 0u) {
          let c = div_u32(from_u32(levels, 0i, false), f32_mant(amax), f32_exp(amax));
          wg_c_m = c.m;
          wg_c_e = c.e;
        }
      }
    }
    wg_scale = scale;
    wg_zero = zero;
    stats[0] = scale;
    stats[1] = zero;
  }
  workgroupBarrier();
  let scale = wg_scale;
  let scale_f = from_f32(scale);
  let zero_f = from_f32(wg_zero);
  let c = F(wg_c_m, wg_c_e, false);
  for (var i = tid; i < p.n; i += WG) {
    let b = x[p.in_shift + i];
    var r = 0u;
    if (amax >= 0x7f800000u) {
      r = 0x7fc00000u;
    } else if (asym) {
      var q = 0u;
      if (scale != 0u) {
        let t = div_u32(add(from_f32(b), negate(zero_f)), f32_mant(scale), f32_exp(scale));
        q = min(round_int(t), top);
      }
      r = to_f32(add(mul_u32(scale_f, q, 0i, false), zero_f));
    } else if (one_bit) {
      let negative = (b >> 31u) == 1u && (b & 0x7fffffffu) != 0u;
      r = select(scale, scale | 0x80000000u, negative);
    } else {
      var q = 0u;
      if (amax != 0u) {
        q = min(round_int(mul_u32(c, f32_mant(b), f32_exp(b), false)), levels);
      }
      let negative = (b >> 31u) == 1u;
      r = to_f32(mul_u32(scale_f, q, 0i, negative && q != 0u));
    }
    out[p.out_shift + i] = r;
  }
}
