// The load stage's GPU memory estimate (models/memory_estimate.ts; held to the real allocation by
// tests/models/memory_estimate_test.ts): printed before the model is allocated for the pipeline's
// own base, adapters, micro-batch and optimizer, recorded in the summary, and a run over
// `maxMemory` (the CLI's --max-memory) refused in one line before anything is loaded.

import assert from "node:assert/strict";
import { planAdapters } from "../../adapters/attach.ts";
import {
  checkpointDtypes,
  estimateTrainingMemory,
  formatEstimate,
} from "../../models/memory_estimate.ts";
import { modelShape, readModelConfig } from "../../models/registry.ts";
import { PipelineError } from "../../pipelines/parse.ts";
import { runPipeline } from "../../pipelines/run.ts";
import { tempDir } from "../_util.ts";

const MODEL = "fixtures/tiny-gpt2";

async function pipeline(dir: string): Promise<string> {
  const lines = Array.from({ length: 16 }, (_, i) => JSON.stringify({ q: `n ${i}`, a: `${i}` }));
  await Deno.writeTextFile(`${dir}/task.jsonl`, lines.join("\n") + "\n");
  const path = `${dir}/p.yaml`;
  await Deno.writeTextFile(
    path,
    `version: 1
name: budget
out: ${dir}/run
stages:
  - kind: load
    model: ../../../${MODEL}
    quantize_base: nf4
  - kind: data
    file: task.jsonl
    split: { train: 0.75, validation: 0.125, test: 0.125 }
    prompt: "{{ q }}:"
    completion: " {{ a }}"
    seq_len: 12
  - kind: attach
    targets: [all-linear]
    r: 2
    k: 16
  - kind: train
    steps: 1
    batch_size: 3
    lr: 1.0e-2
  - kind: evaluate
    split: test
    metrics: [loss]
`,
  );
  return path;
}

/** The estimate computed here, from the same inputs the pipeline names. */
async function expected(): Promise<ReturnType<typeof estimateTrainingMemory>> {
  const config = await readModelConfig(MODEL);
  const modules = planAdapters(modelShape(config), {
    method: "nola",
    targets: ["all-linear"],
    r: 2,
    k: 16,
    loraAlpha: 16,
    seed: 0,
  });
  return estimateTrainingMemory(config, {
    model: { baseFormat: "nf4", trainAll: false },
    storedDtypes: await checkpointDtypes(MODEL, config),
    batch: { B: 3, T: 12 },
    evaluation: { B: 8, T: 12 },
    adapters: { modules, maxRows: 8 * 12 },
    optimizer: { kind: "adamw" },
  });
}

Deno.test("load prints the run's memory estimate before loading and records it", async () => {
  const dir = await tempDir("memory-budget");
  const path = await pipeline(dir);
  const estimate = await expected();
  const lines: string[] = [];
  // A budget of exactly the estimate is enough.
  await runPipeline(path, { say: (l) => lines.push(l), maxMemory: estimate.total });
  const want = `GPU memory estimate, batch 3 x 12: ${formatEstimate(estimate)}`;
  const at = lines.indexOf(want);
  assert(at >= 0, `${want}\nnot in:\n${lines.join("\n")}`);
  assert(lines.findIndex((l) => l.startsWith("loaded ")) > at, "printed before the load");
  assert.match(want, /, evaluation [\d,]+; weights f32 [\d,]+, nf4 [\d,]+\)$/);
  const kinds = Object.entries(estimate.weightsByKind)
    .map(([kind, bytes]) => `${kind} ${bytes!.toLocaleString("en-US")}`).join(", ");
  assert.equal(lines[at + 1], `  weights by kind: ${kinds}`);
  assert.match(kinds, /^linear [\d,]+, embedding [\d,]+, position [\d,]+, norm [\d,]+, bias/);
  const summary = JSON.parse(await Deno.readTextFile(`${dir}/run/summary.json`));
  assert.equal(summary.load.estimate_bytes, estimate.total);
  assert.equal(summary.load.estimate_activation_bytes, estimate.activations);
  assert.equal(summary.load.estimate_evaluation_bytes, estimate.evaluation);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a run whose estimate is over maxMemory is refused in one line", async () => {
  const dir = await tempDir("memory-budget-over");
  const path = await pipeline(dir);
  const estimate = await expected();
  const lines: string[] = [];
  await assert.rejects(
    () => runPipeline(path, { say: (l) => lines.push(l), maxMemory: estimate.total - 1 }),
    (e: Error) =>
      e instanceof PipelineError && !e.message.includes("\n") &&
      e.message.includes(
        `stages[0]: training needs about ${estimate.total.toLocaleString("en-US")}`,
      ) &&
      e.message.includes(
        `over the ${(estimate.total - 1).toLocaleString("en-US")} of --max-memory`,
      ) &&
      /raise --max-memory/.test(e.message),
  );
  assert(!lines.some((l) => l.startsWith("loaded ")), "nothing was loaded");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("finetune --max-memory: a budget too small exits 1, a bad size exits 2", async () => {
  const dir = await tempDir("memory-budget-cli");
  const path = await pipeline(dir);
  const run = async (size: string) => {
    const out = await new Deno.Command("deno", {
      args: [
        "run",
        "--allow-read=.",
        "--allow-write=out",
        "--allow-env",
        "main.ts",
        "finetune",
        path,
        "--max-memory",
        size,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr).trim().split("\n");
    return { code: out.code, last: stderr.at(-1)!, stderr };
  };
  const small = await run("1KB");
  assert.equal(small.code, 1, small.stderr.join("\n"));
  assert.match(
    small.last,
    /^error: .*stages\[0\]: training needs about [\d,]+ bytes of GPU memory/,
  );
  assert.match(small.last, /over the 1,000 of --max-memory/);
  const bad = await run("lots");
  assert.equal(bad.code, 2, bad.stderr.join("\n"));
  assert.match(bad.stderr.join("\n"), /^error: --max-memory: Invalid size "lots"/m);
  await Deno.remove(dir, { recursive: true });
});
