import assert from "node:assert/strict";
import { GeluKernels } from "../../kernels/gelu.ts";
import { geluBackwardRef, geluForwardRef } from "../../kernels/gelu_ref.ts";
import { Gpu } from "../../kernels/gpu.ts";
import { Tensor } from "../../kernels/tensor.ts";
import {
  firstNonFinite,
  freshSeed,
  GPU_TEST,
  randomArray,
  relativeError,
  testGpu,
} from "../_util.ts";

const SIZES = [1, 3, 17, 255, 1023, 60_001];
// Past the clamp of the tanh argument and far past where x^3 or x^2 overflow f32.
const EXTREMES = [-1e20, -1e5, -30, -10, -9.5, 0, 9.5, 10, 30, 1e5, 1e20];

function inputs(n: number, seed: number): Float32Array {
  const x = randomArray(n, seed).map((v) => 4 * v);
  x.set(EXTREMES.slice(0, n));
  return x;
}

function check(got: Float32Array, want: ArrayLike<number>, what: string): void {
  assert.equal(firstNonFinite(got), -1, `${what}: non-finite element ${firstNonFinite(got)}`);
  const err = relativeError(got, want);
  assert(err < 1e-5, `${what}: relative error ${err}`);
}

async function exercise(gpu: Gpu, seed: number): Promise<void> {
  const gelu = await GeluKernels.load(gpu);
  for (const [k, n] of SIZES.entries()) {
    const what = (op: string) => `${op} n=${n} seed ${seed}`;
    const x = inputs(n, seed + 10 * k);
    const dout = randomArray(n, seed + 10 * k + 1);
    const start = randomArray(n, seed + 10 * k + 2);
    using inp = Tensor.from(gpu, x, [n]);
    using out = Tensor.from(gpu, new Float32Array(n).fill(NaN), [n]);
    using tdout = Tensor.from(gpu, dout, [n]);
    using dinp = Tensor.from(gpu, start, [n]);
    gelu.forward({ out, inp });
    gelu.backward({ dinp, inp, dout: tdout });
    // Relative over the output, leaving out the 1e20s that would swamp the norm.
    const got = await out.read();
    const want = geluForwardRef(x);
    for (const [i, v] of x.entries()) {
      if (Math.abs(v) > 1e4) {
        assert(Math.abs(got[i] - want[i]) <= 1e-6 * Math.abs(want[i]), `${what("forward")} [${i}]`);
        got[i] = want[i] = 0;
      }
    }
    check(got, want, what("forward"));
    const wantGrad = Float64Array.from(start);
    geluBackwardRef(wantGrad, { inp: x, dout });
    check(await dinp.read(), wantGrad, what("backward"));
  }
}

Deno.test("gelu matches the float64 reference on odd sizes and extremes", GPU_TEST, async () => {
  await exercise(await testGpu(), freshSeed());
});

Deno.test("gelu splits ranges longer than one binding into windows", GPU_TEST, async () => {
  using gpu = await Gpu.acquire({ maxBindingBytes: 4096 });
  await exercise(gpu, freshSeed());
});

Deno.test("gelu rejects an output that shares its input's buffer", GPU_TEST, async () => {
  const gpu = await testGpu();
  const gelu = await GeluKernels.load(gpu);
  using x = Tensor.empty(gpu, [5]);
  assert.throws(() => gelu.forward({ out: x, inp: x }), /share one buffer/);
});

Deno.test("gelu reference gradient matches finite differences", () => {
  const seed = freshSeed();
  const x = Float64Array.from(randomArray(9, seed), (v) => 5 * v);
  const grad = new Float64Array(x.length);
  geluBackwardRef(grad, { inp: x, dout: new Float64Array(x.length).fill(1) });
  const h = 1e-6;
  for (let i = 0; i < x.length; i++) {
    const fd = (geluForwardRef([x[i] + h])[0] - geluForwardRef([x[i] - h])[0]) / (2 * h);
    assert(Math.abs(fd - grad[i]) < 1e-8, `x=${x[i]}: ${grad[i]} vs ${fd}, seed ${seed}`);
  }
  // GPT-2's values at a few points (the tanh form, not the erf form).
  assert(Math.abs(geluForwardRef([1])[0] - 0.8411919906082768) < 1e-15);
  assert(Math.abs(geluForwardRef([-1])[0] + 0.15880800939172324) < 1e-15);
});
