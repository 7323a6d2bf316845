import assert from "node:assert/strict";
import { GeluKernels, type GeluVariant } from "../../kernels/gelu.ts";
import {
  erfcRef,
  erfRef,
  geluBackwardRef,
  geluForwardRef,
  normalCdfRef,
} from "../../kernels/gelu_ref.ts";
import { Gpu } from "../../kernels/gpu.ts";
import { Tensor } from "../../kernels/tensor.ts";
import {
  firstNonFinite,
  freshSeed,
  GPU_TEST,
  randomArray,
  relativeError,
  testGpu,
} from "../_util.ts";

const VARIANTS: readonly GeluVariant[] = ["tanh", "erf"];
const SIZES = [1, 3, 17, 255, 1023, 60_001];
// Each variant's inputs: random ones in [-scale, scale), and extremes around the kernel's clamp
// (10 for the tanh form, 14 for the erf form) and far past where x^3 or x^2 overflow f32.
const INPUTS: Record<GeluVariant, { scale: number; extremes: number[] }> = {
  tanh: { scale: 4, extremes: [-1e20, -1e5, -30, -10, -9.5, 0, 9.5, 10, 30, 1e5, 1e20] },
  erf: { scale: 5, extremes: [-1e20, -1e5, -30, -14, -13.5, -9, 0, 9, 13.5, 14, 30, 1e5, 1e20] },
};

function inputs(variant: GeluVariant, n: number, seed: number): Float32Array {
  const { scale, extremes } = INPUTS[variant];
  const x = randomArray(n, seed).map((v) => scale * v);
  x.set(extremes.slice(0, n));
  return x;
}

function check(got: Float32Array, want: ArrayLike<number>, what: string): void {
  assert.equal(firstNonFinite(got), -1, `${what}: non-finite element ${firstNonFinite(got)}`);
  const err = relativeError(got, want);
  assert(err < 1e-5, `${what}: relative error ${err}`);
}

async function exercise(gpu: Gpu, variant: GeluVariant, seed: number): Promise<void> {
  const gelu = await GeluKernels.load(gpu, { variant });
  assert.equal(gelu.variant, variant);
  for (const [k, n] of SIZES.entries()) {
    const what = (op: string) => `${variant} ${op} n=${n} seed ${seed}`;
    const x = inputs(variant, n, seed + 10 * k);
    const dout = randomArray(n, seed + 10 * k + 1);
    const start = randomArray(n, seed + 10 * k + 2);
    using inp = Tensor.from(gpu, x, [n]);
    using out = Tensor.from(gpu, new Float32Array(n).fill(NaN), [n]);
    using tdout = Tensor.from(gpu, dout, [n]);
    using dinp = Tensor.from(gpu, start, [n]);
    gelu.forward({ out, inp });
    gelu.backward({ dinp, inp, dout: tdout });
    const got = await out.read();
    const want = geluForwardRef(x, variant);
    // The 1e20s would swamp the norm: checked alone, then left out.
    for (const [i, v] of x.entries()) {
      if (Math.abs(v) > 1e4) {
        assert(Math.abs(got[i] - want[i]) <= 1e-6 * Math.abs(want[i]), `${what("forward")} [${i}]`);
        got[i] = want[i] = 0;
      }
    }
    check(got, want, what("forward"));
    const wantGrad = Float64Array.from(start);
    geluBackwardRef(wantGrad, { inp: x, dout, variant });
    check(await dinp.read(), wantGrad, what("backward"));
  }
}

for (const variant of VARIANTS) {
  Deno.test(
    `gelu (${variant}) matches the float64 reference on odd sizes and extremes`,
    GPU_TEST,
    async () => {
      await exercise(await testGpu(), variant, freshSeed());
    },
  );

  Deno.test(
    `gelu (${variant}) splits ranges longer than one binding into windows`,
    GPU_TEST,
    async () => {
      using gpu = await Gpu.acquire({ maxBindingBytes: 4096 });
      await exercise(gpu, variant, freshSeed());
    },
  );

  Deno.test(
    `gelu (${variant}) rejects an output that shares its input's buffer`,
    GPU_TEST,
    async () => {
      const gpu = await testGpu();
      const gelu = await GeluKernels.load(gpu, { variant });
      using x = Tensor.empty(gpu, [5]);
      assert.throws(() => gelu.forward({ out: x, inp: x }), /share one buffer/);
    },
  );

  Deno.test(`gelu (${variant}) reference gradient matches finite differences`, () => {
    const seed = freshSeed();
    const x = Float64Array.from(randomArray(9, seed), (v) => 5 * v);
    const grad = new Float64Array(x.length);
    geluBackwardRef(grad, { inp: x, dout: new Float64Array(x.length).fill(1), variant });
    const h = 1e-6;
    const f = (v: number) => geluForwardRef([v], variant)[0];
    for (let i = 0; i < x.length; i++) {
      const fd = (f(x[i] + h) - f(x[i] - h)) / (2 * h);
      assert(Math.abs(fd - grad[i]) < 1e-8, `x=${x[i]}: ${grad[i]} vs ${fd}, seed ${seed}`);
    }
  });
}

Deno.test("the two variants are the published functions at 1 and -1, and differ there", () => {
  // PyTorch's torch.nn.functional.gelu with approximate="tanh" and with the default "none".
  const tanh = geluForwardRef([1, -1], "tanh");
  const erf = geluForwardRef([1, -1], "erf");
  assert(Math.abs(tanh[0] - 0.8411919906082768) < 1e-15);
  assert(Math.abs(tanh[1] + 0.15880800939172324) < 1e-15);
  assert(Math.abs(erf[0] - 0.8413447460685429) < 1e-15);
  assert(Math.abs(erf[1] + 0.15865525393145707) < 1e-15);
});

Deno.test("gelu's variant is chosen at load and both compile on one device", GPU_TEST, async () => {
  const gpu = await testGpu();
  const [tanh, erf] = await Promise.all([
    GeluKernels.load(gpu),
    GeluKernels.load(gpu, { variant: "erf" }),
  ]);
  assert.equal(tanh.variant, "tanh");
  assert.notEqual(tanh.forwardKernel, erf.forwardKernel);
  // x = 1 is where the forms differ by 1.5e-4, far above f32 rounding.
  using inp = Tensor.from(gpu, new Float32Array([1, -1]), [2]);
  using out = Tensor.empty(gpu, [2]);
  for (const [kernels, variant] of [[tanh, "tanh"], [erf, "erf"]] as const) {
    kernels.forward({ out, inp });
    const got = await out.read();
    const want = geluForwardRef([1, -1], variant);
    assert(Math.abs(got[0] - want[0]) < 1e-6 && Math.abs(got[1] - want[1]) < 1e-6, variant);
  }
  await assert.rejects(
    () => GeluKernels.load(gpu, { variant: "relu" as GeluVariant }),
    /GELU variant must be "tanh" or "erf", got "relu"/,
  );
});

Deno.test(
  "gelu (erf)'s Phi is within 2.5e-7 of float64 erf, and relatively accurate in the tail",
  GPU_TEST,
  async () => {
    // A dense grid over [-9, 9]: Phi = gelu(x) / x, compared with the float64 Phi. The fit's own
    // error is under 1.2e-7 relative to erfc; f32 rounding of its steps adds to it.
    const gpu = await testGpu();
    const gelu = await GeluKernels.load(gpu, { variant: "erf" });
    const n = 36_001;
    const x = Float32Array.from({ length: n }, (_, i) => -9 + (18 * i) / (n - 1));
    using inp = Tensor.from(gpu, x, [n]);
    using out = Tensor.from(gpu, new Float32Array(n).fill(NaN), [n]);
    gelu.forward({ out, inp });
    const got = await out.read();
    let worstAbs = 0;
    let worstTail = 0;
    for (let i = 0; i < n; i++) {
      if (x[i] === 0) continue;
      const phi = got[i] / x[i];
      const want = normalCdfRef(x[i]);
      worstAbs = Math.max(worstAbs, Math.abs(phi - want));
      // x < 0: Phi itself is the tail, relative to which the fit is accurate. Rounding -x^2/2 to
      // f32 before the exp costs about 6e-8 * x^2 / 2 more, so the bound grows with it.
      if (x[i] < 0) {
        const rel = Math.abs(phi / want - 1) / Math.max(1, (x[i] * x[i]) / 2);
        worstTail = Math.max(worstTail, rel);
      }
    }
    console.log(`Phi error: ${worstAbs} absolute, ${worstTail} x max(1, x^2/2) relative (x < 0)`);
    // Measured on llvmpipe: 2.0e-7 absolute, 6.0e-7 x max(1, x^2/2) relative in the tail.
    assert(worstAbs < 2.5e-7, `max |Phi - Phi_ref| = ${worstAbs}`);
    assert(worstTail < 1e-6, `max tail error / max(1, x^2/2) = ${worstTail}`);
  },
);

Deno.test("erf and erfc references match Python's math.erf/erfc", () => {
  // Literals printed by CPython's math.erf and math.erfc (the C library's, correctly rounded
  // to within an ulp or two).
  const cases: [number, number, number][] = [
    [0.5, 0.5204998778130465, 0.4795001221869535],
    [1, 0.8427007929497149, 0.15729920705028513],
    [2, 0.9953222650189527, 0.004677734981047265],
    [3, 0.9999779095030014, 2.2090496998585438e-05],
    [5, 0.9999999999984626, 1.5374597944280351e-12],
    [8, 1.0, 1.1224297172982928e-29],
  ];
  for (const [z, erf, erfc] of cases) {
    assert(Math.abs(erfRef(z) - erf) <= 4e-16, `erf(${z}) = ${erfRef(z)}, want ${erf}`);
    assert(Math.abs(erfcRef(z) / erfc - 1) < 1e-13, `erfc(${z}) = ${erfcRef(z)}, want ${erfc}`);
    assert(Math.abs(erfRef(-z) + erf) <= 4e-16);
    assert(Math.abs(erfcRef(-z) - (1 + erf)) <= 4e-16);
  }
});
