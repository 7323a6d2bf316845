import assert from "node:assert/strict";
import fc from "fast-check";
import {
  ABSMAX_GROUP,
  absmaxMean,
  blockAbsmax,
  doubleQuantize,
  DYNAMIC_MAP,
  DYNAMIC_ZERO,
  f32ToBf16Bits,
  f32ToF16Bits,
  INT8_LEVELS,
  NF4_LEVELS,
  NF4_ZERO,
  packedLayout,
  packHalfBits,
  packWeight,
  unpackWeight,
} from "../../formats/base_quant.ts";
import { freshSeed } from "../_util.ts";

/** fast-check options seeded like the rest of the suite (NOLA_TEST_SEED replays a run). */
function runs(numRuns: number) {
  return { seed: freshSeed(), numRuns };
}

/** Φ⁻¹ by bisection on Φ(x) = (1 + erf(x / √2)) / 2, erf from its Taylor series (|x| < 3). */
function normalQuantile(p: number): number {
  const erf = (x: number) => {
    let term = x;
    let sum = x;
    for (let n = 1; n < 200; n++) {
      term *= (-x * x) / n;
      sum += term / (2 * n + 1);
    }
    return (2 / Math.sqrt(Math.PI)) * sum;
  };
  let lo = -5;
  let hi = 5;
  for (let i = 0; i < 200; i++) {
    const mid = (lo + hi) / 2;
    if ((1 + erf(mid / Math.SQRT2)) / 2 < p) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

/** Evenly spaced points from a to b, `n` of them, both ends included (numpy's linspace). */
function linspace(a: number, b: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => a + ((b - a) * i) / (n - 1));
}

/** One random f32 block of values in [-scale, scale]. */
const block = (length: { min: number; max: number }) =>
  fc.tuple(
    fc.array(fc.float({ min: -1, max: 1, noNaN: true, noDefaultInfinity: true }), {
      minLength: length.min,
      maxLength: length.max,
    }),
    fc.constantFrom(1e-3, 0.02, 1, 300),
  ).map(([values, scale]) => Float32Array.from(values, (v) => v * scale));

Deno.test("NF4 levels are QLoRA's normal quantiles (offset 0.9677083, normalized)", () => {
  // QLoRA appendix E: 8 positive levels from Φ⁻¹ at evenly spaced probabilities from the offset
  // to 1/2, 7 negative ones likewise, and 0; all divided by the largest.
  const offset = 0.9677083;
  const positive = linspace(offset, 0.5, 9).slice(0, 8).map(normalQuantile);
  const negative = linspace(offset, 0.5, 8).slice(0, 7).map((p) => -normalQuantile(p));
  const max = positive[0];
  const levels = [...negative, 0, ...positive].map((v) => v / max).sort((a, b) => a - b);
  assert.equal(NF4_LEVELS.length, 16);
  for (let i = 0; i < 16; i++) {
    assert(
      Math.abs(NF4_LEVELS[i] - levels[i]) < 2e-7,
      `level ${i}: ${NF4_LEVELS[i]} vs ${levels[i]}`,
    );
  }
  assert.equal(NF4_LEVELS[NF4_ZERO], 0);
});

Deno.test("each NF4 level packs to its own code and unpacks exactly", () => {
  // One block holding every level: its absmax is 1, so each value is its own level.
  const p = packWeight(NF4_LEVELS, [1, 16], { format: "nf4", blockSize: 32, doubleQuant: false });
  assert.deepEqual(p.absmax, Float32Array.of(1));
  for (let code = 0; code < 16; code++) {
    const byte = p.codes[code >> 1];
    assert.equal((code & 1) === 0 ? byte >> 4 : byte & 15, code, `level ${code}`);
  }
  assert.deepEqual(unpackWeight(p), NF4_LEVELS);
});

Deno.test("NF4 puts the first value of a pair in the high nibble (bitsandbytes' order)", () => {
  // Hand-checked: 0.5 lies below the midpoint 0.5017 of levels 12 and 13, 0.25 between the
  // midpoints 0.2035 and 0.2920 of level 10; -1 is level 0 and 1 is level 15.
  const p = packWeight([0.5, -1, 0.25, 1], [1, 4], { format: "nf4", doubleQuant: false });
  assert.deepEqual([...p.codes.subarray(0, 3)], [0xc0, 0xaf, 0]);
  assert.deepEqual(unpackWeight(p), Float32Array.of(NF4_LEVELS[12], -1, NF4_LEVELS[10], 1));
});

Deno.test("int8 codes are two's complement bytes of round(x * 127 / absmax)", () => {
  const p = packWeight([-2, 1, 0, 2, 0.5, -0.01], [1, 6], { format: "int8", doubleQuant: false });
  // 1 * 127 / 2 = 63.5 is a tie and goes down; 0.5 * 63.5 = 31.75 -> 32; -0.635 -> -1.
  assert.deepEqual([...p.codes.subarray(0, 6)], [0x81, 63, 0, 127, 32, 0xff]);
  assert.deepEqual(
    unpackWeight(p),
    Float32Array.from([-127, 63, 0, 127, 32, -1], (q) => Math.fround(q / 127) * 2),
  );
  assert.equal(INT8_LEVELS[0x80], -1, "byte 0x80 (-128) decodes as -127");
});

Deno.test("every value takes its nearest level, ties down (fast-check)", () => {
  fc.assert(
    fc.property(block({ min: 1, max: 70 }), fc.constantFrom("int8", "nf4"), (values, format) => {
      const p = packWeight(values, [1, values.length], {
        format: format as "int8" | "nf4",
        blockSize: 32,
        doubleQuant: false,
      });
      const out = unpackWeight(p);
      const levels = format === "nf4"
        ? [...NF4_LEVELS]
        : Array.from({ length: 255 }, (_, q) => Math.fround((q - 127) / 127));
      for (let i = 0; i < values.length; i++) {
        const absmax = p.absmax![Math.floor(i / 32)];
        if (absmax === 0) {
          assert.equal(out[i], 0);
          continue;
        }
        const x = Math.abs(values[i]) < 2 ** -126 ? 0 : values[i];
        const v = Math.fround(x * Math.fround(1 / absmax));
        const chosen = out[i] / absmax;
        const best = Math.min(...levels.map((l) => Math.abs(v - l)));
        const got = levels.reduce((a, l) => Math.abs(l - chosen) < Math.abs(a - chosen) ? l : a);
        assert(Math.abs(v - got) <= best, `value ${values[i]} (v = ${v}) took level ${got}`);
      }
    }),
    runs(300),
  );
});

Deno.test("round trips stay within half a level gap of each block's absmax", () => {
  const halfGap = (levels: ArrayLike<number>) => {
    let gap = 0;
    for (let i = 1; i < levels.length; i++) gap = Math.max(gap, (levels[i] - levels[i - 1]) / 2);
    return gap;
  };
  const bounds = { nf4: halfGap(NF4_LEVELS), int8: 1 / 254 };
  fc.assert(
    fc.property(
      block({ min: 1, max: 200 }),
      fc.constantFrom("int8", "nf4"),
      fc.constantFrom(32, 64, 128),
      (values, format, blockSize) => {
        const f = format as "int8" | "nf4";
        const p = packWeight(values, [1, values.length], {
          format: f,
          blockSize,
          doubleQuant: false,
        });
        const out = unpackWeight(p);
        for (let i = 0; i < values.length; i++) {
          const absmax = p.absmax![Math.floor(i / blockSize)];
          // The normalization and the decoding each round once more; subnormals count as 0.
          const bound = bounds[f] * absmax + 4 * absmax * 2 ** -24 + 2 ** -126;
          assert(Math.abs(out[i] - values[i]) <= bound, `${f} ${values[i]} -> ${out[i]}`);
        }
        // Packing what came out gives the same bytes again.
        const again = packWeight(out, [1, values.length], {
          format: f,
          blockSize,
          doubleQuant: false,
        });
        assert.deepEqual(again.codes, p.codes);
        assert.deepEqual(again.absmax, p.absmax);
      },
    ),
    runs(200),
  );
});

Deno.test("absmax rules: zero blocks, negative-only blocks, one huge value", () => {
  for (const format of ["int8", "nf4"] as const) {
    const zero = 0;
    // Block 0 all zeros, block 1 negative only, block 2 one huge value among small ones.
    const values = new Float32Array(96);
    for (let i = 32; i < 64; i++) values[i] = -0.01 * (i - 31);
    for (let i = 64; i < 96; i++) values[i] = 1e-3 * Math.sin(i);
    values[70] = 5e4;
    const p = packWeight(values, [1, 96], { format, blockSize: 32, doubleQuant: false });
    assert.deepEqual([...p.absmax!], [zero, Math.fround(0.32), 5e4]);
    const out = unpackWeight(p);
    const zeroCode = format === "nf4" ? NF4_ZERO : 0;
    for (let i = 0; i < 32; i++) {
      const code = format === "nf4"
        ? (p.codes[i >> 1] >> ((i & 1) === 0 ? 4 : 0)) & 15
        : p.codes[i];
      assert.equal(code, zeroCode);
      assert(Object.is(out[i], 0), `zero block value ${i} came back ${out[i]}`);
    }
    // The most negative value is the block's -absmax: level -1, exact.
    assert.equal(out[63], Math.fround(-0.32));
    assert(out.subarray(32, 64).every((v) => v <= 0), "a negative block stays non-positive");
    // The huge value comes back exactly; the small ones are lost in its block's steps.
    assert.equal(out[70], 5e4);
    for (let i = 64; i < 96; i++) if (i !== 70) assert.equal(out[i], 0, `${format} value ${i}`);
  }
});

Deno.test("magnitudes below the smallest normal f32 count as zero in blocks", () => {
  const values = Float32Array.of(1e-40, -3e-39, 2 ** -149, 0, 2e-38, -1e-39, 0, 0);
  for (const format of ["int8", "nf4"] as const) {
    const p = packWeight(values, [2, 4], { format, blockSize: 32, doubleQuant: false });
    // Row 0 holds subnormals only: a block of zeros. Row 1 keeps its normal value.
    assert.deepEqual([...p.absmax!], [0, Math.fround(2e-38)]);
    assert.deepEqual([...unpackWeight(p)], [0, 0, 0, 0, Math.fround(2e-38), 0, 0, 0]);
  }
});

Deno.test("the dynamic map is bitsandbytes' signed 8-bit map", () => {
  assert.equal(DYNAMIC_MAP.length, 256);
  for (let i = 1; i < 256; i++) {
    assert(DYNAMIC_MAP[i] > DYNAMIC_MAP[i - 1], `map not sorted at ${i}`);
  }
  assert.equal(DYNAMIC_MAP[DYNAMIC_ZERO], 0);
  assert.equal(DYNAMIC_MAP[255], 1);
  // Hand-checked: the smallest magnitude is 1e-6 * (0.1 + 1) / 2, the next ones 1e-5 times the
  // midpoints of (0.1, 0.55, 1); the extremes are the midpoints of the last step of 64.
  assert.equal(DYNAMIC_MAP[DYNAMIC_ZERO + 1], Math.fround(0.55e-6));
  assert.equal(DYNAMIC_MAP[DYNAMIC_ZERO - 1], Math.fround(-0.55e-6));
  assert(
    DYNAMIC_MAP.includes(Math.fround(0.325e-5)) && DYNAMIC_MAP.includes(Math.fround(0.775e-5)),
  );
  assert.equal(DYNAMIC_MAP[0], Math.fround(-(0.1 + (0.9 * 127) / 128)));
  assert.equal(DYNAMIC_MAP[254], Math.fround(0.1 + (0.9 * 127) / 128));
  // Symmetric but for 1.
  for (let i = 0; i < DYNAMIC_ZERO; i++) assert.equal(DYNAMIC_MAP[i], -DYNAMIC_MAP[254 - i]);
});

Deno.test("double quantization: mean offset, groups of 256, error within the map's gaps", () => {
  let halfGap = 1 + DYNAMIC_MAP[0]; // -absmax2 decodes to the most negative level
  for (let i = 1; i < 256; i++) {
    halfGap = Math.max(halfGap, (DYNAMIC_MAP[i] - DYNAMIC_MAP[i - 1]) / 2);
  }
  fc.assert(
    fc.property(
      fc.array(fc.float({ min: 0, max: 2, noNaN: true }), { minLength: 1, maxLength: 900 }),
      (list) => {
        // Block absmaxes are 0 or normal: magnitudes below 2^-126 count as 0 in a block.
        const absmax = Float32Array.from(list, (v) => v < 2 ** -126 ? 0 : v);
        const dq = doubleQuantize(absmax);
        let mean = 0;
        for (const v of absmax) mean += v;
        mean /= absmax.length;
        assert(
          Math.abs(dq.offset - mean) <= absmax.length * 2 ** -23 * Math.max(...absmax) + 1e-30,
        );
        assert.equal(dq.offset, absmaxMean(absmax));
        assert.equal(dq.absmax2.length, Math.ceil(absmax.length / ABSMAX_GROUP));
        const p = {
          ...packedLayout(absmax.length, 32, { format: "nf4", blockSize: 32 }),
          codes: new Uint8Array(),
          ...dq,
        };
        const decoded = blockAbsmax(p);
        for (let i = 0; i < absmax.length; i++) {
          const scale2 = dq.absmax2[Math.floor(i / ABSMAX_GROUP)];
          const bound = halfGap * scale2 + 4 * 2 ** -24 * (Math.abs(dq.offset) + scale2) +
            2 ** -126;
          assert(
            Math.abs(decoded[i] - absmax[i]) <= bound,
            `absmax ${absmax[i]} -> ${decoded[i]} (bound ${bound})`,
          );
        }
      },
    ),
    runs(150),
  );
});

Deno.test("f16 and bf16 conversions round to nearest even", () => {
  const f16 = new Float16Array(1);
  const bits = new Uint16Array(f16.buffer);
  const check = (x: number) => {
    f16[0] = Math.fround(x);
    if (!Number.isNaN(x)) assert.equal(f32ToF16Bits(x), bits[0], `f16 of ${x}`);
    // bf16: the nearest of the two bf16 values around the f32, the even one on a tie.
    const u = new Uint32Array(Float32Array.of(x).buffer)[0];
    const lo = u >>> 16;
    const value = (b: number) => new Float32Array(Uint32Array.of(b << 16).buffer)[0];
    const f = Math.fround(x);
    if (Number.isFinite(f) && Math.abs(f) < 3.38e38) {
      const [a, b] = [value(lo), value(lo + 1)];
      const da = Math.abs(f - a);
      const db = Math.abs(f - b);
      const want = da < db || (da === db && (lo & 1) === 0) ? lo : lo + 1;
      assert.equal(f32ToBf16Bits(x), want & 0xffff, `bf16 of ${x}`);
    }
  };
  // Hand-checked edges: the largest half, the tie to infinity, subnormals and their ties.
  assert.equal(f32ToF16Bits(1), 0x3c00);
  assert.equal(f32ToF16Bits(65504), 0x7bff);
  assert.equal(f32ToF16Bits(65520), 0x7c00);
  assert.equal(f32ToF16Bits(2 ** -24), 1);
  assert.equal(f32ToF16Bits(2 ** -25), 0);
  assert.equal(f32ToF16Bits(3 * 2 ** -25), 2);
  assert.equal(f32ToF16Bits(-0), 0x8000);
  assert.equal(f32ToF16Bits(NaN) & 0x7e00, 0x7e00);
  assert.equal(f32ToBf16Bits(1), 0x3f80);
  assert.equal(f32ToBf16Bits(1 + 2 ** -8), 0x3f80);
  assert.equal(f32ToBf16Bits(1 + 3 * 2 ** -8), 0x3f82);
  assert.equal(f32ToBf16Bits(NaN) & 0x7fc0, 0x7fc0);
  fc.assert(fc.property(fc.float({ noNaN: true }), (x) => check(x)), runs(3000));
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 0xffffffff }), (u) => {
      check(new Float32Array(Uint32Array.of(u).buffer)[0]);
    }),
    runs(3000),
  );
});

Deno.test("16-bit weights pack as the checkpoint's own bytes, rows padded to 16", () => {
  const [rows, cols] = [3, 5];
  const values = Float32Array.from({ length: 15 }, (_, i) => (i - 7) / 3);
  const halves = new Float16Array(values);
  const fromBits = packHalfBits(new Uint16Array(halves.buffer), [rows, cols], "f16");
  const packed = packWeight(values, [rows, cols], { format: "f16" });
  assert.equal(packed.rowBytes, 16);
  assert.deepEqual(fromBits.codes, packed.codes);
  assert.deepEqual(unpackWeight(packed), new Float32Array(halves));
  for (let r = 0; r < rows; r++) {
    assert(packed.codes.subarray(r * 16 + 10, r * 16 + 16).every((b) => b === 0), "padding");
  }
});

Deno.test("a transposed (conv1d) weight packs as its [out, in] transpose", () => {
  const [rows, cols] = [5, 70];
  const values = Float32Array.from({ length: rows * cols }, (_, i) => Math.sin(i * 1.3));
  const transposed = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) transposed[c * rows + r] = values[r * cols + c];
  }
  for (const format of ["bf16", "int8", "nf4"] as const) {
    const a = packWeight(values, [rows, cols], { format, blockSize: 32 });
    const b = packWeight(transposed, [rows, cols], { format, blockSize: 32, transposed: true });
    assert.deepEqual(b, a);
  }
});

Deno.test("partial last blocks: absmax over their own values, padding bytes zero", () => {
  const [rows, cols] = [2, 100];
  const values = new Float32Array(rows * cols).fill(0.01);
  values[0] = 9; // block 0 of row 0 only
  values[cols + 99] = -3; // the partial last block of row 1
  const p = packWeight(values, [rows, cols], { format: "nf4", blockSize: 64, doubleQuant: false });
  assert.equal(p.blocksPerRow, 2);
  assert.equal(p.rowBytes, 64);
  assert.deepEqual([...p.absmax!], [9, Math.fround(0.01), Math.fround(0.01), 3]);
  for (let r = 0; r < rows; r++) {
    assert(p.codes.subarray(r * 64 + 50, r * 64 + 64).every((b) => b === 0), `row ${r} padding`);
  }
});

Deno.test("bytes per weight, and NF4 of a 4096 x 4096 weight within 0.30x of f32", () => {
  const f32 = 4096 * 4096 * 4;
  const bytes = (format: "f16" | "bf16" | "int8" | "nf4", doubleQuant?: boolean) =>
    packedLayout(4096, 4096, { format, doubleQuant }).bytes;
  // Hand-checked: codes, then 4 bytes an absmax (262144 blocks of 64), or with double
  // quantization 1 byte an absmax plus 4 for the offset and 4 for each of 1024 groups.
  assert.equal(bytes("f16"), 2 * 4096 * 4096);
  assert.equal(bytes("bf16"), 2 * 4096 * 4096);
  assert.equal(bytes("int8", false), 4096 * 4096 + 4 * 262144);
  assert.equal(bytes("int8", true), 4096 * 4096 + 262144 + 4 + 4 * 1024);
  assert.equal(bytes("nf4", false), 2048 * 4096 + 4 * 262144);
  assert.equal(bytes("nf4"), 2048 * 4096 + 262144 + 4 + 4 * 1024);
  assert(bytes("nf4") / f32 <= 0.3, `nf4 is ${bytes("nf4") / f32} of f32`);
  assert.equal(packedLayout(7, 33, { format: "nf4" }).rowBytes, 32);
  assert.equal(packedLayout(7, 33, { format: "int8" }).rowBytes, 48);
  assert.equal(packedLayout(7, 33, { format: "bf16" }).rowBytes, 80);
});

Deno.test("bad layouts and values are refused with one line naming them", () => {
  const one = (fn: () => unknown, pattern: RegExp) =>
    assert.throws(
      fn,
      (e: Error) => e instanceof RangeError && pattern.test(e.message) && !e.message.includes("\n"),
    );
  one(
    () => packedLayout(4, 64, { format: "nf4", blockSize: 48 }),
    /Invalid block size 48 for nf4: expected a power of two from 32 to 4096/,
  );
  one(() => packedLayout(4, 64, { format: "int4" as "nf4" }), /Unknown base weight format "int4"/);
  one(() => packedLayout(0, 64, { format: "f16" }), /Cannot pack a weight with 0 rows/);
  one(
    () => packWeight([1, 2, 3], [2, 2], { format: "nf4" }),
    /Cannot pack 3 values as a \[2, 2\] weight/,
  );
  one(
    () => packWeight([1, NaN, 3, 4], [2, 2], { format: "int8" }),
    /Cannot pack value NaN at index 1: not finite/,
  );
});
