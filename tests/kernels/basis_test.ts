import assert from "node:assert/strict";
import {
  BasisFactor,
  basisScale,
  materializeBasis,
  moduleKey,
  philox4x32_10,
} from "../../kernels/basis_spec.ts";
import { BasisKernels, PHILOX_WGSL } from "../../kernels/basis.ts";
import { Tensor } from "../../kernels/tensor.ts";
import { firstNonFinite, freshSeed, GPU_TEST, relativeError, rng, testGpu } from "../_util.ts";

// Maps (counter, key) pairs through the WGSL library, so its Philox can be compared word for
// word with the TypeScript one.
const PHILOX_TEST = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> out: array<vec4u>;
@group(0) @binding(1) var<storage, read> counters: array<vec4u>;
@group(0) @binding(2) var<storage, read> keys: array<vec2u>;
struct Sizes { n: u32 }
@group(0) @binding(3) var<uniform> sizes: Sizes;
@compute @workgroup_size(64)
fn philox_test(@builtin(global_invocation_id) id: vec3u) {
  if (id.x < sizes.n) { out[id.x] = philox4x32_10(counters[id.x], keys[id.x]); }
}`;

const SHAPES: readonly [number, number][] = [[1, 1], [3, 17], [8, 255], [17, 1023]];
const SIZES = { k: 1024, l: 256, inFeatures: 1023 };
const FACTORS = [BasisFactor.A, BasisFactor.B, BasisFactor.A0] as const;

function randomWords(n: number, next: () => number): Uint32Array {
  return Uint32Array.from({ length: n }, () => (next() * 2 ** 32) >>> 0);
}

function firstBitMismatch(got: Float32Array, want: Float32Array): number {
  const a = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const b = new Uint32Array(want.buffer, want.byteOffset, want.length);
  for (let i = 0; i < b.length; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : b.length;
}

Deno.test("WGSL Philox4x32-10 equals the TypeScript one bit for bit", GPU_TEST, async () => {
  const gpu = await testGpu();
  const seed = freshSeed();
  const next = rng(seed);
  const n = 1000;
  const counters = randomWords(4 * n, next);
  const keys = randomWords(2 * n, next);
  // The known-answer extremes: all zeros and all ones.
  counters.fill(0, 0, 4);
  keys.fill(0, 0, 2);
  counters.fill(0xffffffff, 4, 8);
  keys.fill(0xffffffff, 2, 4);
  const kernel = await gpu.kernel({
    label: "philox_test",
    code: `${PHILOX_WGSL}\n${PHILOX_TEST}`,
    entry: "philox_test",
    bindings: ["storage", "read", "read", "uniform"],
  });
  using c = Tensor.from(gpu, counters, [n, 4]);
  using k = Tensor.from(gpu, keys, [n, 2]);
  using out = Tensor.empty(gpu, [n, 4], { dtype: "u32" });
  gpu.dispatch(kernel, [out.buffer, c.buffer, k.buffer], {
    uniforms: Uint32Array.of(n).buffer,
    workgroups: [Math.ceil(n / 64)],
  });
  const got = await out.read();
  for (let i = 0; i < n; i++) {
    const want = philox4x32_10(
      [counters[4 * i], counters[4 * i + 1], counters[4 * i + 2], counters[4 * i + 3]],
      [keys[2 * i], keys[2 * i + 1]],
    );
    assert.deepEqual(got.subarray(4 * i, 4 * i + 4), want, `case ${i}, seed ${seed}`);
  }
  assert.deepEqual([...got.subarray(0, 4)], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
});

Deno.test(
  "generated bases equal materializeBasis bit for bit on odd shapes, all factors",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const basis = await BasisKernels.load(gpu);
    const seed = freshSeed();
    const key = moduleKey(seed, "h.7.attn.c_attn.v");
    for (const [rows, cols] of SHAPES) {
      for (const factor of FACTORS) {
        const scale = basisScale(factor, SIZES);
        const indices = factor === BasisFactor.A0 ? [0] : [0, 1, 1023, 0xffffffff];
        for (const index of indices) {
          using out = Tensor.empty(gpu, [rows, cols]);
          out.fill(NaN);
          basis.generate(key, { factor, index, rows, cols, scale, out });
          const got = await out.read();
          const want = materializeBasis(key, { factor, index, rows, cols, scale });
          const where = `[${rows}, ${cols}] factor ${factor} index ${index} seed ${seed}`;
          assert.equal(firstNonFinite(got), -1, `unwritten element, ${where}`);
          assert.equal(firstBitMismatch(got, want), -1, `bit mismatch, ${where}`);
        }
      }
    }
  },
);

Deno.test(
  "grids past the workgroup limit spill into y and still cover every element",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const basis = await BasisKernels.load(gpu, { maxWorkgroups: 3 });
    const key = moduleKey(freshSeed(), "h.1.attn.c_attn.q");
    // 17 * 255 elements = 1084 blocks = 17 workgroups of 64 on a 3 x 6 grid, plus 20 bases on 3 x 7.
    const options = { factor: BasisFactor.A, rows: 17, cols: 255, scale: 0.125 };
    using out = Tensor.empty(gpu, [17, 255]);
    out.fill(NaN);
    basis.generate(key, { ...options, index: 4, out });
    const got = await out.read();
    assert.equal(firstBitMismatch(got, materializeBasis(key, { ...options, index: 4 })), -1);
    using sums = Tensor.empty(gpu, [20, 2]);
    sums.fill(NaN);
    basis.sums(key, { ...options, rows: 1, cols: 5, begin: 0, end: 20, out: sums });
    const totals = await sums.read();
    for (let index = 0; index < 20; index++) {
      const values = materializeBasis(key, { ...options, index, rows: 1, cols: 5 });
      const sum = values.reduce((a, v) => a + v, 0);
      assert(
        Math.abs(totals[2 * index] - sum) < 1e-6,
        `basis ${index}: ${totals[2 * index]} vs ${sum}`,
      );
    }
  },
);

Deno.test("normal bases are close to the Box-Muller reference", GPU_TEST, async () => {
  const gpu = await testGpu();
  const basis = await BasisKernels.load(gpu);
  const key = moduleKey(freshSeed(), "h.0.mlp.c_fc");
  const options = { factor: BasisFactor.B, index: 5, rows: 17, cols: 255, scale: 0.0625 };
  using out = basis.generate(key, { ...options, distribution: "normal" });
  const got = await out.read();
  const want = materializeBasis(key, { ...options, distribution: "normal" });
  assert.equal(firstNonFinite(got), -1);
  assert(relativeError(got, want) < 1e-5, `relative error ${relativeError(got, want)}`);
});

Deno.test("basis sums over an index range agree with a CPU sum", GPU_TEST, async () => {
  const gpu = await testGpu();
  const basis = await BasisKernels.load(gpu);
  const seed = freshSeed();
  const key = moduleKey(seed, "h.*.attn.c_attn.q");
  const [rows, cols, begin, end] = [3, 1023, 40, 47];
  const scale = basisScale(BasisFactor.A, SIZES);
  using out = Tensor.empty(gpu, [end - begin, 2]);
  out.fill(NaN);
  basis.sums(key, { factor: BasisFactor.A, begin, end, rows, cols, scale, out });
  const got = await out.read();
  for (let index = begin; index < end; index++) {
    const values = materializeBasis(key, { factor: BasisFactor.A, index, rows, cols, scale });
    let sum = 0;
    let squares = 0;
    for (const v of values) {
      sum += v;
      squares += v * v;
    }
    const b = index - begin;
    // f32 accumulation of n terms of size <= scale: error well under n * 2^-23 * scale.
    const n = rows * cols;
    const where = `index ${index} seed ${seed}`;
    assert(
      Math.abs(got[2 * b] - sum) < n * 2 ** -23 * scale,
      `sum ${got[2 * b]} vs ${sum}, ${where}`,
    );
    assert(
      Math.abs(got[2 * b + 1] - squares) < n * 2 ** -23 * scale * scale,
      `squares ${got[2 * b + 1]} vs ${squares}, ${where}`,
    );
  }
});

Deno.test("basis kernels reject bad shapes, ranges and outputs", GPU_TEST, async () => {
  const gpu = await testGpu();
  const basis = await BasisKernels.load(gpu);
  const key = moduleKey(0, "h.0.attn.c_attn.q");
  const base = { factor: BasisFactor.A, rows: 2, cols: 3, scale: 0.5 };
  assert.throws(
    () => basis.generate(key, { ...base, factor: BasisFactor.A0, index: 1 }),
    RangeError,
  );
  assert.throws(() => basis.generate(key, { ...base, index: 2 ** 32 }), RangeError);
  assert.throws(() => basis.generate(key, { ...base, index: 0, rows: 1.5 }), RangeError);
  using wrong = Tensor.empty(gpu, [5]);
  assert.throws(() => basis.generate(key, { ...base, index: 0, out: wrong }), RangeError);
  assert.throws(() => basis.sums(key, { ...base, begin: 3, end: 2 }), RangeError);
});
