import assert from "node:assert/strict";
import { LowRankLinear, type MatrixView } from "../../adapters/linear_adapter.ts";
import { NolaFactors, type NolaInit } from "../../adapters/nola_factors.ts";
import { BasisFactor, basisScale, moduleKey } from "../../kernels/basis_spec.ts";
import type { Gpu } from "../../kernels/gpu.ts";
import { Matmul } from "../../kernels/matmul.ts";
import { NolaKernels } from "../../kernels/nola.ts";
import {
  lowRankBackwardRef,
  lowRankForwardRef,
  nolaChainRef,
  nolaCombineRef,
} from "../../kernels/nola_ref.ts";
import { Tensor } from "../../kernels/tensor.ts";
import {
  checkAccumulated,
  firstNonFinite,
  freshSeed,
  GPU_TEST,
  randomArray,
  relativeError,
  testGpu,
} from "../_util.ts";

function check(got: ArrayLike<number>, want: ArrayLike<number>, what: string): void {
  assert.equal(firstNonFinite(got), -1, `${what}: unwritten element ${firstNonFinite(got)}`);
  const err = relativeError(got, want);
  assert(err < 1e-5, `${what}: relative error ${err}`);
}

/** A [rows, cols] matrix stored at `offset` with row pitch `ld` in a NaN-filled buffer. */
interface Embedded {
  data: Float32Array;
  offset: number;
  ld: number;
}

function embed(values: Float32Array, shape: [number, number], at: [number, number]): Embedded {
  const [rows, cols] = shape;
  const [offset, ld] = at;
  const data = new Float32Array(offset + rows * ld + 3).fill(NaN);
  for (let i = 0; i < rows; i++) {
    data.set(values.subarray(i * cols, (i + 1) * cols), offset + i * ld);
  }
  return { data, offset, ld };
}

/** The [rows, cols] matrix of a view, and a check that everything around it is still NaN. */
function extract(got: Float32Array, e: Embedded, shape: [number, number], what: string) {
  const [rows, cols] = shape;
  const out = new Float32Array(rows * cols);
  const inside = new Set<number>();
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      out[i * cols + j] = got[e.offset + i * e.ld + j];
      inside.add(e.offset + i * e.ld + j);
    }
  }
  for (let i = 0; i < got.length; i++) {
    if (!inside.has(i) && !Number.isNaN(got[i])) {
      assert.fail(`${what}: element ${i} outside the view was written`);
    }
  }
  return out;
}

function view(gpu: Gpu, e: Embedded): { tensor: Tensor<"f32">; v: MatrixView } {
  const tensor = Tensor.from(gpu, e.data, [e.data.length]);
  return { tensor, v: { tensor, offset: e.offset, ld: e.ld } };
}

const SHAPES = [
  { rows: 1, inF: 1, outF: 1, r: 1 },
  { rows: 5, inF: 17, outF: 3, r: 3 },
  { rows: 7, inF: 64, outF: 255, r: 8 },
  { rows: 33, inF: 255, outF: 17, r: 1 },
  { rows: 2, inF: 3, outF: 64, r: 8 },
];

Deno.test(
  "LowRankLinear forward and backward match the float64 reference on column slices",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const matmul = await Matmul.load(gpu);
    const seed = freshSeed();
    for (const [index, { rows, inF, outF, r }] of SHAPES.entries()) {
      const what = (op: string) => `${op} rows ${rows} in ${inF} out ${outF} r ${r} seed ${seed}`;
      const s = seed + 10 * index;
      const [a, b] = [randomArray(r * inF, s), randomArray(outF * r, s + 1)];
      const loraAlpha = 2 * r + 1;
      using lin = LowRankLinear.create(matmul, {
        name: `h.${index}.attn.c_attn.v`,
        inFeatures: inF,
        outFeatures: outF,
        r,
        loraAlpha,
        maxRows: rows + 2,
        a,
        b,
      });
      const sizes = { rows, inFeatures: inF, outFeatures: outF, r, scale: loraAlpha / r };
      const x = randomArray(rows * inF, s + 2);
      const y0 = randomArray(rows * outF, s + 3);
      const dy = randomArray(rows * outF, s + 4);
      const dx0 = randomArray(rows * inF, s + 5);
      // y is the v part of a [rows, 3 out + 1] c_attn-like output: columns [2 out, 3 out).
      const ey = embed(y0, [rows, outF], [2 * outF, 3 * outF + 1]);
      const ex = embed(x, [rows, inF], [1, inF + 2]);
      const edy = embed(dy, [rows, outF], [outF, 3 * outF]);
      const edx = embed(dx0, [rows, inF], [0, inF + 1]);
      const { tensor: ty, v: vy } = view(gpu, ey);
      const { tensor: tx, v: vx } = view(gpu, ex);
      const { tensor: tdy, v: vdy } = view(gpu, edy);
      const { tensor: tdx, v: vdx } = view(gpu, edx);
      using _ = { [Symbol.dispose]: () => [ty, tx, tdy, tdx].forEach((t) => t[Symbol.dispose]()) };
      const da0 = randomArray(r * inF, s + 6);
      const db0 = randomArray(outF * r, s + 7);
      gpu.write(lin.da.buffer, da0);
      gpu.write(lin.db.buffer, db0);

      lin.forward(vx, vy, rows);
      const delta = lowRankForwardRef({ x, a, b }, sizes);
      const gotY = extract(await ty.read(), ey, [rows, outF], what("forward"));
      checkAccumulated(gotY, y0, delta, what("forward"));

      const ref = lowRankBackwardRef({ x, a, b, dy }, sizes);
      lin.backward(vx, vdy, null, rows);
      checkAccumulated(await lin.da.read(), da0, ref.da, what("dA"));
      checkAccumulated(await lin.db.read(), db0, ref.db, what("dB"));
      lin.backward(vx, vdy, vdx, rows);
      const twice = (v: Float64Array) => v.map((e) => 2 * e);
      checkAccumulated(await lin.da.read(), da0, twice(ref.da), what("dA twice"));
      checkAccumulated(await lin.db.read(), db0, twice(ref.db), what("dB twice"));
      const gotDx = extract(await tdx.read(), edx, [rows, inF], what("dx"));
      checkAccumulated(gotDx, dx0, ref.dx, what("dx"));
    }
  },
);

Deno.test(
  "LowRankLinear rejects bad views, rows and a backward without forward",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const matmul = await Matmul.load(gpu);
    using lin = LowRankLinear.create(matmul, {
      name: "h.0.attn.c_attn.q",
      inFeatures: 4,
      outFeatures: 3,
      r: 2,
      loraAlpha: 4,
      maxRows: 5,
    });
    assert.equal(lin.scale, 2);
    using x = Tensor.empty(gpu, [5, 4]);
    using y = Tensor.empty(gpu, [5, 9]);
    const vx = { tensor: x, ld: 4 };
    assert.throws(() => lin.backward(vx, { tensor: y, ld: 9 }, null, 5), /forward never ran/);
    assert.throws(() => lin.forward(vx, { tensor: y, ld: 9 }, 6), /on 6 rows: must be in \[0, 5\]/);
    assert.throws(() => lin.forward(vx, { tensor: y, ld: 2 }, 5), /leading dimension 2 is below 3/);
    assert.throws(
      () => lin.forward(vx, { tensor: y, offset: 7, ld: 9 }, 5),
      /need 46 elements, tensor ".*" has 45/,
    );
    lin.forward(vx, { tensor: y, offset: 6, ld: 9 }, 5);
    assert.throws(
      () => lin.backward(vx, { tensor: y, ld: 9 }, null, 4),
      /the last forward covered 5/,
    );
  },
);

interface ChainCase {
  rows: number;
  inF: number;
  outF: number;
  r: number;
  k: number;
  l: number;
  init: NolaInit;
}

/** Runs y = x W + s x Aᵀ Bᵀ, L = sum(y ⊙ G) on the GPU and compares every stage. */
async function chainCase(gpu: Gpu, c: ChainCase, seed: number): Promise<void> {
  const what = (op: string) => `${op} ${JSON.stringify(c)} seed ${seed}`;
  const [matmul, kernels] = await Promise.all([Matmul.load(gpu), NolaKernels.load(gpu)]);
  const { rows, inF, outF, r, k, l } = c;
  const loraAlpha = 16;
  using lin = LowRankLinear.create(matmul, {
    name: "h.1.attn.c_attn.v",
    inFeatures: inF,
    outFeatures: outF,
    r,
    loraAlpha,
    maxRows: rows,
  });
  using nola = NolaFactors.create(kernels, {
    adapter: lin,
    seed,
    basisKey: "h.*.attn.c_attn.v",
    k,
    l,
    init: c.init,
  });
  const x = randomArray(rows * inF, seed + 1);
  const w = randomArray(inF * outF, seed + 2);
  const g = randomArray(rows * outF, seed + 3);
  let alpha = await nola.alpha.read();
  let beta = await nola.beta.read();
  if (c.init === "official") {
    assert(alpha.every((v) => v === 0) && beta.every((v) => v === 0), what("zero coefficients"));
  } else {
    assert.equal(alpha[0], Math.fround(1 / k));
    assert.equal(beta[l - 1], Math.fround(1 / l));
  }
  const key = moduleKey(seed, "h.*.attn.c_attn.v");
  const sizes = { rows, inFeatures: inF, outFeatures: outF, r, scale: loraAlpha / r };
  const scalesFor = { k, l, inFeatures: inF };
  const scales = {
    a: basisScale(BasisFactor.A, scalesFor),
    b: basisScale(BasisFactor.B, scalesFor),
    a0: c.init === "official" ? basisScale(BasisFactor.A0, scalesFor) : undefined,
  };
  const chain = { ...sizes, x, w, g, key, k, l, scales };

  for (const step of [0, 1]) {
    if (step === 1) {
      // Away from the init, so dalpha is non-zero too.
      alpha = randomArray(k, seed + 4).map((v) => v / k);
      beta = randomArray(l, seed + 5).map((v) => v / l);
      gpu.write(nola.alpha.buffer, alpha);
      gpu.write(nola.beta.buffer, beta);
    }
    using tx = Tensor.from(gpu, x, [rows, inF]);
    using tw = Tensor.from(gpu, w, [inF, outF]);
    using tg = Tensor.from(gpu, g, [rows, outF]);
    using y = Tensor.from(gpu, new Float32Array(rows * outF).fill(NaN), [rows, outF]);
    nola.zeroGradients();
    nola.combine();
    matmul.run(tx, tw, { out: y });
    const frozen = await y.read();
    lin.forward({ tensor: tx, ld: inF }, { tensor: y, ld: outF }, rows);
    lin.backward({ tensor: tx, ld: inF }, { tensor: tg, ld: outF }, null, rows);
    nola.coefficientGradients();
    const ref = nolaChainRef({ alpha, beta }, chain);
    const a = nolaCombineRef(alpha, {
      key,
      factor: 0,
      count: k,
      rows: r,
      cols: inF,
      scale: scales.a,
      withA0: scales.a0 ? { scale: scales.a0 } : undefined,
    });
    check(await lin.a.read(), a, what(`A step ${step}`));
    const gotY = await y.read();
    let loss = 0;
    let size = 0;
    for (let i = 0; i < gotY.length; i++) {
      loss += gotY[i] * g[i];
      size += Math.abs(gotY[i] * g[i]);
    }
    assert(Math.abs(loss - ref.loss) <= 1e-5 * size, what(`loss ${loss} vs ${ref.loss}`));
    const dalpha = await nola.dalpha.read();
    const dbeta = await nola.dbeta.read();
    check(dbeta, ref.dbeta, what(`dbeta step ${step}`));
    assert(dbeta.some((v) => v !== 0), what("dbeta is zero"));
    if (step === 0 && c.init === "official") {
      // B = 0: the adapter adds exactly nothing (dW = s B A = 0) and no gradient reaches alpha.
      assert((await lin.b.read()).every((v) => v === 0), what("B at init"));
      assert.deepEqual(gotY, frozen, what("y at init"));
      assert(dalpha.every((v) => v === 0), what("dalpha at init"));
      assert(ref.dalpha.every((v) => v === 0), what("reference dalpha at init"));
    } else {
      check(dalpha, ref.dalpha, what(`dalpha step ${step}`));
      assert(dalpha.some((v) => v !== 0), what("dalpha is zero"));
    }
  }
}

Deno.test("NOLA chain gradients on the GPU match the float64 reference", GPU_TEST, async () => {
  const gpu = await testGpu();
  const seed = freshSeed();
  const cases: ChainCase[] = [
    { rows: 5, inF: 17, outF: 64, r: 8, k: 64, l: 17, init: "official" },
    { rows: 3, inF: 64, outF: 3, r: 3, k: 1024, l: 1024, init: "official" },
    { rows: 4, inF: 255, outF: 17, r: 1, k: 17, l: 64, init: "uniform-coeffs" },
    { rows: 1, inF: 1, outF: 1, r: 1, k: 1, l: 3, init: "uniform-coeffs" },
  ];
  for (const [i, c] of cases.entries()) await chainCase(gpu, c, seed + 100 * i);
});

Deno.test("NOLA chain reference gradients match central finite differences", () => {
  const seed = freshSeed();
  const [rows, inF, outF, r, k, l] = [3, 5, 4, 2, 6, 7];
  for (const withA0 of [true, false]) {
    const sizes = { rows, inFeatures: inF, outFeatures: outF, r, scale: 1.5 };
    const chain = {
      ...sizes,
      x: randomArray(rows * inF, seed),
      w: randomArray(inF * outF, seed + 1),
      g: randomArray(rows * outF, seed + 2),
      key: moduleKey(seed, "h.0.mlp.c_fc"),
      k,
      l,
      scales: { a: 0.4, b: 0.3, a0: withA0 ? 0.5 : undefined },
    };
    const alpha = Float64Array.from(randomArray(k, seed + 3));
    const beta = Float64Array.from(randomArray(l, seed + 4));
    const { dalpha, dbeta } = nolaChainRef({ alpha, beta }, chain);
    const eps = 1e-4;
    const fd = (v: Float64Array, i: number) => {
      const keep = v[i];
      v[i] = keep + eps;
      const plus = nolaChainRef({ alpha, beta }, chain).loss;
      v[i] = keep - eps;
      const minus = nolaChainRef({ alpha, beta }, chain).loss;
      v[i] = keep;
      return (plus - minus) / (2 * eps);
    };
    const what = `A0 ${withA0} seed ${seed}`;
    const numA = Float64Array.from(alpha, (_, i) => fd(alpha, i));
    const numB = Float64Array.from(beta, (_, i) => fd(beta, i));
    assert(relativeError(dalpha, numA) < 1e-7, `dalpha ${what}: ${relativeError(dalpha, numA)}`);
    assert(relativeError(dbeta, numB) < 1e-7, `dbeta ${what}: ${relativeError(dbeta, numB)}`);
    assert(dalpha.some((v) => v !== 0) && dbeta.some((v) => v !== 0), what);
  }
});

Deno.test("low-rank reference gradients match central finite differences", () => {
  const seed = freshSeed();
  const sizes = { rows: 3, inFeatures: 4, outFeatures: 5, r: 2, scale: 0.75 };
  const x = Float64Array.from(randomArray(12, seed));
  const a = Float64Array.from(randomArray(8, seed + 1));
  const b = Float64Array.from(randomArray(10, seed + 2));
  const dy = Float64Array.from(randomArray(15, seed + 3));
  const loss = () => lowRankForwardRef({ x, a, b }, sizes).reduce((s, v, i) => s + v * dy[i], 0);
  const grads = lowRankBackwardRef({ x, a, b, dy }, sizes);
  const eps = 1e-5;
  for (
    const [name, v, grad] of [["a", a, grads.da], ["b", b, grads.db], ["x", x, grads.dx]] as const
  ) {
    const num = Float64Array.from(v, (keep, i) => {
      v[i] = keep + eps;
      const plus = loss();
      v[i] = keep - eps;
      const minus = loss();
      v[i] = keep;
      return (plus - minus) / (2 * eps);
    });
    const err = relativeError(grad, num);
    assert(err < 1e-8, `d${name} seed ${seed}: relative error ${err}`);
  }
});
