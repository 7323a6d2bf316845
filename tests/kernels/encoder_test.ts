import assert from "node:assert/strict";
import { EncoderKernels, tokenLists } from "../../kernels/encoder.ts";
import { encoderBackwardRef, encoderForwardRef } from "../../kernels/encoder_ref.ts";
import { Gpu } from "../../kernels/gpu.ts";
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

/** B, T, C, V, P (wpe rows), posOffset. */
type Shape = [number, number, number, number, number, number];

const SHAPES: readonly Shape[] = [
  [1, 1, 1, 1, 1, 0],
  [2, 3, 3, 3, 5, 2],
  [3, 17, 17, 300, 20, 3],
  [2, 17, 64, 1023, 17, 0],
  [1, 3, 255, 50, 8, 5],
];

function check(got: Float32Array, want: ArrayLike<number>, what: string): void {
  assert.equal(firstNonFinite(got), -1, `${what}: non-finite element ${firstNonFinite(got)}`);
  const err = relativeError(got, want);
  assert(err < 1e-5, `${what}: relative error ${err}`);
}

async function exercise(gpu: Gpu, seed: number, shapes: readonly Shape[]): Promise<void> {
  const encoder = await EncoderKernels.load(gpu);
  for (const [k, [b, t, c, v, p, posOffset]] of shapes.entries()) {
    const what = (op: string) => `${op} B=${b} T=${t} C=${c} V=${v} +${posOffset} seed ${seed}`;
    const s = seed + 10 * k;
    const next = rng(s);
    // Few distinct ids, so that tokens repeat and their gradients add up.
    const ids = Uint32Array.from({ length: 1 + Math.floor(next() * 5) }, () => next() * v);
    const tok = Uint32Array.from({ length: b * t }, () => ids[Math.floor(next() * ids.length)]);
    tok[0] = v - 1;
    const wteData = randomArray(v * c, s + 1);
    const wpeData = randomArray(p * c, s + 2);
    const g = randomArray(b * t * c, s + 3);
    const startWte = randomArray(v * c, s + 4);
    const startWpe = randomArray(p * c, s + 5);
    using tokens = Tensor.from(gpu, tok, [b, t]);
    using wte = Tensor.from(gpu, wteData, [v, c]);
    using wpe = Tensor.from(gpu, wpeData, [p, c]);
    using out = Tensor.from(gpu, new Float32Array(b * t * c).fill(NaN), [b, t, c]);
    encoder.forward({ out, tokens, wte, wpe, posOffset });
    const shape = { tokens: tok, seq: t, channels: c, posOffset };
    check(await out.read(), encoderForwardRef(shape, { wte: wteData, wpe: wpeData }), what("out"));

    using dout = Tensor.from(gpu, g, [b, t, c]);
    using dwte = Tensor.from(gpu, startWte, [v, c]);
    using dwpe = Tensor.from(gpu, startWpe, [p, c]);
    encoder.backward({ dwte, dwpe, dout, tokens: tok, posOffset });
    const want = { dwte: Float64Array.from(startWte), dwpe: Float64Array.from(startWpe), dout: g };
    encoderBackwardRef(shape, want);
    check(await dwte.read(), want.dwte, what("dwte"));
    check(await dwpe.read(), want.dwpe, what("dwpe"));
  }
}

Deno.test(
  "encoder matches the float64 reference with repeated tokens and a position offset",
  GPU_TEST,
  async () => {
    await exercise(await testGpu(), freshSeed(), SHAPES);
  },
);

Deno.test(
  "encoder splits a token table larger than one binding into vocabulary windows",
  GPU_TEST,
  async () => {
    using gpu = await Gpu.acquire({ maxBindingBytes: 4096 });
    await exercise(gpu, freshSeed(), [[1, 1, 1, 1, 1, 0], [3, 17, 17, 300, 20, 3], [
      2,
      3,
      64,
      100,
      4,
      1,
    ]]);
  },
);

Deno.test(
  "encoder marks an out-of-vocabulary token with NaN and refuses its gradient",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const encoder = await EncoderKernels.load(gpu);
    using wte = Tensor.from(gpu, new Float32Array(6), [3, 2]);
    using wpe = Tensor.from(gpu, new Float32Array(4), [2, 2]);
    using tokens = Tensor.from(gpu, new Uint32Array([2, 3]), [1, 2]);
    using out = Tensor.empty(gpu, [1, 2, 2]);
    encoder.forward({ out, tokens, wte, wpe });
    const got = await out.read();
    assert(Number.isFinite(got[0]) && Number.isFinite(got[1]), `${got}`);
    assert(Number.isNaN(got[2]) && Number.isNaN(got[3]), `${got}`);
    assert.throws(
      () =>
        encoder.backward({
          dwte: wte,
          dwpe: wpe,
          dout: out,
          tokens: new Uint32Array([2, 3]),
        }),
      /token 3 at 1 is outside the vocabulary of 3/,
    );
    assert.throws(
      () => encoder.forward({ out, tokens, wte, wpe, posOffset: 1 }),
      /positions 1..2 are outside the 2 of wpe/,
    );
  },
);

Deno.test("token lists group positions by token in position order", () => {
  const lists = tokenLists(new Uint32Array([5, 2, 5, 9, 2, 5]));
  assert.deepEqual([...lists.unique], [2, 5, 9]);
  assert.deepEqual([...lists.offsets], [0, 2, 5, 6]);
  assert.deepEqual([...lists.positions], [1, 4, 0, 2, 5, 3]);
});

Deno.test("encoder reference gradients match finite differences", () => {
  const seed = freshSeed();
  const shape = { tokens: [1, 0, 1, 1], seq: 2, channels: 3, posOffset: 1 };
  const wte = Float64Array.from(randomArray(2 * 3, seed));
  const wpe = Float64Array.from(randomArray(3 * 3, seed + 1));
  const g = randomArray(4 * 3, seed + 2);
  const loss = (a: Float64Array, b: Float64Array) =>
    encoderForwardRef(shape, { wte: a, wpe: b }).reduce((s, v, i) => s + v * g[i], 0);
  const grads = { dwte: new Float64Array(6), dwpe: new Float64Array(9), dout: g };
  encoderBackwardRef(shape, grads);
  const h = 1e-6;
  for (const [which, grad] of [grads.dwte, grads.dwpe].entries()) {
    for (let i = 0; i < grad.length; i++) {
      const up = [Float64Array.from(wte), Float64Array.from(wpe)];
      const down = [Float64Array.from(wte), Float64Array.from(wpe)];
      up[which][i] += h;
      down[which][i] -= h;
      const fd = (loss(up[0], up[1]) - loss(down[0], down[1])) / (2 * h);
      assert(
        Math.abs(fd - grad[i]) < 1e-8,
        `grad ${which}[${i}] ${grad[i]} vs ${fd}, seed ${seed}`,
      );
    }
  }
});
