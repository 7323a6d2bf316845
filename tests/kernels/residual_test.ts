import assert from "node:assert/strict";
import { Gpu } from "../../kernels/gpu.ts";
import { ResidualKernels } from "../../kernels/residual.ts";
import { residualForwardRef } from "../../kernels/residual_ref.ts";
import { Tensor } from "../../kernels/tensor.ts";
import {
  firstNonFinite,
  freshSeed,
  GPU_TEST,
  randomArray,
  relativeError,
  testGpu,
} from "../_util.ts";

const SIZES = [1, 3, 17, 255, 1023, 70_001];

async function exercise(gpu: Gpu, seed: number): Promise<void> {
  const residual = await ResidualKernels.load(gpu);
  for (const [k, n] of SIZES.entries()) {
    const what = `forward n=${n} seed ${seed}`;
    const a = randomArray(n, seed + 10 * k);
    const b = randomArray(n, seed + 10 * k + 1);
    using ta = Tensor.from(gpu, a, [n]);
    using tb = Tensor.from(gpu, b, [n]);
    using out = Tensor.from(gpu, new Float32Array(n).fill(NaN), [n]);
    residual.forward({ out, a: ta, b: tb });
    const got = await out.read();
    assert.equal(firstNonFinite(got), -1, `${what}: unwritten element ${firstNonFinite(got)}`);
    const err = relativeError(got, residualForwardRef(a, b));
    assert(err < 1e-6, `${what}: relative error ${err}`);
  }
}

Deno.test("residual forward matches the float64 reference on odd sizes", GPU_TEST, async () => {
  await exercise(await testGpu(), freshSeed());
});

Deno.test(
  "residual forward splits ranges longer than one binding into windows",
  GPU_TEST,
  async () => {
    using gpu = await Gpu.acquire({ maxBindingBytes: 4096 });
    await exercise(gpu, freshSeed());
  },
);

Deno.test("residual forward works on unaligned slices of arenas", GPU_TEST, async () => {
  const gpu = await testGpu();
  const residual = await ResidualKernels.load(gpu);
  const seed = freshSeed();
  const n = 1001;
  const data = randomArray(3 * n + 5, seed);
  const other = randomArray(2 * n + 3, seed + 1);
  using arena = Tensor.from(gpu, data, [data.length]);
  using source = Tensor.from(gpu, other, [other.length]);
  // arena[2n+5 ..] = source[1 ..] + source[n+3 ..]; the elements around the slice stay as they
  // were. f32 addition is correctly rounded in WGSL, and so is the float64 sum stored as f32.
  residual.forward({
    out: { tensor: arena, offset: 2 * n + 5, size: n },
    a: { tensor: source, offset: 1, size: n },
    b: { tensor: source, offset: n + 3 },
  });
  const want = Float32Array.from(data);
  for (let i = 0; i < n; i++) want[2 * n + 5 + i] = other[1 + i] + other[n + 3 + i];
  assert.deepEqual(await arena.read(), want, `seed ${seed}`);
  assert.throws(
    () =>
      residual.forward({
        out: { tensor: arena, size: n },
        a: { tensor: arena, offset: n, size: n },
        b: { tensor: source, size: n },
      }),
    /output "out" and input "a" share one buffer/,
  );
});

Deno.test("residual forward rejects operands of different lengths", GPU_TEST, async () => {
  const gpu = await testGpu();
  const residual = await ResidualKernels.load(gpu);
  using a = Tensor.empty(gpu, [3]);
  using b = Tensor.empty(gpu, [4]);
  assert.throws(() => residual.forward({ out: a, a, b }), RangeError);
});
