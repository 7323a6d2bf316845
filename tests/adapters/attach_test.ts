import assert from "node:assert/strict";
import {
  AdapterSet,
  type AttachConfig,
  globMatch,
  loraInitA,
  planAdapters,
} from "../../adapters/attach.ts";
import { AdamwKernels } from "../../kernels/adamw.ts";
import { Tensor } from "../../kernels/tensor.ts";
import { Gpt2 } from "../../models/gpt2.ts";
import { readGpt2Config } from "../../models/gpt2_config.ts";
import { gpt2Family } from "../../models/gpt2_family.ts";
import { GPU_TEST, rng, testGpu } from "../_util.ts";

const FIXTURE = "fixtures/tiny-gpt2";
const config = await readGpt2Config(FIXTURE);
const shape = gpt2Family.shape(config);
const C = config.nEmbd;
const QV = ["h.*.attn.c_attn.q", "h.*.attn.c_attn.v"];
const NOLA: AttachConfig = { method: "nola", targets: QV, r: 4, k: 32, loraAlpha: 8, seed: 7 };

Deno.test("glob patterns: '*' matches within one dotted component only", () => {
  assert(globMatch("h.*.attn.c_attn.q", "h.11.attn.c_attn.q"));
  assert(globMatch("h.*.mlp.c_*", "h.0.mlp.c_proj"));
  assert(globMatch("h.1*.attn.c_attn", "h.1.attn.c_attn"));
  assert(!globMatch("h.*.attn.c_attn", "h.0.attn.c_attn.q"));
  assert(!globMatch("h.*", "h.0.attn.c_attn"));
  assert(!globMatch("h.*.attn.c_attn.q", "h.0.attn.c_attn.k"));
  assert.throws(() => globMatch("h..attn", "h.0.attn"), /Invalid target pattern "h..attn"/);
  assert.throws(() => globMatch("h.[0].attn", "h.0.attn"), /Invalid target pattern/);
});

Deno.test("planAdapters selects q/v slices, whole c_attn and MLP linears in model order", () => {
  const qv = planAdapters(shape, NOLA);
  assert.deepEqual(qv.map((m) => [m.name, m.linear, m.colOffset, m.inFeatures, m.outFeatures]), [
    ["h.0.attn.c_attn.q", "h.0.attn.c_attn", 0, C, C],
    ["h.0.attn.c_attn.v", "h.0.attn.c_attn", 2 * C, C, C],
    ["h.1.attn.c_attn.q", "h.1.attn.c_attn", 0, C, C],
    ["h.1.attn.c_attn.v", "h.1.attn.c_attn", 2 * C, C, C],
  ]);
  assert(qv.every((m) => m.k === 32 && m.l === 32 && m.scale === 2 && m.init === "official"));
  assert(qv.every((m) => m.basisKey === m.name));

  const whole = planAdapters(shape, { ...NOLA, targets: ["h.1.attn.c_attn", "h.*.mlp.c_*"] });
  assert.deepEqual(whole.map((m) => [m.name, m.colOffset, m.inFeatures, m.outFeatures]), [
    ["h.0.mlp.c_fc", 0, C, 4 * C],
    ["h.0.mlp.c_proj", 0, 4 * C, C],
    ["h.1.attn.c_attn", 0, C, 3 * C],
    ["h.1.mlp.c_fc", 0, C, 4 * C],
    ["h.1.mlp.c_proj", 0, 4 * C, C],
  ]);
  // A module matched by two patterns is adapted once.
  assert.equal(planAdapters(shape, { ...NOLA, targets: [...QV, "h.0.attn.c_attn.q"] }).length, 4);
});

Deno.test("planAdapters refuses overlaps, unmatched patterns and bad settings with reasons", () => {
  assert.throws(
    () => planAdapters(shape, { ...NOLA, targets: ["h.0.attn.c_attn", "h.*.attn.c_attn.q"] }),
    {
      message: `Cannot attach adapters to both "h.0.attn.c_attn" and "h.0.attn.c_attn.q": ` +
        `they write the same columns of "h.0.attn.c_attn"`,
    },
  );
  assert.throws(() => planAdapters(shape, { ...NOLA, targets: ["h.*.attn.q"] }), {
    message: `Target "h.*.attn.q" matches no module; closest: "h.*.attn.c_attn", ` +
      `"h.*.attn.c_proj", "h.*.attn.c_attn.q"`,
  });
  assert.throws(
    () => planAdapters(shape, { ...NOLA, targets: ["h.2.attn.c_attn.q"] }),
    /Target "h.2.attn.c_attn.q" matches no module; closest: "h.\*.attn.c_attn.q", "h.0.attn/,
  );
  assert.throws(
    () => planAdapters(shape, { ...NOLA, overrides: [{ pattern: "h.*.mlp.c_fc", r: 2 }] }),
    /Override "h.\*.mlp.c_fc" matches no targeted module; closest: /,
  );
  assert.throws(() => planAdapters(shape, { ...NOLA, k: undefined }), /NOLA adapters need k/);
  assert.throws(() => planAdapters(shape, { ...NOLA, r: 0 }), /Invalid adapter r 0/);
  assert.throws(
    () => planAdapters(shape, { ...NOLA, rank: 4 } as AttachConfig),
    /Unknown adapter setting "rank"/,
  );
  assert.throws(
    () => planAdapters(shape, { ...NOLA, init: "zeros" as "official" }),
    /Invalid adapter init "zeros"/,
  );
  assert.throws(
    () => planAdapters(shape, { ...NOLA, method: "vera" as "nola" }),
    /Unknown adapter method "vera"/,
  );
});

Deno.test("overrides apply per module in order, later matches winning field by field", () => {
  const plan = planAdapters(shape, {
    ...NOLA,
    overrides: [
      { pattern: "h.1.*.*.*", r: 2, k: 16 },
      { pattern: "h.*.attn.c_attn.v", seed: 3, init: "uniform-coeffs" },
      { pattern: "h.1.attn.c_attn.v", r: 1, loraAlpha: 3 },
    ],
  });
  const by = Object.fromEntries(plan.map((m) => [m.name, m]));
  assert.deepEqual(
    ["h.0.attn.c_attn.q", "h.0.attn.c_attn.v", "h.1.attn.c_attn.q", "h.1.attn.c_attn.v"].map(
      (n) => {
        const { r, k, l, seed, init, scale } = by[n];
        return { r, k, l, seed, init, scale };
      },
    ),
    [
      { r: 4, k: 32, l: 32, seed: 7, init: "official", scale: 2 },
      { r: 4, k: 32, l: 32, seed: 3, init: "uniform-coeffs", scale: 2 },
      { r: 2, k: 16, l: 16, seed: 7, init: "official", scale: 4 },
      { r: 1, k: 16, l: 16, seed: 3, init: "uniform-coeffs", scale: 3 },
    ],
  );
});

Deno.test("shareBasis keys every layer's bases by the layer-generic name", () => {
  const plan = planAdapters(shape, { ...NOLA, shareBasis: true });
  assert.deepEqual(plan.map((m) => m.basisKey), [
    "h.*.attn.c_attn.q",
    "h.*.attn.c_attn.v",
    "h.*.attn.c_attn.q",
    "h.*.attn.c_attn.v",
  ]);
});

function tokens(n: number, seed: number): Uint32Array {
  const next = rng(seed);
  return Uint32Array.from({ length: n }, () => Math.floor(next() * config.vocabSize));
}

Deno.test(
  "attaching leaves the base frozen and official NOLA starts at dW = 0",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    using model = await Gpt2.load(gpu, FIXTURE);
    const batch = { B: 1, T: 5, tokens: tokens(5, 1) };
    const base = await model.forward(batch).logits.read();
    using set = await AdapterSet.attach(model, NOLA, { maxRows: 8 });
    assert.equal(model.grads, null);
    assert.equal(model.memory().gradients, 0);
    assert.deepEqual(
      [...model.adapters].map(([linear, list]) => [linear, list.map((a) => a.colOffset)]),
      [["h.0.attn.c_attn", [0, 2 * C]], ["h.1.attn.c_attn", [0, 2 * C]]],
    );
    assert.deepEqual(set.parameters().map((p) => p.name).slice(0, 2), [
      "h.0.attn.c_attn.q.alpha",
      "h.0.attn.c_attn.q.beta",
    ]);
    assert.deepEqual(await model.forward(batch).logits.read(), base);
    await assert.rejects(
      () => AdapterSet.attach(model, { ...NOLA, targets: ["h.0.attn.c_attn"] }, { maxRows: 8 }),
      /Cannot attach adapters to both "h.0.attn.c_attn.q" and "h.0.attn.c_attn"/,
    );
    set.detach();
    assert.equal(model.adapters.size, 0);
  },
);

Deno.test("shared bases give two layers the same A for the same alpha", GPU_TEST, async () => {
  const gpu = await testGpu();
  using model = await Gpt2.load(gpu, FIXTURE);
  const alpha = new Float32Array(32).map((_, i) => Math.sin(i + 1));
  const aOf = async (shareBasis: boolean) => {
    using set = await AdapterSet.attach(model, { ...NOLA, shareBasis }, { maxRows: 4 });
    for (const m of set.modules) gpu.write(m.nola!.alpha.buffer, alpha);
    set.prepareStep();
    return await Promise.all(set.modules.map((m) => m.adapter.a.read()));
  };
  const [q0, v0, q1, v1] = await aOf(true);
  assert.deepEqual(q0, q1);
  assert.deepEqual(v0, v1);
  assert.notDeepEqual(q0, v0);
  const [p0, , p1] = await aOf(false);
  assert.notDeepEqual(p0, p1);
});

Deno.test("LoRA: A is PEFT's kaiming-uniform from the seed, B is zero", GPU_TEST, async () => {
  const gpu = await testGpu();
  using model = await Gpt2.load(gpu, FIXTURE);
  const lora: AttachConfig = {
    method: "lora",
    targets: ["h.*.mlp.c_fc"],
    r: 8,
    loraAlpha: 16,
    seed: 5,
  };
  using set = await AdapterSet.attach(model, lora, { maxRows: 4 });
  assert.deepEqual(set.parameters().map((p) => p.name), [
    "h.0.mlp.c_fc.lora_A",
    "h.0.mlp.c_fc.lora_B",
    "h.1.mlp.c_fc.lora_A",
    "h.1.mlp.c_fc.lora_B",
  ]);
  const bound = 1 / Math.sqrt(C);
  const [a0, a1] = await Promise.all(set.modules.map((m) => m.adapter.a.read()));
  assert.deepEqual(a0, loraInitA(5, { name: "h.0.mlp.c_fc", r: 8, inFeatures: C }));
  assert.notDeepEqual(a0, a1);
  const all = [...a0, ...a1];
  assert(all.every((x) => x >= -bound * (1 + 1e-6) && x < bound * (1 + 1e-6)), "A within bound");
  const mean = all.reduce((s, x) => s + x, 0) / all.length;
  const variance = all.reduce((s, x) => s + (x - mean) ** 2, 0) / all.length;
  // 768 uniform draws: mean within ~4 standard errors, variance bound^2/3 within 10%.
  assert(Math.abs(mean) < 4 * bound / Math.sqrt(3 * all.length), `mean ${mean}`);
  assert(Math.abs(variance / (bound * bound / 3) - 1) < 0.1, `variance ${variance}`);
  for (const m of set.modules) assert((await m.adapter.b.read()).every((x) => x === 0));
});

async function train(gpu: Awaited<ReturnType<typeof testGpu>>, attach: AttachConfig, lr: number) {
  using model = await Gpt2.load(gpu, FIXTURE);
  const [B, T] = [2, 8];
  using set = await AdapterSet.attach(model, attach, { maxRows: B * T });
  const adamw = await AdamwKernels.load(gpu);
  const params = set.parameters();
  const state = params.map(({ param }) => {
    const m = Tensor.empty(gpu, param.shape);
    const v = Tensor.empty(gpu, param.shape);
    gpu.clear(m.buffer);
    gpu.clear(v.buffer);
    return { m, v };
  });
  using gradScale = Tensor.from(gpu, new Float32Array([1]), [1]);
  const seq = tokens(B * T + 1, 11);
  const batch = { B, T, tokens: seq.slice(0, B * T) };
  const targets = { targets: seq.slice(1) };
  const losses: number[] = [];
  for (let step = 1; step <= 20; step++) {
    set.zeroGrads();
    set.prepareStep();
    const acts = model.forward(batch);
    model.loss(targets, { backward: true });
    model.backward();
    set.finishBackward();
    params.forEach(({ param, grad }, i) =>
      adamw.update({ param, grad, gradScale, ...state[i] }, { step, lr })
    );
    if (step === 1 || step === 20) {
      const l = Array.from(await acts.losses.read());
      losses.push(l.reduce((s, x) => s + x, 0) / l.length);
    }
  }
  for (const { m, v } of state) [m, v].forEach((t) => t[Symbol.dispose]());
  assert.equal(model.grads, null);
  return losses;
}

Deno.test(
  "20 AdamW steps in the documented order lower the loss (NOLA and LoRA)",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const [first, last] = await train(gpu, NOLA, 5e-2);
    assert(last < first - 0.05, `NOLA loss ${first} -> ${last}`);
    const lora: AttachConfig = { method: "lora", targets: QV, r: 4, loraAlpha: 8, seed: 1 };
    const [lFirst, lLast] = await train(gpu, lora, 1e-2);
    assert(lLast < lFirst - 0.05, `LoRA loss ${lFirst} -> ${lLast}`);
  },
);
