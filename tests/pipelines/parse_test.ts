import assert from "node:assert/strict";
import {
  checkFiles,
  locate,
  parsePipeline,
  PipelineError,
  pipelineError,
} from "../../pipelines/parse.ts";
import type { Pipeline } from "../../pipelines/schema.ts";
import { EXAMPLE_PIPELINE, schemaMarkdown } from "../../pipelines/schema_docs.ts";

const FULL = `version: 1
name: full
seed: 5
stages:
  - kind: load
    model: fixtures/tiny-gpt2
  - kind: data
    file: fixtures/data-to-text/train.csv
    format: e2e
    split: { train: 0.8, validation: 0.1, test: 0.1 }
    prompt: "{{ mr }}\\n"
    completion: " {{ ref }}"
  - id: base
    kind: evaluate
    metrics: [loss, bleu, rouge_l]
    decoding: beam
    beams: 2
  - kind: attach
    targets: [h.*.attn.c_attn.q]
    k: 32
    overrides: [{ pattern: h.0.attn.c_attn.q, r: 2 }]
  - kind: train
    steps: 20
    lr: 1.0e-2
    optimizer: sgd
    momentum: 0.9
    qat: { bits: 3 }
  - kind: quantize
  - kind: save
    quant: { bits: 4, scheme: asymmetric }
  - kind: generate
    prompts: ["name[Aromi]\\n"]
    temperature: 0.7
    top_k: 5
  - kind: merge
  - kind: export_peft
`;

const EXPECTED: Pipeline = {
  version: 1,
  name: "full",
  seed: 5,
  out: "out/full",
  file: "tests/full.yaml",
  baseDir: "tests",
  stages: [
    {
      kind: "load",
      id: "load",
      model: "fixtures/tiny-gpt2",
      dtype: "as-stored",
      init: "pretrained",
    },
    {
      kind: "data",
      id: "data",
      format: "e2e",
      file: "fixtures/data-to-text/train.csv",
      split: { train: 0.8, validation: 0.1, test: 0.1, seed: 5 },
      prompt: "{{ mr }}\n",
      completion: " {{ ref }}",
      seqLen: 256,
      pack: false,
      eos: true,
      truncate: true,
    },
    {
      kind: "evaluate",
      id: "base",
      split: "validation",
      metrics: ["loss", "bleu", "rouge_l"],
      decoding: "beam",
      beams: 2,
      lengthPenalty: 1,
      noRepeatNgram: 0,
      maxNewTokens: 32,
      stop: [],
    },
    {
      kind: "attach",
      id: "attach",
      method: "nola",
      targets: ["h.*.attn.c_attn.q"],
      head: "auto",
      r: 8,
      k: 32,
      l: 32,
      loraAlpha: 8,
      seed: 5,
      init: "official",
      shareBasis: false,
      overrides: [{ pattern: "h.0.attn.c_attn.q", r: 2 }],
    },
    {
      kind: "train",
      id: "train",
      steps: 20,
      batchSize: 8,
      gradAccum: 1,
      lr: 1e-2,
      optimizer: "sgd",
      betas: [0.9, 0.999],
      eps: 1e-8,
      momentum: 0.9,
      dampening: 0,
      nesterov: false,
      weightDecay: 0,
      schedule: { kind: "linear", minLr: 0 },
      maxGradNorm: 1,
      labelSmoothing: 0,
      evalEvery: 0,
      patience: 0,
      logEvery: 10,
      checkpointEvery: 100,
      qat: { bits: 3, scheme: "symmetric" },
      full: false,
    },
    { kind: "quantize", id: "quantize", bits: 4, scheme: "symmetric" },
    {
      kind: "save",
      id: "save",
      path: "adapter.safetensors",
      quant: { bits: 4, scheme: "asymmetric" },
    },
    {
      kind: "generate",
      id: "generate",
      prompts: ["name[Aromi]\n"],
      n: 3,
      maxNewTokens: 32,
      temperature: 0.7,
      topK: 5,
      topP: 1,
      seed: 5,
      stop: [],
      noRepeatNgram: 0,
    },
    { kind: "merge", id: "merge", out: "merged" },
    { kind: "export_peft", id: "export_peft", out: "peft" },
  ],
};

/** The error `parsePipeline` throws for `text` (with `overrides`). */
function errorOf(text: string, overrides: string[] = []): PipelineError {
  try {
    parsePipeline(text, { file: "run.yaml", overrides });
  } catch (error) {
    assert.ok(error instanceof PipelineError, `not a PipelineError: ${error}`);
    assert.ok(error instanceof SyntaxError);
    assert.ok(!error.message.includes("\n"), "one line");
    return error;
  }
  assert.fail("no error");
}

Deno.test("a full pipeline becomes the typed object with every default filled in", () => {
  assert.deepStrictEqual(parsePipeline(FULL, { file: "tests/full.yaml" }), EXPECTED);
});

Deno.test("the documented example pipeline is valid", () => {
  const p = parsePipeline(EXAMPLE_PIPELINE, { file: "pipelines/example.yaml" });
  assert.deepStrictEqual(p.stages.map((s) => s.id), [
    "load",
    "data",
    "before",
    "attach",
    "train",
    "quantize",
    "after",
    "save",
    "generate",
  ]);
  assert.equal(p.out, "out/data-to-text-nola");
});

Deno.test("a YAML syntax error shows its line and position", () => {
  const e = errorOf(
    "version: 1\nname: x\nstages:\n  - kind: load\n    model: [a, b\n  - kind: data\n",
  );
  assert.match(e.message, /^run\.yaml: YAML syntax error \(line \d+:\d+\): .+: "/);
  assert.equal(e.file, "run.yaml");
  assert.ok(e.line !== undefined && e.line >= 5);
  assert.ok(
    e.message.endsWith('"model: [a, b"') || e.message.endsWith('"- kind: data"'),
    e.message,
  );
  const tab = errorOf("version: 1\nname: x\nstages: [ {kind: load, model: m}\n");
  assert.match(tab.message, /YAML syntax error \(line \d+:\d+\)/);
});

Deno.test("an unknown key names its path, position and the closest key", () => {
  const e = errorOf(FULL.replace("    lr: 1.0e-2", "    lerning_rate: 1.0e-2"));
  assert.equal(
    e.message,
    'run.yaml: Unknown key "lerning_rate" at stages[4] (line 24:5): did you mean "lr"?',
  );
  assert.deepStrictEqual([e.path, e.line, e.column], ["stages[4].lerning_rate", 24, 5]);
  assert.equal(
    errorOf(FULL.replace("seed: 5", "sed: 5")).message,
    'run.yaml: Unknown key "sed" at top level (line 3:1): did you mean "seed"?',
  );
  const far = errorOf(FULL.replace("    k: 32", "    zzzzzzzz: 32"));
  assert.match(
    far.message,
    /Unknown key "zzzzzzzz" at stages\[3\] \(line 20:5\): expected one of /,
  );
});

Deno.test("a value of the wrong type or out of range is reported at the value", () => {
  const e = errorOf(FULL.replace("lr: 1.0e-2", "lr: fast"));
  assert.equal(e.message, 'run.yaml: stages[4].lr must be a number, got "fast" (line 24:9)');
  assert.deepStrictEqual([e.path, e.line, e.column], ["stages[4].lr", 24, 9]);
  assert.equal(
    errorOf(FULL.replace("bits: 3", "bits: 12")).message,
    "run.yaml: stages[4].qat.bits must be an integer from 1 to 8, got 12 (line 27:18)",
  );
  assert.equal(
    errorOf(FULL.replace("steps: 20", "steps: 2.5")).message,
    "run.yaml: stages[4].steps must be an integer of at least 1, got 2.5 (line 23:12)",
  );
  assert.equal(
    errorOf(FULL.replace("decoding: beam", "decoding: beem")).message,
    'run.yaml: stages[2].decoding must be one of "greedy", "beam", got "beem" (line 16:15): ' +
      'did you mean "beam"?',
  );
  assert.equal(
    errorOf(FULL.replace("targets: [h.*.attn.c_attn.q]", "targets: h.*.attn.c_attn.q")).message,
    'run.yaml: stages[3].targets must be a list, got "h.*.attn.c_attn.q" (line 19:14)',
  );
});

Deno.test("a missing required key names the mapping that lacks it", () => {
  const e = errorOf(FULL.replace("    model: fixtures/tiny-gpt2\n", ""));
  assert.equal(e.message, 'run.yaml: Missing required key "model" at stages[0] (line 5:5)');
  assert.equal(
    errorOf(FULL.replace("version: 1\n", "")).message,
    'run.yaml: Missing required key "version" at top level (line 1:1)',
  );
});

Deno.test("an unknown stage kind suggests the closest kind", () => {
  const e = errorOf(FULL.replace("kind: quantize", "kind: quantise"));
  assert.equal(
    e.message,
    'run.yaml: Unknown stage kind "quantise" at stages[5].kind (line 28:11): ' +
      'did you mean "quantize"?',
  );
});

Deno.test("duplicate ids name both stages", () => {
  assert.equal(
    errorOf(FULL.replace("id: base", "id: train")).message,
    'run.yaml: Duplicate stage id "train" at stages[4] (line 22:5): ' +
      "first used at stages[2] (line 13:5); give each train stage its own id",
  );
});

Deno.test("a stage without the earlier stage it needs is reported, and a later one pointed at", () => {
  const swapped = FULL.replace(
    "  - kind: load\n    model: fixtures/tiny-gpt2\n",
    "",
  ).replace("  - kind: merge\n", "  - kind: merge\n  - kind: load\n    model: m\n");
  assert.equal(
    errorOf(swapped).message,
    'run.yaml: Stage "base" at stages[1] needs an earlier "load" stage (line 11:5): ' +
      "the load stage is stages[8], after it",
  );
  const noAttach = FULL.replace(/ {2}- kind: attach\n(?: {4}.*\n)+/, "");
  assert.equal(
    errorOf(noAttach).message,
    'run.yaml: Stage "train" at stages[3] needs an earlier "attach" stage (line 18:5)',
  );
  const fullTraining = "version: 1\nname: p\nstages:\n  - {kind: load, model: m}\n" +
    "  - {kind: data, train: t.csv, prompt: a, completion: b}\n" +
    "  - {kind: train, lr: 1.0e-3, full: true}\n  - {kind: merge}\n";
  const stages = parsePipeline(fullTraining).stages;
  assert.equal(stages.length, 4);
  assert.ok(stages[2].kind === "train" && stages[2].epochs === 1 && stages[2].steps === undefined);
});

Deno.test("cross-key rules point at the conflicting key", () => {
  assert.equal(
    errorOf(FULL.replace("steps: 20", "steps: 20\n    epochs: 2")).message,
    'run.yaml: stages[4].epochs cannot be given with "steps" (line 24:5)',
  );
  assert.equal(
    errorOf(FULL.replace("test: 0.1 }", "test: 0.2 }")).message,
    "run.yaml: stages[1].split shares must sum to 1, got 1.1 (line 10:12)",
  );
  assert.equal(
    errorOf(FULL.replace("momentum: 0.9", "betas: [0.9, 0.99]")).message,
    "run.yaml: stages[4].betas only applies with optimizer: adamw (line 26:5)",
  );
});

Deno.test("overrides set values by stage id before validation", () => {
  const p = parsePipeline(FULL, {
    overrides: [
      "stages.train.lr=1e-3",
      "seed=3",
      "stages.attach.targets=[h.*.attn.c_attn.q, h.*.attn.c_attn.v]",
      "stages.train.schedule.kind=cosine",
      "stages.attach.overrides.0.r=4",
      "stages.base.stop=['\\n']",
    ],
  });
  const train = p.stages[4];
  const attach = p.stages[3];
  assert.ok(train.kind === "train" && attach.kind === "attach");
  assert.equal(train.lr, 1e-3);
  assert.equal(p.seed, 3);
  assert.equal(attach.seed, 3, "derived defaults see the overridden seed");
  assert.deepStrictEqual(attach.targets, ["h.*.attn.c_attn.q", "h.*.attn.c_attn.v"]);
  assert.deepStrictEqual(train.schedule, { kind: "cosine", minLr: 0 });
  assert.deepStrictEqual(attach.overrides, [{ pattern: "h.0.attn.c_attn.q", r: 4 }]);
  assert.deepStrictEqual(p.stages[2].kind === "evaluate" && p.stages[2].stop, ["\\n"]);
});

Deno.test("an override's mistakes name the override", () => {
  const e = errorOf(FULL, ["stages.train.lr=fast"]);
  assert.equal(
    e.message,
    'run.yaml: stages[4].lr must be a number, got "fast" (override "stages.train.lr=fast")',
  );
  assert.deepStrictEqual([e.path, e.line, e.override], [
    "stages[4].lr",
    undefined,
    "stages.train.lr=fast",
  ]);
  assert.equal(
    errorOf(FULL, ["stages.tran.lr=1"]).message,
    'run.yaml: Unknown stage "tran" (override "stages.tran.lr=1"): did you mean "train"?',
  );
  assert.equal(
    errorOf(FULL, ["stages.train.lerning_rate=1"]).message,
    'run.yaml: Unknown key "lerning_rate" at stages[4] (override "stages.train.lerning_rate=1"): ' +
      'did you mean "lr"?',
  );
  assert.equal(
    errorOf(FULL, ["seed"]).message,
    'run.yaml: Invalid override, expected KEY=VALUE (override "seed")',
  );
  assert.match(
    errorOf(FULL, ["stages.attach.targets=[a"]).message,
    /^run\.yaml: Invalid value: .+ \(override "stages\.attach\.targets=\[a"\)$/,
  );
});

Deno.test("checkFiles reports the first missing input with its path and line", async () => {
  await checkFiles(parsePipeline(FULL, { file: "full.yaml" }));
  const p = parsePipeline(FULL.replace("train.csv", "trian.csv"), { file: "run.yaml" });
  const e = await checkFiles(p).then(() => undefined, (error) => error);
  assert.ok(e instanceof PipelineError);
  assert.equal(
    e.message,
    'run.yaml: stages[1].file: no such file "fixtures/data-to-text/trian.csv" (line 8:11)',
  );
  assert.deepStrictEqual([e.path, e.line, e.column], ["stages[1].file", 8, 11]);
  const moved = parsePipeline(FULL, { file: "tests/full.yaml" });
  await assert.rejects(
    () => checkFiles(moved),
    new RegExp(
      'tests/full\\.yaml: stages\\[0\\]\\.model: no such folder "fixtures/tiny-gpt2" ' +
        '\\(line 6:12\\): looked for "tests/fixtures/tiny-gpt2"$',
    ),
    "relative paths resolve against the pipeline file's folder",
  );
  await checkFiles(moved, ".");
  await assert.rejects(
    () => checkFiles(parsePipeline(FULL.replace("tiny-gpt2", "tiny-gpt2/config.json"))),
    /stages\[0\]\.model must be a folder, "fixtures\/tiny-gpt2\/config\.json" is a file/,
  );
});

Deno.test("pipelineError places the runner's own errors", () => {
  const p = parsePipeline(FULL, { file: "run.yaml" });
  assert.deepStrictEqual(locate(p, "stages[3].targets[0]"), { line: 19, column: 15 });
  assert.deepStrictEqual(locate(p, "stages[3].seed"), { line: 18, column: 5 }, "a default");
  assert.equal(
    pipelineError(p, "stages[3].targets[0]", 'Target "x" matches no module').message,
    'run.yaml: Target "x" matches no module (line 19:15)',
  );
});

Deno.test("docs/pipelines.md is the text schemaMarkdown() generates", async () => {
  const committed = await Deno.readTextFile(new URL("../../docs/pipelines.md", import.meta.url));
  assert.equal(
    committed,
    schemaMarkdown(),
    "docs/pipelines.md is stale: regenerate it as its header says",
  );
  for (const key of ["lora_alpha", "warmup_ratio", "max_new_tokens", "base_model_name"]) {
    assert.ok(committed.includes(`\`${key}\``) || committed.includes(`.${key}\``), key);
  }
});
