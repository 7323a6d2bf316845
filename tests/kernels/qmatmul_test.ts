import assert from "node:assert/strict";
import fc from "fast-check";
import {
  type BaseFormat,
  type BaseQuantOptions,
  NF4_LEVELS,
  packWeight,
  unpackWeight,
} from "../../formats/base_quant.ts";
import { Gpu } from "../../kernels/gpu.ts";
import { type F16Path, QMatmul, type QMatmulLayout } from "../../kernels/qmatmul.ts";
import { PackedTensor } from "../../kernels/packed_tensor.ts";
import { Tensor } from "../../kernels/tensor.ts";
import { freshSeed, GPU_TEST, randomArray, testGpu } from "../_util.ts";

/** Value of output elements outside the layout: they must come back unchanged. */
const SENTINEL = 7;
const U = 2 ** -24;

let loaded: Promise<QMatmul> | null = null;
function qmatmul(): Promise<QMatmul> {
  return loaded ??= testGpu().then((gpu) => QMatmul.load(gpu, { f16: "unpack" }));
}

/**
 * The bound on an f32 sum of n terms, each a product rounded once, over the sum of their
 * magnitudes: γ(n) = n·u / (1 - n·u) (Higham, Accuracy and Stability, §3.1).
 */
function gamma(n: number): number {
  return (n * U) / (1 - n * U);
}

/** One product: its sizes, layout and options. */
interface Case extends BaseQuantOptions {
  m: number;
  n: number;
  k: number;
  backward: boolean;
  bias?: boolean;
  layout?: Omit<QMatmulLayout, "m">;
}

/**
 * Runs one product on fresh random inputs against dequantize-then-multiply in float64: every
 * element of the layout written and within γ(K + 5) of the sum of its terms' magnitudes (the
 * products and additions of the f32 sum, the bias, the accumulated value and int8's scale,
 * which the kernel rounds once more than the reference), every other element untouched.
 */
async function check(q: QMatmul, c: Case, seed: number): Promise<void> {
  const { gpu } = q;
  const { m, n, k, backward } = c;
  const [width, depth] = backward ? [k, n] : [n, k];
  const ldInp = c.layout?.ldInp ?? depth;
  const ldOut = c.layout?.ldOut ?? width;
  const offInp = c.layout?.offsetInp ?? 0;
  const offOut = c.layout?.offsetOut ?? 0;
  const offBias = c.layout?.offsetBias ?? 0;
  const accumulate = c.layout?.accumulate ?? false;
  const w = randomArray(n * k, seed);
  const host = packWeight(w, [n, k], c);
  const wd = unpackWeight(host);
  const inp = randomArray(offInp + (m - 1) * ldInp + depth, seed + 1);
  const bias = randomArray(offBias + width, seed + 2);
  const start = randomArray(offOut + (m - 1) * ldOut + width, seed + 3);
  const out0 = new Float32Array(start.length).fill(SENTINEL);
  const at: number[] = [];
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < width; j++) {
      const e = offOut + i * ldOut + j;
      at.push(e);
      out0[e] = accumulate ? start[e] : NaN;
    }
  }
  using packed = PackedTensor.from(gpu, host, { label: "w" });
  using tInp = Tensor.from(gpu, inp, [inp.length]);
  using tBias = Tensor.from(gpu, bias, [bias.length]);
  using tOut = Tensor.from(gpu, out0, [out0.length]);
  const buffers = { out: tOut.buffer, inp: tInp.buffer, bias: c.bias ? tBias.buffer : undefined };
  if (backward) q.backwardRaw(packed, buffers, { m, ...c.layout });
  else q.forwardRaw(packed, buffers, { m, ...c.layout });
  const got = await tOut.read();
  const label = `${JSON.stringify(c)} f16 ${q.f16} seed ${seed}`;
  let e = 0;
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < width; j++) {
      let sum = 0;
      let size = 0;
      for (let p = 0; p < depth; p++) {
        const x = inp[offInp + i * ldInp + p];
        const wv = backward ? wd[p * k + j] : wd[j * k + p];
        sum += x * wv;
        size += Math.abs(x * wv);
      }
      if (c.bias && !backward) {
        sum += bias[offBias + j];
        size += Math.abs(bias[offBias + j]);
      }
      const o = at[e++];
      if (accumulate) {
        sum += start[o];
        size += Math.abs(start[o]);
      }
      const tolerance = gamma(depth + 5) * size;
      assert(Number.isFinite(got[o]), `element (${i}, ${j}) not written: ${label}`);
      assert(
        Math.abs(got[o] - sum) <= tolerance,
        `element (${i}, ${j}): ${got[o]} vs ${sum} (tolerance ${tolerance}): ${label}`,
      );
    }
  }
  const inLayout = new Set(at);
  for (let i = 0; i < got.length; i++) {
    if (!inLayout.has(i)) assert.equal(got[i], SENTINEL, `padding ${i} overwritten: ${label}`);
  }
}

const FORMATS: readonly BaseQuantOptions[] = [
  { format: "f16" },
  { format: "bf16" },
  { format: "int8" },
  { format: "int8", blockSize: 32, doubleQuant: true },
  { format: "nf4" },
  { format: "nf4", blockSize: 32, doubleQuant: false },
];

Deno.test(
  "qmatmul forward and backward match float64 on random odd shapes, every format",
  GPU_TEST,
  async () => {
    const q = await qmatmul();
    const size = fc.oneof(fc.constantFrom(1, 3, 17, 255), fc.integer({ min: 1, max: 140 }));
    const cases = fc.record({
      m: fc.oneof(fc.constantFrom(1, 3, 17), fc.integer({ min: 1, max: 40 })),
      n: size,
      k: size,
      backward: fc.boolean(),
      bias: fc.boolean(),
      accumulate: fc.boolean(),
      options: fc.constantFrom(...FORMATS),
    });
    await fc.assert(
      fc.asyncProperty(cases, fc.integer({ min: 0, max: 2 ** 30 }), async (c, seed) => {
        await check(q, { ...c, ...c.options, layout: { accumulate: c.accumulate } }, seed);
      }),
      { seed: freshSeed(), numRuns: 60 },
    );
  },
);

Deno.test(
  "every kernel variant gives the same products on shapes with partial tiles and blocks",
  GPU_TEST,
  async () => {
    const q = await qmatmul();
    const seed = freshSeed();
    for (const options of FORMATS) {
      for (const variant of ["tiled", "narrow", "scalar"] as const) {
        for (const [m, n, k] of [[1, 33, 100], [19, 130, 257], [40, 7, 1023]]) {
          for (const backward of [false, true]) {
            await check(
              q,
              { m, n, k, backward, bias: true, ...options, layout: { variant } },
              seed,
            );
          }
        }
      }
    }
  },
);

Deno.test(
  "f16 weights widen the same with shader-f16 and with unpack2x16float",
  GPU_TEST,
  async (t) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const paths: F16Path[] = gpu.hasF16 ? ["native", "unpack"] : ["unpack"];
    if (!gpu.hasF16) console.log(`  skipped the native path: ${gpu.adapterName} has no shader-f16`);
    for (const path of paths) {
      await t.step(path, async () => {
        const q = path === "unpack" ? await qmatmul() : await QMatmul.load(gpu, {
          formats: ["f16"],
          f16: path,
        });
        assert.equal(q.f16, path);
        for (const [m, n, k] of [[3, 17, 255], [20, 64, 96]]) {
          for (const backward of [false, true]) {
            await check(q, { m, n, k, backward, format: "f16", bias: true }, seed);
          }
        }
      });
    }
    if (!gpu.hasF16) {
      await assert.rejects(() => QMatmul.load(gpu, { f16: "native" }), /has no shader-f16/);
    }
  },
);

Deno.test("raw layouts: pitches, offsets, bias offset, accumulation", GPU_TEST, async () => {
  const q = await qmatmul();
  const seed = freshSeed();
  for (const format of ["bf16", "nf4"] as BaseFormat[]) {
    for (const backward of [false, true]) {
      const [m, n, k] = [21, 45, 70];
      const depth = backward ? n : k;
      const width = backward ? k : n;
      // Aligned pitches (the tiled kernels) and odd ones (the scalar fallback).
      for (const pad of [2, 1]) {
        const layout = {
          ldInp: depth + pad + (depth + pad) % 2,
          offsetInp: pad === 2 ? 8 : 3,
          ldOut: width + 3,
          offsetOut: 5,
          offsetBias: 2,
          accumulate: true,
        };
        if (pad === 2) layout.ldInp = Math.ceil((depth + 1) / 4) * 4;
        await check(q, { m, n, k, backward, format, bias: !backward, layout }, seed);
      }
    }
  }
});

Deno.test("tensor calls: shapes, bias, accumulate into a given output", GPU_TEST, async () => {
  const gpu = await testGpu();
  const q = await qmatmul();
  const seed = freshSeed();
  const [batch, rows, n, k] = [2, 5, 24, 40];
  const w = randomArray(n * k, seed);
  const host = packWeight(w, [n, k], { format: "int8" });
  const wd = unpackWeight(host);
  using packed = PackedTensor.from(gpu, host);
  const x = randomArray(batch * rows * k, seed + 1);
  const b = randomArray(n, seed + 2);
  using tx = Tensor.from(gpu, x, [batch, rows, k]);
  using tb = Tensor.from(gpu, b, [n]);
  using y = q.forward(packed, tx, { bias: tb });
  assert.deepEqual(y.shape, [batch * rows, n]);
  const gy = await y.read();
  for (let i = 0; i < batch * rows; i++) {
    for (let j = 0; j < n; j++) {
      let s = b[j];
      let size = Math.abs(b[j]);
      for (let p = 0; p < k; p++) {
        s += x[i * k + p] * wd[j * k + p];
        size += Math.abs(x[i * k + p] * wd[j * k + p]);
      }
      assert(Math.abs(gy[i * n + j] - s) <= gamma(k + 5) * size, `y (${i}, ${j}) seed ${seed}`);
    }
  }
  // The backward into the forward's input shape, accumulated twice.
  using dx = Tensor.from(gpu, new Float32Array(batch * rows * k), [batch * rows, k]);
  q.backward(packed, y, { out: dx });
  q.backward(packed, y, { out: dx, accumulate: true });
  const gdx = await dx.read();
  for (let i = 0; i < batch * rows; i++) {
    for (let p = 0; p < k; p++) {
      let s = 0;
      let size = 0;
      for (let j = 0; j < n; j++) {
        s += 2 * gy[i * n + j] * wd[j * k + p];
        size += 2 * Math.abs(gy[i * n + j] * wd[j * k + p]);
      }
      assert(Math.abs(gdx[i * k + p] - s) <= gamma(n + 6) * size, `dx (${i}, ${p}) seed ${seed}`);
    }
  }
});

Deno.test("operands over one storage binding are split into chunks", GPU_TEST, async () => {
  // A device whose bindings hold 64 KiB: W, the activations, or both need several windows.
  using gpu = await Gpu.acquire({ maxBindingBytes: 64 * 1024 });
  const q = await QMatmul.load(gpu, { formats: ["f16", "nf4"], f16: "unpack" });
  const seed = freshSeed();
  const cases: Case[] = [
    { m: 4, n: 300, k: 136, backward: false, format: "f16", bias: true }, // W: 81 KB
    { m: 4, n: 300, k: 136, backward: true, format: "f16" }, // W rows: chunks accumulate
    { m: 300, n: 24, k: 128, backward: false, format: "nf4" }, // x: 154 KB
    { m: 300, n: 80, k: 64, backward: true, format: "nf4" }, // dy: 96 KB, dx: 77 KB
    { m: 150, n: 280, k: 96, backward: true, format: "f16", layout: { accumulate: true } },
    { m: 150, n: 280, k: 97, backward: false, format: "f16" }, // odd K: the scalar kernel
  ];
  for (const c of cases) await check(q, c, seed);
});

Deno.test("the NF4 levels written into qmatmul.wgsl are the table's, bit for bit", async () => {
  const code = await Deno.readTextFile(new URL("../../kernels/qmatmul.wgsl", import.meta.url));
  const tree = code.slice(code.indexOf("fn nf4_levels"), code.indexOf("return select(n0, n1, b3)"));
  const literals = [...tree.matchAll(/vec4f\((-?[0-9.]+)\)/g)].map((m) =>
    Math.fround(Number(m[1]))
  );
  assert.deepEqual(literals, [...NF4_LEVELS]);
});

Deno.test("misuse is refused with one line naming the weight", GPU_TEST, async () => {
  const gpu = await testGpu();
  const q = await qmatmul();
  const one = (fn: () => unknown, pattern: RegExp) =>
    assert.throws(fn, (e: Error) => pattern.test(e.message) && !e.message.includes("\n"));
  using unfinished = PackedTensor.empty(gpu, [8, 64], { format: "nf4", label: "q_proj" });
  // Exact-sized buffers (pooled ones may be larger than asked).
  using x = Tensor.empty(gpu, [3, 64], { persistent: true });
  one(
    () => q.forward(unfinished, x),
    /Cannot multiply by "q_proj" \(nf4 \[8, 64\]\): its packing was not finished/,
  );
  using w = PackedTensor.from(
    gpu,
    packWeight(new Float32Array(8 * 64), [8, 64], { format: "nf4" }),
    {
      label: "q_proj",
    },
  );
  using bad = Tensor.empty(gpu, [3, 63]);
  one(
    () => q.forward(w, bad),
    /Cannot multiply \[3,63\] by "q_proj"ᵀ \[64, 8\]: the input's last dimension must be 64/,
  );
  using y = Tensor.empty(gpu, [3, 9], { persistent: true });
  one(() => q.forward(w, x, { out: y }), /expected f32 \[3, 8\]/);
  one(
    () => q.forwardRaw(w, { out: y.buffer, inp: x.buffer }, { m: 4 }),
    /the input needs 256 elements but its buffer holds 192/,
  );
  const nf4Only = await QMatmul.load(gpu, { formats: ["nf4"] });
  using half = PackedTensor.from(
    gpu,
    packWeight(new Float32Array(8 * 64), [8, 64], { format: "bf16" }),
    {
      label: "k_proj",
    },
  );
  one(() => nf4Only.forward(half, x), /no bf16 kernels were loaded/);
});
