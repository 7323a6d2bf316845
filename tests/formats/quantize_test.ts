import assert from "node:assert/strict";
import {
  dequantize,
  packBits,
  quantize,
  type QuantScheme,
  unpackBits,
} from "../../formats/quantize.ts";
import { freshSeed, randomArray } from "../_util.ts";

const SCHEMES: QuantScheme[] = ["symmetric", "asymmetric"];
const BITS = [1, 2, 3, 4, 5, 6, 7, 8];

function sameBits(got: Float32Array, want: Float32Array, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  const g = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const w = new Uint32Array(want.buffer, want.byteOffset, want.length);
  for (let i = 0; i < g.length; i++) {
    if (g[i] !== w[i]) assert.fail(`${what}: element ${i} is ${got[i]}, expected ${want[i]}`);
  }
}

Deno.test("quantize round-trips through packing bit for bit, every width and scheme", () => {
  const seed = freshSeed();
  for (const scheme of SCHEMES) {
    for (const bits of BITS) {
      for (const n of [1, 2, 3, 7, 17, 1024]) {
        const what = `${scheme} ${bits}-bit n ${n} seed ${seed}`;
        const values = randomArray(n, seed + n + bits);
        const q = quantize(values, { bits, scheme });
        assert.equal(q.codes.length, n, what);
        assert(q.codes.every((c) => c < 2 ** bits), `${what}: code out of range`);
        const packed = packBits(q.codes, bits);
        assert.equal(packed.length, Math.ceil((n * bits) / 8), `${what}: packed length`);
        const codes = unpackBits(packed, bits, n);
        assert.deepEqual(codes, q.codes, `${what}: codes`);
        sameBits(dequantize(codes, q), q.dequantized, what);
      }
    }
  }
});

Deno.test("quantization error is at most half a step (symmetric and asymmetric, 2 to 8 bits)", () => {
  const seed = freshSeed();
  const values = randomArray(513, seed);
  const maxAbs = values.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
  const min = Math.min(...values);
  const max = Math.max(...values);
  for (const bits of BITS.slice(1)) {
    const sym = quantize(values, { bits, scheme: "symmetric" });
    assert.equal(sym.scale, Math.fround(maxAbs / (2 ** (bits - 1) - 1)));
    const asym = quantize(values, { bits, scheme: "asymmetric" });
    assert.equal(asym.zeroPoint, Math.fround(min));
    assert.equal(asym.scale, Math.fround((max - Math.fround(min)) / (2 ** bits - 1)));
    for (const q of [sym, asym]) {
      for (let i = 0; i < values.length; i++) {
        const err = Math.abs(q.dequantized[i] - values[i]);
        assert(
          err <= q.scale * 0.5 * (1 + 1e-6) + 1e-7,
          `${q.scheme} ${bits}-bit seed ${seed}: value ${values[i]} -> ${q.dequantized[i]}`,
        );
      }
    }
    // Symmetric: negating the input negates the output (half-to-even rounding is odd).
    const neg = quantize(values.map((x) => -x), { bits, scheme: "symmetric" });
    for (let i = 0; i < values.length; i++) {
      assert.equal(neg.dequantized[i], -sym.dequantized[i] + 0, `negated ${bits}-bit at ${i}`);
    }
    // The extreme is representable: the level count per side is 2^(bits-1) - 1, and the value
    // of largest magnitude (of either sign) lands on the outermost code of its side.
    const levels = 2 ** (bits - 1) - 1;
    const extreme = values.reduce((e, x, i) => Math.abs(x) > Math.abs(values[e]) ? i : e, 0);
    assert.equal(
      sym.codes[extreme],
      values[extreme] > 0 ? 2 * levels : 0,
      `${bits}-bit extreme code`,
    );
    assert(sym.codes.every((c) => c >= 0 && c <= 2 * levels), `${bits}-bit codes in range`);
    assert.equal(Math.max(...asym.codes), 2 ** bits - 1);
    assert.equal(Math.min(...asym.codes), 0);
  }
});

Deno.test("quantize follows the authors' formula: q = round(x * (2^(b-1)-1) / max|x|)", () => {
  const values = new Float32Array([0.5, -1, 0.25, 0, -0.125]);
  const q = quantize(values, { bits: 4, scheme: "symmetric" });
  const c = 7 / 1;
  const want = values.map((x) => Math.round(x * c) / c);
  for (let i = 0; i < values.length; i++) {
    assert(Math.abs(q.dequantized[i] - want[i]) < 1e-6, `element ${i}: ${q.dequantized[i]}`);
  }
  assert.equal(q.dequantized[1], -1);
  assert.equal(q.dequantized[3], 0);
});

Deno.test("1-bit symmetric keeps the sign and the mean magnitude", () => {
  const q = quantize(new Float32Array([0.5, -1, 0.25, 0]), { bits: 1, scheme: "symmetric" });
  assert.deepEqual([...q.codes], [1, 0, 1, 1]);
  assert.equal(q.scale, Math.fround(1.75 / 4));
  assert.deepEqual([...q.dequantized], [q.scale, -q.scale, q.scale, q.scale]);
});

Deno.test("edge cases: all zeros, a single value, negative only, empty", () => {
  for (const scheme of SCHEMES) {
    for (const bits of BITS) {
      const what = `${scheme} ${bits}-bit`;
      const zeros = quantize(new Float32Array(5), { bits, scheme });
      assert.equal(zeros.scale, 0, what);
      assert.deepEqual([...zeros.dequantized], [0, 0, 0, 0, 0], what);

      const single = quantize(new Float32Array([-0.3]), { bits, scheme });
      const x = Math.fround(-0.3);
      if (scheme === "asymmetric" || bits === 1) {
        assert.equal(single.dequantized[0], x, `${what}: single value exact`);
      } else {
        assert(Math.abs(single.dequantized[0] - x) < 1e-7, `${what}: single ${single.dequantized}`);
      }

      const negative = new Float32Array([-0.9, -0.5, -0.1, -0.7]);
      const neg = quantize(negative, { bits, scheme });
      assert(neg.dequantized.every((v) => v <= 0), `${what}: negative stays non-positive`);
      if (scheme === "asymmetric") {
        assert(neg.dequantized.every((v) => v < 0), `${what}: negative stays negative`);
        assert.equal(neg.dequantized[0], Math.fround(-0.9), `${what}: minimum is exact`);
      }
      assert.equal(quantize([], { bits, scheme }).codes.length, 0);
    }
  }
});

Deno.test("packBits is little-endian and straddles bytes", () => {
  assert.deepEqual(packBits(new Uint8Array([0x3, 0xa]), 4), new Uint8Array([0xa3]));
  assert.deepEqual(
    packBits(new Uint8Array([1, 0, 1, 1, 0, 0, 0, 1, 1]), 1),
    new Uint8Array([0x8d, 1]),
  );
  // 3-bit codes 7, 0, 5: bits 111 000 101 -> byte 0 = 0b01000111, byte 1 = 0b1.
  assert.deepEqual(packBits(new Uint8Array([7, 0, 5]), 3), new Uint8Array([0x47, 0x01]));
  assert.deepEqual(unpackBits(new Uint8Array([0x47, 0x01]), 3, 3), new Uint8Array([7, 0, 5]));
  assert.deepEqual(packBits(new Uint8Array([255, 1]), 8), new Uint8Array([255, 1]));
});

Deno.test("invalid options, codes and lengths are refused with their reason", () => {
  assert.throws(() => quantize([1], { bits: 0, scheme: "symmetric" }), /bits 0: must be/);
  assert.throws(() => quantize([1], { bits: 9, scheme: "symmetric" }), /bits 9/);
  assert.throws(
    () => quantize([1], { bits: 4, scheme: "log" as QuantScheme }),
    /scheme "log"/,
  );
  assert.throws(() => quantize([1, NaN], { bits: 4, scheme: "symmetric" }), /NaN at index 1/);
  assert.throws(() => packBits(new Uint8Array([16]), 4), /code 16 at index 0 in 4 bits/);
  assert.throws(() => unpackBits(new Uint8Array(3), 4, 4), /from 3 bytes: expected 2/);
  assert.throws(
    () => dequantize(new Uint8Array([1]), { bits: 4, scheme: "asymmetric", scale: 1 }),
    /zero point undefined/,
  );
});
