import assert from "node:assert/strict";
import { Matmul } from "../../kernels/matmul.ts";
import { patchCount, type PatchGeometry, PatchKernels } from "../../kernels/patches.ts";
import {
  classRowsRef,
  patchConvRef,
  tokensBackwardRef,
  tokensForwardRef,
  unfoldRef,
} from "../../kernels/patches_ref.ts";
import { Tensor } from "../../kernels/tensor.ts";
import {
  firstNonFinite,
  freshSeed,
  GPU_TEST,
  randomArray,
  relativeError,
  testGpu,
} from "../_util.ts";

// Odd sizes: one pixel patches, a remainder the convolution drops, ViT's 12x12 / 4.
const GEOMETRIES: readonly (PatchGeometry & { D: number })[] = [
  { B: 1, C: 1, H: 1, W: 1, P: 1, D: 1 },
  { B: 3, C: 3, H: 7, W: 9, P: 2, D: 5 },
  { B: 2, C: 3, H: 12, W: 12, P: 4, D: 24 },
  { B: 1, C: 2, H: 17, W: 5, P: 5, D: 17 },
];

function check(got: Float32Array, want: ArrayLike<number>, what: string): void {
  assert.equal(firstNonFinite(got), -1, `${what}: non-finite element ${firstNonFinite(got)}`);
  const err = relativeError(got, want);
  assert(err < 1e-5, `${what}: relative error ${err}`);
}

const poisoned = (n: number) => new Float32Array(n).fill(NaN);

Deno.test(
  "unfolded patches times the conv weight are the strided convolution",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const [patches, matmul] = await Promise.all([PatchKernels.load(gpu), Matmul.load(gpu)]);
    const seed = freshSeed();
    for (const [k, g] of GEOMETRIES.entries()) {
      const what = (op: string) => `${op} ${JSON.stringify(g)} seed ${seed}`;
      const { B, C, H, W, P, D } = g;
      const N = patchCount(g);
      const K = C * P * P;
      const images = randomArray(B * C * H * W, seed + k);
      const weight = randomArray(D * K, seed + k + 100);
      const bias = randomArray(D, seed + k + 200);
      using inp = Tensor.from(gpu, images, [B, C, H, W]);
      using cols = Tensor.from(gpu, poisoned(B * N * K), [B * N, K]);
      using w = Tensor.from(gpu, weight, [D, C, P, P]);
      using b = Tensor.from(gpu, bias, [D]);
      using out = Tensor.from(gpu, poisoned(B * N * D), [B * N, D]);
      patches.unfold({ out: cols, inp, ...g });
      matmul.raw({ out: out.buffer, a: cols.buffer, b: w.buffer, bias: b.buffer }, {
        m: B * N,
        n: D,
        k: K,
        transB: true,
      });
      const unfolded = await cols.read();
      assert.deepEqual(unfolded, Float32Array.from(unfoldRef(images, g)), what("unfold"));
      check(await out.read(), patchConvRef(images, weight, bias, g), what("conv"));
    }
  },
);

Deno.test(
  "tokens and class rows match the float64 reference, forward and backward",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const kernels = await PatchKernels.load(gpu);
    const seed = freshSeed();
    const shapes = [{ B: 1, N: 1, D: 1 }, { B: 3, N: 9, D: 24 }, { B: 2, N: 17, D: 255 }];
    for (const [k, s] of shapes.entries()) {
      const what = (op: string) => `${op} ${JSON.stringify(s)} seed ${seed}`;
      const { B, N, D } = s;
      const T = N + 1;
      const r = (n: number, i: number) => randomArray(n, seed + 10 * k + i);
      const [p, c, q, g, startPos, startCls, gRows, startDx] = [
        r(B * N * D, 0),
        r(D, 1),
        r(T * D, 2),
        r(B * T * D, 3),
        r(T * D, 4),
        r(D, 5),
        r(B * D, 6),
        r(B * T * D, 7),
      ];
      using tp = Tensor.from(gpu, p, [B * N, D]);
      using cls = Tensor.from(gpu, c, [D]);
      using pos = Tensor.from(gpu, q, [T, D]);
      using out = Tensor.from(gpu, poisoned(B * T * D), [B, T, D]);
      kernels.tokensForward({ out, patches: tp, cls, pos, B, N, D });
      check(await out.read(), tokensForwardRef(p, c, q, s), what("tokens forward"));

      using dout = Tensor.from(gpu, g, [B, T, D]);
      using dpatches = Tensor.from(gpu, poisoned(B * N * D), [B * N, D]);
      using dpos = Tensor.from(gpu, startPos, [T, D]);
      using dcls = Tensor.from(gpu, startCls, [D]);
      kernels.tokensBackward({ dpatches, dout, B, N, D });
      kernels.tokensBackwardParams({ dpos, dcls, dout, B, N, D });
      const want = tokensBackwardRef(g, s);
      check(await dpatches.read(), want.dpatches, what("dpatches"));
      check(await dpos.read(), want.dpos.map((v, i) => v + startPos[i]), what("dpos"));
      check(await dcls.read(), want.dcls.map((v, i) => v + startCls[i]), what("dcls"));

      using rows = Tensor.from(gpu, poisoned(B * D), [B, D]);
      kernels.classRowsForward({ out: rows, x: dout, B, N, D });
      check(await rows.read(), classRowsRef(g, { B, T, D }), what("class rows"));
      using drows = Tensor.from(gpu, gRows, [B, D]);
      using dx = Tensor.from(gpu, startDx, [B, T, D]);
      kernels.classRowsBackward({ dx, dout: drows, B, N, D });
      const wantDx = Float64Array.from(startDx);
      for (let b = 0; b < B; b++) {
        for (let d = 0; d < D; d++) wantDx[b * T * D + d] += gRows[b * D + d];
      }
      check(await dx.read(), wantDx, what("class rows backward"));
    }
  },
);

Deno.test(
  "patch kernels refuse operands of the wrong size and patches past the image",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const kernels = await PatchKernels.load(gpu);
    using inp = Tensor.empty(gpu, [1, 3, 4, 4]);
    using out = Tensor.empty(gpu, [4, 11]);
    const g = { B: 1, C: 3, H: 4, W: 4, P: 2 };
    assert.throws(() => kernels.unfold({ out, inp, ...g }), /"out" has 44 elements, expected 48/);
    assert.throws(() => kernels.unfold({ out, inp, ...g, P: 5 }), /Cannot unfold 4x4 images/);
    using x = Tensor.empty(gpu, [2, 3, 4]);
    using rows = Tensor.empty(gpu, [2, 4]);
    assert.throws(
      () => kernels.classRowsForward({ out: rows, x, B: 2, N: 3, D: 4 }),
      /"x" has 24 elements, expected 32/,
    );
  },
);

Deno.test("the conv reference is the unfold reference times the weight", () => {
  // Two references written differently must agree, so neither hides an ordering mistake.
  const seed = freshSeed();
  const g = { B: 2, C: 3, H: 7, W: 9, P: 3, D: 4 };
  const K = g.C * g.P * g.P;
  const images = randomArray(g.B * g.C * g.H * g.W, seed);
  const weight = randomArray(g.D * K, seed + 1);
  const bias = randomArray(g.D, seed + 2);
  const cols = unfoldRef(images, g);
  const rows = cols.length / K;
  const viaCols = new Float64Array(rows * g.D);
  for (let r = 0; r < rows; r++) {
    for (let d = 0; d < g.D; d++) {
      let s = bias[d];
      for (let i = 0; i < K; i++) s += cols[r * K + i] * weight[d * K + i];
      viaCols[r * g.D + d] = s;
    }
  }
  assert(relativeError(viaCols, patchConvRef(images, weight, bias, g)) < 1e-14, `seed ${seed}`);
});
