import assert from "node:assert/strict";
import { evalLabelledBatches } from "../../data/batches.ts";
import { evaluateAccuracy } from "../../eval/evaluate.ts";
import { SafetensorsFile } from "../../formats/safetensors.ts";
import type { Model } from "../../models/model.ts";
import { initModel, loadModel, readModelConfig } from "../../models/registry.ts";
import { Vit } from "../../models/vit.ts";
import { Optimizer } from "../../train/optimizer.ts";
import { GPU_TEST, relativeError, testGpu, withTempDir } from "../_util.ts";

const HF = "fixtures/tiny-vit";
const TIMM = "fixtures/tiny-vit-timm";

async function golden(folder: string) {
  using file = await SafetensorsFile.open(`${folder}/golden.safetensors`);
  const grads = new Map<string, Float32Array>();
  for (const name of file.names()) {
    if (name.startsWith("grad.")) grads.set(name.slice(5), await file.readFloat32(name));
  }
  const shape = file.info("pixels").shape;
  return {
    B: shape[0],
    inputShape: shape.slice(1),
    pixels: await file.readFloat32("pixels"),
    labels: new Uint32Array(new Int32Array((await file.readBytes("labels")).slice().buffer)),
    logits: await file.readFloat32("logits"),
    loss: (await file.readFloat32("loss"))[0],
    losses: await file.readFloat32("losses"),
    grads,
    labelSmoothing: JSON.parse(file.metadata.label_smoothing),
    optimizer: JSON.parse(file.metadata.optimizer),
  };
}

type Golden = Awaited<ReturnType<typeof golden>>;

const KEY_BIAS = /attention\.attention\.key\.bias$/;

function norm(values: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += values[i] * values[i];
  return Math.sqrt(sum);
}

function mean(values: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += values[i];
  return sum / values.length;
}

// The first `classes` of each `stride`-wide row.
function unpad(logits: Float32Array, rows: number, classes: number, stride: number): Float32Array {
  const out = new Float32Array(rows * classes);
  for (let r = 0; r < rows; r++) {
    out.set(logits.subarray(r * stride, r * stride + classes), r * classes);
  }
  return out;
}

function batchOf(ref: Golden) {
  return { kind: "labelled" as const, B: ref.B, inputShape: ref.inputShape, inputs: ref.pixels };
}

async function checkAgainstGolden(t: Deno.TestContext, model: Model, ref: Golden): Promise<void> {
  const gpu = model.gpu;
  const batch = batchOf(ref);
  const targets = { targets: ref.labels, labelSmoothing: ref.labelSmoothing };
  const acts = model.forward(batch);
  const logits = unpad(
    await acts.logits.read() as Float32Array,
    ref.B,
    model.outputs,
    acts.logitsStride,
  );
  const logitsErr = relativeError(logits, ref.logits);
  model.loss(targets, { backward: true });
  const loss = mean(await acts.losses.read());
  model.backward();

  await t.step(`logits within 1e-5 (${logitsErr.toExponential(2)}) and loss`, () => {
    assert(logitsErr < 1e-5, `logits relative error ${logitsErr}`);
    assert(Math.abs(loss - ref.loss) / ref.loss < 1e-5, `loss ${loss} vs ${ref.loss}`);
  });

  const worst = { name: "", err: 0 };
  const failures: string[] = [];
  for (const [name, want] of ref.grads) {
    const grad = model.grads!.get(name);
    if (!grad) {
      failures.push(`${name}: no gradient`);
      continue;
    }
    const got = await grad.read();
    // The key bias's gradient is zero in exact arithmetic (softmax ignores a shift common to all
    // of a query's scores): both sides are rounding noise, so it is held against the value bias's.
    const err = KEY_BIAS.test(name)
      ? Math.max(norm(got), norm(want)) / norm(ref.grads.get(name.replace("key", "value"))!)
      : relativeError(got, want);
    if (err > worst.err) Object.assign(worst, { name, err });
    if (!(err < 1e-4)) failures.push(`${name}: ${err.toExponential(2)}`);
  }
  await t.step(
    `every gradient within 1e-4 (worst ${worst.name}: ${worst.err.toExponential(2)})`,
    () => {
      assert.equal(ref.grads.size, model.params.size);
      assert.deepEqual(failures, []);
    },
  );

  // Ten AdamW steps through the project's optimizer, every weight trained.
  const opt = ref.optimizer;
  using optimizer = await Optimizer.create(gpu, [{
    name: "all",
    kind: "adamw",
    lr: opt.lr,
    betas: opt.betas,
    eps: opt.eps,
    weightDecay: opt.weight_decay,
    params: [...model.params].map(([name, param]) => ({
      name,
      param,
      grad: model.grads!.get(name)!,
    })),
  }]);
  const losses: number[] = [];
  for (let step = 0; step < ref.losses.length; step++) {
    model.zeroGrads();
    const a = model.forward(batch);
    model.loss(targets, { backward: true });
    model.backward();
    optimizer.step(1);
    losses.push(mean(await a.losses.read()));
  }
  await t.step("ten AdamW steps' losses within 1e-3", () => {
    for (let i = 0; i < losses.length; i++) {
      const err = Math.abs(losses[i] - ref.losses[i]) / ref.losses[i];
      assert(err < 1e-3, `step ${i}: ${losses[i]} vs ${ref.losses[i]} (${err})`);
    }
  });
}

Deno.test(
  "ViT (Hugging Face layout) matches the PyTorch dump: logits, loss, every gradient, ten AdamW steps",
  GPU_TEST,
  async (t) => {
    const gpu = await testGpu();
    using model = await Vit.load(gpu, HF, { trainAll: true });
    await checkAgainstGolden(t, model, await golden(HF));
  },
);

Deno.test(
  "ViT (timm layout) matches the PyTorch dump: logits, loss, every gradient, ten AdamW steps",
  GPU_TEST,
  async (t) => {
    const gpu = await testGpu();
    using model = await loadModel(gpu, TIMM, { trainAll: true });
    assert(model instanceof Vit && model.config.layout === "timm");
    await checkAgainstGolden(t, model, await golden(TIMM));
  },
);

Deno.test("ViT's two layouts of the same weights give the same logits", GPU_TEST, async () => {
  const gpu = await testGpu();
  const ref = await golden(HF);
  using hf = await loadModel(gpu, HF);
  using timm = await loadModel(gpu, TIMM);
  const read = async (m: Model) => {
    const acts = m.forward(batchOf(ref));
    return unpad(await acts.logits.read() as Float32Array, ref.B, m.outputs, acts.logitsStride);
  };
  const [a, b] = [await read(hf), await read(timm)];
  assert.deepEqual(a, b);
  assert.equal(hf.configHash === timm.configHash, false, "the layouts hash apart (sites differ)");
});

Deno.test(
  "ViT's sites are Hugging Face module names, or timm's with q/k/v slices",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    using hf = await loadModel(gpu, HF);
    using timm = await loadModel(gpu, TIMM);
    const names = (m: Model) => m.sites.filter((s) => s.name.includes(".0.")).map((s) => s.name);
    assert.deepEqual(names(hf), [
      "encoder.layer.0.attention.attention.query",
      "encoder.layer.0.attention.attention.key",
      "encoder.layer.0.attention.attention.value",
      "encoder.layer.0.attention.output.dense",
      "encoder.layer.0.intermediate.dense",
      "encoder.layer.0.output.dense",
    ]);
    assert.deepEqual(names(timm), [
      "blocks.0.attn.qkv",
      "blocks.0.attn.qkv.q",
      "blocks.0.attn.qkv.k",
      "blocks.0.attn.qkv.v",
      "blocks.0.attn.proj",
      "blocks.0.mlp.fc1",
      "blocks.0.mlp.fc2",
    ]);
    const v = timm.sites.find((s) => s.name === "blocks.1.attn.qkv.v")!;
    assert.deepEqual([v.linear, v.colOffset, v.inFeatures, v.outFeatures], [
      "blocks.1.attn.qkv",
      48,
      24,
      24,
    ]);
    assert.equal(hf.linearWeight("encoder.layer.1.intermediate.dense")?.outFeatures, 40);
    assert.equal(hf.linearWeight("classifier"), undefined);
    assert.equal(hf.peft.modulePrefix, "vit.");
    assert.deepEqual(hf.summary(), {
      modelType: "vit",
      layers: 2,
      width: 24,
      heads: 3,
      positions: 10,
      outputs: 5,
      parameters: [...hf.params.values()].reduce((s, p) => s + p.size, 0),
    });
  },
);

Deno.test("ViT refuses token batches, a cache and images of another shape", GPU_TEST, async () => {
  const gpu = await testGpu();
  using model = await loadModel(gpu, HF);
  assert.throws(
    () => model.forward({ B: 1, T: 3, tokens: new Uint32Array(3) }),
    /takes labelled image batches/,
  );
  const inputs = new Float32Array(3 * 16 * 16);
  assert.throws(
    () => model.forward({ kind: "labelled", B: 1, inputShape: [3, 16, 16], inputs }),
    /Images of shape \[3, 16, 16\] do not fit this ViT: it takes \[3, 12, 12\]/,
  );
  assert.throws(
    () =>
      model.forward({
        kind: "labelled",
        B: 2,
        inputShape: [3, 12, 12],
        inputs: new Float32Array(10),
      }),
    /Batch has 10 values, expected B \* C \* H \* W = 864/,
  );
  assert.throws(() => model.newCache(4), /does not generate text/);
});

Deno.test("ViT saved in each layout loads back and classifies identically", GPU_TEST, async () => {
  const gpu = await testGpu();
  const ref = await golden(HF);
  for (const source of [HF, TIMM]) {
    await withTempDir("vit-save", async (dir) => {
      using model = await loadModel(gpu, source);
      await model.save(dir, { tokenizerFrom: source });
      using again = await loadModel(gpu, dir);
      assert.equal(again.configHash, model.configHash);
      const logits = async (m: Model) => await m.forward(batchOf(ref)).logits.read();
      assert.deepEqual(await logits(again), await logits(model));
    });
  }
});

Deno.test(
  "a ViT initialised from a config alone has every weight and a zero head",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    for (const folder of [HF, TIMM]) {
      const config = await readModelConfig(folder);
      using loaded = await loadModel(gpu, folder);
      using fresh = await initModel(gpu, config, { seed: 3 });
      assert.deepEqual([...fresh.params.keys()], [...loaded.params.keys()]);
      for (const [name, t] of fresh.params) {
        assert.deepEqual(
          t.shape,
          loaded.params.get(name)!.shape,
        );
      }
      assert.equal(fresh.configHash, loaded.configHash);
      const ref = await golden(HF);
      const acts = fresh.forward(batchOf(ref));
      assert.deepEqual(
        unpad(await acts.logits.read() as Float32Array, ref.B, 5, acts.logitsStride),
        new Float32Array(ref.B * 5),
      );
      // The same seed draws the same weights.
      using again = await initModel(gpu, config, { seed: 3 });
      const name = [...fresh.params.keys()][2];
      assert.deepEqual(await again.params.get(name)!.read(), await fresh.params.get(name)!.read());
    }
  },
);

Deno.test(
  "evaluateAccuracy on a ViT counts the PyTorch logits' argmax hits",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const ref = await golden(HF);
    using model = await loadModel(gpu, HF);
    const size = ref.pixels.length / ref.B;
    const examples = Array.from({ length: ref.B }, (_, b) => ({
      input: ref.pixels.slice(b * size, (b + 1) * size),
      label: ref.labels[b],
    }));
    let correct = 0;
    for (let b = 0; b < ref.B; b++) {
      const row = Array.from(ref.logits.subarray(b * 5, b * 5 + 5));
      if (row.indexOf(Math.max(...row)) === ref.labels[b]) correct++;
    }
    // Batches of 2: the last is padded, and padding must not count.
    const measured = await evaluateAccuracy(
      model,
      evalLabelledBatches(examples, { B: 2, inputShape: ref.inputShape }),
    );
    assert.deepEqual([measured.correct, measured.n], [correct, ref.B]);
  },
);
