// `classify --model DIR [--adapter FILE] IMAGE...`: the top classes and their probabilities equal
// a float64 softmax of the logits of the same images preprocessed by the data code, with and
// without an adapter carrying a new head; the printed lines; a truncated image, a text model
// and a missing image each fail in one line naming the file.

import assert from "node:assert/strict";
import { join } from "node:path";
import { AdapterSet } from "../../adapters/attach.ts";
import { saveAdapter } from "../../adapters/adapter_file.ts";
import { newHead } from "../../adapters/head.ts";
import { readImage } from "../../data/images/image.ts";
import { preprocessImage, preprocessSettings } from "../../data/images/preprocess.ts";
import type { Model } from "../../models/model.ts";
import { loadModel } from "../../models/registry.ts";
import { classifyImages } from "../../pipelines/commands.ts";
import { freshSeed, GPU_TEST, randomArray, testGpu, withTempDir } from "../_util.ts";
import { jpegBytes, pngBytes, randomBytes, smoothRgb } from "../data/_images.ts";

const LABELS = ["ant", "bee", "cow", "doe", "eel", "fox", "gnu"];

async function writeImages(dir: string, seed: number): Promise<string[]> {
  const files: string[] = [];
  for (let i = 0; i < 3; i++) {
    const path = join(dir, `img${i}.png`);
    const size = 10 + 3 * i;
    const data = randomBytes(size * size * 3, seed + i);
    await Deno.writeFile(path, pngBytes({ width: size, height: size, channels: 3, data }));
    files.push(path);
  }
  const jpg = join(dir, "photo.jpg");
  await Deno.writeFile(jpg, jpegBytes({ width: 16, height: 12, rgb: smoothRgb(16, 12, seed) }));
  files.push(jpg);
  return files;
}

// Float64 softmax of each image's logits, one image a forward (B = 1), sorted.
async function reference(model: Model, folder: string, files: string[], labels: string[]) {
  const settings = await preprocessSettings(folder);
  const out = [];
  for (const file of files) {
    const inputs = preprocessImage(await readImage(file), settings);
    const acts = model.forward({
      kind: "labelled",
      B: 1,
      inputShape: [3, settings.height, settings.width],
      inputs,
    });
    const logits = Array.from(
      new Float32Array(await model.gpu.read(acts.logits.buffer)).slice(0, labels.length),
    );
    const max = Math.max(...logits);
    const z = logits.reduce((s, v) => s + Math.exp(v - max), 0);
    out.push(
      logits.map((v, id) => ({ id, label: labels[id], probability: Math.exp(v - max) / z }))
        .sort((a, b) => b.probability - a.probability || a.id - b.id),
    );
  }
  return out;
}

function assertClose(
  got: { id: number; label: string; probability: number }[],
  want: { id: number; label: string; probability: number }[],
) {
  assert.deepEqual(got.map((c) => c.label), want.map((c) => c.label));
  for (const [i, c] of got.entries()) {
    assert.ok(Math.abs(c.probability - want[i].probability) < 1e-5, `${c.probability}`);
  }
}

Deno.test(
  "classifyImages: top classes and probabilities equal a float64 softmax of one-image forwards, with the checkpoint's head and an adapter's new head",
  GPU_TEST,
  async () => {
    const seed = freshSeed();
    const gpu = await testGpu();
    await withTempDir("classify", async (dir) => {
      const files = await writeImages(dir, seed);
      for (const folder of ["fixtures/tiny-vit", "fixtures/tiny-vit-timm"]) {
        using model = await loadModel(gpu, folder);
        const labels = [...model.classifierHead!.labels];
        const got = await classifyImages(model, files, { folder, top: 3 });
        const want = await reference(model, folder, files, labels);
        assert.deepEqual(got.map((r) => r.image), files);
        got.forEach((r, i) => assertClose(r.classes, want[i].slice(0, 3)));
        // Five classes: the default top 5 lists them all, summing to 1.
        const all = await classifyImages(model, files.slice(0, 1), { folder });
        assert.equal(all[0].classes.length, 5);
        const sum = all[0].classes.reduce((s, c) => s + c.probability, 0);
        assert.ok(Math.abs(sum - 1) < 1e-9);
      }
      // An adapter with a new 7-class head.
      using model = await loadModel(gpu, "fixtures/tiny-vit");
      using set = await AdapterSet.attach(model, {
        method: "nola",
        targets: ["mlp"],
        r: 1,
        k: 8,
        loraAlpha: 1,
        seed,
      }, { maxRows: 80 });
      set.setHead(newHead(model, LABELS, { seed }));
      for (const [i, p] of set.parameters().entries()) {
        gpu.write(p.param.buffer, randomArray(p.param.size, seed + i).map((x) => 0.3 * x));
      }
      set.prepareStep();
      const got = await classifyImages(model, files, { folder: "fixtures/tiny-vit" });
      const want = await reference(model, "fixtures/tiny-vit", files, LABELS);
      got.forEach((r, i) => assertClose(r.classes, want[i].slice(0, 5)));
      await saveAdapter(set, join(dir, "adapter.safetensors"), { baseModel: "tiny-vit" });
    });
  },
);

async function cli(args: string[]) {
  const out = await new Deno.Command("deno", {
    args: ["run", "--allow-read=.", "--allow-write=out", "--allow-env", "main.ts", ...args],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

Deno.test(
  "the classify command prints each image's top classes with an adapter's labels, and fails in one line on a truncated image, a text model and a missing file",
  GPU_TEST,
  async () => {
    const seed = freshSeed();
    const gpu = await testGpu();
    await withTempDir("classify-cli", async (dir) => {
      const files = await writeImages(dir, seed);
      using model = await loadModel(gpu, "fixtures/tiny-vit");
      using set = await AdapterSet.attach(model, {
        method: "none",
        targets: [],
        r: 1,
        loraAlpha: 1,
        seed,
      }, { maxRows: 80 });
      set.setHead(newHead(model, LABELS, { seed }));
      const adapter = join(dir, "probe.safetensors");
      await saveAdapter(set, adapter, { baseModel: "tiny-vit" });
      const want = await classifyImages(model, files.slice(0, 2), { folder: "fixtures/tiny-vit" });

      const ok = await cli([
        "classify",
        "--model",
        "fixtures/tiny-vit",
        "--adapter",
        adapter,
        ...files.slice(0, 2),
      ]);
      assert.equal(ok.code, 0, ok.stderr);
      const expected = want.flatMap((r) => [
        r.image,
        ...r.classes.map((c) => `  ${c.probability.toFixed(4)}  ${c.label}`),
      ]);
      assert.deepEqual(ok.stdout.trimEnd().split("\n"), expected);

      const truncated = join(dir, "cut.png");
      await Deno.writeFile(truncated, (await Deno.readFile(files[0])).slice(0, 40));
      const bad = await cli(["classify", "--model", "fixtures/tiny-vit", files[1], truncated]);
      assert.equal(bad.code, 1);
      const line = bad.stderr.trimEnd();
      assert.ok(!line.includes("\n"), line);
      assert.match(line, /^error: .*cut\.png/);

      const text = await cli(["classify", "--model", "fixtures/tiny-gpt2", files[0]]);
      assert.equal(text.code, 1);
      assert.match(
        text.stderr.trimEnd(),
        /^error: .*"fixtures\/tiny-gpt2" holds a gpt2 model, which predicts tokens: classify needs an image classifier \(a ViT\)$/,
      );

      const missing = await cli(["classify", "--model", "fixtures/tiny-vit", join(dir, "no.png")]);
      assert.equal(missing.code, 1);
      assert.match(missing.stderr.trimEnd(), /^error: IMAGE ".*no\.png": no such file$/);
    });
  },
);
