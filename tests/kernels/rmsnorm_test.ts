import assert from "node:assert/strict";
import { Gpu } from "../../kernels/gpu.ts";
import { RmsNormKernels } from "../../kernels/rmsnorm.ts";
import { rmsNormBackwardRef, rmsNormForwardRef } from "../../kernels/rmsnorm_ref.ts";
import { Tensor } from "../../kernels/tensor.ts";
import {
  firstNonFinite,
  freshSeed,
  GPU_TEST,
  randomArray,
  relativeError,
  testGpu,
} from "../_util.ts";

// [B, T, C]: odd rows and widths (1, 3, 17, 255, 1023), more rows than one chunk, LLaMA-ish C.
const SHAPES: readonly [number, number, number][] = [
  [1, 1, 1],
  [1, 3, 3],
  [1, 17, 17],
  [3, 85, 255],
  [1, 1023, 17],
  [1, 3, 1023],
  [2, 150, 576],
];

function check(got: Float32Array, want: ArrayLike<number>, what: string): void {
  assert.equal(firstNonFinite(got), -1, `${what}: non-finite element ${firstNonFinite(got)}`);
  const err = relativeError(got, want);
  assert(err < 1e-5, `${what}: relative error ${err}`);
}

async function exercise(gpu: Gpu, seed: number, shapes: readonly [number, number, number][]) {
  const norm = await RmsNormKernels.load(gpu);
  for (const [k, [b, t, c]] of shapes.entries()) {
    const what = (op: string) => `${op} [${b}, ${t}, ${c}] seed ${seed}`;
    const rows = b * t;
    const s = seed + 10 * k;
    // Off-centre inputs of varying scale: RMSNorm does not subtract the mean.
    const x = randomArray(rows * c, s).map((v, i) => (2 * v + 1) * (1 + (i % 7)));
    const w = randomArray(c, s + 1);
    const g = randomArray(rows * c, s + 3);
    const starts = [randomArray(rows * c, s + 4), randomArray(c, s + 5)];
    const eps = k % 2 ? 1e-6 : 1e-5;
    using inp = Tensor.from(gpu, x, [b, t, c]);
    using weight = Tensor.from(gpu, w, [c]);
    using out = Tensor.from(gpu, new Float32Array(rows * c).fill(NaN), [b, t, c]);
    using rstd = Tensor.from(gpu, new Float32Array(rows).fill(NaN), [rows]);
    norm.forward({ out, rstd, inp, weight, eps });
    const want = rmsNormForwardRef(x, { weight: w, eps });
    check(await out.read(), want.out, what("out"));
    check(await rstd.read(), want.rstd, what("rstd"));

    using dout = Tensor.from(gpu, g, [b, t, c]);
    using dinp = Tensor.from(gpu, starts[0], [b, t, c]);
    using dweight = Tensor.from(gpu, starts[1], [c]);
    norm.backward({ dinp, dweight, dout, inp, weight, rstd });
    const grads = { dinp: Float64Array.from(starts[0]), dweight: Float64Array.from(starts[1]) };
    rmsNormBackwardRef(grads, { dout: g, inp: x, weight: w, rstd: await rstd.read() });
    // dinp = start + rstd·(w·g - x·rstd²·mean(w·g·x)): with one column or a few the two products
    // cancel almost to zero, so the f32 error is measured against the size of the terms.
    const r = await rstd.read();
    const terms = starts[0].map((v, i) =>
      Math.abs(v) + Math.abs(w[i % c] * g[i] * r[Math.floor(i / c)]) * 2
    );
    const gotDinp = await dinp.read();
    assert.equal(firstNonFinite(gotDinp), -1, `${what("dinp")}: non-finite element`);
    const norm2 = (v: ArrayLike<number>) => Math.sqrt(Array.from(v).reduce((a, x) => a + x * x, 0));
    const diff = Array.from(gotDinp, (v, i) => v - grads.dinp[i]);
    const dinpErr = norm2(diff) / norm2(terms);
    assert(dinpErr < 1e-5, `${what("dinp")}: error ${dinpErr} of the terms' size`);
    check(await dweight.read(), grads.dweight, what("dweight"));
  }
}

Deno.test(
  "rmsnorm matches the float64 reference on odd shapes and accumulates gradients",
  GPU_TEST,
  async () => {
    await exercise(await testGpu(), freshSeed(), SHAPES);
  },
);

Deno.test(
  "rmsnorm splits activations larger than one binding into row windows",
  GPU_TEST,
  async () => {
    using gpu = await Gpu.acquire({ maxBindingBytes: 4096 });
    await exercise(gpu, freshSeed(), [[1, 1, 1], [3, 17, 3], [2, 17, 64], [1, 5, 255]]);
  },
);

Deno.test("rmsnorm is the same for every row scale but a zero row", GPU_TEST, async () => {
  const gpu = await testGpu();
  const norm = await RmsNormKernels.load(gpu);
  const c = 17;
  const base = randomArray(c, freshSeed());
  // One row times 1e-3, 1, 1e3 (with eps = 0, the same output), and a zero row (with eps > 0,
  // rstd = 1 / sqrt(eps) and out = 0).
  const x = new Float32Array(4 * c);
  for (const [r, scale] of [1e-3, 1, 1e3].entries()) {
    for (let i = 0; i < c; i++) x[r * c + i] = base[i] * scale;
  }
  using inp = Tensor.from(gpu, x, [4, c]);
  using weight = Tensor.from(gpu, new Float32Array(c).fill(1), [c]);
  using out = Tensor.from(gpu, new Float32Array(4 * c).fill(NaN), [4, c]);
  using rstd = Tensor.from(gpu, new Float32Array(4).fill(NaN), [4]);
  norm.forward({ out, rstd, inp, weight, eps: 0 });
  const got = await out.read();
  for (let r = 1; r < 3; r++) {
    const err = relativeError(got.subarray(r * c, (r + 1) * c), got.subarray(0, c));
    assert(err < 1e-6, `row ${r}: relative error ${err}`);
  }
  norm.forward({ out, rstd, inp, weight, eps: 1e-6 });
  const zero = (await out.read()).subarray(3 * c);
  assert(zero.every((v) => v === 0), `zero row: ${zero}`);
  assert(Math.abs((await rstd.read())[3] - 1000) < 1e-3);
});

Deno.test("rmsnorm rejects tensors of the wrong size", GPU_TEST, async () => {
  const gpu = await testGpu();
  const norm = await RmsNormKernels.load(gpu);
  using x = Tensor.empty(gpu, [2, 3, 4]);
  using c = Tensor.empty(gpu, [4]);
  using short = Tensor.empty(gpu, [5]);
  assert.throws(
    () => norm.forward({ out: x, rstd: short, inp: x, weight: c }),
    /"rstd" \[5\] f32 must hold 6 f32 values \(6 rows of 4 channels\)/,
  );
  using rows = Tensor.empty(gpu, [6]);
  assert.throws(
    () => norm.forward({ out: x, rstd: rows, inp: x, weight: c, eps: -1 }),
    /rmsnorm_forward: eps -1 is negative/,
  );
});

Deno.test("rmsnorm reference gradients match finite differences", () => {
  const seed = freshSeed();
  const [rows, c, eps] = [3, 5, 1e-6];
  const x = Float64Array.from(randomArray(rows * c, seed), (v) => v + 0.25);
  const w = Float64Array.from(randomArray(c, seed + 1));
  const g = randomArray(rows * c, seed + 3);
  const loss = (xs: Float64Array, ws: Float64Array) =>
    rmsNormForwardRef(xs, { weight: ws, eps }).out.reduce((s, v, i) => s + v * g[i], 0);
  const { rstd } = rmsNormForwardRef(x, { weight: w, eps });
  const grads = { dinp: new Float64Array(rows * c), dweight: new Float64Array(c) };
  rmsNormBackwardRef(grads, { dout: g, inp: x, weight: w, rstd });
  const h = 1e-6;
  const fd = (which: 0 | 1, i: number) => {
    const args = [x, w].map((a) => [Float64Array.from(a), Float64Array.from(a)]);
    args[which][0][i] += h;
    args[which][1][i] -= h;
    return (loss(args[0][0], args[1][0]) - loss(args[0][1], args[1][1])) / (2 * h);
  };
  for (const [which, grad] of [grads.dinp, grads.dweight].entries()) {
    for (let i = 0; i < grad.length; i++) {
      const want = fd(which as 0 | 1, i);
      assert(
        Math.abs(want - grad[i]) < 1e-7,
        `grad ${which}[${i}] ${grad[i]} vs ${want}, seed ${seed}`,
      );
    }
  }
  // HF's formula at one point: x = [3, 4], w = [1, 2], eps = 0: rms = sqrt(12.5).
  const one = rmsNormForwardRef([3, 4], { weight: [1, 2], eps: 0 }).out;
  assert.deepEqual(Array.from(one), [3 / Math.sqrt(12.5), 8 / Math.sqrt(12.5)]);
});
