import assert from "node:assert/strict";
import { SgdKernels, type SgdStep } from "../../kernels/sgd.ts";
import { sgdRef } from "../../kernels/sgd_ref.ts";
import { Tensor } from "../../kernels/tensor.ts";
import {
  firstNonFinite,
  freshSeed,
  GPU_TEST,
  randomArray,
  relativeError,
  testGpu,
} from "../_util.ts";

const CONFIGS: Omit<SgdStep, "first">[] = [
  { lr: 0.05 },
  { lr: 0.05, weightDecay: 0.01 },
  { lr: 0.02, momentum: 0.9, dampening: 0.1, weightDecay: 0.05 },
  { lr: 0.02, momentum: 0.8, nesterov: true, weightDecay: 0.01 },
];

Deno.test(
  "sgd matches the float64 reference over several steps on odd sizes",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const sgd = await SgdKernels.load(gpu);
    const seed = freshSeed();
    for (const [c, hyper] of CONFIGS.entries()) {
      for (const n of [1, 3, 17, 255, 1023, 70_001]) {
        const what = `config ${c} n=${n} seed=${seed}`;
        const p0 = randomArray(n, seed + n);
        using param = Tensor.from(gpu, p0, [n]);
        // Poisoned: the first step must not read the old buffer.
        using buf = Tensor.from(gpu, new Float32Array(n).fill(NaN), [n]);
        using gradScale = Tensor.from(gpu, new Float32Array([0.75]), [1]);
        const ref = { param: Float64Array.from(p0), buf: new Float64Array(n) };
        for (let step = 0; step < 4; step++) {
          const g = randomArray(n, seed + 1000 * (step + 1) + n);
          using grad = Tensor.from(gpu, g, [n]);
          sgd.update({ param, buf, grad, gradScale }, { ...hyper, first: step === 0 });
          sgdRef({ ...ref, grad: g }, { ...hyper, first: step === 0, gradScale: 0.75 });
        }
        const got = await param.read();
        assert.equal(firstNonFinite(got), -1, what);
        const err = relativeError(got, ref.param);
        assert(err < 1e-6, `${what}: relative error ${err}`);
        if (hyper.momentum) {
          const b = await buf.read();
          assert(relativeError(b, ref.buf) < 1e-5, `${what}: momentum buffer`);
        }
      }
    }
  },
);

Deno.test("sgd momentum and nesterov follow PyTorch's rule worked by hand", GPU_TEST, async () => {
  const gpu = await testGpu();
  const sgd = await SgdKernels.load(gpu);
  using param = Tensor.from(gpu, new Float32Array([1, 1]), [2]);
  using buf = Tensor.from(gpu, new Float32Array(2), [2]);
  using grad = Tensor.from(gpu, new Float32Array([1, 1]), [2]);
  using gradScale = Tensor.from(gpu, new Float32Array([2]), [1]);
  // g = 2: buf 2, p 1 - 0.1 * 2 = 0.8; then buf 0.5 * 2 + 2 = 3, p 0.8 - 0.3 = 0.5
  sgd.update({ param, buf, grad, gradScale }, { lr: 0.1, momentum: 0.5, first: true });
  sgd.update({ param, buf, grad, gradScale }, { lr: 0.1, momentum: 0.5, first: false });
  const p = await param.read();
  assert(Math.abs(p[0] - 0.5) < 1e-6, `${p}`);
  // Nesterov from p = 1, buf = 0 (first): buf 2, g = 2 + 0.5 * 2 = 3, p = 1 - 0.3 = 0.7
  param.fill(1);
  sgd.update({ param, buf, grad, gradScale }, {
    lr: 0.1,
    momentum: 0.5,
    nesterov: true,
    first: true,
  });
  const q = await param.read();
  assert(Math.abs(q[1] - 0.7) < 1e-6, `${q}`);
});

Deno.test("sgd rejects nesterov without momentum and missing buffers", GPU_TEST, async () => {
  const gpu = await testGpu();
  const sgd = await SgdKernels.load(gpu);
  using param = Tensor.from(gpu, new Float32Array(3), [3]);
  using grad = Tensor.from(gpu, new Float32Array(2), [2]);
  using gradScale = Tensor.from(gpu, new Float32Array([1]), [1]);
  assert.throws(() => sgd.update({ param, grad, gradScale }, { lr: 1, first: true }), /grad/);
  assert.throws(
    () => sgd.update({ param, grad: param, gradScale }, { lr: 1, momentum: 0.9, first: true }),
    /momentum buffer/,
  );
  assert.throws(
    () => sgd.update({ param, grad: param, gradScale }, { lr: 1, nesterov: true, first: true }),
    /nesterov/,
  );
});
