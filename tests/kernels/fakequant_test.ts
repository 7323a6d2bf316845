import assert from "node:assert/strict";
import { FakequantKernels } from "../../kernels/fakequant.ts";
import { fakequantRef } from "../../kernels/fakequant_ref.ts";
import { Tensor } from "../../kernels/tensor.ts";
import type { QuantOptions, QuantScheme } from "../../formats/quantize.ts";
import { freshSeed, GPU_TEST, randomArray, rng, testGpu } from "../_util.ts";

const SCHEMES: QuantScheme[] = ["symmetric", "asymmetric"];
const BITS = [1, 2, 3, 4, 5, 6, 7, 8];

interface Case {
  name: string;
  values: Float32Array;
}

/** Runs every case through the kernel at every bit width and scheme; compares bit patterns. */
async function check(cases: Case[], seed: number): Promise<void> {
  const gpu = await testGpu();
  const fq = await FakequantKernels.load(gpu);
  const runs: { c: Case; q: QuantOptions; out: Tensor; stats: Tensor; x: Tensor }[] = [];
  for (const c of cases) {
    const x = Tensor.from(gpu, c.values, [c.values.length]);
    for (const scheme of SCHEMES) {
      for (const bits of BITS) {
        const out = Tensor.from(gpu, new Float32Array(c.values.length).fill(NaN), [
          c.values.length,
        ]);
        const stats = Tensor.from(gpu, new Float32Array([NaN, NaN]), [2]);
        const q = { bits, scheme };
        fq.forward({ out, stats }, { x, ...q });
        runs.push({ c, q, out, stats, x });
      }
    }
  }
  gpu.flush();
  for (const { c, q, out, stats } of runs) {
    const ref = fakequantRef(c.values, q);
    const got = await out.read();
    const gotBits = new Uint32Array(got.buffer);
    const refBits = new Uint32Array(ref.out.buffer);
    const where = `${c.name} (n=${c.values.length}) ${q.bits}-bit ${q.scheme}, seed ${seed}`;
    const bad = gotBits.findIndex((b, i) => b !== refBits[i]);
    assert.equal(
      bad,
      -1,
      `${where}: element ${bad} of ${c.values[bad]} is ${got[bad]}, host ${ref.out[bad]}`,
    );
    const [scale, zeroPoint] = await stats.read();
    assert.equal(scale, ref.scale, `${where}: scale`);
    assert.equal(zeroPoint, ref.zeroPoint, `${where}: zero point`);
  }
  for (const r of new Set(runs.flatMap((r) => [r.out, r.stats, r.x]))) r[Symbol.dispose]();
}

Deno.test(
  "fakequant matches the host quantizer bit for bit on random odd sizes, 1-8 bits, both schemes",
  GPU_TEST,
  async () => {
    const seed = freshSeed();
    const next = rng(seed);
    const cases: Case[] = [1, 3, 17, 258, 1031].map((n, i) => ({
      name: `random ${i}`,
      values: randomArray(n, seed + i),
    }));
    // One sign only, and magnitudes spread over many octaves (rounding of the f64 sums).
    cases.push({
      name: "positive",
      values: randomArray(33, seed + 9).map((v) => Math.abs(v) + 0.25),
    });
    cases.push({
      name: "wide",
      values: randomArray(65, seed + 10).map((v) => v * 2 ** Math.floor(next() * 60 - 50)),
    });
    await check(cases, seed);
  },
);

Deno.test(
  "fakequant matches the host on ties, float64 rounding edges, zeros, subnormals, a large tensor",
  GPU_TEST,
  async () => {
    const seed = freshSeed();
    const next = rng(seed);
    // Symmetric ties: max|x| = L s makes x = (j + 1/2) s a tie for the 2^(b-1)-1 levels of some
    // width; asymmetric ties: min 0 and max (2^b - 1) s for others. s a power of two or 3 times one.
    const ties: Case[] = [];
    for (const bits of [2, 3, 4, 8]) {
      for (const s of [2 ** -3, 3 * 2 ** -7]) {
        const levels = 2 ** (bits - 1) - 1;
        const top = 2 ** bits - 1;
        const sym = [levels * s];
        const asym = [0, top * s];
        for (let j = 0; j < Math.min(levels, 9); j++) sym.push((j + 0.5) * s, -(j + 0.5) * s);
        for (let j = 0; j < Math.min(top, 9); j++) asym.push((j + 0.5) * s);
        ties.push({ name: `sym ties ${bits}-bit s=${s}`, values: Float32Array.from(sym) });
        ties.push({ name: `asym ties ${bits}-bit s=${s}`, values: Float32Array.from(asym) });
      }
    }
    // Where the host's float64 roundings decide: symmetric ties x = (2j + 1) y against
    // M = 2 L y for a random y (c = L / M is rounded, so x * c lands on either side of the tie),
    // and a tiny minimum under positive values (q * scale + min rounds to 53 bits onto an f32
    // midpoint).
    for (const bits of [3, 4, 6, 8]) {
      const levels = 2 ** (bits - 1) - 1;
      for (let t = 0; t < 4; t++) {
        const y = Math.fround((1 + Math.floor(next() * 2 ** 15) * 2 ** -15) * 2 ** -5);
        const sym = [2 * levels * y];
        for (let j = 0; j < levels; j++) sym.push((2 * j + 1) * y * (j % 2 ? -1 : 1));
        ties.push({ name: `sym ties ${bits}-bit y=${y}`, values: Float32Array.from(sym) });
      }
    }
    for (const tiny of [-(2 ** -100), 2 ** -90, -7e-45]) {
      const values = randomArray(61, seed + 2).map((v) => Math.abs(v) + 0.01);
      values[17] = tiny;
      ties.push({ name: `tiny minimum ${tiny}`, values });
    }
    // 1 bit: the float64 sum 1 + 2^-24 drops each of 62 terms 2^-54, so the mean of the 64
    // lands on an f32 midpoint (the exact mean is above it).
    const sum = Float32Array.from({ length: 64 }, (_, i) => (i % 2 ? -1 : 1) * 2 ** -54);
    sum.set([-1, 2 ** -24]);
    ties.push({ name: "rounded sum", values: sum });
    const cases: Case[] = [
      ...ties,
      { name: "zeros", values: new Float32Array(7) },
      { name: "negative zeros", values: new Float32Array(5).fill(-0) },
      { name: "constant", values: new Float32Array(9).fill(-0.3) },
      { name: "one value", values: Float32Array.of(next() - 0.5) },
      {
        name: "subnormal",
        values: Float32Array.of(1e-40, -3e-41, 2e-39, 0, 1.2e-38, -7e-45),
      },
      { name: "large", values: randomArray(4099, seed + 1) },
    ];
    await check(cases, seed);
  },
);

Deno.test(
  "fakequant refuses mismatched sizes, bad bits and overlapping output",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const fq = await FakequantKernels.load(gpu);
    using x = Tensor.from(gpu, new Float32Array(4), [4]);
    using out = Tensor.empty(gpu, [3]);
    assert.throws(
      () => fq.forward({ out }, { x, bits: 4, scheme: "symmetric" }),
      /"out" has 3 elements, "x" has 4/,
    );
    assert.throws(() => fq.forward({ out: x }, { x, bits: 9, scheme: "symmetric" }), /bits 9/);
    assert.throws(
      () => fq.forward({ out: x }, { x, bits: 4, scheme: "asymmetric" }),
      /"out" overlaps "x"/,
    );
  },
);
