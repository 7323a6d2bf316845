// The ViT family through the pipeline: an image class folder, NOLA-MLP with a new head for the
// folder's classes, a few training steps, accuracy with its confusion matrix in report.md, the
// adapter saved, loaded back onto a fresh model and classifying with the same logits; a linear
// probe (method none); the one-line errors of top-5 over five classes and of a head mode on a
// text model.

import assert from "node:assert/strict";
import { join } from "node:path";
import { loadAdapter } from "../../adapters/adapter_file.ts";
import { freshHeadValues } from "../../adapters/head.ts";
import { SafetensorsFile } from "../../formats/safetensors.ts";
import { imageEvalBatches, loadImageData, matchLabels } from "../../data/images/dataset.ts";
import { DataError } from "../../data/readers.ts";
import { preprocessSettings } from "../../data/images/preprocess.ts";
import { evaluateClassifier } from "../../eval/classify.ts";
import { loadModel } from "../../models/registry.ts";
import type { Model } from "../../models/model.ts";
import { PipelineError } from "../../pipelines/parse.ts";
import { runPipeline } from "../../pipelines/run.ts";
import { freshSeed, GPU_TEST, relativeError, rng, testGpu, withTempDir } from "../_util.ts";
import { pngBytes } from "../data/_images.ts";

/**
 * Writes `counts[c]` RGB PNGs of class `names[c]`, `size x size`: noise around a brightness
 * that grows with the class id, so a head can tell the classes apart.
 */
export async function writeClasses(
  root: string,
  names: readonly string[],
  counts: readonly number[],
  options: { size: number; seed: number },
): Promise<void> {
  const next = rng(options.seed);
  for (const [c, name] of names.entries()) {
    await Deno.mkdir(join(root, name), { recursive: true });
    const level = 30 + (190 * c) / Math.max(1, names.length - 1);
    for (let i = 0; i < counts[c]; i++) {
      const data = Uint8Array.from(
        { length: options.size * options.size * 3 },
        () => Math.max(0, Math.min(255, Math.round(level + 40 * (next() - 0.5)))),
      );
      const png = pngBytes({ width: options.size, height: options.size, channels: 3, data });
      await Deno.writeFile(join(root, name, `${String(i).padStart(3, "0")}.png`), png);
    }
  }
}

const CLASSES = ["ant", "bee", "cow", "doe", "eel", "fox", "gnu"];

function pipeline(dir: string, attach: string, evaluate: string, seed: number): string {
  return `version: 1
name: vit-fewshot
seed: ${seed}
out: ${join(dir, "run")}
stages:
  - kind: load
    model: ${join(Deno.cwd(), "fixtures/tiny-vit")}
  - kind: data
    format: images
    train: train
    test: test
    shots: 3
    sampling_seed: ${seed}
    augment: { crop: false }
  - kind: attach
${attach.trim().split("\n").map((l) => `    ${l}`).join("\n")}
  - kind: evaluate
    id: before
    split: test
    metrics: [loss, accuracy]
  - kind: train
    steps: 6
    batch_size: 7
    lr: 0.01
    log_every: 3
    schedule: { kind: constant }
  - kind: evaluate
    id: after
    split: test
${evaluate.trim().split("\n").map((l) => `    ${l}`).join("\n")}
  - kind: save
`;
}

async function testLogits(model: Model, dir: string, seed: number) {
  const data = await loadImageData({
    train: join(dir, "train"),
    test: join(dir, "test"),
    samplingSeed: seed,
    augmentSeed: 0,
    preprocess: await preprocessSettings("fixtures/tiny-vit", {}),
  });
  const out: Float32Array[] = [];
  for (const batch of imageEvalBatches(data, "test", { B: 7 })) {
    const acts = model.forward(batch);
    out.push(new Float32Array(await model.gpu.read(acts.logits.buffer)));
  }
  return { data, logits: out };
}

Deno.test(
  "a ViT pipeline: image folder, NOLA-MLP with a new head, train, accuracy and confusion, save, load back with the same logits",
  GPU_TEST,
  async () => {
    const seed = freshSeed() % 100_000;
    await withTempDir("vit-pipeline", async (dir) => {
      await writeClasses(join(dir, "train"), CLASSES, [4, 4, 4, 4, 4, 4, 4], { size: 14, seed });
      await writeClasses(join(dir, "test"), CLASSES, [2, 2, 2, 2, 2, 2, 2], {
        size: 14,
        seed: seed + 1,
      });
      const path = join(dir, "p.yaml");
      await Deno.writeTextFile(
        path,
        pipeline(
          dir,
          "method: nola\ntargets: [mlp]\nr: 1\nk: 16\nhead: auto",
          "metrics: [loss, accuracy, top5_accuracy]",
          seed,
        ),
      );
      const said: string[] = [];
      const gpu = await testGpu();
      const before = await runPipeline(path, { gpu, say: (l) => said.push(l) }).catch((e) => {
        throw new Error(`${e}\n${said.join("\n")}`);
      });
      void before;
      assert.ok(
        said.some((l) => /^new head "classifier": 7 classes \(ant, bee, cow/.test(l)),
        said.join("\n"),
      );
      const run = join(dir, "run");
      const summary = JSON.parse(await Deno.readTextFile(join(run, "summary.json")));
      assert.equal(summary.attach.modules, 4); // two blocks x (intermediate.dense, output.dense)
      assert.equal(summary.attach.head, "new");
      assert.equal(summary.attach.head_parameters, 7 * 25);
      assert.equal(summary.attach.trainable_parameters, 4 * 32);
      // The new head is trained with the 4 modules' k + l = 32 coefficients each.
      assert.equal(summary.train.trainable_parameters, 4 * 32 + 7 * 25);
      const after = summary.after;
      for (const key of ["loss", "accuracy", "top5_accuracy"]) {
        assert.ok(Number.isFinite(after[key]), `${key}: ${after[key]}`);
      }
      assert.ok(after.top5_accuracy >= after.accuracy);
      const report = await Deno.readTextFile(join(run, "report.md"));
      assert.match(
        report,
        /!\[Confusion matrix of after on the test split\]\(confusion-after\.svg\)/,
      );
      const svg = await Deno.readTextFile(join(run, "confusion-after.svg"));
      assert.match(svg, /^<svg /);
      assert.equal((svg.match(/<rect x=/g) ?? []).length, 49);

      // The adapter file holds the head and id2label; on a fresh base it classifies the same.
      using model = await loadModel(gpu, "fixtures/tiny-vit");
      using _set = await loadAdapter(model, join(run, "adapter.safetensors"), { maxRows: 7 * 10 });
      assert.deepEqual(model.classifierHead!.labels, CLASSES);
      const { data, logits } = await testLogits(model, dir, seed);
      const scores = await evaluateClassifier(model, imageEvalBatches(data, "test", { B: 7 }), {
        topK: 5,
      });
      assert.ok(Math.abs(scores.accuracy - after.accuracy) < 1e-9, `${scores.accuracy}`);
      assert.ok(Math.abs(scores.topKAccuracy! - after.top5_accuracy) < 1e-9);
      // Two loads give the same logits, and the head was really trained (not the fresh init).
      using model2 = await loadModel(gpu, "fixtures/tiny-vit");
      using _set2 = await loadAdapter(model2, join(run, "adapter.safetensors"), {
        maxRows: 7 * 10,
      });
      const again = await testLogits(model2, dir, seed);
      for (const [i, l] of logits.entries()) assert.equal(relativeError(again.logits[i], l), 0);
      // Data with a class the adapter's id2label does not know: one line naming the image and
      // the adapter file.
      await writeClasses(join(dir, "other"), ["ant", "yak"], [1, 1], { size: 12, seed });
      const other = await loadImageData({
        train: join(dir, "other"),
        samplingSeed: seed,
        augmentSeed: 0,
        preprocess: await preprocessSettings("fixtures/tiny-vit", {}),
      });
      assert.throws(
        () => matchLabels(other, _set2.head!.labels, { what: _set2.head!.source }),
        (e) => {
          assert.ok(e instanceof DataError);
          assert.ok(!e.message.includes("\n"));
          assert.match(
            e.message,
            /^Label "yak" of ".*yak[/\\]000\.png" is unknown to adapter file ".*adapter\.safetensors", whose labels are "ant", "bee"/,
          );
          return true;
        },
      );
    });
  },
);

async function runExpectingError(dir: string, text: string): Promise<Error> {
  const path = join(dir, "p.yaml");
  await Deno.writeTextFile(path, text);
  const gpu = await testGpu();
  try {
    await runPipeline(path, { gpu, say: () => {} });
  } catch (e) {
    return e as Error;
  }
  throw new Error("the pipeline ran");
}

Deno.test(
  "a ViT linear probe (method none) trains only the new head, and the adapter file holds only it",
  GPU_TEST,
  async () => {
    const seed = freshSeed() % 100_000;
    await withTempDir("vit-probe", async (dir) => {
      await writeClasses(join(dir, "train"), CLASSES.slice(0, 3), [3, 3, 3], { size: 12, seed });
      await writeClasses(join(dir, "test"), CLASSES.slice(0, 3), [1, 1, 1], {
        size: 12,
        seed: seed + 1,
      });
      const path = join(dir, "p.yaml");
      await Deno.writeTextFile(
        path,
        pipeline(dir, "method: none\nhead: new", "metrics: [accuracy]", seed),
      );
      const gpu = await testGpu();
      await runPipeline(path, { gpu, say: () => {} });
      const summary = JSON.parse(await Deno.readTextFile(join(dir, "run", "summary.json")));
      assert.equal(summary.attach.modules, 0);
      assert.equal(summary.train.trainable_parameters, 3 * 25);
      using model = await loadModel(gpu, "fixtures/tiny-vit");
      using set = await loadAdapter(model, join(dir, "run", "adapter.safetensors"), {
        maxRows: 10,
      });
      assert.equal(set.modules.length, 0);
      assert.deepEqual(set.head?.labels, CLASSES.slice(0, 3));
      assert.equal(model.outputs, 3);
    });
  },
);

Deno.test(
  "ViT pipeline mistakes are one line: top-5 over five classes, a frozen head that does not know the data's labels, a head mode on a text model, method none with a kept head",
  GPU_TEST,
  async () => {
    const seed = freshSeed() % 100_000;
    await withTempDir("vit-errors", async (dir) => {
      await writeClasses(join(dir, "train"), CLASSES.slice(0, 3), [3, 3, 3], { size: 12, seed });
      await writeClasses(join(dir, "test"), CLASSES.slice(0, 3), [1, 1, 1], { size: 12, seed });
      const oneLine = (e: Error, re: RegExp) => {
        assert.ok(!e.message.includes("\n"), e.message);
        assert.match(e.message, re);
      };
      let e = await runExpectingError(
        dir,
        pipeline(dir, "method: nola\ntargets: [mlp]\nk: 8", "metrics: [top5_accuracy]", seed),
      );
      assert.ok(e instanceof PipelineError, String(e));
      oneLine(
        e,
        /stages\[5\]\.metrics: top5_accuracy needs more than five classes, and the head has 3/,
      );
      e = await runExpectingError(
        dir,
        pipeline(
          dir,
          "method: nola\ntargets: [mlp]\nk: 8\nhead: frozen",
          "metrics: [accuracy]",
          seed,
        ),
      );
      oneLine(
        e,
        /^Label "ant" of ".*ant[/\\]\d+\.png" is unknown to the head of tiny-vit \(id2label of its config\.json\), whose labels are "T-shirt\/top", "Trouser"/,
      );
      e = await runExpectingError(
        dir,
        pipeline(dir, "method: none\nhead: frozen", "metrics: [accuracy]", seed),
      );
      oneLine(e, /stages\[2\]\.head: method "none" trains only the classifier head/);
      e = await runExpectingError(
        dir,
        `version: 1
name: text
out: ${join(dir, "run-text")}
stages:
  - kind: load
    model: ${join(Deno.cwd(), "fixtures/tiny-gpt2")}
  - kind: attach
    k: 8
    head: new
`,
      );
      oneLine(
        e,
        /stages\[1\]\.head: head "new" needs a classifier, and the gpt2 model has no classifier head/,
      );
    });
  },
);

Deno.test(
  "a new ViT head trains with QAT of NOLA-MLP (the head in f32) and with full fine-tuning, whose merged folder has the new classes",
  GPU_TEST,
  async () => {
    const seed = freshSeed() % 100_000;
    await withTempDir("vit-qat-full", async (dir) => {
      await writeClasses(join(dir, "train"), CLASSES, [3, 3, 3, 3, 3, 3, 3], { size: 12, seed });
      await writeClasses(join(dir, "test"), CLASSES, [1, 1, 1, 1, 1, 1, 1], { size: 12, seed });
      const gpu = await testGpu();
      const path = join(dir, "p.yaml");
      const qat = pipeline(
        dir,
        "method: nola\ntargets: [mlp]\nr: 1\nk: 8\nhead: new",
        "metrics: [accuracy]",
        seed,
      ).replace(
        "    schedule: { kind: constant }\n",
        "    schedule: { kind: constant }\n    qat: { bits: 4 }\n",
      );
      await Deno.writeTextFile(path, qat);
      await runPipeline(path, { gpu, say: () => {} });
      let summary = JSON.parse(await Deno.readTextFile(join(dir, "run", "summary.json")));
      assert.equal(summary.train.trainable_parameters, 4 * 16 + 7 * 25);
      assert.equal(summary.save.quant_bits, 4);
      using file = await SafetensorsFile.open(join(dir, "run", "adapter.safetensors"));
      const W = await file.readFloat32("head.classifier.weight");
      const fresh = freshHeadValues(7, { inFeatures: 24, seed }).weight;
      assert.ok(relativeError(W, fresh) > 1e-3, "the head was trained");

      const full = pipeline(dir, "method: none\nhead: new", "metrics: [accuracy]", seed)
        .replace(
          "    schedule: { kind: constant }\n",
          "    schedule: { kind: constant }\n    full: true\n",
        )
        .replace("  - kind: save\n", "  - kind: merge\n    out: merged\n");
      await Deno.writeTextFile(path, full);
      await runPipeline(path, { gpu, say: () => {} });
      summary = JSON.parse(await Deno.readTextFile(join(dir, "run", "summary.json")));
      assert.equal(summary.train.trainable_parameters, 10_573 - 5 * 25 + 7 * 25);
      using merged = await loadModel(gpu, join(dir, "run", "merged"));
      assert.deepEqual(merged.classifierHead!.labels, CLASSES);
    });
  },
);

Deno.test(
  "a ViT run with a new head and augmentation resumes from a checkpoint to the same adapter, byte for byte",
  GPU_TEST,
  async () => {
    const seed = freshSeed() % 100_000;
    await withTempDir("vit-resume", async (dir) => {
      await writeClasses(join(dir, "train"), CLASSES, [3, 3, 3, 3, 3, 3, 3], { size: 14, seed });
      await writeClasses(join(dir, "test"), CLASSES, [1, 1, 1, 1, 1, 1, 1], { size: 14, seed });
      const path = join(dir, "p.yaml");
      const text = pipeline(
        dir,
        "method: nola\ntargets: [mlp]\nr: 1\nk: 8\nhead: new",
        "metrics: [accuracy]",
        seed,
      ).replace("    augment: { crop: false }\n", "    augment: {}\n")
        .replace("    log_every: 3\n", "    log_every: 3\n    checkpoint_every: 3\n");
      await Deno.writeTextFile(path, text);
      const gpu = await testGpu();
      await runPipeline(path, { gpu, say: () => {} });
      const run = join(dir, "run");
      const whole = await Deno.readFile(join(run, "adapter.safetensors"));
      const checkpoints = [...Deno.readDirSync(join(run, "checkpoints"))].map((e) => e.name).sort();
      assert.deepEqual(checkpoints, ["step-00000003.safetensors", "step-00000006.safetensors"]);
      // As if the run had stopped after step 3.
      await Deno.remove(join(run, "checkpoints", "step-00000006.safetensors"));
      await Deno.remove(join(run, "adapter.safetensors"));
      const said: string[] = [];
      await runPipeline(path, { gpu, resume: true, say: (l) => said.push(l) });
      assert.ok(said.some((l) => /resuming from step 3/.test(l)), said.join("\n"));
      assert.deepEqual(await Deno.readFile(join(run, "adapter.safetensors")), whole);
    });
  },
);
