import assert from "node:assert/strict";
import { AdapterSet } from "../../adapters/attach.ts";
import { mergeAdapters } from "../../adapters/merge.ts";
import { exportPeft } from "../../adapters/peft.ts";
import { evalLabelledBatches, type LabelledExample, TrainBatches } from "../../data/batches.ts";
import { evaluateAccuracy, evaluateLoss } from "../../eval/evaluate.ts";
import { SafetensorsFile } from "../../formats/safetensors.ts";
import { familyOf, parseModelConfig } from "../../models/registry.ts";
import { ModelConfigError } from "../../models/model.ts";
import { RunLog } from "../../train/run_log.ts";
import { train } from "../../train/trainer.ts";
import {
  freshSeed,
  GPU_TEST,
  randomArray,
  relativeError,
  rng,
  testGpu,
  withTempDir,
} from "../_util.ts";
import { ToyClassifier, type ToyConfig } from "./_toy_classifier.ts";

const CONFIG: ToyConfig = { inputs: 5, hidden: 7, classes: 3 };

function toyWeights(seed: number) {
  const { inputs: D, hidden: H, classes: C } = CONFIG;
  const scaled = (n: number, s: number, k: number) => randomArray(n, s).map((v) => v * k);
  return {
    "fc1.weight": scaled(H * D, seed, 0.5),
    "fc1.bias": scaled(H, seed + 1, 0.1),
    "fc2.weight": scaled(C * H, seed + 2, 0.5),
    "fc2.bias": scaled(C, seed + 3, 0.1),
  };
}

// Three Gaussian-ish blobs in 5 dimensions: class c is centred on +-1.5 along axis c.
function blobs(n: number, seed: number): LabelledExample[] {
  const next = rng(seed);
  return Array.from({ length: n }, (_, i) => {
    const label = i % 3;
    const input = Float32Array.from({ length: CONFIG.inputs }, () => (next() - 0.5) * 1.2);
    input[label] += 1.5;
    input[3] -= label - 1;
    return { input, label };
  });
}

// Float64 logits of the toy network with merged weights W (row-major [out, in]).
function hostLogits(w: Record<string, ArrayLike<number>>, x: ArrayLike<number>): number[] {
  const { inputs: D, hidden: H, classes: C } = CONFIG;
  const gelu = (v: number) =>
    0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
  const g = Array.from({ length: H }, (_, h) => {
    let s = w["fc1.bias"][h];
    for (let d = 0; d < D; d++) s += w["fc1.weight"][h * D + d] * x[d];
    return gelu(s);
  });
  return Array.from({ length: C }, (_, c) => {
    let s = w["fc2.bias"][c];
    for (let h = 0; h < H; h++) s += w["fc2.weight"][c * H + h] * g[h];
    return s;
  });
}

Deno.test(
  "a classification model trains through the generic trainer with NOLA on its [out, in] linears",
  GPU_TEST,
  async () => {
    const seed = freshSeed();
    const gpu = await testGpu();
    const weights = toyWeights(seed);
    using model = await ToyClassifier.create(gpu, CONFIG, weights);
    const data = blobs(61, seed + 7);
    const inputShape = [CONFIG.inputs];
    const before = await evaluateLoss(model, evalLabelledBatches(data, { B: 8, inputShape }));

    // The labelled path against float64: per-example cross-entropy of the base network.
    let hostLoss = 0;
    for (const e of data) {
      const z = hostLogits(weights, e.input);
      const max = Math.max(...z);
      hostLoss += max + Math.log(z.reduce((s, v) => s + Math.exp(v - max), 0)) - z[e.label];
    }
    assert(
      Math.abs(before.loss - hostLoss / data.length) < 1e-5 * Math.max(1, before.loss),
      `seed ${seed}: loss ${before.loss} vs float64 ${hostLoss / data.length}`,
    );
    assert.equal(before.tokens, data.length);

    using set = await AdapterSet.attach(model, {
      method: "nola",
      targets: ["fc1", "fc2"],
      r: 2,
      k: 24,
      loraAlpha: 2,
      seed: 3,
    }, { maxRows: 8 });
    await withTempDir("toy-train", async (dir) => {
      using log = await RunLog.open(dir);
      const steps = 60;
      const result = await train({
        model,
        groups: [{ kind: "adamw", lr: 0.1, params: set.parameters() }],
        hooks: set,
        batches: new TrainBatches(data, { B: 8, inputShape, seed: 5, steps }),
        schedule: { kind: "constant", lr: 0.1, totalSteps: steps },
        log,
        logEvery: 10,
        checkpointEvery: 0,
      });
      assert.equal(result.steps, steps);
    });
    set.prepareStep();
    const after = await evaluateLoss(model, evalLabelledBatches(data, { B: 8, inputShape }));
    assert(after.loss < 0.8 * before.loss, `seed ${seed}: loss ${before.loss} -> ${after.loss}`);

    // Accuracy against an independent argmax over the logits read back example by example.
    const measured = await evaluateAccuracy(model, evalLabelledBatches(data, { B: 8, inputShape }));
    let correct = 0;
    for (const batch of evalLabelledBatches(data, { B: 8, inputShape })) {
      const logits = await model.forward(batch).logits.read();
      for (let b = 0; b < batch.B; b++) {
        if (batch.mask[b] === 0) continue;
        const row = Array.from(logits.subarray(b * 3, b * 3 + 3));
        if (row.indexOf(Math.max(...row)) === batch.targets[b]) correct++;
      }
    }
    assert.equal(measured.n, data.length);
    assert.equal(measured.correct, correct);
    assert(Math.abs(measured.accuracy - (100 * correct) / data.length) < 1e-9);
  },
);

Deno.test(
  "merge and PEFT export follow a family's [out, in] layout and PEFT naming",
  GPU_TEST,
  async () => {
    const seed = freshSeed();
    const gpu = await testGpu();
    using model = await ToyClassifier.create(gpu, CONFIG, toyWeights(seed));
    using set = await AdapterSet.attach(model, {
      method: "lora",
      targets: ["fc1", "fc2"],
      r: 3,
      loraAlpha: 6,
      seed: 1,
    }, { maxRows: 8 });
    // LoRA's B starts at zero: give both factors values so the delta is not trivial.
    for (const m of set.modules) {
      gpu.write(m.adapter.b.buffer, randomArray(m.adapter.b.size, seed + m.r + m.inFeatures));
    }
    const x = blobs(5, seed);
    const batch = {
      kind: "labelled" as const,
      B: 5,
      inputShape: [5],
      inputs: new Float32Array(25),
    };
    x.forEach((e, i) => batch.inputs.set(e.input, i * 5));
    const adapted = await model.forward(batch).logits.read();

    await withTempDir("toy-peft", async (dir) => {
      await exportPeft(model, `${dir}/peft`, { baseModelName: "toy" });
      const config = JSON.parse(await Deno.readTextFile(`${dir}/peft/adapter_config.json`));
      assert.equal(config.fan_in_fan_out, false);
      assert.equal(config.task_type, "SEQ_CLS");
      assert.deepEqual(config.target_modules, ["fc1", "fc2"]);
      using file = await SafetensorsFile.open(`${dir}/peft/adapter_model.safetensors`);
      assert.deepEqual(file.info("base_model.model.fc1.lora_A.weight").shape, [3, 5]);
      assert.deepEqual(file.info("base_model.model.fc2.lora_B.weight").shape, [3, 3]);

      // PEFT's formula in float64: W + (lora_alpha / r) B A with [out, in] weights.
      const merged: Record<string, Float64Array | Float32Array> = {};
      for (const name of ["fc1", "fc2"]) {
        const w = await model.params.get(`${name}.weight`)!.read() as Float32Array;
        const [outF, inF] = model.params.get(`${name}.weight`)!.shape;
        const a = await file.readFloat32(`base_model.model.${name}.lora_A.weight`);
        const b = await file.readFloat32(`base_model.model.${name}.lora_B.weight`);
        const scale = config.lora_alpha / config.r;
        const out = Float64Array.from(w);
        for (let o = 0; o < outF; o++) {
          for (let i = 0; i < inF; i++) {
            for (let j = 0; j < config.r; j++) {
              out[o * inF + i] += scale * b[o * config.r + j] * a[j * inF + i];
            }
          }
        }
        merged[`${name}.weight`] = out;
        merged[`${name}.bias`] = await model.params.get(`${name}.bias`)!.read() as Float32Array;
      }
      const host = x.flatMap((e) => hostLogits(merged, e.input));
      assert(relativeError(adapted, host) < 1e-5, `seed ${seed}: PEFT formula vs adapted logits`);
    });

    mergeAdapters(model);
    const after = await model.forward(batch).logits.read();
    assert(relativeError(after, adapted) < 1e-5, `seed ${seed}: merged vs adapted logits`);
  },
);

Deno.test("the registry resolves a family by model_type or architectures, and names the supported ones", () => {
  assert.equal(familyOf({ model_type: "gpt2" }, "a/config.json").modelType, "gpt2");
  assert.equal(familyOf({ architectures: ["GPT2LMHeadModel"] }, "b/config.json").modelType, "gpt2");
  assert.throws(
    () => familyOf({ model_type: "bert" }, "c/config.json"),
    (e: unknown) =>
      e instanceof ModelConfigError && e.key === "model_type" &&
      e.message ===
        `Unsupported model_type "bert" in "c/config.json": supported are "gpt2", "llama", ` +
          `"mistral", "qwen2", "vit"`,
  );
  assert.throws(
    () => familyOf({}, "d/config.json"),
    /no "model_type" \(supported are "gpt2", "llama", "mistral", "qwen2", "vit"\)/,
  );
  assert.throws(() => familyOf([], "e/config.json"), /expected a JSON object/);
  const parsed = parseModelConfig({
    model_type: "gpt2",
    n_layer: 3,
    n_head: 2,
    n_embd: 10,
    n_positions: 16,
    vocab_size: 37,
    layer_norm_epsilon: 1e-5,
    activation_function: "gelu_new",
  }, "f/config.json");
  const shape = parsed.family.shape(parsed.config);
  assert.equal(shape.sites.length, 3 * 7);
  assert.deepEqual(shape.sites.find((s) => s.name === "h.2.attn.c_attn.v"), {
    name: "h.2.attn.c_attn.v",
    linear: "h.2.attn.c_attn",
    colOffset: 20,
    inFeatures: 10,
    outFeatures: 10,
  });
});
