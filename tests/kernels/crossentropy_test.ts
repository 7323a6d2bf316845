import assert from "node:assert/strict";
import { CrossEntropyKernels } from "../../kernels/crossentropy.ts";
import { crossEntropyBackwardRef, crossEntropyForwardRef } from "../../kernels/crossentropy_ref.ts";
import { Gpu } from "../../kernels/gpu.ts";
import { Tensor } from "../../kernels/tensor.ts";
import {
  firstNonFinite,
  freshSeed,
  GPU_TEST,
  randomArray,
  relativeError,
  rng,
  testGpu,
} from "../_util.ts";

// [N, V]: odd sizes, non-multiples of the 256-thread workgroup, GPT-2's vocabulary.
const SHAPES: readonly [number, number][] = [[1, 1], [3, 3], [17, 300], [5, 1023], [2, 50257]];

interface Case {
  logits: Float32Array;
  targets: Uint32Array;
  weights: Float32Array;
  vocab: number;
}

function makeCase(n: number, vocab: number, seed: number): Case {
  const next = rng(seed);
  const logits = randomArray(n * vocab, seed + 1).map((x) => 5 * x);
  // A row far from zero: only max subtraction keeps exp() finite there.
  logits.subarray(0, vocab).forEach((_, v, row) => row[v] += 1000);
  const targets = Uint32Array.from({ length: n }, () => Math.floor(next() * vocab));
  targets[n - 1] = vocab - 1;
  const weights = Float32Array.from({ length: n }, (_, r) => r % 3 === 1 ? 0 : next());
  return { logits, targets, weights, vocab };
}

function check(got: Float32Array, want: ArrayLike<number>, what: string): number {
  assert.equal(firstNonFinite(got), -1, `${what}: non-finite element ${firstNonFinite(got)}`);
  const err = relativeError(got, want);
  assert(err < 1e-5, `${what}: relative error ${err}`);
  return err;
}

async function exercise(gpu: Gpu, seed: number, shapes: readonly [number, number][]) {
  const ce = await CrossEntropyKernels.load(gpu);
  for (const [k, [n, vocab]] of shapes.entries()) {
    for (const eps of [0, 0.1]) {
      const what = (op: string) => `${op} [${n}, ${vocab}] eps=${eps} seed ${seed}`;
      const c = makeCase(n, vocab, seed + k);
      using logits = Tensor.from(gpu, c.logits, [n, vocab]);
      using targets = Tensor.from(gpu, c.targets, [n]);
      using weights = Tensor.from(gpu, c.weights, [n]);
      using losses = Tensor.from(gpu, new Float32Array(n).fill(NaN), [n]);
      const wantLoss = crossEntropyForwardRef({ ...c, eps });

      ce.forward({ losses, logits, targets, eps });
      const got = await losses.read();
      check(got, wantLoss, what("forward loss"));
      // Row by row too: the row shifted by 1000 must not lose digits to its magnitude.
      got.forEach((l, r) =>
        assert(Math.abs(l - wantLoss[r]) <= 1e-5 * Math.max(1, wantLoss[r]), what(`row ${r}`))
      );
      assert.deepEqual(await logits.read(), c.logits, what("forward leaves logits"));

      losses.fill(NaN);
      ce.backward({ losses, logits, targets, weights, eps });
      check(await losses.read(), wantLoss, what("backward loss"));
      check(await logits.read(), crossEntropyBackwardRef({ ...c, eps }), what("dlogits"));
    }
  }
}

Deno.test(
  "crossentropy matches the float64 reference with masks and label smoothing",
  GPU_TEST,
  async () => {
    await exercise(await testGpu(), freshSeed(), SHAPES);
  },
);

Deno.test(
  "crossentropy splits logits larger than one binding into row windows",
  GPU_TEST,
  async () => {
    using gpu = await Gpu.acquire({ maxBindingBytes: 4096 });
    await exercise(gpu, freshSeed(), [[1, 1], [40, 17], [9, 300], [3, 900]]);
    const ce = await CrossEntropyKernels.load(gpu);
    using logits = Tensor.empty(gpu, [1, 1023]);
    using ids = Tensor.empty(gpu, [1], { dtype: "u32" });
    using losses = Tensor.empty(gpu, [1]);
    assert.throws(
      () => ce.forward({ losses, logits, targets: ids }),
      /one row of 1023 values is over the 4096-byte binding limit/,
    );
  },
);

Deno.test(
  "crossentropy gives a NaN loss for a target out of the vocabulary",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const ce = await CrossEntropyKernels.load(gpu);
    using logits = Tensor.from(gpu, new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]);
    using targets = Tensor.from(gpu, new Uint32Array([2, 3]), [2]);
    using losses = Tensor.empty(gpu, [2]);
    ce.forward({ losses, logits, targets });
    const got = await losses.read();
    assert(Number.isFinite(got[0]) && Number.isNaN(got[1]), `${got}`);
  },
);

Deno.test("crossentropy rejects mismatched shapes and smoothing", GPU_TEST, async () => {
  const gpu = await testGpu();
  const ce = await CrossEntropyKernels.load(gpu);
  using logits = Tensor.empty(gpu, [4, 5]);
  using targets = Tensor.empty(gpu, [4], { dtype: "u32" });
  using floats = Tensor.empty(gpu, [4]);
  using short = Tensor.empty(gpu, [3]);
  assert.throws(() => ce.forward({ losses: short, logits, targets }), /"logits" \[4,5\]/);
  assert.throws(() => ce.forward({ losses: floats, logits, targets: floats }), /"targets"/);
  assert.throws(
    () => ce.backward({ losses: floats, logits, targets, weights: short }),
    /"weights"/,
  );
  assert.throws(() => ce.forward({ losses: floats, logits, targets, eps: 1 }), /smoothing/);
});

Deno.test("crossentropy reference follows PyTorch's label smoothing and its gradient", () => {
  // F.cross_entropy(tensor([[1., 2., 3.]]), tensor([0]), label_smoothing=0.1) = 2.3076...:
  // (1 - eps) * nll + eps * mean_v(-log p_v) = lse - 0.9 * 1 - 0.1 * mean(x).
  const lse = 3 + Math.log(1 + Math.exp(-1) + Math.exp(-2));
  const [smoothed] = crossEntropyForwardRef({
    logits: [1, 2, 3],
    targets: [0],
    vocab: 3,
    eps: 0.1,
  });
  assert(Math.abs(smoothed - (lse - 1.1)) < 1e-14 && Math.abs(smoothed - 2.307606) < 1e-6);
  const [plain] = crossEntropyForwardRef({ logits: [1, 2, 3], targets: [2], vocab: 3 });
  assert(Math.abs(plain - (lse - 3)) < 1e-14);

  const seed = freshSeed();
  const [n, vocab, eps] = [3, 5, 0.1];
  const logits = Float64Array.from(randomArray(n * vocab, seed), (x) => 3 * x);
  const targets = [4, 0, 2];
  const weights = [0.5, 0, 2];
  const total = (x: Float64Array) =>
    crossEntropyForwardRef({ logits: x, targets, vocab, eps })
      .reduce((s, l, r) => s + weights[r] * l, 0);
  const grad = crossEntropyBackwardRef({ logits, targets, vocab, eps, weights });
  const h = 1e-6;
  for (let i = 0; i < logits.length; i++) {
    const up = Float64Array.from(logits);
    const down = Float64Array.from(logits);
    up[i] += h;
    down[i] -= h;
    const fd = (total(up) - total(down)) / (2 * h);
    assert(Math.abs(fd - grad[i]) < 1e-8, `dlogits[${i}] ${grad[i]} vs ${fd}, seed ${seed}`);
  }
});

Deno.test(
  "crossentropy reads and writes only the first V columns of padded rows",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const ce = await CrossEntropyKernels.load(gpu);
    const seed = freshSeed();
    const [N, V, S] = [5, 301, 304];
    const dense = randomArray(N * V, seed).map((x) => 4 * x);
    const padded = new Float32Array(N * S).fill(7);
    for (let r = 0; r < N; r++) padded.set(dense.subarray(r * V, (r + 1) * V), r * S);
    const targets = Uint32Array.from({ length: N }, (_, r) => (r * 97) % V);
    const weights = Float32Array.from({ length: N }, (_, r) => (r + 1) / 10);
    using logits = Tensor.from(gpu, padded, [N, S]);
    using t = Tensor.from(gpu, targets, [N]);
    using w = Tensor.from(gpu, weights, [N]);
    using losses = Tensor.empty(gpu, [N]);
    ce.backward({ losses, logits, targets: t, weights: w, eps: 0.1, vocab: V });
    const refLoss = crossEntropyForwardRef({ logits: dense, targets, vocab: V, eps: 0.1 });
    const refGrad = crossEntropyBackwardRef({
      logits: dense,
      targets,
      vocab: V,
      weights,
      eps: 0.1,
    });
    assert(relativeError(await losses.read(), refLoss) < 1e-5, `seed ${seed}: losses`);
    const got = await logits.read() as Float32Array;
    const grad = new Float32Array(N * V);
    for (let r = 0; r < N; r++) {
      grad.set(got.subarray(r * S, r * S + V), r * V);
      assert.deepEqual([...got.subarray(r * S + V, (r + 1) * S)], [7, 7, 7], `padding of row ${r}`);
    }
    assert(relativeError(grad, refGrad) < 1e-5, `seed ${seed}: gradient`);
    assert.throws(() => ce.forward({ losses, logits, targets: t, vocab: S + 1 }), RangeError);
  },
);
