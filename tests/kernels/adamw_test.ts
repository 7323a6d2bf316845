import assert from "node:assert/strict";
import { AdamwKernels } from "../../kernels/adamw.ts";
import { adamwRef } from "../../kernels/adamw_ref.ts";
import { Tensor } from "../../kernels/tensor.ts";
import { freshSeed, GPU_TEST, randomArray, relativeError, testGpu } from "../_util.ts";

Deno.test(
  "adamw matches the float64 reference over several steps on odd sizes",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const adamw = await AdamwKernels.load(gpu);
    const seed = freshSeed();
    for (const n of [1, 3, 17, 255, 1023, 70_001]) {
      const p0 = randomArray(n, seed + n);
      const param = Tensor.from(gpu, p0, [n]);
      const m = Tensor.from(gpu, new Float32Array(n), [n]);
      const v = Tensor.from(gpu, new Float32Array(n), [n]);
      const gradScale = Tensor.from(gpu, new Float32Array([0.5]), [1]);
      const ref = { param: Float64Array.from(p0), m: new Float64Array(n), v: new Float64Array(n) };
      const hyper = { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };
      for (let step = 1; step <= 5; step++) {
        const g = randomArray(n, seed + 1000 * step + n);
        using grad = Tensor.from(gpu, g, [n]);
        adamw.update({ param, m, v, grad, gradScale }, { ...hyper, step });
        adamwRef({ ...ref, grad: g }, { ...hyper, step, gradScale: 0.5 });
      }
      const got = await param.read();
      const err = relativeError(got, ref.param);
      assert(err < 1e-6, `n=${n} seed=${seed}: relative error ${err}`);
      assert(relativeError(await v.read(), ref.v) < 1e-5, `n=${n} seed=${seed}: second moment`);
      for (const t of [param, m, v, gradScale]) t[Symbol.dispose]();
    }
  },
);

Deno.test(
  "adamw with zero gradient and decay shrinks parameters geometrically",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const adamw = await AdamwKernels.load(gpu);
    using param = Tensor.from(gpu, new Float32Array([2, -4]), [2]);
    using m = Tensor.from(gpu, new Float32Array(2), [2]);
    using v = Tensor.from(gpu, new Float32Array(2), [2]);
    using grad = Tensor.from(gpu, new Float32Array(2), [2]);
    using gradScale = Tensor.from(gpu, new Float32Array([1]), [1]);
    for (let step = 1; step <= 3; step++) {
      adamw.update({ param, m, v, grad, gradScale }, { step, lr: 0.1, weightDecay: 0.5 });
    }
    const got = await param.read();
    assert(
      Math.abs(got[0] - 2 * 0.95 ** 3) < 1e-6 && Math.abs(got[1] + 4 * 0.95 ** 3) < 1e-6,
      `${got}`,
    );
  },
);
