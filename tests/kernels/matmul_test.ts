import assert from "node:assert/strict";
import { Gpu } from "../../kernels/gpu.ts";
import { Matmul, MATMUL_VARIANTS, type MatmulLayout } from "../../kernels/matmul.ts";
import { matmulRef } from "../../kernels/matmul_ref.ts";
import { Tensor } from "../../kernels/tensor.ts";
import {
  firstNonFinite,
  freshSeed,
  GPU_TEST,
  randomArray,
  relativeError,
  testGpu,
} from "../_util.ts";

const TOLERANCE = 1e-5;
/** Value of C elements outside the layout (padding): they must come back unchanged. */
const SENTINEL = 7;

let loaded: Promise<Matmul> | null = null;
function matmul(): Promise<Matmul> {
  return loaded ??= testGpu().then((gpu) => Matmul.load(gpu, { variant: "blocked" }));
}

/** A layout with its defaults filled in, as the reference and the buffer sizes need them. */
function dense(layout: MatmulLayout & { bias?: boolean }) {
  const { m, n, k, transA = false, transB = false } = layout;
  const lda = layout.lda ?? (transA ? m : k);
  const ldb = layout.ldb ?? (transB ? k : n);
  const ldc = layout.ldc ?? n;
  return {
    ...layout,
    batch: layout.batch ?? 1,
    lda,
    ldb,
    ldc,
    strideA: layout.strideA ?? m * k,
    strideB: layout.strideB ?? k * n,
    strideC: layout.strideC ?? m * n,
    offsetA: layout.offsetA ?? 0,
    offsetB: layout.offsetB ?? 0,
    offsetC: layout.offsetC ?? 0,
    offsetBias: layout.offsetBias ?? 0,
    lengthA: (layout.offsetA ?? 0) + ((layout.batch ?? 1) - 1) * (layout.strideA ?? m * k) +
      (transA ? (k - 1) * lda + m : (m - 1) * lda + k),
    lengthB: (layout.offsetB ?? 0) + ((layout.batch ?? 1) - 1) * (layout.strideB ?? k * n) +
      (transB ? (n - 1) * ldb + k : (k - 1) * ldb + n),
    lengthC: (layout.offsetC ?? 0) + ((layout.batch ?? 1) - 1) * (layout.strideC ?? m * n) +
      (m - 1) * ldc + n,
  };
}

/** Element indices of C that the layout writes. */
function covered(d: ReturnType<typeof dense>): number[] {
  const at: number[] = [];
  for (let z = 0; z < d.batch; z++) {
    for (let i = 0; i < d.m; i++) {
      for (let j = 0; j < d.n; j++) at.push(d.offsetC + z * d.strideC + i * d.ldc + j);
    }
  }
  return at;
}

/**
 * Runs one raw product on fresh random inputs and compares it with the float64 reference: every
 * element of the layout written and within tolerance, every other element of C untouched.
 */
async function checkRaw(
  setup: { gpu: Gpu; matmul: Matmul },
  layout: MatmulLayout & { bias?: boolean },
  seed: number,
): Promise<number> {
  const { gpu, matmul } = setup;
  const d = dense(layout);
  const a = randomArray(d.lengthA, seed);
  const b = randomArray(d.lengthB, seed + 1);
  const bias = randomArray(d.offsetBias + d.n, seed + 2);
  const at = covered(d);
  const start = d.accumulate ? randomArray(d.lengthC, seed + 3) : new Float32Array(d.lengthC);
  const c0 = new Float32Array(d.lengthC).fill(SENTINEL);
  for (const i of at) c0[i] = d.accumulate ? start[i] : NaN;
  using ta = Tensor.from(gpu, a, [a.length]);
  using tb = Tensor.from(gpu, b, [b.length]);
  using tbias = Tensor.from(gpu, bias, [bias.length]);
  using tc = Tensor.from(gpu, c0, [c0.length]);
  const { bias: withBias, ...rest } = layout;
  matmul.raw(
    { out: tc.buffer, a: ta.buffer, b: tb.buffer, bias: withBias ? tbias.buffer : undefined },
    rest,
  );
  const got = await tc.read();
  const want = matmulRef({ a, b, c: Float64Array.from(c0) }, {
    ...d,
    bias: withBias ? bias : undefined,
  });
  const label = `${JSON.stringify(layout)} seed ${seed}`;
  const gotAt = at.map((i) => got[i]);
  const bad = firstNonFinite(gotAt);
  assert.equal(bad, -1, `C element ${at[bad]} not written (${gotAt[bad]}): ${label}`);
  const error = relativeError(gotAt, at.map((i) => want[i]));
  assert(error < TOLERANCE, `relative error ${error}: ${label}`);
  const inLayout = new Set(at);
  for (let i = 0; i < got.length; i++) {
    if (!inLayout.has(i)) assert.equal(got[i], SENTINEL, `C padding ${i} overwritten: ${label}`);
  }
  return error;
}

async function everyVariant(layout: MatmulLayout & { bias?: boolean }, seed: number) {
  const setup = { gpu: await testGpu(), matmul: await matmul() };
  for (const variant of MATMUL_VARIANTS) await checkRaw(setup, { ...layout, variant }, seed);
}

Deno.test(
  "matmul matches the float64 reference on odd sizes in every variant",
  GPU_TEST,
  async () => {
    const seed = freshSeed();
    const shapes = [
      [1, 1, 1],
      [3, 3, 3],
      [17, 17, 17],
      [1023, 3, 17],
      [1, 255, 1023],
      [255, 1, 3],
      [3, 1023, 1],
    ];
    for (const [m, n, k] of shapes) await everyVariant({ m, n, k }, seed);
  },
);

Deno.test(
  "matmul matches the reference on a large product in every variant",
  GPU_TEST,
  async () => {
    await everyVariant({ m: 1023, n: 255, k: 1023, transB: true }, freshSeed());
  },
);

Deno.test(
  "matmul handles all four transpose combinations in every variant",
  GPU_TEST,
  async () => {
    const seed = freshSeed();
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        // Odd sizes (the vec4 variant falls back) and padded pitches (vec4 runs with edges).
        await everyVariant({ m: 37, n: 19, k: 23, transA, transB }, seed);
        const lda = transA ? 40 : 24;
        const ldb = transB ? 24 : 20;
        await everyVariant({ m: 37, n: 19, k: 23, transA, transB, lda, ldb, ldc: 21 }, seed);
        await everyVariant({ m: 64, n: 72, k: 40, transA, transB }, seed);
        // 512 columns and more: the wide variant runs its own kernels (narrower takes vec4's).
        await everyVariant({ m: 37, n: 517, k: 23, transA, transB }, seed);
        const pitches = { lda, ldb: transB ? 24 : 520, ldc: 521 };
        await everyVariant({ m: 37, n: 517, k: 23, transA, transB, ...pitches }, seed);
      }
    }
  },
);

Deno.test("matmul adds bias, scales by alpha and accumulates", GPU_TEST, async () => {
  const seed = freshSeed();
  for (const transB of [false, true]) {
    await everyVariant({ m: 33, n: 20, k: 17, transB, bias: true, offsetBias: 5 }, seed);
    await everyVariant({ m: 33, n: 20, k: 16, transB, alpha: -0.37 }, seed);
    await everyVariant({ m: 33, n: 20, k: 16, transB, accumulate: true }, seed);
    await everyVariant(
      { m: 9, n: 44, k: 12, transB, bias: true, alpha: 2.5, accumulate: true },
      seed,
    );
    await everyVariant(
      { m: 21, n: 516, k: 12, transB, bias: true, alpha: 2.5, accumulate: true },
      seed,
    );
  }
});

Deno.test("matmul runs batches with strides, offsets and broadcasts", GPU_TEST, async () => {
  const seed = freshSeed();
  // Dense batch, a shared (stride 0) B, a shared A, and padded strides with offsets.
  await everyVariant({ m: 13, n: 17, k: 19, batch: 3 }, seed);
  await everyVariant({ m: 13, n: 17, k: 20, batch: 4, strideB: 0, transB: true }, seed);
  await everyVariant({ m: 12, n: 17, k: 20, batch: 2, strideA: 0, transA: true }, seed);
  await everyVariant({
    m: 5,
    n: 8,
    k: 12,
    batch: 3,
    lda: 16,
    ldb: 12,
    ldc: 9,
    strideA: 100,
    strideB: 104,
    strideC: 50,
    offsetA: 4,
    offsetB: 8,
    offsetC: 3,
    bias: true,
    accumulate: true,
  }, seed);
});

Deno.test(
  "run multiplies tensors, batched and broadcast, like the reference",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const mm = await matmul();
    const seed = freshSeed();
    const [batch, m, n, k] = [3, 7, 5, 6];
    const a = randomArray(batch * m * k, seed);
    const b = randomArray(k * n, seed + 1);
    const bias = randomArray(n, seed + 2);
    using ta = Tensor.from(gpu, a, [batch, m, k]);
    using tb = Tensor.from(gpu, b, [n, k]);
    using tbias = Tensor.from(gpu, bias, [n]);
    using out = mm.run(ta, tb, { transB: true, bias: tbias, alpha: 0.5 });
    assert.deepEqual(out.shape, [batch, m, n]);
    const want = matmulRef({ a, b, c: new Float64Array(batch * m * n) }, {
      m,
      n,
      k,
      batch,
      transB: true,
      strideB: 0,
      bias,
      alpha: 0.5,
    });
    const got = await out.read();
    assert.equal(firstNonFinite(got), -1, `seed ${seed}`);
    const error = relativeError(got, want);
    assert(error < TOLERANCE, `relative error ${error}, seed ${seed}`);
    // Accumulating into a given output adds a second product.
    mm.run(ta, tb, { transB: true, out, accumulate: true });
    const twice = await out.read();
    const again = matmulRef({ a, b, c: Float64Array.from(want) }, {
      m,
      n,
      k,
      batch,
      transB: true,
      strideB: 0,
      accumulate: true,
    });
    assert(relativeError(twice, again) < TOLERANCE, `seed ${seed}`);
  },
);

Deno.test("run rejects mismatched shapes with a message naming them", GPU_TEST, async () => {
  const gpu = await testGpu();
  const mm = await matmul();
  using a = Tensor.empty(gpu, [3, 4]);
  using b = Tensor.empty(gpu, [5, 6]);
  using c = Tensor.empty(gpu, [4, 6]);
  using bias = Tensor.empty(gpu, [5]);
  using batched = Tensor.empty(gpu, [2, 4, 6]);
  using other = Tensor.empty(gpu, [3, 3, 4]);
  assert.throws(() => mm.run(a, b), {
    name: "RangeError",
    message: "Cannot multiply [3,4] by [5,6]: inner sizes 4 and 5 differ",
  });
  assert.throws(() => mm.run(a, c, { transB: true }), /inner sizes 4 and 6 differ/);
  assert.throws(() => mm.run(a, c, { bias }), /bias has shape \[5\], expected \[6\]/);
  assert.throws(() => mm.run(a, c, { out: b }), /out has shape \[5,6\], expected \[3,6\]/);
  assert.throws(() => mm.run(other, batched), /batch sizes 3 and 2 differ/);
  assert.throws(
    () => mm.raw({ out: c.buffer, a: a.buffer, b: c.buffer }, { m: 3, n: 6, k: 4 }),
    /output buffer is also an input/,
  );
  assert.throws(
    () => mm.raw({ out: c.buffer, a: a.buffer, b: b.buffer }, { m: 3, n: 6, k: 40 }),
    /A needs elements up to 119 but its buffer holds/,
  );
});

Deno.test("operands larger than one binding are split into chunks", GPU_TEST, async () => {
  // A second device whose storage bindings hold only 64 KiB, so big operands must be split.
  using gpu = await Gpu.acquire({ maxBindingBytes: 64 * 1024 });
  const setup = { gpu, matmul: await Matmul.load(gpu, { variant: "blocked" }) };
  const seed = freshSeed();
  // 64 KiB holds 16384 floats: each case makes a different operand (or several) too big.
  const cases: (MatmulLayout & { bias?: boolean })[] = [
    { m: 300, n: 8, k: 100 }, // A, split over rows
    { m: 8, n: 100, k: 300, transA: true }, // Aᵀ, split over K
    { m: 8, n: 300, k: 100, transB: true, bias: true }, // Bᵀ (the LM head case), over columns
    { m: 8, n: 100, k: 300, bias: true }, // B, over K: later chunks accumulate, bias once
    { m: 100, n: 300, k: 4, accumulate: true }, // C, over rows
    { m: 12, n: 4, k: 2000, transA: true, transB: true }, // Aᵀ and Bᵀ with long K
    { m: 40, n: 40, k: 40, batch: 20, bias: true }, // batch items
    { m: 3, n: 5, k: 7, batch: 1000, strideB: 0 }, // many small items, shared B
    { m: 130, n: 130, k: 150, transA: true, transB: true, alpha: 0.5 }, // every operand
  ];
  for (const layout of cases) {
    for (const variant of MATMUL_VARIANTS) {
      await checkRaw(setup, { ...layout, variant }, seed);
    }
  }
});

Deno.test("auto picks a variant once per adapter and reuses it", GPU_TEST, async () => {
  const gpu = await testGpu();
  const first = await Matmul.load(gpu, { variant: "auto" });
  assert(MATMUL_VARIANTS.includes(first.variant));
  // Measuring times every variant with gpu.time: the second load must not call it.
  const time = gpu.time;
  let timed = 0;
  gpu.time = (record) => {
    timed++;
    return time.call(gpu, record);
  };
  try {
    const second = await Matmul.load(gpu);
    assert.equal(second.variant, first.variant);
  } finally {
    gpu.time = time;
  }
  assert.equal(timed, 0, "the second load measured again");
  await assert.rejects(
    () => Matmul.load(gpu, { variant: "fastest" as "tiled" }),
    /Unknown matmul variant "fastest"/,
  );
});
