import assert from "node:assert/strict";
import { bf16ToF32, f16ToF32 } from "../../formats/dtype.ts";
import { f32BitsToBf16, f32BitsToF16, narrowToBf16, narrowToF16 } from "../../formats/narrow.ts";
import { freshSeed, rng } from "../_util.ts";

const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);

function valueOf(bits: number): number {
  U32[0] = bits;
  return F32[0];
}

// The nearest-even rounding, from the definition: among the two neighbours of x in the target
// format, the closer one, or on a tie the one with an even bit pattern.
function nearestEven(x: number, widen: (h: number) => number, down: number): number {
  const up = down + 1;
  const [lo, hi] = [widen(down), widen(up)];
  const dLo = Math.abs(x - lo);
  const dHi = Math.abs(hi - x);
  if (dLo < dHi) return down;
  if (dHi < dLo) return up;
  return down % 2 === 0 ? down : up;
}

// The f16 pattern just below |x| (same sign bit), by search over the ordered positive patterns.
function f16Below(abs: number): number {
  let lo = 0;
  let hi = 0x7c00;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (f16ToF32(mid) <= abs) lo = mid;
    else hi = mid;
  }
  return lo;
}

Deno.test("f32BitsToF16 rounds to nearest even, at known edges and on random patterns", () => {
  const cases: Array<[number, number]> = [
    [0x00000000, 0x0000],
    [0x80000000, 0x8000],
    [0x3f800000, 0x3c00], // 1
    [0xc0000000, 0xc000], // -2
    [0x477fe000, 0x7bff], // 65504, the largest f16
    [0x477fefff, 0x7bff], // just under the tie
    [0x477ff000, 0x7c00], // 65520: tie, rounds to even = infinity
    [0x7f800000, 0x7c00],
    [0xff800000, 0xfc00],
    [0x38800000, 0x0400], // 2^-14, the smallest normal
    [0x33800000, 0x0001], // 2^-24, the smallest subnormal
    [0x33000000, 0x0000], // 2^-25: tie, rounds to even 0
    [0x33000001, 0x0001], // just above the tie
    [0x33c00000, 0x0002], // 1.5 * 2^-24: tie, rounds to even 2
    [0x3f801000, 0x3c00], // 1 + 2^-11: tie, rounds to even
    [0x3f803000, 0x3c02], // 1 + 3 * 2^-11: tie, rounds to even (up)
    [0x387fe000, 0x0400], // just under 2^-14 rounds up into the normals
  ];
  for (const [bits, want] of cases) {
    const got = f32BitsToF16(bits);
    assert.equal(
      got,
      want,
      `0x${bits.toString(16)} -> 0x${got.toString(16)}, want 0x${want.toString(16)}`,
    );
  }
  assert(Number.isNaN(f16ToF32(f32BitsToF16(0x7fc00001))));
  assert(Number.isNaN(f16ToF32(f32BitsToF16(0x7f800001))), "a signalling NaN stays NaN");

  const seed = freshSeed();
  const next = rng(seed);
  for (let n = 0; n < 20000; n++) {
    // Exponents spread over the f16 range and a bit beyond it.
    const exponent = 100 + Math.floor(next() * 45);
    const bits = ((next() < 0.5 ? 0x80000000 : 0) | (exponent << 23) |
      Math.floor(next() * 0x800000)) >>> 0;
    const x = valueOf(bits);
    const got = f32BitsToF16(bits);
    const sign = x < 0 ? 0x8000 : 0;
    const abs = Math.abs(x);
    const want = abs >= 65520 ? 0x7c00 : nearestEven(abs, f16ToF32, f16Below(abs));
    assert.equal(got, sign | want, `0x${bits.toString(16)} (${x}) seed ${seed}`);
  }
});

Deno.test("f32BitsToBf16 rounds to nearest even, at known edges and on random patterns", () => {
  const cases: Array<[number, number]> = [
    [0x3f800000, 0x3f80],
    [0x3f808000, 0x3f80], // tie to even (down)
    [0x3f818000, 0x3f82], // tie to even (up)
    [0x3f808001, 0x3f81],
    [0x7f7fffff, 0x7f80], // the largest f32 rounds to infinity
    [0xff7fffff, 0xff80],
    [0x00000001, 0x0000], // subnormals round like any value
    [0x80000000, 0x8000],
  ];
  for (const [bits, want] of cases) assert.equal(f32BitsToBf16(bits), want);
  assert(Number.isNaN(bf16ToF32(f32BitsToBf16(0x7f800001))), "a NaN with low payload stays NaN");

  const seed = freshSeed();
  const next = rng(seed);
  for (let n = 0; n < 20000; n++) {
    const bits = Math.floor(next() * 2 ** 32) >>> 0;
    if ((bits & 0x7fffffff) >= 0x7f7f8000) continue; // NaN, infinity, or rounds to infinity
    const x = valueOf(bits);
    const down = (bits >>> 16) & 0x7fff;
    const abs = Math.abs(x);
    const want = nearestEven(abs, bf16ToF32, down) | (bits & 0x80000000 ? 0x8000 : 0);
    assert.equal(f32BitsToBf16(bits), want, `0x${bits.toString(16)} seed ${seed}`);
  }
});

Deno.test("narrowToF16 and narrowToBf16 agree with their scalar forms on an offset view", () => {
  const seed = freshSeed();
  const next = rng(seed);
  const values = Float32Array.from(
    { length: 5000 },
    () => (next() - 0.5) * 2 ** (next() * 40 - 20),
  ).subarray(3);
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  assert.deepEqual(narrowToF16(values), Uint16Array.from(bits, f32BitsToF16), `seed ${seed}`);
  assert.deepEqual(narrowToBf16(values), Uint16Array.from(bits, f32BitsToBf16), `seed ${seed}`);
});
