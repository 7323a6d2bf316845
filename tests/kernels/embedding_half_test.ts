import assert from "node:assert/strict";
import { f32ToBf16Bits, f32ToF16Bits, packHalfBits, packWeight } from "../../formats/base_quant.ts";
import { EmbeddingHalfKernels } from "../../kernels/embedding_half.ts";
import { embeddingHalfRef } from "../../kernels/embedding_half_ref.ts";
import { Gpu } from "../../kernels/gpu.ts";
import { PackedTensor } from "../../kernels/packed_tensor.ts";
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

/** B, T, C, V, P (wpe rows; 0 for none), posOffset. */
type Shape = [number, number, number, number, number, number];

// Odd channel counts leave padding at the end of each table row (rows are 16-byte aligned).
const SHAPES: readonly Shape[] = [
  [1, 1, 1, 1, 1, 0],
  [2, 3, 3, 3, 0, 0],
  [3, 17, 17, 300, 20, 3],
  [2, 17, 64, 1023, 0, 0],
  [1, 3, 255, 50, 8, 5],
];

async function exercise(gpu: Gpu, seed: number, shapes: readonly Shape[]): Promise<void> {
  const kernels = await EmbeddingHalfKernels.load(gpu);
  for (const format of ["f16", "bf16"] as const) {
    const narrow = format === "f16" ? f32ToF16Bits : f32ToBf16Bits;
    for (const [k, [b, t, c, v, p, posOffset]] of shapes.entries()) {
      const what = `${format} B=${b} T=${t} C=${c} V=${v} P=${p} +${posOffset} seed ${seed}`;
      const s = seed + 10 * k;
      const next = rng(s);
      const tok = Uint32Array.from({ length: b * t }, () => Math.floor(next() * v));
      tok[0] = v - 1;
      // Values from 1e-3 to 10 in magnitude: normal in both formats.
      const codes = Uint16Array.from(
        randomArray(v * c, s + 1),
        (x) => narrow(Math.sign(x || 1) * 10 ** (3 * Math.abs(x) - 2)),
      );
      const wpeData = p > 0 ? randomArray(p * c, s + 2) : undefined;
      using table = PackedTensor.from(gpu, packHalfBits(codes, [v, c], format), { label: what });
      using tokens = Tensor.from(gpu, tok, [b, t]);
      using wpe = wpeData ? Tensor.from(gpu, wpeData, [p, c]) : undefined;
      using out = Tensor.from(gpu, new Float32Array(b * t * c).fill(NaN), [b, t, c]);
      kernels.forward({ out, tokens, table, wpe, posOffset: wpe ? posOffset : 0 });
      const got = await out.read() as Float32Array;
      const want = embeddingHalfRef(
        { tokens: tok, seq: t, channels: c, posOffset: wpe ? posOffset : 0 },
        { codes, format, wpe: wpeData },
      );
      assert.equal(firstNonFinite(got), -1, `${what}: non-finite element ${firstNonFinite(got)}`);
      if (!wpe) {
        // Widening is exact: every value is the table's, bit for bit.
        assert.deepEqual(got, Float32Array.from(want), what);
      } else {
        const err = relativeError(got, want);
        assert(err < 1e-6, `${what}: relative error ${err}`);
      }
    }
  }
}

Deno.test(
  "embeddingHalf matches the float64 reference on odd sizes, f16 and bf16, with and without wpe",
  GPU_TEST,
  async () => {
    await exercise(await testGpu(), freshSeed(), SHAPES);
  },
);

Deno.test(
  "embeddingHalf splits a table larger than one binding into vocabulary windows",
  GPU_TEST,
  async () => {
    using gpu = await Gpu.acquire({ maxBindingBytes: 4096 });
    await exercise(gpu, freshSeed(), [[3, 17, 17, 300, 20, 3], [1, 3, 255, 50, 3, 0]]);
  },
);

Deno.test("embeddingHalf refuses a table that is not 16-bit, in one line", GPU_TEST, async () => {
  const gpu = await testGpu();
  const kernels = await EmbeddingHalfKernels.load(gpu);
  using table = PackedTensor.from(
    gpu,
    packWeight(new Float32Array(3 * 64), [3, 64], { format: "nf4" }),
    { label: "wte.weight" },
  );
  using tokens = Tensor.from(gpu, new Uint32Array([1]), [1, 1]);
  using out = Tensor.empty(gpu, [1, 1, 64]);
  assert.throws(
    () => kernels.forward({ out, tokens, table }),
    /^RangeError: Cannot embed tokens from "wte.weight": it is packed nf4; the embedding reads f16 or bf16 tables$/,
  );
});
