import assert from "node:assert/strict";
import { DecodeKernels } from "../../kernels/decode.ts";
import { decodeAttentionRef, ropeRowsRef } from "../../kernels/decode_ref.ts";
import { RopeKernels } from "../../kernels/rope.ts";
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

// (B, NH, KVH, hd, capacity): odd batches and lengths, grouped heads, one slot of one row.
const CASES = [
  [1, 1, 1, 4, 1],
  [3, 4, 2, 8, 17],
  [17, 6, 3, 12, 5],
  [5, 4, 1, 32, 255],
] as const;

Deno.test(
  "decode attention matches the float64 reference with per-row lengths and slots",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const decode = await DecodeKernels.load(gpu);
    const seed = freshSeed();
    for (const [i, [B, NH, KVH, hd, cap]] of CASES.entries()) {
      const what = `B=${B} NH=${NH} KVH=${KVH} hd=${hd} cap=${cap} seed ${seed}`;
      const next = rng(seed + i);
      // Slots are a shuffled subset of B + 2 slots; lengths anywhere in 1..cap.
      const slots = Array.from({ length: B + 2 }, (_, s) => s).sort(() => next() - 0.5);
      const rows = Array.from({ length: B }, (_, b) => ({
        first: slots[b] * cap,
        length: 1 + Math.floor(next() * cap),
      }));
      // k and v interleaved in one cache tensor as GPT-2's qkv rows are: ld = 3 * width + 4.
      const width = KVH * hd;
      const ld = 3 * width + 4;
      const cacheRows = (B + 2) * cap;
      const cache = randomArray(cacheRows * ld, seed + 100 + i);
      const qLd = NH * hd + 8;
      const q = randomArray(B * qLd, seed + 200 + i).map((x) => 3 * x);
      using tq = Tensor.from(gpu, q, [B, qLd]);
      using tc = Tensor.from(gpu, cache, [cacheRows, ld]);
      using out = Tensor.from(gpu, new Float32Array(B * NH * hd).fill(NaN), [B, NH * hd]);
      using lse = Tensor.from(gpu, new Float32Array(B * NH).fill(NaN), [B * NH]);
      decode.attention({
        out,
        lse,
        q: { tensor: tq, offset: 4, ld: qLd },
        k: { tensor: tc, offset: 4, ld },
        v: { tensor: tc, offset: 4 + width, ld },
        rows,
        NH,
        KVH,
      });
      const ref = decodeAttentionRef({
        q: { data: q, offset: 4, ld: qLd },
        k: { data: cache, offset: 4, ld },
        v: { data: cache, offset: 4 + width, ld },
      }, { rows, NH, KVH, hd });
      const got = await out.read();
      assert.equal(firstNonFinite(got), -1, `${what}: unwritten out element`);
      const err = relativeError(got, ref.out);
      assert(err < 1e-5, `${what}: out relative error ${err}`);
      const lseErr = relativeError(await lse.read(), ref.lse);
      assert(lseErr < 1e-5, `${what}: lse relative error ${lseErr}`);
    }
  },
);

Deno.test("decode attention streams long rows in several passes", GPU_TEST, async () => {
  const gpu = await testGpu();
  const decode = await DecodeKernels.load(gpu);
  const seed = freshSeed();
  // hd 128 takes about 180 keys a pass: 1023 keys need six.
  const [NH, hd, cap] = [2, 128, 1023];
  const rows = [{ first: 0, length: 1023 }, { first: cap, length: 200 }, {
    first: 2 * cap,
    length: 3,
  }];
  const k = randomArray(3 * cap * NH * hd, seed);
  const v = randomArray(3 * cap * NH * hd, seed + 1);
  const q = randomArray(3 * NH * hd, seed + 2);
  using tk = Tensor.from(gpu, k, [3 * cap, NH * hd]);
  using tv = Tensor.from(gpu, v, [3 * cap, NH * hd]);
  using tq = Tensor.from(gpu, q, [3, NH * hd]);
  using out = Tensor.from(gpu, new Float32Array(3 * NH * hd).fill(NaN), [3, NH * hd]);
  using lse = Tensor.empty(gpu, [3 * NH]);
  decode.attention({ out, lse, q: { tensor: tq }, k: { tensor: tk }, v: { tensor: tv }, rows, NH });
  const ref = decodeAttentionRef({
    q: { data: q, offset: 0, ld: NH * hd },
    k: { data: k, offset: 0, ld: NH * hd },
    v: { data: v, offset: 0, ld: NH * hd },
  }, { rows, NH, KVH: NH, hd });
  const err = relativeError(await out.read(), ref.out);
  assert(err < 1e-5, `seed ${seed}: relative error ${err}`);
});

Deno.test("decode attention refuses rows without keys and unaligned views", GPU_TEST, async () => {
  const gpu = await testGpu();
  const decode = await DecodeKernels.load(gpu);
  using t = Tensor.empty(gpu, [8, 8]);
  using out = Tensor.empty(gpu, [1, 8]);
  using lse = Tensor.empty(gpu, [2]);
  const base = { out, lse, q: { tensor: t }, k: { tensor: t }, v: { tensor: t }, NH: 2 };
  assert.throws(() => decode.attention({ ...base, rows: [{ first: 0, length: 0 }] }), /row 0/);
  assert.throws(
    () =>
      decode.attention({ ...base, k: { tensor: t, offset: 2 }, rows: [{ first: 0, length: 1 }] }),
    /multiples of 4/,
  );
  assert.throws(() => decode.attention({ ...base, rows: [{ first: 7, length: 2 }] }), /outside/);
});

Deno.test("copyRows copies and adds rows by pair; moveRows moves runs", GPU_TEST, async () => {
  const gpu = await testGpu();
  const decode = await DecodeKernels.load(gpu);
  const seed = freshSeed();
  for (const width of [1, 3, 17, 255]) {
    const src = randomArray(7 * width, seed + width);
    const dst = randomArray(5 * (width + 2), seed + width + 1);
    using ts = Tensor.from(gpu, src, [7, width]);
    using td = Tensor.from(gpu, dst, [5, width + 2]);
    const pairs = [{ from: 6, to: 0 }, { from: 0, to: 3 }, { from: 6, to: 4 }];
    decode.copyRows({
      dst: { tensor: td, offset: 1, ld: width + 2 },
      src: { tensor: ts },
      pairs,
      width,
    });
    const want = Float64Array.from(dst);
    for (const { from, to } of pairs) {
      for (let e = 0; e < width; e++) want[1 + to * (width + 2) + e] = src[from * width + e];
    }
    assert.deepEqual(
      Array.from(await td.read()),
      Array.from(Float32Array.from(want)),
      `width ${width}`,
    );
    decode.copyRows({
      dst: { tensor: td, offset: 1, ld: width + 2 },
      src: { tensor: ts },
      pairs,
      width,
      accumulate: true,
    });
    for (const { from, to } of pairs) {
      for (let e = 0; e < width; e++) want[1 + to * (width + 2) + e] += src[from * width + e];
    }
    assert(relativeError(await td.read(), want) < 1e-7, `accumulate width ${width}`);

    const buf = randomArray(12 * width, seed + 7);
    using tb = Tensor.from(gpu, buf, [12, width]);
    const moves = [
      { from: 0, to: 4, count: 3 },
      { from: 9, to: 7, count: 2 },
      { from: 2, to: 11, count: 1 },
    ];
    decode.moveRows(tb, { moves, width });
    const moved = Float32Array.from(buf);
    for (const m of moves) {
      moved.set(buf.subarray(m.from * width, (m.from + m.count) * width), m.to * width);
    }
    assert.deepEqual(Array.from(await tb.read()), Array.from(moved), `move width ${width}`);
    assert.throws(
      () => decode.moveRows(tb, { moves: [{ from: 0, to: 2, count: 3 }], width }),
      /reads rows that another run writes/,
    );
  }
});

Deno.test(
  "rope at per-row positions matches the float64 reference and the rope kernel bit for bit",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const decode = await DecodeKernels.load(gpu);
    const ropeKernels = await RopeKernels.load(gpu);
    const seed = freshSeed();
    using table = ropeKernels.table(8, { theta: 10_000 });
    const heads = 3;
    const positions = [0, 5, 1, 63, 17, 2];
    const ld = heads * 8 + 4;
    const x = randomArray(positions.length * ld, seed);
    using tx = Tensor.from(gpu, x, [positions.length, ld]);
    decode.rope({ x: { tensor: tx, offset: 2, ld }, table, heads, positions });
    const got = await tx.read();
    const ref = ropeRowsRef({ data: x, offset: 2, ld }, {
      heads,
      invFreq: table.values,
      positions,
    });
    assert(relativeError(got, ref) < 1e-6, `seed ${seed}`);
    // Each row equals the sequence kernel's rotation of that row at its position.
    for (const [r, pos] of positions.entries()) {
      using one = Tensor.from(gpu, x.slice(r * ld + 2, r * ld + 2 + heads * 8), [1, heads * 8]);
      ropeKernels.forward({ x: one, table, heads, B: 1, T: 1, past: pos });
      assert.deepEqual(
        Array.from(await one.read()),
        Array.from(got.subarray(r * ld + 2, r * ld + 2 + heads * 8)),
        `row ${r} at ${pos}`,
      );
    }
  },
);
