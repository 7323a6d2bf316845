import assert from "node:assert/strict";
import { AttentionFullKernels, attentionFullMaxTokens } from "../../kernels/attention_full.ts";
import {
  attentionFullBackwardRef,
  attentionFullForwardRef,
} from "../../kernels/attention_full_ref.ts";
import { Tensor } from "../../kernels/tensor.ts";
import {
  firstNonFinite,
  freshSeed,
  GPU_TEST,
  randomArray,
  relativeError,
  testGpu,
} from "../_util.ts";

// [B, T, NH, hd]: one token, odd counts, a head size that is not a multiple of 4, more rows than
// a workgroup, ViT-tiny's 10 tokens of 3 heads of 8, a head of the kernels' largest size.
const SHAPES: readonly [number, number, number, number][] = [
  [1, 1, 1, 1],
  [2, 3, 1, 3],
  [3, 17, 2, 5],
  [2, 10, 3, 8],
  [1, 33, 4, 16],
  [1, 5, 1, 128],
];

function check(got: Float32Array, want: ArrayLike<number>, what: string): void {
  assert.equal(firstNonFinite(got), -1, `${what}: non-finite element ${firstNonFinite(got)}`);
  const err = relativeError(got, want);
  assert(err < 1e-5, `${what}: relative error ${err}`);
}

// Columns of a fused [rows, 3C] qkv, as timm's ViT lays them out.
function columns(qkv: Float32Array, rows: number, C: number, part: number): Float32Array {
  const out = new Float32Array(rows * C);
  for (let r = 0; r < rows; r++) {
    out.set(qkv.subarray(r * 3 * C + part * C, r * 3 * C + (part + 1) * C), r * C);
  }
  return out;
}

Deno.test(
  "attention_full matches the float64 reference on a fused qkv and on separate tensors",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const attention = await AttentionFullKernels.load(gpu);
    const seed = freshSeed();
    for (const [n, [B, T, NH, hd]] of SHAPES.entries()) {
      const what = (op: string) => `${op} [B=${B}, T=${T}, NH=${NH}, hd=${hd}] seed ${seed}`;
      const C = NH * hd;
      const rows = B * T;
      const s = seed + 10 * n;
      const qkvHost = randomArray(rows * 3 * C, s).map((x) => 2 * x);
      const [qh, kh, vh] = [0, 1, 2].map((p) => columns(qkvHost, rows, C, p));
      const g = randomArray(rows * C, s + 1);
      const want = attentionFullForwardRef(qh, kh, vh, { B, T, NH, hd });
      const grads = attentionFullBackwardRef(g, qh, kh, vh, { B, T, NH, hd });
      const ld = 3 * C;

      // Fused: q, k, v and their gradients are column blocks of one buffer each.
      {
        using qkv = Tensor.from(gpu, qkvHost, [rows, 3 * C]);
        using out = Tensor.from(gpu, new Float32Array(rows * C).fill(NaN), [rows, C]);
        using lse = Tensor.from(gpu, new Float32Array(B * NH * T).fill(NaN), [B, NH, T]);
        const views = {
          q: { tensor: qkv, ld },
          k: { tensor: qkv, offset: C, ld },
          v: { tensor: qkv, offset: 2 * C, ld },
        };
        attention.forward({ out, lse, ...views, B, T, NH });
        check(await out.read(), want.out, what("fused out"));
        check(await lse.read(), want.lse, what("fused lse"));
        const start = randomArray(rows * 3 * C, s + 2);
        using dqkv = Tensor.from(gpu, start, [rows, 3 * C]);
        using dout = Tensor.from(gpu, g, [rows, C]);
        attention.backward({
          dq: { tensor: dqkv, ld },
          dk: { tensor: dqkv, offset: C, ld },
          dv: { tensor: dqkv, offset: 2 * C, ld },
          dout,
          out,
          lse,
          ...views,
          B,
          T,
          NH,
        });
        const got = await dqkv.read();
        for (const [p, name] of ["dq", "dk", "dv"].entries()) {
          const base = columns(start, rows, C, p);
          const ref = grads[name as "dq"].map((v, i) => v + base[i]);
          check(columns(got, rows, C, p), ref, what(`fused ${name}`));
        }
      }
      // Separate tensors, as Hugging Face's query, key and value projections leave them.
      {
        using q = Tensor.from(gpu, qh, [rows, C]);
        using k = Tensor.from(gpu, kh, [rows, C]);
        using v = Tensor.from(gpu, vh, [rows, C]);
        using out = Tensor.from(gpu, new Float32Array(rows * C).fill(NaN), [rows, C]);
        using lse = Tensor.from(gpu, new Float32Array(B * NH * T).fill(NaN), [B, NH, T]);
        attention.forward({ out, lse, q, k, v, B, T, NH });
        check(await out.read(), want.out, what("separate out"));
        using dq = Tensor.from(gpu, new Float32Array(rows * C), [rows, C]);
        using dk = Tensor.from(gpu, new Float32Array(rows * C), [rows, C]);
        using dv = Tensor.from(gpu, new Float32Array(rows * C), [rows, C]);
        using dout = Tensor.from(gpu, g, [rows, C]);
        attention.backward({ dq, dk, dv, dout, out, lse, q, k, v, B, T, NH });
        check(await dq.read(), grads.dq, what("separate dq"));
        check(await dk.read(), grads.dk, what("separate dk"));
        check(await dv.read(), grads.dv, what("separate dv"));
      }
    }
  },
);

Deno.test(
  "attention_full at ViT-B/16's 197 tokens of head size 64, forward and backward",
  GPU_TEST,
  async () => {
    // The real size: every query row walks 197 keys in one invocation.
    const gpu = await testGpu();
    const attention = await AttentionFullKernels.load(gpu);
    const seed = freshSeed();
    const [B, T, NH, hd] = [1, 197, 1, 64];
    const [qh, kh, vh] = [0, 1, 2].map((i) => randomArray(T * hd, seed + i));
    using q = Tensor.from(gpu, qh, [T, hd]);
    using k = Tensor.from(gpu, kh, [T, hd]);
    using v = Tensor.from(gpu, vh, [T, hd]);
    using out = Tensor.from(gpu, new Float32Array(T * hd).fill(NaN), [T, hd]);
    using lse = Tensor.empty(gpu, [B, NH, T]);
    attention.forward({ out, lse, q, k, v, B, T, NH });
    const want = attentionFullForwardRef(qh, kh, vh, { B, T, NH, hd });
    check(await out.read(), want.out, `out seed ${seed}`);
    const g = randomArray(T * hd, seed + 3);
    using dout = Tensor.from(gpu, g, [T, hd]);
    using dq = Tensor.from(gpu, new Float32Array(T * hd), [T, hd]);
    using dk = Tensor.from(gpu, new Float32Array(T * hd), [T, hd]);
    using dv = Tensor.from(gpu, new Float32Array(T * hd), [T, hd]);
    attention.backward({ dq, dk, dv, dout, out, lse, q, k, v, B, T, NH });
    const grads = attentionFullBackwardRef(g, qh, kh, vh, { B, T, NH, hd });
    check(await dq.read(), grads.dq, `dq seed ${seed}`);
    check(await dk.read(), grads.dk, `dk seed ${seed}`);
    check(await dv.read(), grads.dv, `dv seed ${seed}`);
    assert(attentionFullMaxTokens(64) > 1000);
  },
);

Deno.test("attention_full refuses sizes that do not fit", GPU_TEST, async () => {
  const gpu = await testGpu();
  const attention = await AttentionFullKernels.load(gpu);
  using x = Tensor.empty(gpu, [10, 24]);
  using out = Tensor.empty(gpu, [10, 24]);
  using lse = Tensor.empty(gpu, [2, 3, 5]);
  assert.throws(
    () => attention.forward({ out, lse, q: x, k: x, v: x, B: 2, T: 5, NH: 5 }),
    /not B=2 x T=5 rows of NH=5 heads/,
  );
  using short = Tensor.empty(gpu, [9, 24]);
  assert.throws(
    () => attention.forward({ out, lse, q: short, k: x, v: x, B: 2, T: 5, NH: 3 }),
    /Attention q has 216 elements, expected 240/,
  );
  assert.throws(
    () => attention.forward({ out: x, lse, q: x, k: x, v: x, B: 2, T: 5, NH: 3 }),
    /share one buffer/,
  );
  const tooMany = attentionFullMaxTokens(8) + 1;
  using big = Tensor.empty(gpu, [tooMany, 8]);
  using bigLse = Tensor.empty(gpu, [tooMany]);
  assert.throws(
    () => attention.forward({ out: big, lse: bigLse, q: x, k: x, v: x, B: 1, T: tooMany, NH: 1 }),
    /more than the \d+ one pass takes/,
  );
});

Deno.test("attention_full reference gradient matches finite differences", () => {
  const seed = freshSeed();
  const s = { B: 2, T: 3, NH: 2, hd: 3 };
  const n = s.B * s.T * s.NH * s.hd;
  const [q, k, v, g] = [0, 1, 2, 3].map((i) => Float64Array.from(randomArray(n, seed + i)));
  const loss = () => attentionFullForwardRef(q, k, v, s).out.reduce((a, o, i) => a + o * g[i], 0);
  const grads = attentionFullBackwardRef(g, q, k, v, s);
  const h = 1e-6;
  for (const [name, x] of [["dq", q], ["dk", k], ["dv", v]] as const) {
    for (let i = 0; i < n; i += 5) {
      const keep = x[i];
      x[i] = keep + h;
      const up = loss();
      x[i] = keep - h;
      const down = loss();
      x[i] = keep;
      const fd = (up - down) / (2 * h);
      assert(
        Math.abs(fd - grads[name][i]) < 1e-7,
        `${name}[${i}]: ${grads[name][i]} vs ${fd}, seed ${seed}`,
      );
    }
  }
});
