import assert from "node:assert/strict";
import { Gpu } from "../../kernels/gpu.ts";
import { SwigluKernels } from "../../kernels/swiglu.ts";
import { swigluBackwardRef, swigluForwardRef } from "../../kernels/swiglu_ref.ts";
import { Tensor } from "../../kernels/tensor.ts";
import {
  firstNonFinite,
  freshSeed,
  GPU_TEST,
  randomArray,
  relativeError,
  testGpu,
} from "../_util.ts";

// [rows, I]: odd rows and widths (1, 3, 17, 255, 1023).
const SHAPES: readonly [number, number][] = [
  [1, 1],
  [3, 3],
  [17, 17],
  [255, 17],
  [1023, 3],
  [3, 1023],
  [1023, 255],
];
// Columns past the used ones in every strided row: NaN, which must stay and never be read.
const PAD = 3;

function check(got: Float32Array, want: ArrayLike<number>, what: string): void {
  assert.equal(firstNonFinite(got), -1, `${what}: non-finite element ${firstNonFinite(got)}`);
  const err = relativeError(got, want);
  assert(err < 1e-5, `${what}: relative error ${err}`);
}

/** Columns `[col, col + width)` of every row of a `[rows, ld]` array, densely. */
function columns(all: Float32Array, rows: number, ld: number, col: number, width: number) {
  const out = new Float32Array(rows * width);
  for (let r = 0; r < rows; r++) {
    out.set(all.subarray(r * ld + col, r * ld + col + width), r * width);
  }
  return out;
}

/** `[rows, ld]` of `data`'s rows at `col`, NaN everywhere else. */
function strided(data: Float32Array, rows: number, ld: number, col: number): Float32Array {
  const out = new Float32Array(rows * ld).fill(NaN);
  const width = data.length / rows;
  for (let r = 0; r < rows; r++) out.set(data.subarray(r * width, (r + 1) * width), r * ld + col);
  return out;
}

/** Every element of `got` outside the columns `[col, col + width)` of each row is still NaN. */
function untouched(got: Float32Array, ld: number, col: number, width: number, what: string) {
  for (let i = 0; i < got.length; i++) {
    const c = i % ld;
    if ((c < col || c >= col + width) && !Number.isNaN(got[i])) {
      assert.fail(`${what}: element ${i} (row ${Math.floor(i / ld)}, column ${c}) was written`);
    }
  }
}

async function exercise(gpu: Gpu, seed: number, shapes: readonly [number, number][]) {
  const swiglu = await SwigluKernels.load(gpu);
  for (const [k, [rows, I]] of shapes.entries()) {
    const what = (op: string) => `${op} [${rows}, ${I}] seed ${seed}`;
    const s = seed + 10 * k;
    const g = randomArray(rows * I, s).map((v) => 6 * v);
    const u = randomArray(rows * I, s + 1);
    const dhv = randomArray(rows * I, s + 2);
    const want = swigluForwardRef(g, u);
    const grads = swigluBackwardRef(dhv, { gate: g, up: u });

    // Fused: gate and up the two column blocks of one [rows, 2I + PAD] projection, h a column
    // block of a wider buffer, dgate and dup the blocks of one fused gradient.
    const ld = 2 * I + PAD;
    const gateUpData = strided(g, rows, ld, 0);
    for (let r = 0; r < rows; r++) gateUpData.set(u.subarray(r * I, (r + 1) * I), r * ld + I);
    using gateUp = Tensor.from(gpu, gateUpData, [rows, ld]);
    const gate = { tensor: gateUp, ld };
    const up = { tensor: gateUp, offset: I, ld };
    using hBuf = Tensor.from(gpu, new Float32Array(rows * (I + 2)).fill(NaN), [rows, I + 2]);
    swiglu.forward({ h: { tensor: hBuf, offset: 1, ld: I + 2 }, gate, up, rows, cols: I });
    const hGot = await hBuf.read();
    check(columns(hGot, rows, I + 2, 1, I), want, what("fused h"));
    untouched(hGot, I + 2, 1, I, what("fused h"));

    using dh = Tensor.from(gpu, dhv, [rows, I]);
    using dGateUp = Tensor.from(gpu, new Float32Array(rows * ld).fill(NaN), [rows, ld]);
    const dgate = { tensor: dGateUp, ld };
    const dup = { tensor: dGateUp, offset: I, ld };
    swiglu.backward({ dgate, dup, dh, gate, up, rows, cols: I });
    const dGot = await dGateUp.read();
    check(columns(dGot, rows, ld, 0, I), grads.dgate, what("fused dgate"));
    check(columns(dGot, rows, ld, I, I), grads.dup, what("fused dup"));
    untouched(dGot, ld, 0, 2 * I, what("fused dgate/dup"));

    // Separate dense tensors; the backward overwrites whatever its outputs held.
    using tGate = Tensor.from(gpu, g, [rows, I]);
    using tUp = Tensor.from(gpu, u, [rows, I]);
    using h = Tensor.from(gpu, new Float32Array(rows * I).fill(NaN), [rows, I]);
    swiglu.forward({ h, gate: tGate, up: tUp, rows, cols: I });
    check(await h.read(), want, what("h"));
    using tDgate = Tensor.from(gpu, new Float32Array(rows * I).fill(NaN), [rows, I]);
    using tDup = Tensor.from(gpu, randomArray(rows * I, s + 3), [rows, I]);
    swiglu.backward({ dgate: tDgate, dup: tDup, dh, gate: tGate, up: tUp, rows, cols: I });
    check(await tDgate.read(), grads.dgate, what("dgate"));
    check(await tDup.read(), grads.dup, what("dup"));
  }
}

Deno.test(
  "swiglu matches the float64 reference on odd shapes, fused and separate",
  GPU_TEST,
  async () => {
    await exercise(await testGpu(), freshSeed(), SHAPES);
  },
);

Deno.test("swiglu splits views larger than one binding into row windows", GPU_TEST, async () => {
  using gpu = await Gpu.acquire({ maxBindingBytes: 4096 });
  await exercise(gpu, freshSeed(), [[1, 1], [17, 3], [255, 17], [5, 255]]);
});

Deno.test("swiglu stays finite at its limits", GPU_TEST, async () => {
  const gpu = await testGpu();
  const swiglu = await SwigluKernels.load(gpu);
  // Past where exp(-g) overflows f32 (g < -88.7) and where sigmoid(g) rounds to 1 or 0.
  const g = Float32Array.from([-3e38, -1e20, -100, -88, -30, -17, 0, 17, 30, 88, 100, 1e20, 3e38]);
  const n = g.length;
  const u = randomArray(n, freshSeed()).map((v) => v + 2);
  const dhv = new Float32Array(n).fill(2);
  using gate = Tensor.from(gpu, g, [1, n]);
  using up = Tensor.from(gpu, u, [1, n]);
  using dh = Tensor.from(gpu, dhv, [1, n]);
  using h = Tensor.empty(gpu, [1, n]);
  using dgate = Tensor.empty(gpu, [1, n]);
  using dup = Tensor.empty(gpu, [1, n]);
  swiglu.forward({ h, gate, up, rows: 1, cols: n });
  swiglu.backward({ dgate, dup, dh, gate, up, rows: 1, cols: n });
  const want = swigluForwardRef(g, u);
  const grads = swigluBackwardRef(dhv, { gate: g, up: u });
  for (
    const [name, got, ref] of [
      ["h", await h.read(), want],
      ["dgate", await dgate.read(), grads.dgate],
      ["dup", await dup.read(), grads.dup],
    ] as const
  ) {
    for (let i = 0; i < n; i++) {
      // Outputs past f32's range (h of 3e38 times 2.x) are inf in f32 as they are in PyTorch.
      const fits = Math.abs(ref[i]) <= 3.4e38;
      const ok = fits
        ? Math.abs(got[i] - ref[i]) <= 1e-5 * Math.abs(ref[i]) + 1e-30
        : got[i] === Math.sign(ref[i]) * Infinity;
      assert(ok, `${name} at g = ${g[i]}: ${got[i]} vs ${ref[i]}`);
    }
  }
});

Deno.test("swiglu refuses outputs in an input's buffer and short views", GPU_TEST, async () => {
  const gpu = await testGpu();
  const swiglu = await SwigluKernels.load(gpu);
  using gateUp = Tensor.empty(gpu, [3, 8]);
  using h = Tensor.empty(gpu, [3, 4]);
  using h4 = Tensor.empty(gpu, [4, 4]);
  const gate = { tensor: gateUp, ld: 8 };
  const up = { tensor: gateUp, offset: 4, ld: 8 };
  swiglu.forward({ h, gate, up, rows: 3, cols: 4 });
  assert.throws(
    () => swiglu.forward({ h: up, gate, up: h, rows: 3, cols: 4 }),
    /swiglu_forward: output "h" and input "gate" share one buffer/,
  );
  assert.throws(
    () => swiglu.forward({ h: h4, gate, up, rows: 4, cols: 4 }),
    /"gate" holds 24 elements, not 4 rows of 4 values 8 apart/,
  );
  assert.throws(
    () => swiglu.forward({ h, gate: { tensor: gateUp, ld: 3 }, up, rows: 3, cols: 4 }),
    /"gate" must be f32 rows of 4 values at least that far apart, got f32 rows 3 apart/,
  );
  await gpu.sync();
});

Deno.test("swiglu reference gradients match finite differences", () => {
  const seed = freshSeed();
  const n = 9;
  const g = Float64Array.from(randomArray(n, seed), (v) => 6 * v);
  const u = Float64Array.from(randomArray(n, seed + 1));
  const dh = randomArray(n, seed + 2);
  const loss = (gs: Float64Array, us: Float64Array) =>
    swigluForwardRef(gs, us).reduce((s, v, i) => s + v * dh[i], 0);
  const { dgate, dup } = swigluBackwardRef(dh, { gate: g, up: u });
  const h = 1e-6;
  for (let i = 0; i < n; i++) {
    const bump = (a: Float64Array, d: number) => a.map((v, j) => j === i ? v + d : v);
    const fdGate = (loss(bump(g, h), u) - loss(bump(g, -h), u)) / (2 * h);
    const fdUp = (loss(g, bump(u, h)) - loss(g, bump(u, -h))) / (2 * h);
    assert(
      Math.abs(fdGate - dgate[i]) < 1e-8,
      `dgate[${i}] ${dgate[i]} vs ${fdGate}, seed ${seed}`,
    );
    assert(Math.abs(fdUp - dup[i]) < 1e-8, `dup[${i}] ${dup[i]} vs ${fdUp}, seed ${seed}`);
  }
  // silu(1) = 1 / (1 + e^-1), times up = 2.
  assert.equal(swigluForwardRef([1], [2])[0], 2 / (1 + Math.exp(-1)));
});
