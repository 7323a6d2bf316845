// The data stage with `format: images`: the pipeline rules that keep image and text keys apart,
// a whole pipeline run on a tiny class folder (summary figures checked against the files written),
// the model folder's preprocessing and the refusal of a text model, and the image stream feeding
// the generic trainer on the test classifier family.

import assert from "node:assert/strict";
import { join } from "node:path";
import { AdapterSet } from "../../adapters/attach.ts";
import { imageEvalBatches, imageTrainBatches, loadImageData } from "../../data/images/dataset.ts";
import { preprocessSettings, vitDefaults } from "../../data/images/preprocess.ts";
import { loadModel } from "../../models/registry.ts";
import { AUGMENT_DEFAULTS } from "../../data/images/augment.ts";
import { evaluateAccuracy, evaluateLoss } from "../../eval/evaluate.ts";
import type { Model } from "../../models/model.ts";
import { parsePipeline, PipelineError } from "../../pipelines/parse.ts";
import { runPipeline } from "../../pipelines/run.ts";
import type { DataStage } from "../../pipelines/schema.ts";
import { data } from "../../pipelines/stages_data.ts";
import type { RunState } from "../../pipelines/state.ts";
import { RunLog } from "../../train/run_log.ts";
import { train } from "../../train/trainer.ts";
import { freshSeed, GPU_TEST, rng, testGpu, withTempDir } from "../_util.ts";
import { ToyClassifier } from "../models/_toy_classifier.ts";
import { pngBytes, writeFolder } from "./_images.ts";

function pipelineText(stage: string, extra = ""): string {
  return `version: 1
name: images
stages:
  - kind: data
    format: images
${stage.trim().split("\n").map((l) => `    ${l}`).join("\n")}
${extra}`;
}

function refused(stage: string, message: RegExp) {
  assert.throws(() => parsePipeline(pipelineText(stage), { file: "p.yaml" }), (e) => {
    assert.ok(e instanceof PipelineError, String(e));
    assert.match(e.message, message);
    return true;
  });
}

Deno.test("format images: its keys parse with defaults, and text keys are refused with it", () => {
  const p = parsePipeline(
    pipelineText("train: imgs\nshots: 5\naugment: {}\npreprocess: { image_size: 32 }"),
    { file: "p.yaml" },
  );
  const stage = p.stages[0] as DataStage;
  assert.equal(stage.shots, 5);
  assert.equal(stage.samplingSeed, 0);
  assert.deepEqual(stage.preprocess, { imageSize: 32 });
  assert.deepEqual(stage.augment, {
    crop: true,
    scale: [0.08, 1],
    ratio: [3 / 4, 4 / 3],
    flip: true,
    seed: 0,
  });
  refused('train: imgs\nprompt: "{{ x }}"', /stages\[0\]\.prompt is not used with format "images"/);
  refused(
    "file: imgs\nsplit: { train: 1 }",
    /stages\[0\]\.file is not used with format "images" \(give "train"/,
  );
  refused("train: imgs\nclasses: [a]\nclass_ids: [1]", /class_ids cannot be given with "classes"/);
  refused(
    "train: imgs\naugment: { scale: [0.9, 0.2] }",
    /stages\[0\]\.augment\.scale has its low end 0.9 above its high end 0.2 \(line 7:16\)/,
  );
  refused("train: imgs\npreprocess: { mean: [0.5, 0.5] }", /mean must be a list of 3 items/);
  assert.throws(
    () =>
      parsePipeline(
        `version: 1\nname: t\nstages:\n  - kind: data\n    train: a.csv\n    prompt: "a"\n` +
          `    completion: "b"\n    shots: 2\n`,
        { file: "p.yaml" },
      ),
    /stages\[0\]\.shots only applies with "format: images"/,
  );
});

Deno.test(
  "a pipeline's image data stage reads a class folder: k-shot train, capped test, figures in the summary",
  GPU_TEST,
  async () => {
    const seed = freshSeed() % 10_000;
    await withTempDir("images-pipeline", async (dir) => {
      await writeFolder(join(dir, "train"), ["cat", "dog", "emu"], [4, 6, 5], { size: 9, seed });
      await writeFolder(join(dir, "test"), ["cat", "dog", "emu"], [3, 3, 1], {
        size: 9,
        seed: seed + 50,
      });
      await Deno.writeTextFile(join(dir, "train", "cat", "notes.txt"), "skipped");
      const path = join(dir, "p.yaml");
      await Deno.writeTextFile(
        path,
        pipelineText(
          `train: train\ntest: test\nclasses: [emu, cat]\nshots: 3\neval_per_class: 2\n` +
            `sampling_seed: ${seed}\npreprocess: { image_size: 8, mean: [0.4, 0.5, 0.6] }\n` +
            `augment: { flip: false }`,
          `out: ${join(dir, "run")}\n`,
        ),
      );
      const said: string[] = [];
      const result = await runPipeline(path, { gpu: await testGpu(), say: (l) => said.push(l) });
      const summary = JSON.parse(await Deno.readTextFile(join(result.dir, "summary.json")));
      const figures = summary.data;
      assert.deepEqual(figures.id2label, ["emu", "cat"]);
      assert.deepEqual(figures.input_shape, [3, 8, 8]);
      assert.equal(figures.train.available, 15);
      assert.equal(figures.train.images, 6);
      assert.deepEqual(figures.train.per_class, { emu: 3, cat: 3 });
      assert.equal(figures.train.ignored_files, 1);
      assert.deepEqual(figures.test.per_class, { emu: 1, cat: 2 });
      assert.match(
        figures.preprocess,
        /resize to 8x8 \(bilinear\), mean \[0.4, 0.5, 0.6\], std \[0.5, 0.5, 0.5\]; from the data stage/,
      );
      assert.equal(figures.sampling_seed, seed);
      assert.ok(
        said.some((l) =>
          /^train: 6 of 15 images from folder ".*train", 3 a class \(3-shot/.test(l)
        ),
        said.join("\n"),
      );
      assert.ok(
        said.some((l) =>
          /^augment: random resized crop \(scale \[0.08, 1\], ratio \[0.75, 1.3333\]\), seed 0/
            .test(l)
        ),
        said.join("\n"),
      );
    });
  },
);

/** The data stage alone with a stand-in model and model folder. */
async function runStage(
  stageYaml: string,
  model: Partial<Model>,
  modelFolder: string,
  base: string,
) {
  const pipeline = parsePipeline(pipelineText(stageYaml), { file: join(base, "p.yaml") });
  const said: string[] = [];
  const state = {
    pipeline,
    index: 0,
    say: (line: string) => said.push(line),
    model,
    modelFolder,
    log: { recordStage: () => Promise.resolve() },
  } as unknown as RunState;
  await data(pipeline.stages[0] as DataStage, state);
  return { state, said };
}

Deno.test("the image stage takes the model folder's preprocessing and refuses a text model", async () => {
  await withTempDir("images-stage-model", async (dir) => {
    await writeFolder(join(dir, "imgs"), ["a", "b"], [2, 2], { size: 10, seed: 1 });
    await Deno.mkdir(join(dir, "model"));
    await Deno.writeTextFile(
      join(dir, "model", "preprocessor_config.json"),
      JSON.stringify({
        size: { shortest_edge: 7 },
        do_center_crop: true,
        crop_size: 6,
        resample: 3,
      }),
    );
    const classifier = { task: "classification", modelType: "vit" } as Partial<Model>;
    const { state, said } = await runStage("train: imgs", classifier, join(dir, "model"), dir);
    const images = state.data!.images!;
    assert.deepEqual(images.inputShape, [3, 6, 6]);
    assert.equal(images.preprocess.mode, "shorter");
    assert.equal(images.preprocess.resample, "bicubic");
    assert.match(said[0], /shorter side to 7, centre 6x6 \(bicubic\).*preprocessor_config.json/);
    const lm = { task: "causal-lm", modelType: "gpt2" } as Partial<Model>;
    await assert.rejects(runStage("train: imgs", lm, join(dir, "model"), dir), (e) => {
      assert.ok(e instanceof PipelineError);
      assert.match(
        e.message,
        /stages\[0\]\.format: format "images" needs an image classifier, and the loaded gpt2 model predicts tokens/,
      );
      return true;
    });
    // Text formats read files only: a folder is refused at its key.
    const text = parsePipeline(
      `version: 1\nname: t\nstages:\n  - kind: data\n    format: jsonl\n    train: imgs\n` +
        `    prompt: "a"\n    completion: "b"\n`,
      { file: join(dir, "t.yaml") },
    );
    const textState = { pipeline: text, index: 0 } as unknown as RunState;
    await assert.rejects(data(text.stages[0] as DataStage, textState), (e) => {
      assert.ok(e instanceof PipelineError);
      assert.match(
        e.message,
        /stages\[0\]\.train: "imgs" is a folder; text data is read from files/,
      );
      return true;
    });
    // No model: the size must be given.
    await assert.rejects(runStage("train: imgs", undefined as never, "", dir), (e) => {
      assert.ok(e instanceof PipelineError);
      assert.match(
        e.message,
        /stages\[0\]\.preprocess: Cannot tell the image input size: no model is loaded/,
      );
      return true;
    });
  });
});

Deno.test(
  "image batches train a classifier through the generic trainer, augmented, and score it",
  GPU_TEST,
  async () => {
    const seed = freshSeed();
    await withTempDir("images-train", async (dir) => {
      // Three classes told apart by brightness, which crops and flips keep.
      const next = rng(seed);
      const levels = [30, 128, 225];
      for (const [c, level] of levels.entries()) {
        await Deno.mkdir(join(dir, `c${c}`), { recursive: true });
        for (let i = 0; i < 8; i++) {
          const pixels = Uint8Array.from(
            { length: 64 },
            () => level + Math.round((next() - 0.5) * 40),
          );
          await Deno.writeFile(
            join(dir, `c${c}`, `${i}.png`),
            pngBytes({ width: 8, height: 8, channels: 1, data: pixels }),
          );
        }
      }
      const images = await loadImageData({
        train: dir,
        test: dir,
        samplingSeed: seed,
        shots: 6,
        preprocess: vitDefaults(4, 4, "test"),
        augment: { ...AUGMENT_DEFAULTS, scale: [0.3, 1] },
        augmentSeed: seed,
      });
      const gpu = await testGpu();
      const config = { inputs: 48, hidden: 9, classes: 3 };
      const w = rng(seed + 1);
      const init = (n: number, s: number) =>
        Float32Array.from({ length: n }, () => (w() - 0.5) * s);
      using model = await ToyClassifier.create(gpu, config, {
        "fc1.weight": init(9 * 48, 0.4),
        "fc1.bias": init(9, 0.1),
        "fc2.weight": init(27, 0.6),
        "fc2.bias": new Float32Array(3),
      });
      const before = await evaluateLoss(model, imageEvalBatches(images, "test", { B: 6 }));
      using set = await AdapterSet.attach(model, {
        method: "lora",
        targets: ["fc1", "fc2"],
        r: 2,
        loraAlpha: 2,
        seed: 3,
      }, { maxRows: 6 });
      using log = await RunLog.open(join(dir, "run"));
      const steps = 40;
      await train({
        model,
        groups: [{ kind: "adamw", lr: 0.02, params: set.parameters() }],
        hooks: set,
        batches: imageTrainBatches(images, { B: 6, seed: 5, steps }),
        schedule: { kind: "constant", lr: 0.02, totalSteps: steps },
        log,
        logEvery: 10,
        checkpointEvery: 0,
      });
      set.prepareStep();
      const after = await evaluateLoss(model, imageEvalBatches(images, "test", { B: 6 }));
      assert.ok(
        after.loss < 0.7 * before.loss,
        `seed ${seed}: loss ${before.loss} -> ${after.loss}`,
      );
      assert.equal(after.tokens, 24);
      const accuracy = await evaluateAccuracy(model, imageEvalBatches(images, "test", { B: 6 }));
      assert.equal(accuracy.n, 24);
      assert.ok(accuracy.accuracy > 60, `seed ${seed}: accuracy ${accuracy.accuracy}`);
    });
  },
);

Deno.test(
  "with a ViT loaded, the stage takes its folder's preprocessing (both layouts) and the ViT reads the batches",
  GPU_TEST,
  async () => {
    const seed = freshSeed() % 10_000;
    await withTempDir("images-vit", async (dir) => {
      // Images neither square nor the model's size: 14 wide, 10 high, RGB.
      for (const name of ["Coat", "Dress", "Trouser"]) {
        await Deno.mkdir(join(dir, "imgs", name), { recursive: true });
        for (let i = 0; i < 2; i++) {
          const data = Uint8Array.from(
            { length: 14 * 10 * 3 },
            (_, j) => (j * 7 + i * 31 + seed) % 256,
          );
          await Deno.writeFile(
            join(dir, "imgs", name, `${i}.png`),
            pngBytes({ width: 14, height: 10, channels: 3, data }),
          );
        }
      }
      const expected = {
        "tiny-vit":
          /resize to 12x12 \(bilinear\), mean \[0.5, 0.5, 0.5\], std \[0.5, 0.5, 0.5\]; from .*tiny-vit\/preprocessor_config.json/,
        "tiny-vit-timm":
          /shorter side to 12, centre 12x12 \(bicubic\).*tiny-vit-timm\/config.json \(pretrained_cfg\)/,
      };
      for (const [fixture, pattern] of Object.entries(expected)) {
        // The load stage still reads a tokenizer for every model (a ViT folder has none): the model is
        // loaded here and the data stage runs on it as the runner would.
        using vit = await loadModel(await testGpu(), join("fixtures", fixture));
        const { state, said } = await runStage(
          "train: imgs\ntest: imgs",
          vit,
          join("fixtures", fixture),
          dir,
        );
        assert.deepEqual(state.data!.images!.inputShape, [3, 12, 12]);
        assert.match(said[0], pattern);
      }
      const images = await loadImageData({
        train: join(dir, "imgs"),
        samplingSeed: 0,
        preprocess: await preprocessSettings("fixtures/tiny-vit"),
        augment: AUGMENT_DEFAULTS,
        augmentSeed: seed,
      });
      using vit = await loadModel(await testGpu(), "fixtures/tiny-vit");
      const r = await evaluateLoss(vit, imageEvalBatches(images, "train", { B: 4 }));
      assert.ok(Number.isFinite(r.loss) && r.tokens === 6, `loss ${r.loss} over ${r.tokens}`);
      const step = imageTrainBatches(images, { B: 3, seed: 1, steps: 1 }).nextStep()!;
      const logits = await vit.forward(step[0]).logits.read();
      assert.ok(logits.every(Number.isFinite));
    });
  },
);
