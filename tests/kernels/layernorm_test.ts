import assert from "node:assert/strict";
import { Gpu } from "../../kernels/gpu.ts";
import { LayerNormKernels } from "../../kernels/layernorm.ts";
import { layerNormBackwardRef, layerNormForwardRef } from "../../kernels/layernorm_ref.ts";
import { Tensor } from "../../kernels/tensor.ts";
import {
  firstNonFinite,
  freshSeed,
  GPU_TEST,
  randomArray,
  relativeError,
  testGpu,
} from "../_util.ts";

// [B, T, C]: odd sizes, non-multiples of the workgroup, more rows than one chunk, GPT-2's C, and
// both sides of the channel count where the workgroup grows from 32 to 128 threads.
const SHAPES: readonly [number, number, number][] = [
  [1, 1, 1],
  [1, 3, 3],
  [2, 17, 17],
  [3, 17, 64],
  [2, 3, 255],
  [1, 7, 511],
  [1, 7, 515],
  [1, 300, 768],
];

function check(got: Float32Array, want: ArrayLike<number>, what: string): void {
  assert.equal(firstNonFinite(got), -1, `${what}: non-finite element ${firstNonFinite(got)}`);
  const err = relativeError(got, want);
  assert(err < 1e-5, `${what}: relative error ${err}`);
}

async function exercise(gpu: Gpu, seed: number, shapes: readonly [number, number, number][]) {
  const ln = await LayerNormKernels.load(gpu);
  for (const [k, [b, t, c]] of shapes.entries()) {
    const what = (op: string) => `${op} [${b}, ${t}, ${c}] seed ${seed}`;
    const rows = b * t;
    const s = seed + 10 * k;
    // Off-centre inputs: the mean must really be subtracted.
    const x = randomArray(rows * c, s).map((v) => 2 * v + 3);
    const w = randomArray(c, s + 1);
    const bi = randomArray(c, s + 2);
    const g = randomArray(rows * c, s + 3);
    const starts = [randomArray(rows * c, s + 4), randomArray(c, s + 5), randomArray(c, s + 6)];
    const eps = k % 2 ? 1e-5 : 1e-3;
    using inp = Tensor.from(gpu, x, [b, t, c]);
    using weight = Tensor.from(gpu, w, [c]);
    using bias = Tensor.from(gpu, bi, [c]);
    using out = Tensor.from(gpu, new Float32Array(rows * c).fill(NaN), [b, t, c]);
    using mean = Tensor.from(gpu, new Float32Array(rows).fill(NaN), [rows]);
    using rstd = Tensor.from(gpu, new Float32Array(rows).fill(NaN), [rows]);
    ln.forward({ out, mean, rstd, inp, weight, bias, eps });
    const want = layerNormForwardRef(x, { weight: w, bias: bi, eps });
    check(await out.read(), want.out, what("out"));
    check(await mean.read(), want.mean, what("mean"));
    check(await rstd.read(), want.rstd, what("rstd"));

    using dout = Tensor.from(gpu, g, [b, t, c]);
    using dinp = Tensor.from(gpu, starts[0], [b, t, c]);
    using dweight = Tensor.from(gpu, starts[1], [c]);
    using dbias = Tensor.from(gpu, starts[2], [c]);
    ln.backward({ dinp, dweight, dbias, dout, inp, weight, mean, rstd });
    const grads = {
      dinp: Float64Array.from(starts[0]),
      dweight: Float64Array.from(starts[1]),
      dbias: Float64Array.from(starts[2]),
    };
    // The backward's inputs are the saved f32 statistics, not the float64 ones: with few channels
    // and a small variance, the f32 rounding of the mean alone moves dinp by ~1e-5.
    const saved = { mean: await mean.read(), rstd: await rstd.read() };
    layerNormBackwardRef(grads, { dout: g, inp: x, weight: w, ...saved });
    check(await dinp.read(), grads.dinp, what("dinp"));
    check(await dweight.read(), grads.dweight, what("dweight"));
    check(await dbias.read(), grads.dbias, what("dbias"));
  }
}

Deno.test(
  "layernorm matches the float64 reference on odd shapes and accumulates gradients",
  GPU_TEST,
  async () => {
    await exercise(await testGpu(), freshSeed(), SHAPES);
  },
);

Deno.test(
  "layernorm splits activations larger than one binding into row windows",
  GPU_TEST,
  async () => {
    using gpu = await Gpu.acquire({ maxBindingBytes: 4096 });
    await exercise(gpu, freshSeed(), [[1, 1, 1], [3, 17, 3], [2, 17, 64], [1, 5, 255]]);
  },
);

Deno.test("layernorm rejects tensors of the wrong size", GPU_TEST, async () => {
  const gpu = await testGpu();
  const ln = await LayerNormKernels.load(gpu);
  using x = Tensor.empty(gpu, [2, 3, 4]);
  using c = Tensor.empty(gpu, [4]);
  using rows = Tensor.empty(gpu, [6]);
  using short = Tensor.empty(gpu, [5]);
  assert.throws(
    () => ln.forward({ out: x, mean: short, rstd: rows, inp: x, weight: c, bias: c }),
    /"mean" \[5\] f32 must hold 6 f32 values \(6 rows of 4 channels\)/,
  );
});

Deno.test("layernorm reference gradients match finite differences", () => {
  const seed = freshSeed();
  const [rows, c, eps] = [2, 5, 1e-5];
  const x = Float64Array.from(randomArray(rows * c, seed));
  const w = Float64Array.from(randomArray(c, seed + 1));
  const bi = Float64Array.from(randomArray(c, seed + 2));
  const g = randomArray(rows * c, seed + 3);
  const loss = (xs: Float64Array, ws: Float64Array, bs: Float64Array) =>
    layerNormForwardRef(xs, { weight: ws, bias: bs, eps }).out
      .reduce((s, v, i) => s + v * g[i], 0);
  const fwd = layerNormForwardRef(x, { weight: w, bias: bi, eps });
  const grads = {
    dinp: new Float64Array(rows * c),
    dweight: new Float64Array(c),
    dbias: new Float64Array(c),
  };
  layerNormBackwardRef(grads, { dout: g, inp: x, weight: w, mean: fwd.mean, rstd: fwd.rstd });
  const h = 1e-6;
  const fd = (which: 0 | 1 | 2, i: number) => {
    const args = [x, w, bi].map((a) => [Float64Array.from(a), Float64Array.from(a)]);
    args[which][0][i] += h;
    args[which][1][i] -= h;
    return (loss(args[0][0], args[1][0], args[2][0]) - loss(args[0][1], args[1][1], args[2][1])) /
      (2 * h);
  };
  for (const [which, grad] of [grads.dinp, grads.dweight, grads.dbias].entries()) {
    for (let i = 0; i < grad.length; i++) {
      const want = fd(which as 0 | 1 | 2, i);
      assert(
        Math.abs(want - grad[i]) < 1e-7,
        `grad ${which}[${i}] ${grad[i]} vs ${want}, seed ${seed}`,
      );
    }
  }
});
