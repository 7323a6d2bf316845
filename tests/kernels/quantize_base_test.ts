import assert from "node:assert/strict";
import {
  type BaseFormat,
  type PackedWeight,
  packWeight,
  unpackWeight,
} from "../../formats/base_quant.ts";
import { Gpu } from "../../kernels/gpu.ts";
import { PackedTensor } from "../../kernels/packed_tensor.ts";
import { BaseQuantKernels } from "../../kernels/quantize_base.ts";
import { Tensor } from "../../kernels/tensor.ts";
import { freshSeed, GPU_TEST, rng, testGpu } from "../_util.ts";

let loaded: Promise<BaseQuantKernels> | null = null;
function kernels(): Promise<BaseQuantKernels> {
  return loaded ??= testGpu().then((gpu) => BaseQuantKernels.load(gpu));
}

/**
 * Weight-like values: normal-ish, with per-row scales over three decades, a few outliers and a
 * zero block now and then, so absmaxes, zero blocks and the double quantization all vary; every
 * seventh row is tiny, down among the subnormals, which blocks count as zero.
 */
function weights(rows: number, cols: number, seed: number): Float32Array {
  const next = rng(seed);
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const scale = r % 7 === 3 ? 3e-38 : 10 ** (-3 + 3 * next());
    const zeroFrom = next() < 0.1 ? Math.floor(next() * cols) : cols;
    for (let c = 0; c < cols; c++) {
      const gauss = (next() + next() + next() + next() - 2) * 1.7;
      const outlier = next() < 0.01 ? 20 : 1;
      out[r * cols + c] = c >= zeroFrom ? 0 : gauss * scale * outlier;
    }
  }
  return out;
}

function transpose(values: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) out[c * rows + r] = values[r * cols + c];
  }
  return out;
}

/** The first byte where two packings differ, by part, or null when every byte is equal. */
function firstDifference(got: PackedWeight, want: PackedWeight): string | null {
  const parts = ["codes", "absmax", "absmaxCodes", "absmax2"] as const;
  for (const part of parts) {
    const a = got[part];
    const b = want[part];
    if (!a && !b) continue;
    if (!a || !b || a.length !== b.length) return `${part}: lengths ${a?.length} ${b?.length}`;
    const bytesA = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    const bytesB = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
    for (let i = 0; i < bytesA.length; i++) {
      if (bytesA[i] !== bytesB[i]) return `${part} byte ${i}: ${bytesA[i]} vs ${bytesB[i]}`;
    }
  }
  if (!Object.is(got.offset, want.offset)) return `offset ${got.offset} vs ${want.offset}`;
  return null;
}

const CASES: { format: BaseFormat; blockSize?: number; doubleQuant?: boolean }[] = [
  { format: "f16" },
  { format: "bf16" },
  { format: "int8" },
  { format: "int8", blockSize: 32, doubleQuant: true },
  { format: "nf4" },
  { format: "nf4", blockSize: 128, doubleQuant: false },
  { format: "nf4", blockSize: 32 },
];

Deno.test(
  "GPU packing writes the reference's bytes on random odd shapes, every format",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const k = await kernels();
    const seed = freshSeed();
    const shapes: [number, number][] = [[1, 1], [3, 17], [17, 255], [300, 131], [5, 1023]];
    for (const [rows, cols] of shapes) {
      const values = weights(rows, cols, seed + rows);
      using src = Tensor.from(gpu, values, [rows, cols]);
      for (const options of CASES) {
        using packed = k.pack(src, [rows, cols], options);
        const label = `${JSON.stringify(options)} [${rows}, ${cols}] seed ${seed}`;
        const diff = firstDifference(
          await packed.read(),
          packWeight(values, [rows, cols], options),
        );
        assert.equal(diff, null, label);
      }
    }
  },
);

Deno.test(
  "packing in chunks of rows, or of a transposed source's rows, gives the same bytes",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const k = await kernels();
    const seed = freshSeed();
    const [rows, cols] = [23, 200];
    const values = weights(rows, cols, seed);
    const t = transpose(values, rows, cols);
    for (const options of CASES) {
      const want = packWeight(values, [rows, cols], options);
      const label = `${JSON.stringify(options)} seed ${seed}`;
      // A loader's way: one reused upload buffer, chunks of 10 rows, finish once.
      using packed = PackedTensor.empty(gpu, [rows, cols], options);
      using chunk = Tensor.empty(gpu, [10, cols]);
      for (let r0 = 0; r0 < rows; r0 += 10) {
        const r1 = Math.min(rows, r0 + 10);
        gpu.write(chunk.buffer, values.subarray(r0 * cols, r1 * cols));
        k.quantize(packed, { tensor: chunk, size: (r1 - r0) * cols }, { begin: r0, end: r1 });
      }
      k.finish(packed);
      assert.equal(firstDifference(await packed.read(), want), null, `rows: ${label}`);
      // A conv1d weight, [in, out]: chunks of 128 source rows (columns of the packed matrix).
      using fromT = PackedTensor.empty(gpu, [rows, cols], options);
      for (let c0 = 0; c0 < cols; c0 += 128) {
        const c1 = Math.min(cols, c0 + 128);
        using part = Tensor.from(gpu, t.subarray(c0 * rows, c1 * rows), [c1 - c0, rows]);
        k.quantize(fromT, part, { transposed: true, begin: c0, end: c1 });
      }
      k.finish(fromT);
      assert.equal(firstDifference(await fromT.read(), want), null, `transposed: ${label}`);
    }
  },
);

Deno.test("unpacking on the GPU equals the reference bit for bit", GPU_TEST, async () => {
  const gpu = await testGpu();
  const k = await kernels();
  const seed = freshSeed();
  const [rows, cols] = [37, 151];
  const values = weights(rows, cols, seed);
  for (const options of CASES) {
    const host = packWeight(values, [rows, cols], options);
    using packed = PackedTensor.from(gpu, host);
    const want = unpackWeight(host);
    using out = Tensor.from(gpu, new Float32Array(rows * cols).fill(NaN), [rows, cols]);
    k.dequantize(packed, { out });
    const got = await out.read();
    const label = `${JSON.stringify(options)} seed ${seed}`;
    for (let i = 0; i < got.length; i++) {
      assert(Object.is(got[i], want[i]), `element ${i}: ${got[i]} vs ${want[i]}: ${label}`);
    }
    using t = k.dequantize(packed, { transposed: true });
    assert.deepEqual(t.shape, [cols, rows]);
    assert.deepEqual(await t.read(), transpose(want, rows, cols), `transposed: ${label}`);
  }
});

Deno.test("non-finite source values are counted", GPU_TEST, async () => {
  const gpu = await testGpu();
  const k = await kernels();
  const values = weights(4, 70, freshSeed());
  values[3] = NaN;
  values[100] = Infinity;
  values[279] = -Infinity;
  using src = Tensor.from(gpu, values, [4, 70]);
  for (const format of ["bf16", "nf4"] as const) {
    using count = Tensor.from(gpu, new Uint32Array([5]), [1]);
    using packed = k.pack(src, [4, 70], { format, nonFinite: count });
    assert.deepEqual([...await count.read()], [8], format);
    assert(packed.ready);
  }
});

Deno.test("operands over one storage binding are packed window by window", GPU_TEST, async () => {
  // A device whose bindings hold 64 KiB: the source (and, for f16, the codes) need windows.
  using gpu = await Gpu.acquire({ maxBindingBytes: 64 * 1024 });
  const k = await BaseQuantKernels.load(gpu);
  const seed = freshSeed();
  const [rows, cols] = [130, 300]; // 156 KB of f32
  const values = weights(rows, cols, seed);
  using src = Tensor.from(gpu, values, [rows, cols]);
  for (const options of CASES) {
    using packed = k.pack(src, [rows, cols], options);
    const want = packWeight(values, [rows, cols], options);
    const label = `${JSON.stringify(options)} seed ${seed}`;
    assert.equal(firstDifference(await packed.read(), want), null, label);
    using out = k.dequantize(packed);
    assert.deepEqual(await out.read(), unpackWeight(want), `unpack: ${label}`);
  }
  // Absmaxes are bound whole: a weight whose absmaxes do not fit in one binding is refused.
  assert.throws(
    () => PackedTensor.empty(gpu, [1024, 4096], { format: "int8", blockSize: 32, label: "lm" }),
    (e: Error) =>
      /Cannot pack "lm" as int8: its absmaxes take 524288 bytes, over this adapter's 65536-byte storage binding limit \(maxStorageBufferBindingSize\); use a larger block size or split the weight/
        .test(e.message) && !e.message.includes("\n"),
  );
});

Deno.test("misuse is refused with one line naming the weight", GPU_TEST, async () => {
  const gpu = await testGpu();
  const k = await kernels();
  const one = (fn: () => unknown, pattern: RegExp) =>
    assert.throws(fn, (e: Error) => pattern.test(e.message) && !e.message.includes("\n"));
  using packed = PackedTensor.empty(gpu, [8, 100], { format: "nf4", label: "h.0.mlp.fc" });
  using rows3 = Tensor.empty(gpu, [3, 100]);
  k.quantize(packed, rows3, { begin: 0, end: 3 });
  one(
    () => k.finish(packed),
    /Cannot finish packing "h.0.mlp.fc": rows 3..8 were never quantized/,
  );
  one(
    () => k.dequantize(packed),
    /Cannot unpack "h.0.mlp.fc": its packing was not finished/,
  );
  one(
    () => k.quantize(packed, rows3, { begin: 3, end: 7 }),
    /Cannot pack rows 3..7 of "h.0.mlp.fc": the source holds 300 f32 values, expected 400 f32 \(4 rows of 100\)/,
  );
  one(
    () => k.quantize(packed, rows3, { begin: 6, end: 9 }),
    /expected 0 <= begin < end <= 8/,
  );
  using cols = Tensor.empty(gpu, [10, 8]);
  one(
    () => k.quantize(packed, cols, { transposed: true, begin: 10, end: 20 }),
    /a transposed chunk must start and end on a multiple of 64 \(or at the last column\)/,
  );
  one(
    () => PackedTensor.empty(gpu, [8, 100], { format: "nf4", blockSize: 100 }),
    /Invalid block size 100 for nf4/,
  );
});
