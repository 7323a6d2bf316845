import assert from "node:assert/strict";
import { adamwRef } from "../../kernels/adamw_ref.ts";
import type { Gpu } from "../../kernels/gpu.ts";
import { gradnormRef } from "../../kernels/gradnorm_ref.ts";
import { sgdRef } from "../../kernels/sgd_ref.ts";
import { Tensor } from "../../kernels/tensor.ts";
import { Optimizer, type ParamGroup } from "../../train/optimizer.ts";
import { freshSeed, GPU_TEST, randomArray, relativeError, testGpu } from "../_util.ts";

const SIZES = { a1: 17, a2: 255, s1: 3, s2: 1023 };
const FACTORS = [0.5, 1, 0.75, 0.25, 0.6];

interface Setup {
  params: Map<string, { param: Tensor; grad: Tensor }>;
  groups: ParamGroup[];
  [Symbol.dispose](): void;
}

// Two groups, AdamW on "a*" and Nesterov SGD on "s*", parameters from `init` (name -> values).
function setup(gpu: Gpu, init: (name: string, n: number) => Float32Array): Setup {
  const params = new Map<string, { param: Tensor; grad: Tensor }>();
  for (const [name, n] of Object.entries(SIZES)) {
    params.set(name, {
      param: Tensor.from(gpu, init(name, n), [n]),
      grad: Tensor.empty(gpu, [n], { persistent: true }),
    });
  }
  const list = (prefix: string) =>
    [...params].filter(([name]) => name.startsWith(prefix)).map(([name, t]) => ({ name, ...t }));
  const groups: ParamGroup[] = [
    {
      name: "coefficients",
      kind: "adamw",
      lr: 1e-2,
      weightDecay: 0.1,
      betas: [0.9, 0.95],
      params: list("a"),
    },
    {
      name: "head",
      kind: "sgd",
      lr: 5e-2,
      momentum: 0.9,
      nesterov: true,
      weightDecay: 0.01,
      params: list("s"),
    },
  ];
  return {
    params,
    groups,
    [Symbol.dispose]() {
      for (const { param, grad } of params.values()) {
        param[Symbol.dispose]();
        grad[Symbol.dispose]();
      }
    },
  };
}

function gradients(seed: number, step: number): Map<string, Float32Array> {
  return new Map(
    Object.entries(SIZES).map(([name, n], k) => [name, randomArray(n, seed + 7919 * step + k)]),
  );
}

function upload(gpu: Gpu, s: Setup, grads: Map<string, Float32Array>): void {
  for (const [name, g] of grads) gpu.write(s.params.get(name)!.grad.buffer, g);
}

for (const clipping of ["inactive", "active"] as const) {
  Deno.test(
    `optimizer over AdamW and SGD groups matches float64 with clipping ${clipping}`,
    GPU_TEST,
    async () => {
      const gpu = await testGpu();
      const seed = freshSeed();
      const init = new Map(
        Object.entries(SIZES).map(([name, n], k) => [
          name,
          randomArray(n, seed + 100 + k),
        ]),
      );
      using s = setup(gpu, (name) => init.get(name)!);
      // Raw gradient norms here are about sqrt(1313 / 3) ~ 21.
      const maxGradNorm = clipping === "active" ? 2 : 1000;
      using optimizer = await Optimizer.create(gpu, s.groups, { maxGradNorm });
      const ref = new Map([...init].map(([name, p]) => [name, {
        param: Float64Array.from(p),
        m: new Float64Array(p.length),
        v: new Float64Array(p.length),
        buf: new Float64Array(p.length),
      }]));
      for (const [step, factor] of FACTORS.entries()) {
        const grads = gradients(seed, step);
        upload(gpu, s, grads);
        optimizer.step(factor);
        const { norm, gradScale } = gradnormRef([...grads.values()], { maxNorm: maxGradNorm });
        assert.equal(gradScale < 1, clipping === "active", `seed=${seed} scale ${gradScale}`);
        for (const [name, r] of ref) {
          const grad = grads.get(name)!;
          if (name.startsWith("a")) {
            adamwRef({ ...r, grad }, {
              step: step + 1,
              lr: 1e-2 * factor,
              beta1: 0.9,
              beta2: 0.95,
              weightDecay: 0.1,
              gradScale,
            });
          } else {
            sgdRef({ ...r, grad }, {
              lr: 5e-2 * factor,
              momentum: 0.9,
              nesterov: true,
              weightDecay: 0.01,
              first: step === 0,
              gradScale,
            });
          }
        }
        const logged = await optimizer.lastGradNorm();
        assert(Math.abs(logged - norm) < 1e-5 * norm, `seed=${seed} norm ${logged} vs ${norm}`);
      }
      assert.equal(optimizer.stepCount, FACTORS.length);
      for (const [name, r] of ref) {
        const got = await s.params.get(name)!.param.read();
        const err = relativeError(got, r.param);
        assert(err < 1e-5, `seed=${seed} ${name}: relative error ${err}`);
      }
    },
  );
}

Deno.test("optimizer state() then load() resumes bit for bit", GPU_TEST, async () => {
  const gpu = await testGpu();
  const seed = freshSeed();
  const init = (name: string, n: number) => randomArray(n, seed + name.charCodeAt(1) * 31);
  const options = { maxGradNorm: 2 };
  const stop = 2;
  // Uninterrupted run.
  using whole = setup(gpu, init);
  using straight = await Optimizer.create(gpu, whole.groups, options);
  // Interrupted run: a checkpoint after `stop` steps, then a fresh optimizer and fresh tensors.
  using first = setup(gpu, init);
  using before = await Optimizer.create(gpu, first.groups, options);
  for (const [step, factor] of FACTORS.entries()) {
    upload(gpu, whole, gradients(seed, step));
    straight.step(factor);
    if (step < stop) {
      upload(gpu, first, gradients(seed, step));
      before.step(factor);
    }
  }
  const state = await before.state();
  assert.equal(state.step, stop);
  assert.deepEqual([...state.tensors.keys()].sort(), [
    "a1.exp_avg",
    "a1.exp_avg_sq",
    "a2.exp_avg",
    "a2.exp_avg_sq",
    "s1.momentum_buffer",
    "s2.momentum_buffer",
  ]);
  const saved = new Map<string, Float32Array>();
  for (const [name, t] of first.params) saved.set(name, (await t.param.read()) as Float32Array);
  using second = setup(gpu, (name) => saved.get(name)!);
  using after = await Optimizer.create(gpu, second.groups, options);
  after.load(state);
  assert.equal(after.stepCount, stop);
  for (let step = stop; step < FACTORS.length; step++) {
    upload(gpu, second, gradients(seed, step));
    after.step(FACTORS[step]);
  }
  for (const [name, t] of whole.params) {
    const want = new Uint32Array((await t.param.read()).buffer);
    const got = new Uint32Array((await second.params.get(name)!.param.read()).buffer);
    assert.deepEqual(got, want, `seed=${seed} ${name}: resumed parameters differ`);
  }
  const a = await straight.state();
  const b = await after.state();
  for (const [name, data] of a.tensors) {
    assert.deepEqual(new Uint32Array(b.tensors.get(name)!.buffer), new Uint32Array(data.buffer));
  }
});

Deno.test("optimizer reports a NaN norm for a NaN gradient", GPU_TEST, async () => {
  const gpu = await testGpu();
  using s = setup(gpu, (_, n) => new Float32Array(n));
  using optimizer = await Optimizer.create(gpu, s.groups, {});
  assert(Number.isNaN(await optimizer.lastGradNorm()), "before the first step");
  const grads = gradients(1, 0);
  grads.get("s2")![500] = NaN;
  upload(gpu, s, grads);
  optimizer.step(1);
  assert(Number.isNaN(await optimizer.lastGradNorm()));
});

Deno.test("optimizer rejects bad groups and mismatched state by name", GPU_TEST, async () => {
  const gpu = await testGpu();
  using s = setup(gpu, (_, n) => new Float32Array(n));
  const [adam, sgd] = s.groups;
  const bad: [ParamGroup[], RegExp][] = [
    [[{ ...adam, kind: "lion" as "sgd" }], /"coefficients" "kind"/],
    [[{ ...adam, lr: -1 }], /"lr"/],
    [[{ ...adam, momentum: 0.9 }], /"momentum" does not apply to adamw/],
    [[{ ...sgd, nesterov: true, momentum: 0 }], /"nesterov"/],
    [[{ ...adam, betas: [0.9, 1] }], /"betas"/],
    [[{ ...adam, lr_scale: 2 } as ParamGroup], /"lr_scale" is not a group field/],
    [[adam, { ...sgd, params: adam.params }], /repeats the name "a1"/],
    [[{ ...sgd, params: [{ ...sgd.params[0], grad: adam.params[0].grad }] }], /need f32 of one/],
  ];
  for (const [groups, message] of bad) {
    await assert.rejects(Optimizer.create(gpu, groups), message);
  }
  await assert.rejects(Optimizer.create(gpu, [adam], { maxGradNorm: -1 }), /"maxGradNorm"/);
  using optimizer = await Optimizer.create(gpu, s.groups);
  upload(gpu, s, gradients(2, 0));
  optimizer.step(1);
  const state = await optimizer.state();
  using fresh = await Optimizer.create(gpu, s.groups);
  const missing = new Map(state.tensors);
  missing.delete("a2.exp_avg");
  assert.throws(() => fresh.load({ step: 1, tensors: missing }), /lacks tensor "a2.exp_avg"/);
  const extra = new Map(state.tensors).set("zz.exp_avg", new Float32Array(1));
  assert.throws(() => fresh.load({ step: 1, tensors: extra }), /"zz.exp_avg"/);
  const short = new Map(state.tensors).set("s1.momentum_buffer", new Float32Array(2));
  assert.throws(() => fresh.load({ step: 1, tensors: short }), /2 values/);
  assert.throws(() => optimizer.step(NaN), /lrFactor/);
});
