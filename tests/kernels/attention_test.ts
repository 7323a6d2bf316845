import assert from "node:assert/strict";
import { AttentionKernels } from "../../kernels/attention.ts";
import { attentionBackwardRef, attentionForwardRef } from "../../kernels/attention_ref.ts";
import { Tensor } from "../../kernels/tensor.ts";
import {
  firstNonFinite,
  freshSeed,
  GPU_TEST,
  randomArray,
  relativeError,
  testGpu,
} from "../_util.ts";

const SHAPES: readonly Shape[] = [
  [1, 1, 1, 1],
  [1, 3, 1, 3],
  [2, 17, 3, 5],
  [1, 64, 4, 16],
  [2, 33, 2, 64],
  [1, 130, 2, 12],
];
const TOLERANCE = 1e-5;
// q and k entries in [-QK, QK): scaled scores have a standard deviation of QK^2 / 3 = 2, so
// the softmaxes are neither near-uniform nor one-hot.
const QK = 2.45;

/** Random `[B, rows, 3C]` q | k | v with q and k scaled by {@link QK}. */
function randomQkv(seed: number, shape: { B: number; rows: number; C: number }): Float32Array {
  const { B, rows, C } = shape;
  const qkv = randomArray(B * rows * 3 * C, seed);
  for (let i = 0; i < qkv.length; i++) if (i % (3 * C) < 2 * C) qkv[i] *= QK;
  return qkv;
}

function poisoned(shape: number[]): Float32Array {
  return new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(NaN);
}

/** Columns [begin, end) of every row of a row-major matrix `width` wide. */
function columns(x: ArrayLike<number>, width: number, begin: number, end: number): Float64Array {
  const rows = x.length / width;
  const out = new Float64Array(rows * (end - begin));
  for (let r = 0; r < rows; r++) {
    for (let c = begin; c < end; c++) out[r * (end - begin) + c - begin] = x[r * width + c];
  }
  return out;
}

Deno.test("the reference backward matches finite differences of the reference forward", () => {
  const seed = freshSeed();
  const sizes = { B: 2, T: 5, C: 6, NH: 2 };
  const qkv = Float64Array.from(randomQkv(seed, { B: 2, rows: 5, C: 6 }));
  const dout = Float64Array.from(randomArray(2 * 5 * 6, seed + 1));
  const loss = (x: Float64Array) => {
    const { out } = attentionForwardRef(x, sizes);
    return out.reduce((sum, o, i) => sum + o * dout[i], 0);
  };
  const grad = attentionBackwardRef(dout, qkv, sizes);
  const numeric = new Float64Array(qkv.length);
  const h = 1e-5;
  for (let i = 0; i < qkv.length; i++) {
    const x = qkv[i];
    qkv[i] = x + h;
    const up = loss(qkv);
    qkv[i] = x - h;
    const down = loss(qkv);
    qkv[i] = x;
    numeric[i] = (up - down) / (2 * h);
  }
  const err = relativeError(grad, numeric);
  assert(err < 1e-7, `relative error ${err}, seed ${seed}`);
  assert(grad.some((g) => g !== 0), `all-zero gradient, seed ${seed}`);
});

type Shape = readonly [B: number, T: number, NH: number, hd: number];

async function checkForward(attention: AttentionKernels, shape: Shape, seed: number) {
  const { gpu } = attention;
  const [B, T, NH, hd] = shape;
  const C = NH * hd;
  const host = randomQkv(seed + T, { B, rows: T, C });
  using qkv = Tensor.from(gpu, host, [B, T, 3 * C]);
  using out = Tensor.from(gpu, poisoned([B, T, C]), [B, T, C]);
  using lse = Tensor.from(gpu, poisoned([B, NH, T]), [B, NH, T]);
  attention.forward({ out, lse, qkv, B, T, NH });
  const ref = attentionForwardRef(host, { B, T, C, NH });
  const [gotOut, gotLse] = [await out.read(), await lse.read()];
  const what = `(B, T, NH, hd) = (${shape}), span ${attention.span ?? "auto"}, seed ${seed}`;
  assert.equal(firstNonFinite(gotOut), -1, `unwritten out, ${what}`);
  assert.equal(firstNonFinite(gotLse), -1, `unwritten lse, ${what}`);
  const errOut = relativeError(gotOut, ref.out);
  const errLse = relativeError(gotLse, ref.lse);
  assert(errOut < TOLERANCE, `out relative error ${errOut}, ${what}`);
  assert(errLse < TOLERANCE, `lse relative error ${errLse}, ${what}`);
}

async function checkBackward(attention: AttentionKernels, shape: Shape, seed: number) {
  const { gpu } = attention;
  const [B, T, NH, hd] = shape;
  const C = NH * hd;
  const host = randomQkv(seed + T, { B, rows: T, C });
  const hostDout = randomArray(B * T * C, seed + T + 1);
  // Small, so that subtracting it back off loses nothing of the gradient's precision.
  const start = randomArray(B * T * 3 * C, seed + T + 2).map((x) => x * 0.1);
  using qkv = Tensor.from(gpu, host, [B, T, 3 * C]);
  using dout = Tensor.from(gpu, hostDout, [B, T, C]);
  using out = Tensor.empty(gpu, [B, T, C]);
  using lse = Tensor.empty(gpu, [B, NH, T]);
  using dqkv = Tensor.from(gpu, start, [B, T, 3 * C]);
  attention.forward({ out, lse, qkv, B, T, NH });
  attention.backward({ dqkv, dout, qkv, out, lse, B, T, NH });
  const got = await dqkv.read();
  const what = `(B, T, NH, hd) = (${shape}), span ${attention.span ?? "auto"}, seed ${seed}`;
  assert.equal(firstNonFinite(got), -1, `non-finite dqkv, ${what}`);
  const added = Float64Array.from(got, (g, i) => g - start[i]);
  const ref = attentionBackwardRef(hostDout, host, { B, T, C, NH });
  for (const [part, begin] of [["dq", 0], ["dk", C], ["dv", 2 * C]] as const) {
    const err = relativeError(
      columns(added, 3 * C, begin, begin + C),
      columns(ref, 3 * C, begin, begin + C),
    );
    assert(err < TOLERANCE, `${part} relative error ${err}, ${what}`);
  }
}

// Rows [past, past + T) computed over a KV cache against the same rows of a full forward.
async function checkCache(
  attention: AttentionKernels,
  cache: { past: number; T: number; NH?: number; hd?: number },
  seed: number,
) {
  const { gpu } = attention;
  const { past, T } = cache;
  const [B, NH, hd] = [2, cache.NH ?? 3, cache.hd ?? 5];
  const C = NH * hd;
  const rows = past + T;
  // The cache buffer is longer than what is filled: rows past `rows` must not be read.
  const tMax = rows + 2;
  const full = randomQkv(seed + past * 10 + T, { B, rows: tMax, C });
  const cached = full.slice();
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < tMax; t++) {
      const row = (b * tMax + t) * 3 * C;
      if (t >= rows) cached.fill(NaN, row, row + 3 * C);
      // Cached rows keep k and v only.
      else if (t < past) cached.fill(NaN, row, row + C);
    }
  }
  using fullQkv = Tensor.from(gpu, full, [B, tMax, 3 * C]);
  using cacheQkv = Tensor.from(gpu, cached, [B, tMax, 3 * C]);
  using fullOut = Tensor.from(gpu, poisoned([B, rows, C]), [B, rows, C]);
  using fullLse = Tensor.from(gpu, poisoned([B, NH, rows]), [B, NH, rows]);
  using out = Tensor.from(gpu, poisoned([B, T, C]), [B, T, C]);
  using lse = Tensor.from(gpu, poisoned([B, NH, T]), [B, NH, T]);
  attention.forward({ out: fullOut, lse: fullLse, qkv: fullQkv, B, T: rows, NH, tMax });
  attention.forward({ out, lse, qkv: cacheQkv, B, T, NH, past, tMax });
  const [gotOut, gotLse] = [await out.read(), await lse.read()];
  const [allOut, allLse] = [await fullOut.read(), await fullLse.read()];
  const what = `past ${past}, T ${T}, hd ${hd}, span ${attention.span ?? "auto"}, seed ${seed}`;
  assert.equal(firstNonFinite(gotOut), -1, `non-finite out, ${what}`);
  assert.equal(firstNonFinite(gotLse), -1, `non-finite lse, ${what}`);
  const wantOut = new Float32Array(B * T * C);
  const wantLse = new Float32Array(B * NH * T);
  for (let b = 0; b < B; b++) {
    const from = (b * rows + past) * C;
    wantOut.set(allOut.subarray(from, from + T * C), b * T * C);
    for (let h = 0; h < NH; h++) {
      const at = (b * NH + h) * rows + past;
      wantLse.set(allLse.subarray(at, at + T), (b * NH + h) * T);
    }
  }
  const errOut = relativeError(gotOut, wantOut);
  const errLse = relativeError(gotLse, wantLse);
  assert(errOut < 1e-6, `out differs from the full forward by ${errOut}, ${what}`);
  assert(errLse < 1e-6, `lse differs from the full forward by ${errLse}, ${what}`);
  const ref = attentionForwardRef(full, { B, T, C, NH, past, tMax });
  const errRef = relativeError(gotOut, ref.out);
  assert(errRef < TOLERANCE, `out relative error ${errRef} to the reference, ${what}`);
}

Deno.test("attention forward matches the float64 reference on odd shapes", GPU_TEST, async () => {
  const attention = await AttentionKernels.load(await testGpu());
  const seed = freshSeed();
  for (const shape of SHAPES) await checkForward(attention, shape, seed);
});

Deno.test(
  "attention backward accumulates the float64 reference gradient on odd shapes",
  GPU_TEST,
  async () => {
    const attention = await AttentionKernels.load(await testGpu());
    const seed = freshSeed();
    for (const shape of SHAPES) await checkBackward(attention, shape, seed);
  },
);

Deno.test(
  "forward with a KV cache equals the matching rows of a full forward",
  GPU_TEST,
  async () => {
    const attention = await AttentionKernels.load(await testGpu());
    const seed = freshSeed();
    for (const past of [0, 1, 5]) {
      for (const T of [1, 3]) await checkCache(attention, { past, T }, seed);
    }
  },
);

Deno.test(
  "attention split into many 16-row passes matches the reference, forward, backward and cached",
  GPU_TEST,
  async () => {
    // What llvmpipe's loop limit forces on long sequences with large heads, on small shapes.
    const attention = await AttentionKernels.load(await testGpu(), { span: 16 });
    const seed = freshSeed();
    for (const shape of [[2, 17, 3, 5], [1, 64, 4, 16], [1, 50, 1, 64]] as const) {
      await checkForward(attention, shape, seed);
      await checkBackward(attention, shape, seed);
    }
    for (const past of [5, 15, 16, 30]) await checkCache(attention, { past, T: 3 }, seed);
  },
);

Deno.test(
  "a 1024-token forward runs without a [T, T] buffer and matches the reference",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const attention = await AttentionKernels.load(gpu);
    const seed = freshSeed();
    const [B, T, NH, C] = [1, 1024, 1, 64];
    const host = randomQkv(seed, { B, rows: T, C });
    using qkv = Tensor.from(gpu, host, [B, T, 3 * C]);
    using out = Tensor.from(gpu, poisoned([B, T, C]), [B, T, C]);
    using lse = Tensor.from(gpu, poisoned([B, NH, T]), [B, NH, T]);
    gpu.flush();
    gpu.pool.resetPeak();
    const before = gpu.pool.stats().inUse;
    attention.forward({ out, lse, qkv, B, T, NH });
    gpu.flush();
    // One [T, T] f32 score matrix would be 4 MiB; the forward takes uniform blocks only.
    const extra = gpu.pool.stats().peak - before;
    assert(extra < T * T, `the forward took ${extra} bytes of temporaries`);
    const [gotOut, gotLse] = [await out.read(), await lse.read()];
    const ref = attentionForwardRef(host, { B, T, C, NH });
    assert.equal(firstNonFinite(gotOut), -1, `non-finite out, seed ${seed}`);
    const errOut = relativeError(gotOut, ref.out);
    const errLse = relativeError(gotLse, ref.lse);
    assert(errOut < TOLERANCE, `out relative error ${errOut}, seed ${seed}`);
    assert(errLse < TOLERANCE, `lse relative error ${errLse}, seed ${seed}`);
  },
);

Deno.test(
  "the vec4 kernels (hd a multiple of 4) match with a KV cache, in one pass and in 16-row passes",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    for (const span of [undefined, 16]) {
      const attention = await AttentionKernels.load(gpu, { span });
      for (const past of [0, 1, 5, 15, 16, 30]) {
        for (const T of [1, 3, 6]) await checkCache(attention, { past, T, NH: 2, hd: 8 }, seed);
      }
      for (const shape of [[2, 37, 2, 4], [1, 45, 1, 128], [3, 9, 2, 8]] as const) {
        await checkForward(attention, shape, seed);
        await checkBackward(attention, shape, seed);
      }
    }
  },
);

Deno.test(
  "1024 tokens with 128-wide heads (the largest) match the reference, forward and backward",
  GPU_TEST,
  async () => {
    const attention = await AttentionKernels.load(await testGpu());
    const seed = freshSeed();
    await checkForward(attention, [1, 1024, 1, 128], seed);
    await checkBackward(attention, [1, 1024, 1, 128], seed);
  },
);

Deno.test("attention rejects operands of the wrong size", GPU_TEST, async () => {
  const gpu = await testGpu();
  const attention = await AttentionKernels.load(gpu);
  const [B, T, NH, C] = [2, 3, 2, 8];
  using qkv = Tensor.empty(gpu, [B, T, 3 * C]);
  using out = Tensor.empty(gpu, [B, T, C]);
  using lse = Tensor.empty(gpu, [B, NH, T]);
  using short = Tensor.empty(gpu, [B, T, 2 * C]);
  using wide = Tensor.empty(gpu, [1, 1, 3 * 258]);
  const message = (pattern: RegExp) => (e: unknown) =>
    e instanceof RangeError && pattern.test(e.message);
  assert.throws(
    () => attention.forward({ out, lse, qkv: short, B, T, NH }),
    message(/qkv has 96 elements, expected 144/),
  );
  assert.throws(
    () => attention.forward({ out, lse, qkv, B, T, NH: 3 }),
    message(/not \[B=2, T=3, C\]/),
  );
  assert.throws(
    () => attention.forward({ out, lse, qkv, B, T, NH, past: 1, tMax: T }),
    message(/past \+ T = 4 exceed tMax = 3/),
  );
  assert.throws(
    () => attention.forward({ out: wide, lse, qkv, B: 1, T: 3, NH: 1 }),
    message(/head size 258 exceeds/),
  );
  assert.throws(
    () => attention.backward({ dqkv: out, dout: out, qkv, out, lse, B, T, NH }),
    message(/dqkv has 48 elements, expected 144/),
  );
});
