import assert from "node:assert/strict";
import { LossAccumulator } from "../../kernels/lossacc.ts";
import { Tensor } from "../../kernels/tensor.ts";
import { freshSeed, GPU_TEST, rng, testGpu } from "../_util.ts";

function near(got: number, want: number, what: string): void {
  const err = Math.abs(got - want) / Math.max(Math.abs(want), 1e-30);
  assert(err < 1e-6, `${what}: ${got} vs ${want} (relative error ${err})`);
}

Deno.test(
  "lossacc totals weighted losses of odd-sized micro-batches like float64",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    using acc = await LossAccumulator.create(gpu);
    const seed = freshSeed();
    const next = rng(seed);
    let loss = 0;
    let weight = 0;
    let tokens = 0;
    const sizes = [1, 3, 17, 255, 1023, 4099];
    for (const n of sizes) {
      const l = new Float32Array(n);
      const w = new Float32Array(n);
      for (let t = 0; t < n; t++) {
        const masked = next() < 0.3;
        // A masked token's loss may be anything, NaN included: it must not count.
        l[t] = masked ? NaN : 10 * next();
        w[t] = masked ? 0 : next() / n;
        if (!masked) {
          loss += w[t] * l[t];
          weight += w[t];
          tokens++;
        }
      }
      using losses = Tensor.from(gpu, l, [n]);
      using weights = Tensor.from(gpu, w, [n]);
      acc.add(losses, { weights });
    }
    const got = await acc.read();
    near(got.loss, loss, `seed=${seed} loss`);
    near(got.weight, weight, `seed=${seed} weight`);
    near(got.mean, loss / weight, `seed=${seed} mean`);
    assert.equal(got.tokens, tokens, `seed=${seed} tokens`);
    assert.equal(got.microBatches, sizes.length);
    assert.equal(got.nonFinite, 0);
  },
);

Deno.test("lossacc without weights sums plain losses; reset zeroes", GPU_TEST, async () => {
  const gpu = await testGpu();
  using acc = await LossAccumulator.create(gpu);
  using whole = Tensor.from(gpu, new Float32Array([9, 1.5, -0.5, 3, 9]), [5]);
  acc.add({ tensor: whole, offset: 1, size: 3 });
  assert.deepEqual(await acc.read(), {
    loss: 4,
    weight: 3,
    tokens: 3,
    microBatches: 1,
    nonFinite: 0,
    mean: 4 / 3,
  });
  acc.reset();
  const zero = await acc.read();
  assert.equal(zero.loss + zero.weight + zero.tokens + zero.microBatches, 0);
  assert(Number.isNaN(zero.mean));
});

Deno.test("lossacc sums exactly across zero and over many micro-batches", GPU_TEST, async () => {
  const gpu = await testGpu();
  using acc = await LossAccumulator.create(gpu);
  using plus = Tensor.from(gpu, new Float32Array([0.1]), [1]);
  using minus = Tensor.from(gpu, new Float32Array([-2.75]), [1]);
  acc.add(minus);
  acc.add(plus);
  assert.equal((await acc.read()).loss, Math.fround(0.1) - 2.75, "negative total");
  acc.reset();
  // An f32 running sum of 0.1 ends at 300.0091 here; fixed point is exact.
  const times = 3000;
  for (let i = 0; i < times; i++) acc.add(plus);
  const got = await acc.read();
  assert.equal(got.loss, times * Math.fround(0.1));
  assert.equal(got.microBatches, times);
});

Deno.test("lossacc counts a NaN micro-batch apart and keeps the others", GPU_TEST, async () => {
  const gpu = await testGpu();
  using acc = await LossAccumulator.create(gpu);
  using good = Tensor.from(gpu, new Float32Array([1, 2]), [2]);
  using bad = Tensor.from(gpu, new Float32Array([1, NaN]), [2]);
  using inf = Tensor.from(gpu, new Float32Array([Infinity, 2]), [2]);
  using ones = Tensor.from(gpu, new Float32Array([1, 1]), [2]);
  acc.add(good, { weights: ones });
  acc.add(bad, { weights: ones });
  acc.add(inf, { weights: ones });
  const got = await acc.read();
  assert.equal(got.loss, 3);
  assert.equal(got.weight, 2);
  assert.equal(got.tokens, 6);
  assert.equal(got.nonFinite, 2);
  assert(Number.isNaN(got.mean));
  using three = Tensor.from(gpu, new Float32Array(3), [3]);
  assert.throws(() => acc.add(good, { weights: three }), /"weights" has 3 elements, expected 2/);
});
