import assert from "node:assert/strict";
import { AdapterSet } from "../../adapters/attach.ts";
import { mergeAdapters } from "../../adapters/merge.ts";
import { evalLabelledBatches, TrainBatches } from "../../data/batches.ts";
import { evaluateLoss } from "../../eval/evaluate.ts";
import { SafetensorsFile } from "../../formats/safetensors.ts";
import { loadModel } from "../../models/registry.ts";
import { RunLog } from "../../train/run_log.ts";
import { train } from "../../train/trainer.ts";
import { freshSeed, GPU_TEST, randomArray, relativeError, testGpu, withTempDir } from "../_util.ts";

// LoRA on q and v (the paper's comparison) and on one MLP linear (NOLA-MLP's sites), by each
// layout's names: timm's q and v are column slices of the fused qkv.
const CASES = [
  {
    folder: "fixtures/tiny-vit",
    targets: [
      "encoder.layer.*.attention.attention.query",
      "encoder.layer.*.attention.attention.value",
      "encoder.layer.*.intermediate.dense",
    ],
  },
  {
    folder: "fixtures/tiny-vit-timm",
    targets: ["blocks.*.attn.qkv.q", "blocks.*.attn.qkv.v", "blocks.*.mlp.fc2"],
  },
];

async function goldenBatch(folder: string) {
  using file = await SafetensorsFile.open(`${folder}/golden.safetensors`);
  const shape = file.info("pixels").shape;
  return {
    batch: {
      kind: "labelled" as const,
      B: shape[0],
      inputShape: shape.slice(1),
      inputs: await file.readFloat32("pixels"),
    },
    labels: new Uint32Array(new Int32Array((await file.readBytes("labels")).slice().buffer)),
  };
}

for (const { folder, targets } of CASES) {
  Deno.test(
    `ViT (${folder}) passes adapters their inputs and output gradients: LoRA gradients are s dW Aᵀ and s Bᵀ dW; merged logits equal adapted ones`,
    GPU_TEST,
    async () => {
      const seed = freshSeed();
      const gpu = await testGpu();
      using model = await loadModel(gpu, folder, { trainAll: true });
      const { batch, labels } = await goldenBatch(folder);
      using set = await AdapterSet.attach(model, {
        method: "lora",
        targets,
        r: 2,
        loraAlpha: 4,
        seed: 1,
      }, { maxRows: batch.B * model.maxPositions });
      assert.equal(set.modules.length, 3 * 2);
      // LoRA's B starts at zero: give it values so the adapters change the forward.
      set.modules.forEach((m, i) => {
        gpu.write(m.adapter.b.buffer, randomArray(m.adapter.b.size, seed + i).map((v) => v * 0.3));
      });
      set.zeroGrads();
      model.zeroGrads();
      const adapted = await model.forward(batch).logits.read();
      model.loss({ targets: labels, labelSmoothing: 0.1 }, { backward: true });
      model.backward();
      set.finishBackward();

      // The base weight's gradient dW = dyᵀ x sees the same dy and x the adapter was given.
      for (const m of set.modules) {
        const what = `${m.name} seed ${seed}`;
        const dwAll = await model.grads!.get(`${m.linear}.weight`)!.read() as Float32Array;
        const { r, scale, inFeatures: n, outFeatures: o, colOffset } = m;
        const dw = dwAll.subarray(colOffset * n, (colOffset + o) * n);
        const [a, b] = [await m.adapter.a.read(), await m.adapter.b.read()];
        const wantDb = new Float64Array(o * r);
        const wantDa = new Float64Array(r * n);
        for (let i = 0; i < o; i++) {
          for (let j = 0; j < r; j++) {
            for (let k = 0; k < n; k++) {
              wantDb[i * r + j] += scale * dw[i * n + k] * a[j * n + k];
              wantDa[j * n + k] += scale * b[i * r + j] * dw[i * n + k];
            }
          }
        }
        const errB = relativeError(await m.adapter.db.read(), wantDb);
        const errA = relativeError(await m.adapter.da.read(), wantDa);
        assert(errB < 1e-4, `${what}: dB relative error ${errB}`);
        assert(errA < 1e-4, `${what}: dA relative error ${errA}`);
      }

      mergeAdapters(model);
      const merged = await model.forward(batch).logits.read();
      const err = relativeError(merged, adapted);
      assert(err < 1e-5, `merged vs adapted logits: ${err}, seed ${seed}`);
    },
  );
}

Deno.test(
  "NOLA on a ViT's MLP linears trains through the generic trainer and lowers the loss",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    using model = await loadModel(gpu, "fixtures/tiny-vit-timm");
    const { batch, labels } = await goldenBatch("fixtures/tiny-vit-timm");
    const size = batch.inputs.length / batch.B;
    const examples = Array.from({ length: batch.B }, (_, b) => ({
      input: batch.inputs.slice(b * size, (b + 1) * size),
      label: labels[b],
    }));
    const inputShape = batch.inputShape;
    const lossOf = async () =>
      (await evaluateLoss(model, evalLabelledBatches(examples, { B: batch.B, inputShape }))).loss;
    const before = await lossOf();
    using set = await AdapterSet.attach(model, {
      method: "nola",
      targets: ["blocks.*.mlp.fc1", "blocks.*.mlp.fc2"],
      r: 1,
      k: 64,
      l: 64,
      loraAlpha: 1,
      seed: 7,
    }, { maxRows: batch.B * model.maxPositions });
    await withTempDir("vit-nola", async (dir) => {
      using log = await RunLog.open(dir);
      const steps = 20;
      const result = await train({
        model,
        groups: [{ kind: "adamw", lr: 5e-2, params: set.parameters() }],
        hooks: set,
        batches: new TrainBatches(examples, { B: batch.B, inputShape, seed: 1, steps }),
        schedule: { kind: "constant", lr: 5e-2, totalSteps: steps },
        log,
        logEvery: 10,
        checkpointEvery: 0,
      });
      assert.equal(result.steps, steps);
    });
    set.prepareStep();
    const after = await lossOf();
    assert(after < 0.9 * before, `loss ${before} -> ${after}`);
  },
);
