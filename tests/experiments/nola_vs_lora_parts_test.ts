import assert from "node:assert/strict";
import { join } from "node:path";
import { chooseExperiment } from "../../experiments/main.ts";
import {
  checkInputs,
  methodSettings,
  pipelineYaml,
  ptqStages,
  scoreStages,
  TARGETS,
  TEMPLATES,
  trainStages,
} from "../../experiments/nola_vs_lora_pipeline.ts";
import { writeResults } from "../../experiments/nola_vs_lora_output.ts";
import { loadPipeline, parsePipeline } from "../../pipelines/parse.ts";
import type {
  AttachStage,
  DataStage,
  EvaluateStage,
  QuantizeStage,
  SaveStage,
  TrainStage,
} from "../../pipelines/schema.ts";
import { withTempDir } from "../_util.ts";
import {
  DEFAULT_METHODS,
  ENV_NAMES,
  ExperimentUsageError,
  parseMethod,
  parseOptions,
} from "../../experiments/nola_vs_lora_options.ts";
import {
  type FinalRun,
  judgeFewerParams,
  judgeQuantCost,
  pickLearningRates,
  type SweepRun,
  tableRows,
} from "../../experiments/nola_vs_lora_report.ts";

const noEnv = () => undefined;

Deno.test("the experiment's runs read the data as the default job does", async () => {
  const job = await loadPipeline("pipelines/default.yaml");
  const data = job.stages.find((s) => s.kind === "data") as DataStage;
  assert.deepEqual({ prompt: data.prompt, completion: data.completion }, { ...TEMPLATES });
  const inputs = {
    base: "fixtures/tiny-gpt2-english",
    baseHash: "",
    data: "fixtures/data-to-text",
    dataHash: "",
    testMrs: 80,
    validationMrs: 80,
  };
  const run = parsePipeline(
    pipelineYaml("final-x", "out/x", { seed: 0, seqLen: 128, pack: false }, "", inputs),
    { file: "out/x/pipeline.yaml" },
  );
  const runData = run.stages.find((s) => s.kind === "data") as DataStage;
  assert.deepEqual([runData.prompt, runData.completion], [data.prompt, data.completion]);
});

Deno.test("method names parse into rows; anything else is one line saying what to write", () => {
  assert.deepEqual(parseMethod("lora-r4"), {
    id: "lora-r4",
    label: "LoRA r=4",
    kind: "lora",
    r: 4,
  });
  assert.deepEqual(parseMethod("nola-k1024-ptq"), {
    id: "nola-k1024-ptq",
    label: "NOLA k=l=1024 4-bit PTQ",
    kind: "nola",
    r: 8,
    k: 1024,
    quant: "ptq",
  });
  for (const bad of ["lora", "lora-r0", "nola-k64-gptq", "LoRA-r1", "nola-k"]) {
    assert.throws(() => parseMethod(bad), (e: Error) => {
      assert.ok(e instanceof ExperimentUsageError);
      assert.match(e.message, new RegExp(`^Unknown method "${bad}" in --methods: write lora-r`));
      assert.ok(!e.message.includes("\n"));
      return true;
    });
  }
});

Deno.test("options: the full run's defaults, --quick, and flags over variables over presets", () => {
  const full = parseOptions([], noEnv);
  assert.ok(full !== "help");
  assert.deepEqual(full.methods.map((m) => m.id), DEFAULT_METHODS);
  assert.equal(full.steps, 150);
  assert.equal(full.sweepSteps, 50);
  assert.equal(full.seeds, 3);
  assert.deepEqual(full.sweepFactors, [0.4, 1, 2.5, 6.25, 15.625]);
  assert.deepEqual(
    [full.beams, full.lengthPenalty, full.noRepeatNgram],
    [10, 0.8, 4],
    "the paper's decoding",
  );
  assert.equal(full.testExamples, undefined, "the whole test split");
  assert.equal(full.base, undefined, "the default job's base");

  const quick = parseOptions(["--quick"], noEnv);
  assert.ok(quick !== "help");
  assert.equal(quick.out, "out/experiments/nola-vs-lora-quick");
  assert.equal(quick.sweepFactors.length, 2);
  assert.equal(quick.testExamples, 5);

  const env = (name: string) => ({ NOLA_EXPERIMENT_STEPS: "77", NOLA_EXPERIMENT_SEEDS: "5" })[name];
  const mixed = parseOptions(["--quick", "--steps", "12", "--base", "m"], env);
  assert.ok(mixed !== "help");
  assert.equal(mixed.steps, 12, "a flag beats the variable");
  assert.equal(mixed.seeds, 5, "a variable beats --quick's preset");
  assert.equal(mixed.base, "m");
  assert.equal(parseOptions(["--help"], noEnv), "help");
});

Deno.test("a bad option is one line naming the flag or variable and what it wants", () => {
  const cases: [string[], ((n: string) => string | undefined) | undefined, RegExp][] = [
    [["--steps", "many"], undefined, /^--steps="many": want a whole number of at least 1/],
    [["--steps", "2.5"], undefined, /^--steps="2.5": want a whole number/],
    [[], (n) => (n === "NOLA_EXPERIMENT_SEEDS" ? "0" : undefined), /^NOLA_EXPERIMENT_SEEDS="0"/],
    [["--lr-nola=-1"], undefined, /^--lr-nola="-1": want a number above 0/],
    [["--sweep-factors", "1,x"], undefined, /^--sweep-factors="1,x": want numbers above 0/],
    [["--methods", "lora-r1,lora-r1"], undefined, /want each method once \(lora-r1\)/],
    [["--stpes", "3"], undefined, /stpes.*\(see --help\)$/],
  ];
  for (const [args, env, want] of cases) {
    assert.throws(() => parseOptions(args, env ?? noEnv), (e: Error) => {
      assert.ok(e instanceof ExperimentUsageError, `${args}: ${e}`);
      assert.match(e.message, want);
      assert.ok(!e.message.includes("\n"), e.message);
      return true;
    });
  }
});

Deno.test("the experiment task takes a name, nola-vs-lora when none is given", () => {
  assert.deepEqual(chooseExperiment([]), { name: "nola-vs-lora", rest: [] });
  assert.deepEqual(chooseExperiment(["--quick"]), { name: "nola-vs-lora", rest: ["--quick"] });
  assert.deepEqual(chooseExperiment(["nola-vs-lora", "--seeds", "2"]), {
    name: "nola-vs-lora",
    rest: ["--seeds", "2"],
  });
  assert.throws(() => chooseExperiment(["nola-vs-lor"]), (e: Error) => {
    assert.ok(e instanceof ExperimentUsageError);
    assert.match(e.message, /^Unknown experiment "nola-vs-lor": choose one of nola-vs-lora/);
    return true;
  });
});

function sweepRun(method: string, lr: number, valLoss: number | "diverged"): SweepRun {
  return {
    method,
    lr,
    seed: 0,
    steps: 10,
    figures: valLoss === "diverged"
      ? { diverged: "Training stopped: loss is NaN at step 3" }
      : { valLoss, finalTrainLoss: valLoss + 0.1, trainableParameters: 100 },
    seconds: 1,
    folder: "f",
  };
}

Deno.test("the sweep picks the rate of lowest validation loss and flags a pick at the edge", () => {
  const picks = pickLearningRates([
    sweepRun("lora-r1", 0.01, 3.2),
    sweepRun("lora-r1", 0.002, 3.5),
    sweepRun("lora-r1", 0.005, 3.1),
    sweepRun("nola-k64", 0.03, 2.9),
    sweepRun("nola-k64", 0.075, "diverged"),
    sweepRun("nola-k64", 0.012, 3.0),
    sweepRun("nola-k256", 0.1, 2.0),
    sweepRun("nola-k256", 0.2, 2.0),
  ]);
  assert.deepEqual(picks.get("lora-r1"), { lr: 0.005, valLoss: 3.1, edge: false });
  assert.deepEqual(picks.get("nola-k64"), { lr: 0.03, valLoss: 2.9, edge: false }, "NaN skipped");
  assert.deepEqual(picks.get("nola-k256"), { lr: 0.1, valLoss: 2.0, edge: false }, "tie: smaller");
  const edge = pickLearningRates([1, 2, 3].map((i) => sweepRun("x", i, 10 - i)));
  assert.deepEqual(edge.get("x"), { lr: 3, valLoss: 7, edge: true });
  const all = pickLearningRates([sweepRun("y", 1, "diverged"), sweepRun("y", 2, "diverged")]);
  assert.equal(all.get("y")!.lr, 1);
  assert.ok(Number.isNaN(all.get("y")!.valLoss));
});

function finalRun(
  method: string,
  seed: number,
  params: number,
  f: { valLoss: number; bleu: number },
  ptq?: { valLoss: number; bleu: number },
): FinalRun {
  const scores = (s: { valLoss: number; bleu: number }) => ({
    ...s,
    rougeL: s.bleu + 10,
    slotError: 5,
    adapterBytes: params * 4,
  });
  return {
    method,
    lr: 0.01,
    seed,
    steps: 100,
    figures: {
      trainableParameters: params,
      ...scores(f),
      ...(ptq ? { ptq: { ...scores(ptq), adapterBytes: params / 2 } } : {}),
    },
    seconds: 1,
    folder: "f",
  };
}

Deno.test("rows take mean and std over seeds; a PTQ row takes the quantized scores", () => {
  const finals = [
    finalRun("lora-r1", 0, 2048, { valLoss: 3.0, bleu: 40 }),
    finalRun("lora-r1", 1, 2048, { valLoss: 3.2, bleu: 44 }),
    finalRun("nola-k64", 0, 1024, { valLoss: 3.1, bleu: 41 }, { valLoss: 3.15, bleu: 40.5 }),
    finalRun("nola-k64", 1, 1024, { valLoss: 3.3, bleu: 43 }, { valLoss: 3.35, bleu: 42.5 }),
    { ...finalRun("nola-k64", 2, 1024, { valLoss: 0, bleu: 0 }), figures: { diverged: "NaN" } },
  ];
  const rows = tableRows(["lora-r1", "nola-k64", "nola-k64-ptq"].map(parseMethod), finals);
  assert.deepEqual(rows[0].bleu, { values: [40, 44], mean: 42, std: Math.sqrt(8), n: 2 });
  assert.equal(rows[1].n, 2);
  assert.equal(rows[1].diverged, 1);
  assert.deepEqual(rows[2].bleu.values, [40.5, 42.5]);
  assert.equal(rows[2].bytes, 512);
  assert.equal(rows[2].params, 1024);

  // BLEU: NOLA 42 ± 1.41 against 42 ± 2.83: equal, holds. Loss 3.2 against 3.1: 0.1 worse,
  // pooled std sqrt((0.02 + 0.02) / 2) = 0.1414: holds.
  const [bleu, loss] = judgeFewerParams(rows);
  assert.equal(bleu.verdict, "holds");
  assert.match(bleu.detail, /^NOLA k=l=64 \(1,024 trainable parameters against 2,048\)/);
  assert.equal(loss.verdict, "holds");
  assert.match(loss.detail, /0\.1000 higher \(worse\); one pooled std is 0\.1414/);

  // PTQ: 41.5 against 42: 1.19% lower, over 1%.
  const [quant] = judgeQuantCost(rows);
  assert.equal(quant.verdict, "does not hold");
  assert.match(
    quant.detail,
    /BLEU 41\.50 ± 1\.41 against 42\.00 ± 1\.41 in full precision: 1\.19% lower/,
  );
});

Deno.test("the claims say 'does not hold' and 'cannot be judged' when the numbers say so", () => {
  const finals = [
    finalRun("lora-r1", 0, 2048, { valLoss: 3.0, bleu: 50 }),
    finalRun("lora-r1", 1, 2048, { valLoss: 3.0, bleu: 52 }),
    finalRun("nola-k64", 0, 1024, { valLoss: 3.5, bleu: 40 }, { valLoss: 3.5, bleu: 39.9 }),
    finalRun("nola-k64", 1, 1024, { valLoss: 3.5, bleu: 42 }, { valLoss: 3.5, bleu: 41.9 }),
    finalRun("nola-k256", 0, 4096, { valLoss: 2.0, bleu: 60 }),
  ];
  const rows = tableRows(
    ["lora-r1", "nola-k64", "nola-k64-ptq", "nola-k256"].map(parseMethod),
    finals,
  );
  const [bleu, loss] = judgeFewerParams(rows);
  // 41 against 51: 10 worse, pooled std sqrt(2) (the row k=256 has more parameters: not counted).
  assert.equal(bleu.verdict, "does not hold");
  assert.match(bleu.detail, /^NOLA k=l=64 .*10\.00 lower \(worse\); one pooled std is 1\.41$/);
  assert.equal(loss.verdict, "does not hold");
  // 41.9 - 41 = 0.1 / 41 = 0.24% lower: holds.
  const [quant] = judgeQuantCost(rows);
  assert.equal(quant.verdict, "holds");
  assert.match(quant.detail, /0\.24% lower/);

  const none = tableRows(["lora-r1", "nola-k256"].map(parseMethod), finals);
  assert.deepEqual(judgeFewerParams(none).map((c) => c.verdict), [
    "cannot be judged",
    "cannot be judged",
  ]);
  assert.match(judgeFewerParams(none)[0].detail, /no NOLA row has fewer trainable parameters/);
  assert.equal(judgeQuantCost(none)[0].verdict, "cannot be judged");
});

Deno.test("deno task experiment runs the dispatcher and may read every variable it documents", async () => {
  const task: string = JSON.parse(await Deno.readTextFile("deno.json")).tasks.experiment;
  assert.match(task, /experiments\/main\.ts$/);
  const allowed = /--allow-env=(\S+)/.exec(task)![1].split(",");
  for (const name of ENV_NAMES) assert.ok(allowed.includes(name), `${name} in ${allowed}`);
});

Deno.test("each run's pipeline parses with the project's parser and says what the run does", () => {
  const options = parseOptions([], noEnv);
  assert.ok(options !== "help");
  const inputs = {
    base: "fixtures/tiny-gpt2-pretrained",
    baseHash: "",
    data: "fixtures/data-to-text",
    dataHash: "",
    testMrs: 80,
    validationMrs: 80,
  };
  const metrics = ["bleu", "rouge_l"];
  const parse = (id: string, ptq: boolean) => {
    const m = parseMethod(id);
    const settings = { ...methodSettings(m), seed: 2, seqLen: 128, pack: false };
    const stages = trainStages(m, 0.03, 300, 8) + scoreStages(options, metrics, "") +
      (ptq ? ptqStages(options, metrics) : "");
    const text = pipelineYaml(`final-${id}`, "out/x", settings, stages, inputs);
    return parsePipeline(text, { file: "out/x/pipeline.yaml" });
  };
  const lora = parse("lora-r2", false);
  assert.equal(lora.seed, 2);
  assert.deepEqual(lora.stages.map((s) => s.id), [
    "load",
    "data",
    "attach",
    "train",
    "test",
    "save",
  ]);
  const attach = lora.stages[2] as AttachStage;
  assert.deepEqual([attach.method, attach.r, attach.targets], ["lora", 2, TARGETS]);
  const train = lora.stages[3] as TrainStage;
  assert.deepEqual(
    [train.steps, train.batchSize, train.lr, train.labelSmoothing, train.schedule.warmupRatio],
    [300, 8, 0.03, 0.1, 0.1],
  );
  assert.equal(train.qat, undefined);
  const test = lora.stages[4] as EvaluateStage;
  assert.deepEqual(
    [
      test.split,
      test.decoding,
      test.beams,
      test.lengthPenalty,
      test.noRepeatNgram,
      test.maxExamples,
    ],
    ["test", "beam", 10, 0.8, 4, undefined],
    "the paper's decoding on the whole test split",
  );

  const ptq = parse("nola-k256", true);
  assert.deepEqual(ptq.stages.map((s) => s.id), [
    ...["load", "data", "attach", "train", "test", "save"],
    ...["quantize", "val_4bit", "test_4bit", "save_4bit"],
  ]);
  const nola = ptq.stages[2] as AttachStage;
  assert.deepEqual([nola.method, nola.r, nola.k, nola.l], ["nola", 8, 256, 256]);
  assert.equal((ptq.stages[6] as QuantizeStage).bits, 4);
  assert.equal((ptq.stages[9] as SaveStage).path, "adapter_4bit.safetensors");

  const qat = parse("nola-k1024-qat", false);
  assert.deepEqual((qat.stages[3] as TrainStage).qat, { bits: 4, scheme: "symmetric" });
});

Deno.test("a BLEU of 0 for LoRA r=1 leaves nothing to match: the claim cannot be judged on it", () => {
  const finals = [
    finalRun("lora-r1", 0, 2048, { valLoss: 7.0, bleu: 0 }),
    finalRun("nola-k64", 0, 1024, { valLoss: 6.0, bleu: 0 }),
  ];
  const [bleu, loss] = judgeFewerParams(
    tableRows(["lora-r1", "nola-k64"].map(parseMethod), finals),
  );
  assert.equal(bleu.verdict, "cannot be judged");
  assert.equal(bleu.detail, "LoRA r=1's BLEU is 0.00: nothing to match");
  assert.equal(loss.verdict, "holds");
  assert.match(loss.detail, /1\.0000 lower \(better\); one seed each: no spread measured$/);
});

Deno.test("writeResults writes the table in the order asked, the sweep, the claims and two charts", async () => {
  await withTempDir("nola-vs-lora-out", async (dir) => {
    const options = parseOptions(["--methods", "lora-r4,nola-k64,lora-r1,nola-k64-ptq"], noEnv);
    assert.ok(options !== "help");
    const finals = [0, 1].flatMap((seed) => [
      finalRun("lora-r4", seed, 8192, { valLoss: 2.5 + seed / 10, bleu: 50 + seed }),
      finalRun("lora-r1", seed, 2048, { valLoss: 3.0 + seed / 10, bleu: 40 + seed }),
      finalRun("nola-k64", seed, 1024, { valLoss: 3.1, bleu: 41 - seed }, {
        valLoss: 3.2,
        bleu: 40,
      }),
    ]);
    const sweep = [sweepRun("lora-r1", 0.002, 3.4), sweepRun("lora-r1", 0.005, 3.3)];
    await writeResults(dir, {
      options,
      base: "fixtures/some-base",
      testMrs: 80,
      validationMrs: 80,
      slotError: true,
      command: "deno task experiment nola-vs-lora",
      sweep,
      finals,
    });
    const md = await Deno.readTextFile(join(dir, "results.md"));
    const table = md.slice(0, md.indexOf("## The paper's claims"));
    const labels = [...table.matchAll(/^\| (LoRA r=\d|NOLA k=l=64[^|]*?) \| \d/gm)].map((m) =>
      m[1]
    );
    assert.deepEqual(labels, ["LoRA r=4", "NOLA k=l=64", "LoRA r=1", "NOLA k=l=64 4-bit PTQ"]);
    assert.ok(
      md.includes("| LoRA r=1 | 2,048 | 8,192 | 0.01 | 2 | 3.0500 ± 0.0707 | 40.50 ± 0.71 |"),
    );
    assert.ok(md.includes("| LoRA r=1 | 0.005 | 3.3000 | 3.4000 | yes |"), md);
    assert.ok(md.includes("- Test: 80 meaning representations (the whole split), beam 10"));
    assert.match(md, /\*\*NOLA matches LoRA r=1 with fewer parameters\*\* \(BLEU\): \*\*holds\*\*/);
    const json = JSON.parse(await Deno.readTextFile(join(dir, "results.json")));
    assert.deepEqual(
      json.rows.map((r: { method: string }) => r.method),
      options.methods.map((m) => m.id),
    );
    assert.equal(json.runs.length, 6);
    assert.deepEqual(json.picks["lora-r1"], { lr: 0.005, valLoss: 3.3, edge: false });
    // The LoRA line runs left to right (r=1 then r=4), though r=4 was asked first.
    const svg = await Deno.readTextFile(join(dir, "bleu.svg"));
    const path = /<path d="M([\d.]+) [\d.]+L([\d.]+) [\d.]+" stroke="#0072B2"/.exec(svg);
    assert.ok(path && Number(path[1]) < Number(path[2]), "LoRA's line goes by size");
    assert.equal(
      svg.match(/class="error-bar"/g)?.length,
      3,
      "a bar for each of the three rows whose seeds differ (the PTQ row's do not)",
    );
  });
});

Deno.test("a base or data folder that cannot serve is one line saying which and how to fix it", async () => {
  const refusal = async (base: string, data: string, want: RegExp, baseFrom?: string) => {
    const e = await checkInputs(base, data, { baseFrom }).catch((e) => e);
    assert.ok(e instanceof ExperimentUsageError, String(e));
    assert.match(e.message, want);
    assert.ok(!e.message.includes("\n"));
  };
  await refusal(
    "fixtures/nowhere",
    "fixtures/data-to-text",
    /^--base "fixtures\/nowhere": no such folder; give --base DIR$/,
  );
  await refusal(
    "fixtures/data-to-text",
    "fixtures/data-to-text",
    /^The default job's base "fixtures\/data-to-text" is not a model folder .* give another with --base DIR or NOLA_EXPERIMENT_BASE$/,
    "The default job's base",
  );
  await refusal(
    "fixtures/tiny-gpt2-pretrained",
    "fixtures",
    /^--data "fixtures" lacks train\.csv, validation\.csv, test\.csv/,
  );
  const inputs = await checkInputs("fixtures/tiny-gpt2-pretrained", "fixtures/data-to-text");
  assert.deepEqual([inputs.testMrs, inputs.validationMrs], [80, 80]);
  assert.match(inputs.baseHash, /^[0-9a-f]{64}$/);
});
