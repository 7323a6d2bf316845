import assert from "node:assert/strict";
import { PipelineError } from "../../pipelines/parse.ts";
import { runPipeline } from "../../pipelines/run.ts";
import { tempDir } from "../_util.ts";

const ENV = "--allow-env=XDG_RUNTIME_DIR,NOLA_TEST_SEED,LOG_TOKENS,LOG_STREAM";

/** A small pipeline on the fixture GPT-2 (64 positions) and a JSON Lines task written here. */
async function smallPipeline(dir: string, stages: string): Promise<string> {
  const lines = Array.from(
    { length: 24 },
    (_, i) => JSON.stringify({ q: `count ${i}`, a: `${i + 1} ${i + 2} ${i + 3}` }),
  );
  await Deno.writeTextFile(`${dir}/task.jsonl`, lines.join("\n") + "\n");
  const path = `${dir}/p.yaml`;
  await Deno.writeTextFile(
    path,
    `version: 1
name: small
out: ${dir}/run
stages:
  - kind: load
    model: ../../../fixtures/tiny-gpt2
  - kind: data
    file: task.jsonl
    split: { train: 0.75, validation: 0.125, test: 0.125 }
    prompt: "{{ q }}:"
    completion: " {{ a }}"
    seq_len: 32
${stages}`,
  );
  return path;
}

Deno.test("a small pipeline runs every stage kind and writes its outputs", async () => {
  const dir = await tempDir("pipe");
  const path = await smallPipeline(
    dir,
    `  - id: before
    kind: evaluate
    metrics: [loss, bleu, exact_match]
    max_new_tokens: 6
  - kind: attach
    r: 2
    k: 16
  - kind: train
    steps: 4
    batch_size: 4
    lr: 1.0e-2
    eval_every: 2
    log_every: 2
    qat: { bits: 4 }
  - id: after
    kind: evaluate
    metrics: [loss]
  - kind: save
  - kind: generate
    prompts: ["count 3:"]
    max_new_tokens: 4
  - kind: merge
  - kind: export_peft
`,
  );
  const lines: string[] = [];
  const result = await runPipeline(path, { say: (l) => lines.push(l) });
  assert.equal(result.interrupted, false);
  assert.deepEqual(result.evaluations.map((e) => e.stage), ["before", "after"]);
  const summary = JSON.parse(await Deno.readTextFile(`${dir}/run/summary.json`));
  for (
    const id of [
      "load",
      "data",
      "before",
      "attach",
      "train",
      "after",
      "save",
      "generate",
      "merge",
      "export_peft",
    ]
  ) {
    assert(id in summary, `summary lacks ${id}`);
  }
  assert.equal(summary.save.quant_bits, 4);
  for (
    const file of [
      "adapter.safetensors",
      "merged/model.safetensors",
      "peft/adapter_config.json",
      "report.md",
      "loss.svg",
      "metrics.jsonl",
    ]
  ) {
    await Deno.stat(`${dir}/run/${file}`);
  }
  const text = lines.join("\n");
  assert.match(text, /trainable parameters: 128 \(LoRA r=1 on the same modules: 384\)/);
  assert.match(text, /stage\s+split\s+loss/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a missing data file fails with the YAML path and position", async () => {
  const dir = await tempDir("pipe-missing");
  const path = `${dir}/p.yaml`;
  await Deno.writeTextFile(
    path,
    `version: 1
name: missing
stages:
  - kind: load
    model: ../../../fixtures/tiny-gpt2
  - kind: data
    train: nowhere.csv
    prompt: "{{ q }}"
    completion: "{{ a }}"
    seq_len: 32
`,
  );
  await assert.rejects(
    () => runPipeline(path, { say: () => {} }),
    (e) =>
      e instanceof PipelineError &&
      /stages\[1\]\.train: no such file .*nowhere\.csv.*line 7:12/.test(e.message),
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a target pattern that matches no module names the closest modules", async () => {
  const dir = await tempDir("pipe-pattern");
  const path = await smallPipeline(
    dir,
    `  - kind: attach
    targets: [h.*.attn.c_atn.q]
`,
  );
  await assert.rejects(
    () => runPipeline(path, { say: () => {} }),
    (e) =>
      e instanceof PipelineError &&
      /"h\.\*\.attn\.c_atn\.q" matches no module; closest: "h\.\*\.attn\.c_attn\.q"/.test(
        e.message,
      ) &&
      /\(line 1[0-9]:\d+\)/.test(e.message),
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("without `eval_every` a train stage evaluates once, after its last step", async () => {
  const dir = await tempDir("pipe-eval-end");
  const path = await smallPipeline(
    dir,
    `  - kind: attach
    r: 2
    k: 16
  - kind: train
    steps: 3
    batch_size: 4
    lr: 1.0e-2
    checkpoint_every: 0
`,
  );
  await runPipeline(path, { say: () => {} });
  const metrics = (await Deno.readTextFile(`${dir}/run/metrics.jsonl`)).trim().split("\n")
    .map((line) => JSON.parse(line));
  assert.deepEqual(
    metrics.filter((r) => r.split === "validation").map((r) => r.step),
    [3],
  );
  const summary = JSON.parse(await Deno.readTextFile(`${dir}/run/summary.json`));
  assert.equal(summary.train.best_step, 3);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("the CLI exits 2 on usage errors and 1 with one line on pipeline errors", async () => {
  const run = async (...args: string[]) => {
    const out = await new Deno.Command("deno", {
      args: ["run", "--allow-read=.", "--allow-write=out", ENV, "main.ts", ...args],
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
  };
  const usage = await run("finetune", "--bogus");
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /usage: nola-gpu finetune/);
  const dir = await tempDir("cli");
  await Deno.writeTextFile(`${dir}/bad.yaml`, "version: 1\nname: bad\nstages:\n  - kind: lod\n");
  const bad = await run("finetune", `${dir}/bad.yaml`);
  assert.equal(bad.code, 1);
  assert.equal(bad.stderr.trim().split("\n").length, 1, bad.stderr);
  assert.match(bad.stderr, /Unknown stage kind "lod".*did you mean "load"/);
  await Deno.remove(dir, { recursive: true });
});
