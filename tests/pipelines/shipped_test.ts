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
