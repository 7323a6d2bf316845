import assert from "node:assert/strict";
import { AdapterSet, planAdapters } from "../../adapters/attach.ts";
import { mergeAdapters } from "../../adapters/merge.ts";
import { exportPeft } from "../../adapters/peft.ts";
import { SafetensorsFile } from "../../formats/safetensors.ts";
import { Llama } from "../../models/llama.ts";
import { loadLlamaWeights } from "../../models/llama_weights.ts";
import {
  familyOf,
  initModel,
  loadModel,
  modelShape,
  readModelConfig,
} from "../../models/registry.ts";
import type { Model } from "../../models/model.ts";
import { Optimizer } from "../../train/optimizer.ts";
import { GPU_TEST, relativeError, testGpu, withTempDir } from "../_util.ts";

const FIXTURES = ["fixtures/tiny-llama", "fixtures/tiny-qwen2"];

async function golden(folder: string) {
  using file = await SafetensorsFile.open(`${folder}/golden.safetensors`);
  const ints = async (name: string) =>
    new Uint32Array(new Int32Array((await file.readBytes(name)).slice().buffer));
  const grads = new Map<string, Float32Array>();
  for (const name of file.names()) {
    if (name.startsWith("grad.")) grads.set(name.slice(5), await file.readFloat32(name));
  }
  const [B, T] = file.info("tokens").shape;
  return {
    B,
    T,
    tokens: await ints("tokens"),
    targets: await ints("targets"),
    logits: await file.readFloat32("logits"),
    loss: (await file.readFloat32("loss"))[0],
    losses: await file.readFloat32("losses"),
    grads,
    optimizer: JSON.parse(file.metadata.optimizer ?? "{}"),
  };
}

function mean(values: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += values[i];
  return sum / values.length;
}

// The first `V` columns of each of `rows` rows `stride` apart.
function unpad(logits: Float32Array, rows: number, V: number, stride: number): Float32Array {
  const out = new Float32Array(rows * V);
  for (let r = 0; r < rows; r++) out.set(logits.subarray(r * stride, r * stride + V), r * V);
  return out;
}

async function meanLoss(model: Model, tokens: Uint32Array, targets: Uint32Array, T: number) {
  const B = tokens.length / T;
  model.forward({ B, T, tokens });
  return mean(await model.loss({ targets }).read());
}

for (const folder of FIXTURES) {
  Deno.test(
    `${folder} matches the PyTorch dump: logits, loss, every gradient, ten AdamW steps`,
    GPU_TEST,
    async (t) => {
      const gpu = await testGpu();
      const ref = await golden(folder);
      using model = await Llama.fromWeights(gpu, await loadLlamaWeights(folder), {
        trainAll: true,
      });
      const batch = { B: ref.B, T: ref.T, tokens: ref.tokens };
      const V = model.outputs;
      const acts = model.forward(batch);
      const logits = unpad(
        await acts.logits.read() as Float32Array,
        ref.B * ref.T,
        V,
        acts.logitsStride,
      );
      const logitsErr = relativeError(logits, ref.logits);
      model.loss({ targets: ref.targets }, { backward: true });
      const loss = mean(await acts.losses.read());
      model.backward();

      await t.step(`logits (${logitsErr.toExponential(2)}) and loss within 1e-5`, () => {
        assert(logitsErr < 1e-5, `logits relative error ${logitsErr}`);
        const err = Math.abs(loss - ref.loss) / Math.abs(ref.loss);
        assert(err < 1e-5, `loss ${loss} vs ${ref.loss}`);
      });

      const worst = { name: "", err: 0 };
      const failures: string[] = [];
      for (const [name, want] of ref.grads) {
        const got = await model.grads!.get(name)!.read();
        const err = relativeError(got, want);
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

      const opt = ref.optimizer;
      using optimizer = await Optimizer.create(gpu, [{
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
        model.loss({ targets: ref.targets }, { backward: true });
        model.backward();
        optimizer.step(1);
        losses.push(mean(await a.losses.read()));
      }
      const diffs = losses.map((l, i) => Math.abs(l - ref.losses[i]) / ref.losses[i]);
      await t.step(
        `ten AdamW steps' losses within 1e-3 (worst ${Math.max(...diffs).toExponential(2)})`,
        () => {
          for (let i = 0; i < losses.length; i++) {
            assert(diffs[i] < 1e-3, `step ${i}: ${losses[i]} vs ${ref.losses[i]}`);
          }
        },
      );
    },
  );

  Deno.test(
    `${folder}: greedy decoding with the cache equals argmax of full forwards`,
    GPU_TEST,
    async () => {
      const gpu = await testGpu();
      using model = await loadModel(gpu, folder);
      const V = model.outputs;
      const prompt = [11, 200, 37, 5, 123];
      const steps = 6;
      const argmax = (row: Float32Array) => row.indexOf(Math.max(...row));
      // Without a cache: the whole sequence each step.
      const full = [...prompt];
      for (let s = 0; s < steps; s++) {
        const T = full.length;
        const acts = model.forward({ B: 1, T, tokens: Uint32Array.from(full) });
        const logits = await acts.logits.read() as Float32Array;
        full.push(
          argmax(logits.subarray((T - 1) * acts.logitsStride, (T - 1) * acts.logitsStride + V)),
        );
      }
      // With a cache: the prompt, then one token a step; a copied cache continues the same way.
      using cache = model.newCache(prompt.length + steps);
      const cached = [...prompt];
      let acts = model.forward({ B: 1, T: prompt.length, tokens: Uint32Array.from(prompt) }, cache);
      let lastRow = prompt.length - 1;
      for (let s = 0; s < steps; s++) {
        const logits = await acts.logits.read() as Float32Array;
        const row = logits.subarray(lastRow * acts.logitsStride, lastRow * acts.logitsStride + V);
        cached.push(argmax(row));
        if (s + 1 === steps) break;
        acts = model.forward({ B: 1, T: 1, tokens: Uint32Array.of(cached.at(-1)!) }, cache);
        lastRow = 0;
      }
      assert.deepEqual(cached, full);
      using copy = model.newCache(prompt.length + steps);
      copy.copyFrom(cache);
      assert.equal(copy.past, cache.past);
    },
  );
}

Deno.test("the registry resolves llama, mistral and qwen2 to the Llama family", () => {
  for (const type of ["llama", "mistral", "qwen2"]) {
    assert.equal(familyOf({ model_type: type }, "config.json").modelType, "llama");
  }
  assert.equal(familyOf({ architectures: ["Qwen2ForCausalLM"] }, "c.json").modelType, "llama");
  assert.throws(
    () => familyOf({ model_type: "bert" }, "config.json"),
    /supported are "gpt2", "llama", "mistral", "qwen2"/,
  );
});

for (const folder of FIXTURES) {
  Deno.test(
    `${folder}: NOLA on all-linear trains, merges and exports as PEFT`,
    GPU_TEST,
    async () => {
      const gpu = await testGpu();
      using model = await loadModel(gpu, folder);
      assert(model instanceof Llama);
      const ref = await golden(folder);
      const T = ref.T;
      using set = await AdapterSet.attach(model, {
        method: "nola",
        targets: ["all-linear"],
        r: 2,
        k: 16,
        loraAlpha: 4,
        seed: 7,
      }, { maxRows: ref.B * T });
      const L = model.config.numHiddenLayers;
      assert.equal(set.modules.length, 7 * L);
      assert(set.modules.every((m) => !m.name.includes("lm_head")));
      const before = await meanLoss(model, ref.tokens, ref.targets, T);
      using optimizer = await Optimizer.create(gpu, [{
        kind: "adamw",
        lr: 0.05,
        params: set.parameters(),
      }]);
      for (let step = 0; step < 5; step++) {
        set.zeroGrads();
        set.prepareStep();
        model.forward({ B: ref.B, T, tokens: ref.tokens });
        model.loss({ targets: ref.targets }, { backward: true });
        model.backward();
        set.finishBackward();
        optimizer.step(1);
      }
      set.prepareStep();
      const after = await meanLoss(model, ref.tokens, ref.targets, T);
      assert(after < before, `loss ${before} -> ${after}`);

      const batch = { B: ref.B, T, tokens: ref.tokens };
      const adapted = await model.forward(batch).logits.read();
      await withTempDir("llama-peft", async (dir) => {
        await exportPeft(model, `${dir}/peft`, { baseModelName: "tiny" });
        const config = JSON.parse(await Deno.readTextFile(`${dir}/peft/adapter_config.json`));
        assert.equal(config.fan_in_fan_out, false);
        using file = await SafetensorsFile.open(`${dir}/peft/adapter_model.safetensors`);
        const key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
        assert.deepEqual(file.info(key).shape, [2, model.config.hiddenSize]);
      });
      mergeAdapters(model);
      const merged = await model.forward(batch).logits.read();
      const err = relativeError(merged, adapted);
      assert(err < 1e-5, `merged vs adapted logits ${err}`);

      // The merged model saves as a folder that loads back with the same logits.
      await withTempDir("llama-save", async (dir) => {
        await model.save(`${dir}/merged`);
        using again = await loadModel(gpu, `${dir}/merged`);
        const back = await again.forward(batch).logits.read();
        assert(relativeError(back, merged) < 1e-6);
      });
    },
  );
}

Deno.test("all-linear targets every whole linear: 4 a GPT-2 block, none of its q/k/v slices", async () => {
  const shape = modelShape(await readModelConfig("fixtures/tiny-gpt2"));
  const plan = planAdapters(shape, {
    method: "lora",
    targets: ["all-linear"],
    r: 2,
    loraAlpha: 2,
    seed: 0,
  });
  assert.deepEqual(plan.slice(0, 4).map((m) => m.name), [
    "h.0.attn.c_attn",
    "h.0.attn.c_proj",
    "h.0.mlp.c_fc",
    "h.0.mlp.c_proj",
  ]);
  assert.equal(plan.length, shape.sites.filter((s) => s.name === s.linear).length);
});

Deno.test(
  "a fresh Llama from initModel runs, saves a folder with its own config.json and loads back",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const parsed = await readModelConfig("fixtures/tiny-qwen2");
    using model = await initModel(gpu, parsed, { seed: 3 });
    assert.equal(model.modelType, "qwen2");
    const batch = { B: 1, T: 4, tokens: Uint32Array.of(1, 2, 3, 4) };
    const logits = await model.forward(batch).logits.read();
    assert(logits.every(Number.isFinite));
    await withTempDir("llama-init", async (dir) => {
      await model.save(`${dir}/fresh`);
      using file = await SafetensorsFile.open(`${dir}/fresh/model.safetensors`);
      assert(file.names().includes("model.embed_tokens.weight"));
      assert(!file.names().includes("lm_head.weight"));
      using again = await loadModel(gpu, `${dir}/fresh`);
      assert.equal(again.configHash, model.configHash);
      const back = await again.forward(batch).logits.read();
      assert(relativeError(back, logits) < 1e-6);
    });
  },
);
