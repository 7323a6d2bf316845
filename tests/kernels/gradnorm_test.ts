import assert from "node:assert/strict";
import { Gpu } from "../../kernels/gpu.ts";
import { GradnormKernels, type GradnormOptions } from "../../kernels/gradnorm.ts";
import { gradnormRef } from "../../kernels/gradnorm_ref.ts";
import { Tensor } from "../../kernels/tensor.ts";
import { freshSeed, GPU_TEST, randomArray, testGpu } from "../_util.ts";

async function run(
  gpu: Gpu,
  options: GradnormOptions,
): Promise<{ norm: number; gradScale: number }> {
  const gradnorm = await GradnormKernels.load(gpu);
  using norm = Tensor.from(gpu, new Float32Array([NaN]), [1]);
  using gradScale = Tensor.from(gpu, new Float32Array([NaN]), [1]);
  gradnorm.forward({ norm, gradScale }, options);
  return { norm: (await norm.read())[0], gradScale: (await gradScale.read())[0] };
}

function near(got: number, want: number, what: string): void {
  const err = Math.abs(got - want) / Math.max(Math.abs(want), 1e-30);
  assert(err < 1e-5, `${what}: ${got} vs ${want} (relative error ${err})`);
}

Deno.test(
  "gradnorm matches the float64 reference over a list of odd-sized gradients",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const sizes = [1, 3, 17, 255, 1023, 70_001, 1_100_003];
    const host = sizes.map((n, k) => randomArray(n, seed + k));
    const grads = host.map((g) => Tensor.from(gpu, g, [g.length]));
    const raw = gradnormRef(host).norm;
    const cases: GradnormOptions[] = [
      { grads },
      { grads, maxNorm: Infinity },
      { grads, maxNorm: raw * 2 }, // inactive
      { grads, maxNorm: raw / 10 }, // active
      { grads, maxNorm: 1, baseScale: 0.25 },
      { grads, maxNorm: raw, baseScale: 0.5 }, // inactive only thanks to the base scale
      { grads: grads.slice(0, 3), maxNorm: 0.5 },
    ];
    for (const [c, options] of cases.entries()) {
      const what = `case ${c} seed=${seed}`;
      const got = await run(gpu, options);
      const want = gradnormRef(host.slice(0, options.grads.length), options);
      near(got.norm, want.norm, `${what} norm`);
      near(got.gradScale, want.gradScale, `${what} gradScale`);
    }
    for (const g of grads) g[Symbol.dispose]();
  },
);

Deno.test("gradnorm of no gradients is 0 and scales by the base", GPU_TEST, async () => {
  const gpu = await testGpu();
  assert.deepEqual(await run(gpu, { grads: [], maxNorm: 1, baseScale: 0.5 }), {
    norm: 0,
    gradScale: 0.5,
  });
});

Deno.test("gradnorm reads ranges of buffers split into binding windows", GPU_TEST, async () => {
  using gpu = await Gpu.acquire({ maxBindingBytes: 1 << 16 });
  const seed = freshSeed();
  const n = 100_003;
  const data = randomArray(n + 777, seed);
  using whole = Tensor.from(gpu, data, [n + 777]);
  const range = { tensor: whole, offset: 777 };
  const small = { tensor: whole, offset: 5, size: 9 };
  const got = await run(gpu, { grads: [range, small], maxNorm: 3 });
  const want = gradnormRef([data.subarray(777), data.subarray(5, 14)], { maxNorm: 3 });
  near(got.norm, want.norm, `seed=${seed} norm`);
  near(got.gradScale, want.gradScale, `seed=${seed} gradScale`);
});

Deno.test(
  "gradnorm is NaN for a NaN gradient and infinite for an infinite one",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const make = (n: number, at: number, value: number) => {
      const g = randomArray(n, seed + n);
      if (at >= 0) g[at] = value;
      return Tensor.from(gpu, g, [n]);
    };
    using clean = make(5000, -1, 0);
    using withNan = make(3001, 2999, NaN);
    using withInf = make(17, 3, -Infinity);
    using huge = Tensor.from(gpu, new Float32Array(4).fill(3e38), [4]);
    const nan = await run(gpu, { grads: [clean, withNan], maxNorm: 1 });
    assert(Number.isNaN(nan.norm) && Number.isNaN(nan.gradScale), JSON.stringify(nan));
    const inf = await run(gpu, { grads: [clean, withInf] });
    assert.equal(inf.norm, Infinity);
    assert(Number.isNaN(inf.gradScale));
    const both = await run(gpu, { grads: [withInf, withNan] });
    assert(Number.isNaN(both.norm));
    assert.equal((await run(gpu, { grads: [huge] })).norm, Infinity, "overflowing sum of squares");
    const fine = await run(gpu, { grads: [clean], maxNorm: 1 });
    assert(Number.isFinite(fine.norm) && fine.gradScale < 1, JSON.stringify(fine));
  },
);

Deno.test("gradnorm rejects outputs that are not one f32", GPU_TEST, async () => {
  const gpu = await testGpu();
  const gradnorm = await GradnormKernels.load(gpu);
  using two = Tensor.empty(gpu, [2]);
  using one = Tensor.empty(gpu, [1]);
  using other = Tensor.empty(gpu, [1]);
  assert.throws(() => gradnorm.forward({ norm: two, gradScale: one }, { grads: [] }), /"norm"/);
  assert.throws(
    () => gradnorm.forward({ norm: one, gradScale: two }, { grads: [] }),
    /"gradScale"/,
  );
  assert.throws(
    () => gradnorm.forward({ norm: one, gradScale: other }, { grads: [], maxNorm: -1 }),
    /"maxNorm"/,
  );
});
