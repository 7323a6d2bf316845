import assert from "node:assert/strict";
import { Gpu } from "../../kernels/gpu.ts";
import { ReduceKernels } from "../../kernels/reduce.ts";
import { biasForwardRef, reduceBackwardRef } from "../../kernels/reduce_ref.ts";
import { Tensor } from "../../kernels/tensor.ts";
import {
  firstNonFinite,
  freshSeed,
  GPU_TEST,
  randomArray,
  relativeError,
  testGpu,
} from "../_util.ts";

// [M, N]: odd sizes, a row count past one chunk of rows, GPT-2's 4C column count.
const SHAPES: readonly [number, number][] = [
  [1, 1],
  [3, 17],
  [17, 3],
  [255, 64],
  [1023, 255],
  [300, 3072],
];

async function exercise(gpu: Gpu, seed: number, shapes = SHAPES): Promise<void> {
  const reduce = await ReduceKernels.load(gpu);
  for (const [k, [m, n]] of shapes.entries()) {
    const what = `[${m}, ${n}] seed ${seed}`;
    const dout = randomArray(m * n, seed + 2 * k);
    const start = randomArray(n, seed + 2 * k + 1);
    using tdout = Tensor.from(gpu, dout, [m, n]);
    using dbias = Tensor.from(gpu, start, [n]);
    reduce.backward({ dbias, dout: tdout });
    const got = await dbias.read();
    const want = Float64Array.from(start);
    reduceBackwardRef(want, { dout });
    assert.equal(firstNonFinite(got), -1, what);
    const err = relativeError(got, want);
    assert(err < 1e-5, `${what}: relative error ${err}`);
  }
}

Deno.test(
  "reduce (bias gradient) matches the float64 reference and accumulates",
  GPU_TEST,
  async () => {
    await exercise(await testGpu(), freshSeed());
  },
);

Deno.test(
  "reduce splits a gradient larger than one binding into row windows",
  GPU_TEST,
  async () => {
    using gpu = await Gpu.acquire({ maxBindingBytes: 4096 });
    await exercise(gpu, freshSeed(), [[1, 1], [255, 3], [300, 17], [40, 255], [3, 1000]]);
    const reduce = await ReduceKernels.load(gpu);
    using dout = Tensor.empty(gpu, [2, 1024]);
    using dbias = Tensor.empty(gpu, [1024]);
    assert.throws(() => reduce.backward({ dbias, dout }), /over the 4096-byte binding limit/);
  },
);

Deno.test("reduce gives bit-identical results run after run", GPU_TEST, async () => {
  const gpu = await testGpu();
  const reduce = await ReduceKernels.load(gpu);
  const seed = freshSeed();
  using dout = Tensor.from(gpu, randomArray(1000 * 33, seed), [1000, 33]);
  const results = [];
  for (let i = 0; i < 2; i++) {
    using dbias = Tensor.from(gpu, new Float32Array(33), [33]);
    reduce.backward({ dbias, dout });
    results.push(await dbias.read());
  }
  assert.deepEqual(results[0], results[1], `seed ${seed}`);
});

Deno.test("reduce reference is the gradient of a bias add (finite differences)", () => {
  const seed = freshSeed();
  const [m, n] = [4, 3];
  const inp = randomArray(m * n, seed);
  const g = randomArray(m * n, seed + 1);
  const bias = Float64Array.from(randomArray(n, seed + 2));
  const loss = (b: Float64Array) =>
    biasForwardRef(inp, { bias: b }).reduce((s, v, i) => s + v * g[i], 0);
  const grad = new Float64Array(n);
  reduceBackwardRef(grad, { dout: g });
  const h = 1e-6;
  for (let j = 0; j < n; j++) {
    const up = Float64Array.from(bias);
    const down = Float64Array.from(bias);
    up[j] += h;
    down[j] -= h;
    const fd = (loss(up) - loss(down)) / (2 * h);
    assert(Math.abs(fd - grad[j]) < 1e-8, `dbias[${j}] ${grad[j]} vs ${fd}, seed ${seed}`);
  }
});
