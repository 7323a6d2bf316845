// A new classifier head on a ViT, in both layouts: its logits and gradients against a float64
// reference over the class features, its seeded init, the adapter file carrying it (logits equal
// after a save/load round trip, with NOLA-MLP and with LoRA on q/v), merge writing it with the
// new classes, PEFT export under modules_to_save, and the file's refusals.

import assert from "node:assert/strict";
import { join } from "node:path";
import { AdapterSet, type AttachConfig } from "../../adapters/attach.ts";
import { AdapterFileError, loadAdapter, saveAdapter } from "../../adapters/adapter_file.ts";
import {
  freshHeadValues,
  HEAD_INIT_STD,
  headAction,
  newHead,
  trainCheckpointHead,
} from "../../adapters/head.ts";
import { mergeAdapters, relabelConfig, writeMergedFolder } from "../../adapters/merge.ts";
import { exportPeft } from "../../adapters/peft.ts";
import { SafetensorsFile } from "../../formats/safetensors.ts";
import type { Model } from "../../models/model.ts";
import { loadModel } from "../../models/registry.ts";
import type { VitActivations } from "../../models/vit_activations.ts";
import { freshSeed, GPU_TEST, randomArray, relativeError, testGpu, withTempDir } from "../_util.ts";

const LAYOUTS = [
  {
    folder: "fixtures/tiny-vit",
    head: "classifier",
    mlp: ["encoder.layer.*.intermediate.dense", "encoder.layer.*.output.dense"],
    qv: ["encoder.layer.*.attention.attention.query", "encoder.layer.*.attention.attention.value"],
    peftPrefix: "base_model.model.vit.",
  },
  {
    folder: "fixtures/tiny-vit-timm",
    head: "head",
    mlp: ["blocks.*.mlp.fc1", "blocks.*.mlp.fc2"],
    qv: ["blocks.*.attn.qkv.q", "blocks.*.attn.qkv.v"],
    peftPrefix: "base_model.model.",
  },
];

const LABELS = ["a", "b", "c", "d", "e", "f", "g"]; // 7: rows padded to 8 in the logits

function images(B: number, seed: number) {
  const inputs = randomArray(B * 3 * 12 * 12, seed);
  return { kind: "labelled" as const, B, inputShape: [3, 12, 12], inputs };
}

async function logitsOf(model: Model, B: number, seed: number): Promise<Float64Array> {
  const acts = model.forward(images(B, seed));
  const all = new Float32Array(await model.gpu.read(acts.logits.buffer));
  const C = model.outputs;
  const out = new Float64Array(B * C);
  for (let b = 0; b < B; b++) {
    for (let c = 0; c < C; c++) out[b * C + c] = all[b * acts.logitsStride + c];
  }
  return out;
}

// Small random adapter values, so a round trip compares adapted (not zero) deltas.
async function randomizeAdapters(set: AdapterSet, seed: number) {
  for (const [i, p] of set.parameters().entries()) {
    set.model.gpu.write(p.param.buffer, randomArray(p.param.size, seed + i).map((x) => 0.05 * x));
  }
  set.prepareStep();
  await Promise.resolve();
}

Deno.test("a fresh head is seeded: the same seed gives the same weight, std near 0.02, zero bias", () => {
  const seed = freshSeed();
  const a = freshHeadValues(50, { inFeatures: 101, seed });
  const b = freshHeadValues(50, { inFeatures: 101, seed });
  const c = freshHeadValues(50, { inFeatures: 101, seed: seed + 1 });
  assert.deepEqual(a.weight, b.weight);
  assert.notDeepEqual(a.weight, c.weight);
  assert.ok(a.bias.every((x) => x === 0));
  const n = a.weight.length;
  const mean = a.weight.reduce((s, x) => s + x, 0) / n;
  const std = Math.sqrt(a.weight.reduce((s, x) => s + (x - mean) ** 2, 0) / n);
  // 5050 normal draws: the sample std is within 5% and the mean within 4 standard errors.
  assert.ok(Math.abs(std - HEAD_INIT_STD) < 0.05 * HEAD_INIT_STD, `std ${std}`);
  assert.ok(Math.abs(mean) < (4 * HEAD_INIT_STD) / Math.sqrt(n), `mean ${mean}`);
});

Deno.test("headAction: auto is new only when the classes differ; new needs labels; text models refuse", () => {
  const vit = {
    modelType: "vit",
    classifierHead: { name: "h", inFeatures: 4, labels: ["x", "y"] },
  };
  assert.equal(headAction(vit, { labels: ["x", "y"], mode: "auto" }), "keep");
  assert.equal(headAction(vit, { labels: ["y", "x"], mode: "auto" }), "new");
  assert.equal(headAction(vit, { labels: ["x", "y", "z"], mode: "auto" }), "new");
  assert.equal(headAction(vit, { labels: undefined, mode: "auto" }), "keep");
  assert.equal(headAction(vit, { labels: ["x", "y"], mode: "new" }), "new");
  assert.equal(headAction(vit, { labels: ["q"], mode: "train" }), "train");
  assert.equal(headAction(vit, { labels: ["q"], mode: "frozen" }), "keep");
  assert.throws(
    () => headAction(vit, { labels: undefined, mode: "new" }),
    /put a data stage with "format: images"/,
  );
  const gpt2 = { modelType: "gpt2", classifierHead: undefined };
  assert.equal(headAction(gpt2, { labels: undefined, mode: "auto" }), "keep");
  assert.throws(
    () => headAction(gpt2, { labels: undefined, mode: "train" }),
    /gpt2 model has no classifier head/,
  );
});

for (const layout of LAYOUTS) {
  Deno.test(
    `ViT (${layout.folder}): a new head's logits and gradients match float64 over the class features`,
    GPU_TEST,
    async () => {
      const seed = freshSeed();
      const gpu = await testGpu();
      using model = await loadModel(gpu, layout.folder);
      const head = newHead(model, LABELS, { seed });
      assert.equal(model.outputs, 7);
      assert.equal(head.name, layout.head);
      const W = (await model.params.get(`${layout.head}.weight`)!.read()) as Float32Array;
      assert.deepEqual(W, freshHeadValues(7, { inFeatures: 24, seed }).weight);
      // A non-zero bias, so its path is checked too.
      const bias = randomArray(7, seed + 9);
      gpu.write(model.params.get(`${layout.head}.bias`)!.buffer, bias);
      const B = 3;
      const acts = model.forward(images(B, seed)) as VitActivations;
      const f = (await acts.lnf.read()) as Float32Array; // [B, 24] the normed class rows
      const got = new Float32Array(await gpu.read(acts.logits.buffer));
      const targets = Uint32Array.from({ length: B }, (_, b) => (seed + 3 * b) % 7);
      const ref = new Float64Array(B * 7);
      const dW = new Float64Array(7 * 24);
      const db = new Float64Array(7);
      const out = new Float64Array(B * 7);
      for (let b = 0; b < B; b++) {
        const row = Array.from({ length: 7 }, (_, c) => {
          let s = bias[c];
          for (let d = 0; d < 24; d++) s += f[b * 24 + d] * W[c * 24 + d];
          return s;
        });
        const max = Math.max(...row);
        const z = row.reduce((s, v) => s + Math.exp(v - max), 0);
        for (let c = 0; c < 7; c++) {
          ref[b * 7 + c] = row[c];
          out[b * 7 + c] = got[b * acts.logitsStride + c];
          const g = (Math.exp(row[c] - max) / z - (c === targets[b] ? 1 : 0)) / B;
          db[c] += g;
          for (let d = 0; d < 24; d++) dW[c * 24 + d] += g * f[b * 24 + d];
        }
      }
      assert.ok(relativeError(out, ref) < 1e-5, `logits ${relativeError(out, ref)}`);
      model.zeroGrads();
      model.loss({ targets }, { backward: true });
      model.backward();
      const gW = (await head.grads!.weight.read()) as Float32Array;
      const gb = (await head.grads!.bias.read()) as Float32Array;
      assert.ok(relativeError(gW, dW) < 1e-4, `dW ${relativeError(gW, dW)}`);
      assert.ok(relativeError(gb, db) < 1e-4, `db ${relativeError(gb, db)}`);
      // zeroGrads clears the head's gradients too.
      model.zeroGrads();
      assert.ok(((await head.grads!.weight.read()) as Float32Array).every((x) => x === 0));
    },
  );

  for (const [method, targets] of [["nola", layout.mlp], ["lora", layout.qv]] as const) {
    Deno.test(
      `ViT (${layout.folder}): ${method} on ${
        targets.join(", ")
      } with a new head saves and loads back to equal logits`,
      GPU_TEST,
      async () => {
        const seed = freshSeed();
        const gpu = await testGpu();
        await withTempDir("vit-head", async (dir) => {
          const config: AttachConfig = {
            method,
            targets: [...targets],
            r: method === "nola" ? 1 : 2,
            k: 16,
            loraAlpha: 2,
            seed,
          };
          const path = join(dir, "adapter.safetensors");
          let before: Float64Array;
          {
            using model = await loadModel(gpu, layout.folder);
            using set = await AdapterSet.attach(model, config, { maxRows: 40 });
            set.setHead(newHead(model, LABELS, { seed }));
            const names = set.parameters().map((p) => p.name);
            assert.deepEqual(names.slice(-2), [
              `head.${layout.head}.weight`,
              `head.${layout.head}.bias`,
            ]);
            await randomizeAdapters(set, seed);
            before = await logitsOf(model, 4, seed);
            await saveAdapter(set, path, { baseModel: "tiny-vit" });
          }
          using file = await SafetensorsFile.open(path);
          assert.equal(file.metadata.head, layout.head);
          assert.deepEqual(
            JSON.parse(file.metadata.id2label),
            Object.fromEntries(LABELS.map((l, i) => [String(i), l])),
          );
          assert.deepEqual(file.info(`head.${layout.head}.weight`).shape, [7, 24]);
          assert.deepEqual(file.info(`head.${layout.head}.bias`).shape, [7]);
          using model = await loadModel(gpu, layout.folder);
          using set = await loadAdapter(model, path, { maxRows: 40 });
          assert.deepEqual(set.head?.labels, LABELS);
          assert.equal(set.head?.grads, null);
          const after = await logitsOf(model, 4, seed);
          assert.equal(relativeError(after, before), 0);
        });
      },
    );
  }

  Deno.test(
    `ViT (${layout.folder}): merge writes the new head and its classes; PEFT export saves it under modules_to_save`,
    GPU_TEST,
    async () => {
      const seed = freshSeed();
      const gpu = await testGpu();
      await withTempDir("vit-head-merge", async (dir) => {
        using model = await loadModel(gpu, layout.folder);
        using set = await AdapterSet.attach(model, {
          method: "nola",
          targets: ["mlp"],
          r: 1,
          k: 8,
          loraAlpha: 1,
          seed,
        }, { maxRows: 40 });
        set.setHead(newHead(model, LABELS, { seed }));
        await randomizeAdapters(set, seed);
        const adapted = await logitsOf(model, 2, seed);
        await exportPeft(model, join(dir, "peft"), { baseModelName: "tiny", head: layout.head });
        const merged = join(dir, "merged");
        mergeAdapters(model);
        await writeMergedFolder(model, layout.folder, merged);
        using back = await loadModel(gpu, merged);
        assert.deepEqual(back.classifierHead!.labels, LABELS);
        const config = JSON.parse(await Deno.readTextFile(join(merged, "config.json")));
        if (layout.head === "classifier") {
          assert.deepEqual(config.id2label, Object.fromEntries(LABELS.map((l, i) => [`${i}`, l])));
          assert.equal(config.label2id.g, 6);
        } else {
          assert.equal(config.num_classes, 7);
          assert.deepEqual(config.label_names, LABELS);
        }
        const logits = await logitsOf(back, 2, seed);
        assert.ok(relativeError(logits, adapted) < 1e-5, `${relativeError(logits, adapted)}`);

        const peftConfig = JSON.parse(
          await Deno.readTextFile(join(dir, "peft", "adapter_config.json")),
        );
        assert.deepEqual(peftConfig.modules_to_save, [layout.head]);
        assert.equal(peftConfig.task_type, null);
        using peft = await SafetensorsFile.open(join(dir, "peft", "adapter_model.safetensors"));
        const keys = peft.names().sort();
        assert.ok(keys.includes(`base_model.model.${layout.head}.weight`), keys.join());
        assert.ok(keys.includes(`base_model.model.${layout.head}.bias`), keys.join());
        assert.deepEqual(peft.info(`base_model.model.${layout.head}.weight`).shape, [7, 24]);
        const lora = keys.filter((k) => k.endsWith(".lora_A.weight"));
        assert.equal(lora.length, 4);
        assert.ok(lora.every((k) => k.startsWith(layout.peftPrefix)), lora.join());
        // PEFT takes a module whose name ends with ".<target>": no target may also catch an
        // attention linear.
        for (const site of model.sites.filter((s) => s.name === s.linear)) {
          const taken = peftConfig.target_modules.some((t: string) =>
            site.name === t || site.name.endsWith(`.${t}`)
          );
          const adapted = lora.some((k) => k === `${layout.peftPrefix}${site.name}.lora_A.weight`);
          assert.equal(taken, adapted, `${site.name} vs ${peftConfig.target_modules}`);
        }
      });
    },
  );
}

Deno.test(
  "ViT: training the checkpoint's own head keeps its values and labels; a head-only file for one layout is refused by the other in one line",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    await withTempDir("vit-head-refuse", async (dir) => {
      using model = await loadModel(gpu, "fixtures/tiny-vit");
      const before = await logitsOf(model, 2, seed);
      const head = await trainCheckpointHead(model, { source: "the checkpoint" });
      assert.ok(head.grads);
      assert.equal(head.labels[0], "T-shirt/top");
      assert.equal(relativeError(await logitsOf(model, 2, seed), before), 0);

      using set = await AdapterSet.attach(model, {
        method: "none",
        targets: [],
        r: 1,
        loraAlpha: 1,
        seed,
      }, { maxRows: 20 });
      set.setHead(newHead(model, LABELS, { seed }));
      const path = join(dir, "probe.safetensors");
      await saveAdapter(set, path, { baseModel: "tiny-vit" });
      using timm = await loadModel(gpu, "fixtures/tiny-vit-timm");
      await assert.rejects(
        () => loadAdapter(timm, path, { maxRows: 20 }),
        (e) => {
          assert.ok(e instanceof AdapterFileError);
          assert.ok(!e.message.includes("\n"));
          assert.match(e.message, /^Cannot load adapter ".*probe\.safetensors": base config hash/);
          return true;
        },
      );
    });
  },
);

Deno.test("relabelConfig rewrites HF and timm classes and leaves matching ones alone", () => {
  const hf = { model_type: "vit", id2label: { "0": "x", "1": "y" }, num_labels: 2 };
  assert.equal(relabelConfig(hf, ["x", "y"]), null);
  assert.deepEqual(relabelConfig(hf, ["p", "q", "r"]), {
    model_type: "vit",
    id2label: { "0": "p", "1": "q", "2": "r" },
    label2id: { p: 0, q: 1, r: 2 },
    num_labels: 3,
  });
  assert.equal(hf.num_labels, 2);
  const timm = {
    architecture: "vit_tiny_patch16_224",
    num_classes: 2,
    pretrained_cfg: { num_classes: 2 },
  };
  assert.equal(relabelConfig(timm, ["LABEL_0", "LABEL_1"]), null);
  assert.deepEqual(relabelConfig(timm, ["p"]), {
    architecture: "vit_tiny_patch16_224",
    num_classes: 1,
    pretrained_cfg: { num_classes: 1 },
    label_names: ["p"],
  });
});
