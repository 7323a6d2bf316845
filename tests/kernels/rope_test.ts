import assert from "node:assert/strict";
import { Gpu } from "../../kernels/gpu.ts";
import { ROPE_MAX_ANGLE, ropeInvFreq, RopeKernels, type RopeScaling } from "../../kernels/rope.ts";
import { ropeAngle, ropeBackwardRef, ropeForwardRef } from "../../kernels/rope_ref.ts";
import code from "../../kernels/rope.wgsl" with { type: "text" };
import { Tensor } from "../../kernels/tensor.ts";
import { freshSeed, GPU_TEST, randomArray, relativeError, testGpu } from "../_util.ts";

const LLAMA3: RopeScaling = {
  type: "llama3",
  factor: 8,
  lowFreqFactor: 1,
  highFreqFactor: 4,
  originalMaxPositionEmbeddings: 8192,
};

/** One fused `[B * T, (NH + 2 * KVH) * hd + PAD]` q/k/v projection turned at positions `past..`. */
interface Case {
  B: number;
  T: number;
  NH: number;
  KVH: number;
  hd: number;
  past: number;
  theta: number;
  scaling?: RopeScaling;
}

// Odd rows (1, 3, 17, 255, 1023) and heads, head sizes from 2 to 128, positions up to 4095 and
// near Llama 3.1's 131 072.
const CASES: readonly Case[] = [
  { B: 1, T: 1, NH: 1, KVH: 1, hd: 2, past: 0, theta: 10000 },
  {
    B: 1,
    T: 3,
    NH: 3,
    KVH: 1,
    hd: 6,
    past: 5,
    theta: 10000,
    scaling: { type: "linear", factor: 2 },
  },
  { B: 1, T: 17, NH: 17, KVH: 17, hd: 34, past: 100, theta: 10000 },
  { B: 3, T: 85, NH: 3, KVH: 1, hd: 64, past: 1000, theta: 500000, scaling: LLAMA3 },
  { B: 1, T: 1023, NH: 2, KVH: 1, hd: 128, past: 3073, theta: 500000, scaling: LLAMA3 },
  { B: 1, T: 3, NH: 1, KVH: 1, hd: 128, past: 131069, theta: 10000 },
];
// Columns past v in every row: NaN, which must stay as it is and never leak into q or k.
const PAD = 3;

/**
 * The columns `[col, col + heads * hd)` of every row of a `[rows, ld]` array, densely.
 */
function columns(all: ArrayLike<number>, rows: number, ld: number, col: number, width: number) {
  const out = new Float32Array(rows * width);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < width; c++) out[r * width + c] = all[r * ld + col + c];
  }
  return out;
}

/**
 * The relative error over all values, and the worst pair's error relative to the pair's norm
 * (which a rotation keeps): the second catches a few wrong angles the first would average away.
 * The reference takes the kernel's f32 angle, so what is left is position-independent: the range
 * reduction (under 2.5e-7, tested below), the device's sin and cos on [-pi, pi] (about 1e-7 on
 * llvmpipe, 2^-21 for hardware sine units) and a few f32 roundings: the pair bound 2e-6 holds
 * that with margin, while an angle off by half an ulp of it (an unrounded product at position
 * 4096 moves it by up to 1.2e-4) fails both bounds.
 */
function check(
  got: Float32Array,
  want: Float64Array,
  input: ArrayLike<number>,
  hd: number,
  what: string,
): void {
  const err = relativeError(got, want);
  assert(err < 1e-5, `${what}: relative error ${err}`);
  const half = hd / 2;
  let worst = 0;
  for (let a = 0; a < got.length; a++) {
    if (a % hd >= half) continue;
    const b = a + half;
    const norm = Math.hypot(input[a], input[b]);
    const e = Math.hypot(got[a] - want[a], got[b] - want[b]) / (norm || 1);
    assert(Number.isFinite(e), `${what}: non-finite value in pair (${a}, ${b})`);
    worst = Math.max(worst, e);
  }
  assert(worst < 2e-6, `${what}: worst pair error ${worst}`);
}

async function exercise(gpu: Gpu, seed: number, cases: readonly Case[]): Promise<void> {
  const rope = await RopeKernels.load(gpu);
  for (const [n, c] of cases.entries()) {
    const { B, T, NH, KVH, hd, past } = c;
    const what = (op: string) =>
      `${op} B=${B} T=${T} NH=${NH} KVH=${KVH} hd=${hd} past=${past} seed ${seed}`;
    const rows = B * T;
    const ld = (NH + 2 * KVH) * hd + PAD;
    const [qCol, kCol, vCol] = [0, NH * hd, (NH + KVH) * hd];
    using table = rope.table(hd, { theta: c.theta, scaling: c.scaling });
    const ref = { invFreq: table.values, T, past };
    const fill = (s: number) => {
      const data = randomArray(rows * ld, s);
      for (let r = 0; r < rows; r++) data.fill(NaN, r * ld + ld - PAD, (r + 1) * ld);
      return data;
    };
    for (const [op, pass] of [["forward", 0], ["backward", 1]] as const) {
      const start = fill(seed + 10 * n + pass);
      using qkv = Tensor.from(gpu, start, [rows, ld]);
      const q = { tensor: qkv, offset: qCol, ld };
      const k = { tensor: qkv, offset: kCol, ld };
      const run = pass === 0 ? rope.forward.bind(rope) : rope.backward.bind(rope);
      run({ x: q, table, heads: NH, B, T, past });
      run({ x: k, table, heads: KVH, B, T, past });
      const got = await qkv.read();
      const turn = pass === 0 ? ropeForwardRef : ropeBackwardRef;
      for (const [name, col, heads] of [["q", qCol, NH], ["k", kCol, KVH]] as const) {
        const input = columns(start, rows, ld, col, heads * hd);
        const want = turn(input, { ...ref, heads });
        check(columns(got, rows, ld, col, heads * hd), want, input, hd, what(`${op} ${name}`));
      }
      // v and the NaN padding are untouched, bit for bit.
      const [before, after] = [start, got].map((a) => new Uint32Array(a.buffer));
      for (let r = 0; r < rows; r++) {
        for (let i = vCol; i < ld; i++) {
          assert.equal(after[r * ld + i], before[r * ld + i], `${what(op)}: v/pad [${r}, ${i}]`);
        }
      }
      // The backward undoes the forward: the rotation's transpose is its inverse.
      if (pass === 0) {
        rope.backward({ x: q, table, heads: NH, B, T, past });
        rope.backward({ x: k, table, heads: KVH, B, T, past });
        const back = await qkv.read();
        const err = relativeError(
          columns(back, rows, ld, 0, vCol),
          columns(start, rows, ld, 0, vCol),
        );
        assert(err < 1e-6, `${what("backward(forward)")}: relative error ${err}`);
      }
    }
  }
}

Deno.test(
  "rope matches the float64 reference on q and k heads of a fused projection, leaving v alone",
  GPU_TEST,
  async () => {
    await exercise(await testGpu(), freshSeed(), CASES);
  },
);

Deno.test("rope splits views larger than one binding into row windows", GPU_TEST, async () => {
  using gpu = await Gpu.acquire({ maxBindingBytes: 4096 });
  await exercise(gpu, freshSeed(), [
    { B: 2, T: 3, NH: 1, KVH: 1, hd: 2, past: 0, theta: 10000 },
    { B: 3, T: 17, NH: 3, KVH: 1, hd: 34, past: 4000, theta: 10000 },
    { B: 1, T: 255, NH: 2, KVH: 2, hd: 64, past: 3000, theta: 500000, scaling: LLAMA3 },
  ]);
});

Deno.test(
  "rope refuses odd heads, short views and positions past its range",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const rope = await RopeKernels.load(gpu);
    assert.throws(() => rope.table(5, { theta: 10000 }), /head size 5 is not a positive even/);
    using table = rope.table(4, { theta: 10000 });
    using x = Tensor.empty(gpu, [3, 8]);
    rope.forward({ x, table, heads: 2, B: 1, T: 3 });
    assert.throws(
      () => rope.forward({ x, table, heads: 2, B: 2, T: 3 }),
      /"x" holds 24 elements, not 6 rows of 8 values 8 apart/,
    );
    assert.throws(
      () => rope.forward({ x: { tensor: x, ld: 6 }, table, heads: 2, B: 1, T: 3 }),
      /rows of 8 values \(2 heads of 4\) at least that far apart, got f32 rows 6 apart/,
    );
    assert.throws(
      () => rope.forward({ x, table, heads: 2, B: 1, T: 3, past: ROPE_MAX_ANGLE }),
      /position 262146 times frequency 1 is past the kernel's angle range 262144/,
    );
    // The last column block of a [3, 8] buffer: 3 rows of 4 values, the last one ending the buffer.
    rope.forward({ x: { tensor: x, offset: 4, ld: 8 }, table, heads: 1, B: 1, T: 3 });
    await gpu.sync();
  },
);

Deno.test("rope's f32 range reduction stays within 2.5e-7 of the exact remainder", () => {
  // The kernel's constants, read from the WGSL it ships.
  const constant = (name: string) => {
    const m = code.match(new RegExp(`const ${name}: f32 = ([-0-9.e]+);`));
    assert(m, `rope.wgsl declares no ${name}`);
    return Math.fround(Number(m[1]));
  };
  const [inv2pi, c1, c2, c3] = ["INV_2PI", "C1", "C2", "C3"].map(constant);
  const f = Math.fround;
  // WGSL's round() takes ties to even.
  const round = (v: number) => Math.abs(v % 1) === 0.5 ? 2 * Math.round(v / 2) : Math.round(v);
  let worst = 0;
  const seed = freshSeed();
  const freqs = [1, ...randomArray(6, seed).map((v) => f(Math.abs(v))), f(1e-4)];
  for (const freq of freqs) {
    // Every position to 4096, then 100 000 spread to the end of the range.
    const step = Math.max(1, Math.floor(ROPE_MAX_ANGLE / freq / 100_000));
    for (let pos = 0; f(pos) * freq < ROPE_MAX_ANGLE; pos += pos < 4096 ? 1 : step) {
      const a = ropeAngle(pos, freq);
      const k = round(f(a * inv2pi));
      const r = f(f(f(a - f(k * c1)) - f(k * c2)) - f(k * c3));
      const j = round(f(r * inv2pi));
      const t = f(f(f(r - f(j * c1)) - f(j * c2)) - f(j * c3));
      assert(Math.abs(t) < Math.PI + 1e-6, `angle ${a}: reduced to ${t}`);
      worst = Math.max(worst, Math.abs(t - (a - (k + j) * 2 * Math.PI)));
    }
  }
  assert(worst < 2.5e-7, `worst reduction error ${worst} (seed ${seed})`);
});

Deno.test("rope's inverse frequencies follow Hugging Face's default, linear and llama3", () => {
  assert.deepEqual(Array.from(ropeInvFreq(4, { theta: 10000 })), [1, 0.01]);
  const linear = ropeInvFreq(4, { theta: 10000, scaling: { type: "linear", factor: 4 } });
  assert.deepEqual(Array.from(linear), [0.25, 0.0025]);
  // Llama 3.1 8B: heads of 128, theta 500 000. Meta's `apply_scaling`, written as its loop.
  const base = ropeInvFreq(128, { theta: 500000 });
  const llama3 = ropeInvFreq(128, { theta: 500000, scaling: LLAMA3 });
  const meta = Array.from(base, (freq) => {
    const wavelen = 2 * Math.PI / freq;
    if (wavelen < 8192 / 4) return freq;
    if (wavelen > 8192 / 1) return freq / 8;
    const smooth = (8192 / wavelen - 1) / (4 - 1);
    return (1 - smooth) * freq / 8 + smooth * freq;
  });
  assert.deepEqual(Array.from(llama3), meta);
  // 29 high frequencies kept, 29 low ones divided by 8, 6 between on the ramp.
  const kept = llama3.filter((v, i) => v === base[i]).length;
  const divided = llama3.filter((v, i) => v === base[i] / 8).length;
  assert.deepEqual([kept, divided], [29, 29]);
  for (let i = 29; i < 35; i++) assert(base[i] / 8 < llama3[i] && llama3[i] < base[i]);
  assert.throws(
    () => ropeInvFreq(8, { theta: 1e4, scaling: { ...LLAMA3, lowFreqFactor: 4 } }),
    /low_freq_factor 4 and high_freq_factor 4 must be 0 < low < high/,
  );
});

Deno.test("rope reference follows rotate_half and its backward is the transpose", () => {
  // One head of 4 at position 1, frequencies [1, 0.01]: pairs (0, 2) and (1, 3), not (0, 1).
  const x = [1, 2, 3, 4];
  const out = ropeForwardRef(x, { invFreq: [1, 0.01], heads: 1, T: 1, past: 1 });
  const f = Math.fround(0.01);
  const [c0, s0, c1, s1] = [Math.cos(1), Math.sin(1), Math.cos(f), Math.sin(f)];
  const want = [1 * c0 - 3 * s0, 2 * c1 - 4 * s1, 3 * c0 + 1 * s0, 4 * c1 + 2 * s1];
  for (let i = 0; i < 4; i++) assert(Math.abs(out[i] - want[i]) < 1e-12, `${out} vs ${want}`);

  const seed = freshSeed();
  const options = {
    invFreq: Float32Array.from(ropeInvFreq(6, { theta: 10000 })),
    heads: 2,
    T: 3,
    past: 7,
  };
  const input = Float64Array.from(randomArray(2 * 3 * 12, seed));
  const g = randomArray(input.length, seed + 1);
  const loss = (xs: Float64Array) =>
    ropeForwardRef(xs, options).reduce((s, v, i) => s + v * g[i], 0);
  const grad = ropeBackwardRef(g, options);
  const h = 1e-6;
  for (let i = 0; i < input.length; i++) {
    const [up, down] = [Float64Array.from(input), Float64Array.from(input)];
    up[i] += h;
    down[i] -= h;
    const fd = (loss(up) - loss(down)) / (2 * h);
    assert(Math.abs(fd - grad[i]) < 1e-8, `grad[${i}] ${grad[i]} vs ${fd}, seed ${seed}`);
  }
});
