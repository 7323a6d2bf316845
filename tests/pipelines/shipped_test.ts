import assert from "node:assert/strict";
import { loadPipeline } from "../../pipelines/parse.ts";
import { runPipeline } from "../../pipelines/run.ts";
import { tempDir } from "../_util.ts";

Deno.test("every pipeline shipped in pipelines/ parses", async () => {
  const names = [...Deno.readDirSync("pipelines")].map((e) => e.name).filter((n) =>
    n.endsWith(".yaml")
  );
  assert.ok(names.includes("llama-instruct.yaml") && names.includes("default.yaml"));
  for (const name of names) {
    const p = await loadPipeline(`pipelines/${name}`);
    assert.ok(p.stages.length > 0, name);
  }
});

Deno.test("pipelines/llama-instruct.yaml runs as shipped, shortened: Alpaca data, NOLA on every linear, multiple choice", async () => {
  const dir = await tempDir("llama-instruct");
  const lines: string[] = [];
  const result = await runPipeline("pipelines/llama-instruct.yaml", {
    say: (l) => lines.push(l),
    overrides: [
      `out=${dir}/run`,
      "stages.train.steps=2",
      "stages.train.eval_every=0",
      "stages.train.schedule.warmup_steps=1",
      "stages.before.max_examples=2",
      "stages.before.max_new_tokens=3",
      "stages.before.choices.max_items=4",
      "stages.after.max_examples=2",
      "stages.after.max_new_tokens=3",
      "stages.after.choices.max_items=4",
      "stages.generate.n=1",
      "stages.generate.max_new_tokens=3",
    ],
  });
  assert.equal(result.interrupted, false);
  const summary = JSON.parse(await Deno.readTextFile(`${dir}/run/summary.json`));
  // 28 modules (4 layers x 7 linears) x (k + l) coefficients.
  assert.equal(summary.attach.trainable_parameters ?? summary.train.trainable_parameters, 28 * 256);
  for (const stage of ["before", "after"]) {
    assert.equal(summary[stage].mc_items, 4, stage);
    assert.ok(summary[stage].mc_accuracy >= 0 && summary[stage].mc_accuracy <= 100, stage);
    assert.ok(Number.isFinite(summary[stage].loss), stage);
  }
  assert.ok(lines.some((l) => l.includes("attached NOLA to 28 modules")), lines.join("\n"));
});

Deno.test("pipelines/vit-fewshot.yaml runs as shipped, shortened: 10-shot NOLA-MLP and a new head on the held-out classes", async () => {
  const dir = await tempDir("vit-fewshot");
  const lines: string[] = [];
  const result = await runPipeline("pipelines/vit-fewshot.yaml", {
    say: (l) => lines.push(l),
    overrides: [
      `out=${dir}/run`,
      "stages.data.eval_per_class=4",
      "stages.train.steps=2",
      "stages.train.schedule.warmup_steps=1",
    ],
  });
  assert.equal(result.interrupted, false);
  const summary = JSON.parse(await Deno.readTextFile(`${dir}/run/summary.json`));
  // 4 blocks x 2 MLP linears x (k + l) coefficients; the head is 5 classes x 64 + 5 biases.
  assert.equal(summary.attach.trainable_parameters, 8 * 256);
  assert.equal(summary.attach.head_parameters, 5 * 64 + 5);
  for (const stage of ["before", "after"]) {
    // 20 test images (4 of each of the five held-out classes): a hit is 5%.
    const accuracy = summary[stage].accuracy;
    assert.ok(Number.isInteger(accuracy / 5) && accuracy >= 0 && accuracy <= 100, stage);
    assert.ok(Number.isFinite(summary[stage].loss), stage);
  }
  assert.ok(
    lines.some((l) => l.includes("5 classes (Sandal, Shirt, Sneaker, Bag, Ankle boot)")),
    lines.join("\n"),
  );
  const adapter = await Deno.stat(`${dir}/run/adapter.safetensors`);
  assert.ok(adapter.size > 0);
});
