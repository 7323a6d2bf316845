import assert from "node:assert/strict";
import {
  BASIS_SPEC,
  basisElement,
  BasisFactor,
  basisScale,
  fnv1a64,
  materializeBasis,
  moduleKey,
  normalFromWords,
  philox4x32_10,
  sharedBasisKey,
  uniformFromWord,
} from "../../kernels/basis_spec.ts";
import { freshSeed, rng } from "../_util.ts";

const utf8 = (text: string) => new TextEncoder().encode(text);
const hex = (words: ArrayLike<number>) =>
  Array.from(words, (w) => w.toString(16).padStart(8, "0")).join(" ");
const bits = (value: number) => new Uint32Array(Float32Array.of(value).buffer)[0];

// A second Philox written straight from Random123's definition with exact 64-bit BigInt
// products, sharing no code with the implementation under test.
function philoxBigInt(counter: readonly number[], key: readonly number[]): number[] {
  const MASK = 0xffffffffn;
  let c = counter.map(BigInt);
  let k = key.map(BigInt);
  for (let round = 0; round < 10; round++) {
    const p0 = 0xd2511f53n * c[0];
    const p1 = 0xcd9e8d57n * c[2];
    c = [(p1 >> 32n) ^ c[1] ^ k[0], p1 & MASK, (p0 >> 32n) ^ c[3] ^ k[1], p0 & MASK];
    k = [(k[0] + 0x9e3779b9n) & MASK, (k[1] + 0xbb67ae85n) & MASK];
  }
  return c.map(Number);
}

Deno.test("philox4x32_10 matches the Random123 known-answer vectors", () => {
  assert.equal(hex(philox4x32_10([0, 0, 0, 0], [0, 0])), "6627e8d5 e169c58d bc57ac4c 9b00dbd8");
  const ones = 0xffffffff;
  assert.equal(
    hex(philox4x32_10([ones, ones, ones, ones], [ones, ones])),
    "408f276d 41c83b0e a20bc7c6 6d5451fd",
  );
  assert.equal(
    hex(philox4x32_10([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0])),
    "d16cfe09 94fdcceb 5001e420 24126ea1",
  );
});

Deno.test("philox4x32_10 equals an independent BigInt Philox on random inputs", () => {
  const seed = freshSeed();
  const next = rng(seed);
  const word = () => (next() * 2 ** 32) >>> 0;
  for (let i = 0; i < 1000; i++) {
    const counter = [word(), word(), word(), word()] as const;
    const key = [word(), word()] as const;
    assert.deepEqual(
      [...philox4x32_10(counter, key)],
      philoxBigInt(counter, key),
      `counter ${hex(counter)} key ${hex(key)} (seed ${seed})`,
    );
  }
});

Deno.test("fnv1a64 matches the published FNV-1a 64 vectors", () => {
  assert.equal(fnv1a64(utf8("")), 0xcbf29ce484222325n);
  assert.equal(fnv1a64(utf8("a")), 0xaf63dc4c8601ec8cn);
  assert.equal(fnv1a64(utf8("foobar")), 0x85944171f73967e8n);
});

Deno.test("moduleKey splits the hash of seed/basisKey into low and high words", () => {
  const s = fnv1a64(utf8("0/h.0.attn.c_attn.q"));
  assert.equal(s, 0xc52c93c548691ebbn);
  assert.deepEqual(moduleKey(0, "h.0.attn.c_attn.q"), [0x48691ebb, 0xc52c93c5]);
  const negative = fnv1a64(utf8("-12/h.0.mlp.c_fc"));
  assert.deepEqual(moduleKey(-12, "h.0.mlp.c_fc"), [
    Number(negative & 0xffffffffn),
    Number(negative >> 32n),
  ]);
  // Non-integers would hash a decimal form ("1.5", "1e+21") other languages write differently.
  assert.throws(() => moduleKey(1.5, "h.0.mlp.c_fc"), RangeError);
  assert.throws(() => moduleKey(2 ** 60, "h.0.mlp.c_fc"), RangeError);
});

Deno.test("sharedBasisKey replaces the first all-digit component with *", () => {
  assert.equal(sharedBasisKey("h.3.attn.c_attn.q"), "h.*.attn.c_attn.q");
  assert.equal(sharedBasisKey("transformer.h.11.mlp.c_fc"), "transformer.h.*.mlp.c_fc");
  assert.equal(
    sharedBasisKey("model.layers.12.mlp.experts.3.w1"),
    "model.layers.*.mlp.experts.3.w1",
  );
  assert.equal(sharedBasisKey("vit.encoder.layer.007.output"), "vit.encoder.layer.*.output");
  assert.equal(sharedBasisKey("blocks.3a.fc1"), "blocks.3a.fc1");
  assert.equal(sharedBasisKey("lm_head"), "lm_head");
  const shared3 = moduleKey(5, sharedBasisKey("h.3.attn.c_attn.q"));
  assert.deepEqual(moduleKey(5, sharedBasisKey("h.11.attn.c_attn.q")), shared3);
  assert.notDeepEqual(moduleKey(5, "h.3.attn.c_attn.q"), shared3);
});

Deno.test("basisScale rounds 1/sqrt of k, l or in to float32 once", () => {
  const sizes = { k: 1024, l: 300, inFeatures: 768 };
  assert.equal(basisScale(BasisFactor.A, sizes), 0.03125);
  assert.equal(basisScale(BasisFactor.B, sizes), Math.fround(1 / Math.sqrt(300)));
  assert.equal(basisScale(BasisFactor.A0, sizes), Math.fround(1 / Math.sqrt(768)));
  assert.equal(bits(basisScale(BasisFactor.A0, sizes)), 0x3d13cd3a);
  assert.throws(() => basisScale(BasisFactor.B, { ...sizes, l: 0 }), RangeError);
});

Deno.test("the uniform transform spans [-scale, scale) with one float32 rounding", () => {
  for (
    const scale of [1, 0.03125, Math.fround(1 / Math.sqrt(768)), Math.fround(1 / Math.sqrt(3))]
  ) {
    assert.equal(uniformFromWord(0, scale), -scale);
    assert.equal(uniformFromWord(0xff, scale), -scale, "the low 8 bits are dropped");
    assert.equal(uniformFromWord(0x80000000, scale), 0);
    const top = uniformFromWord(0xffffffff, scale);
    assert(top < scale, `${top} should be below ${scale}`);
    assert.equal(top, Math.fround((1 - 2 ** -23) * scale));
    assert(uniformFromWord(0xfffffeff, scale) < top, "0xffffffff gives the largest value");
  }
  // The spec's step-by-step float32 form: u, 2u - 1 and the product, each rounded to float32.
  const next = rng(freshSeed());
  const scale = Math.fround(1 / Math.sqrt(300));
  for (let i = 0; i < 10_000; i++) {
    const word = (next() * 2 ** 32) >>> 0;
    const u = Math.fround((word >>> 8) * 2 ** -24);
    const twoUMinusOne = Math.fround(Math.fround(2 * u) - 1);
    assert.equal(uniformFromWord(word, scale), Math.fround(twoUMinusOne * scale), `word ${word}`);
  }
});

Deno.test("basis elements reproduce the worked example of docs/basis-spec-v1.md", () => {
  const key = moduleKey(0, "h.0.attn.c_attn.q");
  const scale = basisScale(BasisFactor.A, { k: 1024, l: 1024, inFeatures: 768 });
  assert.equal(hex(philox4x32_10([0, 0, 0, 0], key)), "b65997dc 7a8b99d4 2d0fb084 ae9aedc4");
  const values = [0, 1, 2, 3].map((element) =>
    basisElement(key, { factor: BasisFactor.A, index: 0, element, scale })
  );
  assert.equal(hex(values.map(bits)), "3c59665c baae8ce0 bca5e0a0 3c3a6bb4");
});

Deno.test("basisElement and materializeBasis use counter (e/4, i, f, 0), word e%4", () => {
  const key = moduleKey(freshSeed(), "h.2.attn.c_attn.v");
  const options = { factor: BasisFactor.B, index: 77, rows: 3, cols: 17, scale: 0.0625 };
  const matrix = materializeBasis(key, options);
  assert.equal(matrix.length, 51);
  for (const element of [0, 3, 4, 17, 50]) {
    const word = philox4x32_10([Math.floor(element / 4), 77, BasisFactor.B, 0], key)[element % 4];
    const value = basisElement(key, { ...options, element });
    assert.equal(value, uniformFromWord(word, 0.0625));
    assert.equal(matrix[element], value);
  }
  const normal = materializeBasis(key, { ...options, distribution: "normal" });
  const words = philox4x32_10([4, 77, BasisFactor.B, 0], key);
  assert.deepEqual(
    [normal[18], normal[19]],
    normalFromWords(words[2], words[3], { scale: 0.0625 }),
  );
  assert.equal(
    basisElement(key, { ...options, element: 19, distribution: "normal" }),
    normal[19],
  );
  assert.throws(() => basisElement(key, { ...options, factor: BasisFactor.A0, element: 0 }));
  assert.throws(() => basisElement(key, { ...options, element: 2 ** 32 }), RangeError);
  assert.throws(() => basisElement(key, { ...options, factor: 3 as 0, element: 0 }), RangeError);
});

function moments(values: Float32Array): { mean: number; variance: number } {
  let sum = 0;
  let squares = 0;
  for (const v of values) {
    sum += v;
    squares += v * v;
  }
  const mean = sum / values.length;
  return { mean, variance: squares / values.length - mean * mean };
}

Deno.test("uniform bases have mean 0 and variance scale^2/3 within 5 standard errors", () => {
  const n = 100_000;
  const scale = 0.03125;
  const key = moduleKey(freshSeed(), "h.5.attn.c_attn.q");
  const values = materializeBasis(key, {
    factor: BasisFactor.A,
    index: 9,
    rows: 1,
    cols: n,
    scale,
  });
  const { mean, variance } = moments(values);
  const sd = scale / Math.sqrt(3);
  assert(Math.abs(mean) < 5 * sd / Math.sqrt(n), `mean ${mean}`);
  // Var(X^2) of U(-s, s) is 4 s^4 / 45.
  const varianceError = Math.sqrt(4 / 45) * scale ** 2 / Math.sqrt(n);
  assert(Math.abs(variance - scale ** 2 / 3) < 5 * varianceError, `variance ${variance}`);
  assert(values.every((v) => v >= -scale && v < scale));
});

Deno.test("normal bases have mean 0 and variance scale^2 within 5 standard errors", () => {
  const n = 100_000;
  const scale = 0.25;
  const key = moduleKey(freshSeed(), "h.5.attn.c_attn.v");
  const values = materializeBasis(key, {
    factor: BasisFactor.B,
    index: 2,
    rows: n,
    cols: 1,
    scale,
    distribution: "normal",
  });
  const { mean, variance } = moments(values);
  assert(Math.abs(mean) < 5 * scale / Math.sqrt(n), `mean ${mean}`);
  // Var(X^2) of N(0, s^2) is 2 s^4.
  assert(Math.abs(variance - scale ** 2) < 5 * Math.SQRT2 * scale ** 2 / Math.sqrt(n));
});

Deno.test("different modules, seeds, factors and indices give unrelated streams", () => {
  const shape = { rows: 4, cols: 64, scale: 1 };
  const streams = [
    materializeBasis(moduleKey(1, "h.0.attn.c_attn.q"), { ...shape, factor: 0, index: 0 }),
    materializeBasis(moduleKey(1, "h.0.attn.c_attn.v"), { ...shape, factor: 0, index: 0 }),
    materializeBasis(moduleKey(1, "h.1.attn.c_attn.q"), { ...shape, factor: 0, index: 0 }),
    materializeBasis(moduleKey(2, "h.0.attn.c_attn.q"), { ...shape, factor: 0, index: 0 }),
    materializeBasis(moduleKey(1, "h.0.attn.c_attn.q"), { ...shape, factor: 1, index: 0 }),
    materializeBasis(moduleKey(1, "h.0.attn.c_attn.q"), { ...shape, factor: 2, index: 0 }),
    materializeBasis(moduleKey(1, "h.0.attn.c_attn.q"), { ...shape, factor: 0, index: 1 }),
  ];
  for (let a = 0; a < streams.length; a++) {
    for (let b = a + 1; b < streams.length; b++) {
      let same = 0;
      let dot = 0;
      for (let e = 0; e < 256; e++) {
        if (streams[a][e] === streams[b][e]) same++;
        dot += streams[a][e] * streams[b][e];
      }
      assert.equal(same, 0, `streams ${a} and ${b} share values`);
      // Correlation of independent streams: about N(0, 1/256); 5 standard errors.
      assert(Math.abs(dot / 256 / (1 / 3)) < 5 / 16, `streams ${a} and ${b} correlate`);
    }
  }
});

Deno.test("the spec identifier is stable", () => {
  assert.equal(BASIS_SPEC, "philox4x32-10/v1");
});
