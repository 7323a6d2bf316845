import assert from "node:assert/strict";
import { BasisFactor, basisScale, materializeBasis, moduleKey } from "../../kernels/basis_spec.ts";
import { NolaKernels } from "../../kernels/nola.ts";
import { nolaCombineRef, nolaGradientRef } from "../../kernels/nola_ref.ts";
import { Tensor } from "../../kernels/tensor.ts";
import { checkAccumulated, freshSeed, GPU_TEST, randomArray, testGpu } from "../_util.ts";

interface Case {
  factor: 0 | 1;
  count: number;
  rows: number;
  cols: number;
  a0?: boolean;
}

// A: r x in, B: out x r; k and l from 1 to 1024 (1024 takes the chunked two-pass path).
const CASES: Case[] = [
  { factor: 0, count: 1, rows: 1, cols: 1, a0: true },
  { factor: 0, count: 3, rows: 3, cols: 17, a0: true },
  { factor: 0, count: 17, rows: 8, cols: 255 },
  { factor: 0, count: 64, rows: 3, cols: 64, a0: true },
  { factor: 0, count: 1024, rows: 8, cols: 17, a0: true },
  { factor: 0, count: 1024, rows: 1, cols: 255 },
  { factor: 1, count: 1, rows: 255, cols: 3 },
  { factor: 1, count: 17, rows: 17, cols: 1 },
  { factor: 1, count: 64, rows: 64, cols: 8 },
  { factor: 1, count: 1024, rows: 3, cols: 8 },
];

function scales(c: Case): { scale: number; a0: number } {
  const sizes = { k: c.count, l: c.count, inFeatures: c.factor === 0 ? c.cols : 1 };
  const factor = c.factor === 0 ? BasisFactor.A : BasisFactor.B;
  return { scale: basisScale(factor, sizes), a0: basisScale(BasisFactor.A0, sizes) };
}

/** `||got - want|| / ||size||` below 1e-5; `size` sums absolute terms where a sum may cancel. */
function check(
  got: Float32Array,
  want: ArrayLike<number>,
  what: string,
  size: ArrayLike<number> = want,
): void {
  checkAccumulated(got, new Float64Array(want.length), want, what, size);
}

function describe(c: Case, seed: number): string {
  return `factor ${c.factor} count ${c.count} [${c.rows}, ${c.cols}]${c.a0 ? " +A0" : ""} ` +
    `seed ${seed}`;
}

async function combineCases(nola: NolaKernels, seed: number, cases: Case[]): Promise<void> {
  const gpu = nola.gpu;
  for (const [index, c] of cases.entries()) {
    const key = moduleKey(seed + index, `h.${index}.attn.c_attn.q`);
    const n = c.rows * c.cols;
    const coeffs = randomArray(c.count, seed + index);
    const { scale, a0 } = scales(c);
    const withA0 = c.a0 ? { scale: a0 } : undefined;
    using tc = Tensor.from(gpu, coeffs, [c.count]);
    using out = Tensor.from(gpu, new Float32Array(n).fill(NaN), [c.rows, c.cols]);
    const basis = { key, factor: c.factor, count: c.count, rows: c.rows, cols: c.cols, scale };
    nola.combine({ ...basis, out, coeffs: tc, withA0 });
    const want = nolaCombineRef(coeffs, { ...basis, withA0 });
    const size = nolaCombineRef(coeffs, { ...basis, withA0, absolute: true });
    const what = `combine ${describe(c, seed)} chunk ${nola.chunk ?? "auto"}`;
    check(await out.read(), want, what, size);
  }
}

Deno.test("NOLA combine matches the float64 reference on odd shapes", GPU_TEST, async () => {
  const nola = await NolaKernels.load(await testGpu());
  // Many bases take the chunked two-pass path, few the single pass.
  assert(CASES.every((c) => (nola.chunking(c.count, c.rows * c.cols).chunks > 1) === c.count > 8));
  // The chunk count is capped, so partial sums stay within 16 factor-sized buffers for any k.
  assert.deepEqual(nola.chunking(1024, 8 * 768), { chunk: 64, chunks: 16 });
  assert.deepEqual(nola.chunking(4096, 8 * 768), { chunk: 256, chunks: 16 });
  await combineCases(nola, freshSeed(), CASES);
});

Deno.test("NOLA combine's chunked reduction matches for every chunk size", GPU_TEST, async () => {
  const gpu = await testGpu();
  const seed = freshSeed();
  const cases = CASES.filter((c) => c.count > 1 && c.count < 1024);
  for (const chunk of [1, 3, 16]) {
    await combineCases(await NolaKernels.load(gpu, { chunk }), seed, cases);
  }
});

Deno.test("NOLA combine regenerates basis elements bit for bit", GPU_TEST, async () => {
  const gpu = await testGpu();
  const nola = await NolaKernels.load(gpu);
  const seed = freshSeed();
  const key = moduleKey(seed, "h.*.attn.c_attn.v");
  const [rows, cols] = [3, 255];
  // One coefficient of 1 and an empty sum plus A0 each reproduce one basis exactly.
  using one = Tensor.from(gpu, new Float32Array([0, 1]).subarray(1), [1]);
  using out = Tensor.from(gpu, new Float32Array(rows * cols).fill(NaN), [rows, cols]);
  using none = Tensor.empty(gpu, [0]);
  nola.combine({ out, coeffs: one, key, factor: 1, count: 1, rows, cols, scale: 0.25 });
  const b0 = materializeBasis(key, { factor: BasisFactor.B, index: 0, rows, cols, scale: 0.25 });
  assert.deepEqual(await out.read(), b0, `B_0 seed ${seed}`);
  nola.combine({
    out,
    coeffs: none,
    key,
    factor: 0,
    count: 0,
    rows,
    cols,
    scale: 1,
    withA0: { scale: 0.0625 },
  });
  const a0 = materializeBasis(key, { factor: BasisFactor.A0, index: 0, rows, cols, scale: 0.0625 });
  assert.deepEqual(await out.read(), a0, `A0 seed ${seed}`);
});

Deno.test("NOLA combine is deterministic", GPU_TEST, async () => {
  const gpu = await testGpu();
  const nola = await NolaKernels.load(gpu);
  const seed = freshSeed();
  const key = moduleKey(seed, "m");
  using coeffs = Tensor.from(gpu, randomArray(1024, seed), [1024]);
  using out = Tensor.empty(gpu, [8, 64]);
  const run = async () => {
    nola.combine({ out, coeffs, key, factor: 0, count: 1024, rows: 8, cols: 64, scale: 0.03125 });
    return await out.read();
  };
  assert.deepEqual(await run(), await run(), `seed ${seed}`);
});

async function gradientCases(nola: NolaKernels, seed: number, cases: Case[]): Promise<void> {
  const gpu = nola.gpu;
  for (const [index, c] of cases.entries()) {
    const key = moduleKey(seed + index, `h.${index}.attn.c_attn.v`);
    const n = c.rows * c.cols;
    const grad = randomArray(n, seed + 2 * index);
    const start = randomArray(c.count, seed + 2 * index + 1);
    const { scale } = scales(c);
    const basis = { key, factor: c.factor, count: c.count, rows: c.rows, cols: c.cols, scale };
    using tg = Tensor.from(gpu, grad, [c.rows, c.cols]);
    using dcoeffs = Tensor.from(gpu, start, [c.count]);
    nola.gradient({ ...basis, dcoeffs, grad: tg });
    const once = new Float64Array(c.count);
    nolaGradientRef(once, { ...basis, grad });
    const size = new Float64Array(c.count);
    nolaGradientRef(size, { ...basis, grad, absolute: true });
    checkAccumulated(await dcoeffs.read(), start, once, `gradient ${describe(c, seed)}`, size);
    nola.gradient({ ...basis, dcoeffs, grad: tg });
    const [twice, twiceSize] = [once, size].map((v) => v.map((e) => 2 * e));
    const what = `gradient twice ${describe(c, seed)}`;
    checkAccumulated(await dcoeffs.read(), start, twice, what, twiceSize);
    // The accumulated part alone, so a large start cannot hide an error in the sum.
    using fresh = Tensor.from(gpu, new Float32Array(c.count), [c.count]);
    nola.gradient({ ...basis, dcoeffs: fresh, grad: tg });
    const zeros = new Float64Array(c.count);
    checkAccumulated(
      await fresh.read(),
      zeros,
      once,
      `gradient from zero ${describe(c, seed)}`,
      size,
    );
  }
}

Deno.test("NOLA gradient matches the float64 reference and accumulates", GPU_TEST, async () => {
  const nola = await NolaKernels.load(await testGpu());
  await gradientCases(nola, freshSeed(), CASES);
});

Deno.test("NOLA kernels spill big launches into a second grid dimension", GPU_TEST, async () => {
  const nola = await NolaKernels.load(await testGpu(), { maxWorkgroups: 2 });
  const seed = freshSeed();
  // 255 x 3 elements make 4 workgroups of blocks; 17 bases make 17 gradient workgroups.
  const cases = CASES.filter((c) => c.count === 17 || c.rows === 255);
  await combineCases(nola, seed, cases);
  await gradientCases(nola, seed, cases);
});

Deno.test("NOLA kernels work on unaligned slices of arenas", GPU_TEST, async () => {
  const gpu = await testGpu();
  const nola = await NolaKernels.load(gpu);
  const seed = freshSeed();
  const key = moduleKey(seed, "h.0.attn.c_attn.q");
  const [count, rows, cols] = [64, 3, 17];
  const n = rows * cols;
  const coeffData = randomArray(count + 7, seed);
  const gradData = randomArray(n + 5, seed + 1);
  using coeffArena = Tensor.from(gpu, coeffData, [count + 7]);
  using gradArena = Tensor.from(gpu, gradData, [n + 5]);
  using outArena = Tensor.from(gpu, new Float32Array(n + 9).fill(-7), [n + 9]);
  const basis = { key, factor: 0 as const, count, rows, cols, scale: 0.125 };
  nola.combine({
    ...basis,
    out: { tensor: outArena, offset: 5, size: n },
    coeffs: { tensor: coeffArena, offset: 7 },
    withA0: { scale: 0.25 },
  });
  const out = await outArena.read();
  const want = nolaCombineRef(coeffData.subarray(7), { ...basis, withA0: { scale: 0.25 } });
  check(out.subarray(5, 5 + n), want, `combine slice seed ${seed}`);
  assert.deepEqual([...out.subarray(0, 5), ...out.subarray(5 + n)], Array(9).fill(-7));
  nola.gradient({
    ...basis,
    dcoeffs: { tensor: coeffArena, offset: 3, size: count },
    grad: { tensor: gradArena, offset: 5 },
  });
  const dcoeffs = new Float64Array(count);
  const size = new Float64Array(count);
  nolaGradientRef(dcoeffs, { ...basis, grad: gradData.subarray(5) });
  nolaGradientRef(size, { ...basis, grad: gradData.subarray(5), absolute: true });
  const after = await coeffArena.read();
  const start = coeffData.subarray(3, 3 + count);
  const got = after.subarray(3, 3 + count);
  checkAccumulated(got, start, dcoeffs, `gradient slice seed ${seed}`, size);
  assert.deepEqual([...after.subarray(0, 3), ...after.subarray(3 + count)], [
    ...coeffData.subarray(0, 3),
    ...coeffData.subarray(3 + count),
  ]);
});

Deno.test("NOLA kernels reject mismatched sizes and shared buffers", GPU_TEST, async () => {
  const gpu = await testGpu();
  const nola = await NolaKernels.load(gpu);
  using coeffs = Tensor.empty(gpu, [4]);
  using out = Tensor.empty(gpu, [3, 5]);
  const basis = { key: [1, 2] as [number, number], factor: 0 as const, rows: 3, cols: 5 };
  assert.throws(
    () => nola.combine({ ...basis, out, coeffs, count: 5, scale: 1 }),
    /"coeffs" has 4 elements, expected 5/,
  );
  assert.throws(
    () => nola.gradient({ ...basis, dcoeffs: coeffs, grad: coeffs, count: 4, scale: 1, rows: 2 }),
    /"grad" has 4 elements, expected 10/,
  );
  assert.throws(
    () =>
      nola.gradient({
        ...basis,
        dcoeffs: coeffs,
        grad: coeffs,
        count: 4,
        rows: 2,
        cols: 2,
        scale: 1,
      }),
    /share one buffer/,
  );
  assert.throws(
    () =>
      nola.combine({ ...basis, out, coeffs, count: 4, scale: 1, factor: 1, withA0: { scale: 1 } }),
    /A0 belongs to factor A/,
  );
});
