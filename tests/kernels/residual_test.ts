import assert from "node:assert/strict";
import { Gpu } from "../../kernels/gpu.ts";
import { ResidualKernels } from "../../kernels/residual.ts";
import {
  accumulateRef,
  residualBackwardRef,
  residualForwardRef,
  scaleRef,
} from "../../kernels/residual_ref.ts";
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

function check(got: Float32Array, want: ArrayLike<number>, what: string): void {
  assert.equal(firstNonFinite(got), -1, `${what}: unwritten element ${firstNonFinite(got)}`);
  const err = relativeError(got, want);
  assert(err < 1e-6, `${what}: relative error ${err}`);
}

async function exercise(gpu: Gpu, seed: number): Promise<void> {
  const residual = await ResidualKernels.load(gpu);
  for (const [k, n] of SIZES.entries()) {
    const what = (op: string) => `${op} n=${n} seed ${seed}`;
    const a = randomArray(n, seed + 10 * k);
    const b = randomArray(n, seed + 10 * k + 1);
    const start = randomArray(n, seed + 10 * k + 2);
    const start2 = randomArray(n, seed + 10 * k + 3);
    using ta = Tensor.from(gpu, a, [n]);
    using tb = Tensor.from(gpu, b, [n]);
    using out = Tensor.from(gpu, new Float32Array(n).fill(NaN), [n]);
    residual.forward({ out, a: ta, b: tb });
    check(await out.read(), residualForwardRef(a, b), what("forward"));

    using da = Tensor.from(gpu, start, [n]);
    using db = Tensor.from(gpu, start2, [n]);
    residual.backward({ da, db, dout: ta });
    const wantA = Float64Array.from(start);
    const wantB = Float64Array.from(start2);
    residualBackwardRef(wantA, { db: wantB, dout: a });
    check(await da.read(), wantA, what("backward da"));
    check(await db.read(), wantB, what("backward db"));

    residual.accumulate({ dst: da, src: tb, factor: -0.75 });
    accumulateRef(wantA, { src: b, factor: -0.75 });
    check(await da.read(), wantA, what("accumulate"));
    residual.scale({ dst: da, factor: 3.5 });
    scaleRef(wantA, { factor: 3.5 });
    check(await da.read(), wantA, what("scale"));
  }
}

Deno.test(
  "residual kernels match the float64 reference on odd sizes and accumulate",
  GPU_TEST,
  async () => {
    await exercise(await testGpu(), freshSeed());
  },
);

Deno.test(
  "residual kernels split ranges longer than one binding into windows",
  GPU_TEST,
  async () => {
    using gpu = await Gpu.acquire({ maxBindingBytes: 4096 });
    await exercise(gpu, freshSeed());
  },
);

Deno.test("residual kernels work on unaligned slices of arenas", GPU_TEST, async () => {
  const gpu = await testGpu();
  const residual = await ResidualKernels.load(gpu);
  const seed = freshSeed();
  const n = 1001;
  const data = randomArray(3 * n + 5, seed);
  const other = randomArray(n + 1, seed + 1);
  using arena = Tensor.from(gpu, data, [data.length]);
  using source = Tensor.from(gpu, other, [other.length]);
  // arena[2n+5 ..] += 2 * source[1 ..]; the elements around the slice stay as they were.
  residual.accumulate({
    dst: { tensor: arena, offset: 2 * n + 5, size: n },
    src: { tensor: source, offset: 1 },
    factor: 2,
  });
  // Doubling is exact, so the f32 sum is bit-exact.
  const want = Float32Array.from(data);
  for (let i = 0; i < n; i++) want[2 * n + 5 + i] += 2 * other[1 + i];
  assert.deepEqual(await arena.read(), want, `seed ${seed}`);
  assert.throws(
    () => residual.accumulate({ dst: arena, src: { tensor: arena, size: 3 * n + 5 } }),
    /output "dst" and input "src" share one buffer/,
  );
});

Deno.test("residual kernels reject operands of different lengths", GPU_TEST, async () => {
  const gpu = await testGpu();
  const residual = await ResidualKernels.load(gpu);
  using a = Tensor.empty(gpu, [3]);
  using b = Tensor.empty(gpu, [4]);
  assert.throws(() => residual.forward({ out: a, a, b }), RangeError);
});

Deno.test("residual reference gradients match finite differences", () => {
  const seed = freshSeed();
  const n = 7;
  const a = Float64Array.from(randomArray(n, seed));
  const b = Float64Array.from(randomArray(n, seed + 1));
  const g = Float64Array.from(randomArray(n, seed + 2));
  const loss = (x: Float64Array, y: Float64Array) =>
    residualForwardRef(x, y).reduce((s, v, i) => s + v * g[i], 0);
  const da = new Float64Array(n);
  const db = new Float64Array(n);
  residualBackwardRef(da, { db, dout: g });
  const h = 1e-6;
  for (let i = 0; i < n; i++) {
    const up = Float64Array.from(a);
    const down = Float64Array.from(a);
    up[i] += h;
    down[i] -= h;
    const fd = (loss(up, b) - loss(down, b)) / (2 * h);
    assert(Math.abs(fd - da[i]) < 1e-8, `da[${i}] ${da[i]} vs ${fd}, seed ${seed}`);
    assert(Math.abs(fd - db[i]) < 1e-8, `db[${i}] ${db[i]} vs ${fd}, seed ${seed}`);
  }
});
