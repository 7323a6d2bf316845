import assert from "node:assert/strict";
import { readChoiceItems } from "../../data/choices.ts";
import { evaluateMultipleChoice } from "../../eval/multiple_choice.ts";
import { loadModel } from "../../models/registry.ts";
import { Tokenizer } from "../../models/tokenizer.ts";
import { checkFiles, parsePipeline, PipelineError } from "../../pipelines/parse.ts";
import { runPipeline } from "../../pipelines/run.ts";
import { GPU_TEST, testGpu, withTempDir } from "../_util.ts";

const MODEL = "fixtures/tiny-gpt2-pretrained";

function errorOf(text: string): PipelineError {
  try {
    parsePipeline(text, { file: "run.yaml" });
  } catch (e) {
    if (e instanceof PipelineError) return e;
    throw e;
  }
  throw new Error("no error");
}

const HEAD = "version: 1\nname: mc\nstages:\n  - kind: load\n    model: m\n";

Deno.test("an evaluate stage with only multiple_choice needs no data stage; its keys and defaults", () => {
  const p = parsePipeline(
    HEAD + "  - kind: evaluate\n    metrics: [multiple_choice]\n    choices:\n" +
      "      test: mmlu/test\n      dev: mmlu/dev.jsonl\n      max_items: 10\n" +
      "  - id: zero\n    kind: evaluate\n    metrics: [multiple_choice]\n" +
      "    choices: { test: t.csv }\n",
  );
  assert.deepEqual(p.stages[1], {
    kind: "evaluate",
    id: "evaluate",
    split: "validation",
    metrics: ["multiple_choice"],
    choices: { test: "mmlu/test", dev: "mmlu/dev.jsonl", shots: 5, maxItems: 10 },
    decoding: "greedy",
    beams: 4,
    lengthPenalty: 1,
    noRepeatNgram: 0,
    maxNewTokens: 32,
    stop: [],
  });
  assert.deepEqual((p.stages[2] as { choices?: unknown }).choices, { test: "t.csv", shots: 0 });
});

Deno.test("multiple_choice and choices go together; shots need dev; split metrics need data", () => {
  const mc = HEAD + "  - kind: evaluate\n";
  assert.equal(
    errorOf(mc + "    metrics: [loss, multiple_choice]\n").message,
    'run.yaml: stages[1].metrics multiple_choice needs "choices" (its items) (line 7:5)',
  );
  assert.equal(
    errorOf(mc + "    metrics: [loss]\n    choices: { test: t.jsonl }\n").message,
    "run.yaml: stages[1].choices only applies with the metric multiple_choice (line 8:5)",
  );
  assert.equal(
    errorOf(mc + "    metrics: [multiple_choice]\n    choices: { test: t.jsonl, shots: 3 }\n")
      .message,
    'run.yaml: stages[1].choices.shots needs "dev" (the items the shots come from) (line 8:31)',
  );
  assert.equal(
    errorOf(
      mc + "    metrics: [multiple_choice]\n    choices: { test: t.jsonl }\n    split: test\n",
    )
      .message,
    "run.yaml: stages[1].split only applies with a metric scored on the split (not multiple_choice " +
      "alone) (line 9:5)",
  );
  assert.equal(
    errorOf(mc + "    metrics: [multiple_choice]\n    choices: { tests: t.jsonl }\n").message,
    'run.yaml: Unknown key "tests" at stages[1].choices (line 8:16): did you mean "test"?',
  );
  assert.equal(
    errorOf(mc + "    metrics: [multiple_choice]\n    choices: { dev: d.jsonl }\n").message,
    'run.yaml: Missing required key "test" at stages[1].choices (line 8:14)',
  );
  assert.equal(
    errorOf(mc + "    metrics: [loss, multiple_choice]\n    choices: { test: t.jsonl }\n").message,
    'run.yaml: Stage "evaluate" at stages[1] needs an earlier "data" stage (line 6:5)',
  );
  // Without any metric of the split, a classic evaluate still needs data (the default is loss).
  assert.match(errorOf(mc + "    split: test\n").message, /needs an earlier "data" stage/);
});

Deno.test("checkFiles finds the items: a file or a folder, or names the missing one", async () => {
  await withTempDir("mc-files", async (dir) => {
    await Deno.mkdir(`${dir}/dev`);
    await Deno.writeTextFile(`${dir}/test.jsonl`, "");
    const text = (test: string) =>
      `version: 1\nname: f\nstages:\n  - kind: load\n    model: ${Deno.cwd()}/${MODEL}\n` +
      `  - kind: evaluate\n    metrics: [multiple_choice]\n    choices:\n` +
      `      test: ${test}\n      dev: dev\n`;
    await checkFiles(parsePipeline(text("test.jsonl"), { file: `${dir}/p.yaml` }));
    await assert.rejects(
      () => checkFiles(parsePipeline(text("nowhere.jsonl"), { file: `${dir}/p.yaml` })),
      (e) =>
        e instanceof PipelineError &&
        e.message.startsWith(
          `${dir}/p.yaml: stages[1].choices.test: no such file or folder "nowhere.jsonl" ` +
            `(line 9:13): looked for`,
        ),
    );
  });
});

// Items of two subjects: the test items as cais/mmlu JSON Lines, the dev items as a folder of
// MMLU CSV files (the subject from each file's name).
async function writeItems(dir: string): Promise<void> {
  const rows = [
    {
      subject: "colours",
      question: "Ann has a red hat. What colour is the hat?",
      choices: ["red", "blue", "green"],
      answer: 0,
    },
    {
      subject: "owners",
      question: "Tom has a lamp. Who has the lamp?",
      choices: ["Ann", "Tom", "Eve", "Bob", "Kim"],
      answer: "B",
    },
    {
      subject: "colours",
      question: "The sea is blue. What colour is the sea?",
      choices: ["pink", "blue", "grey"],
      answer: "blue",
    },
    {
      subject: "owners",
      question: "Eve has a cup. Who has the cup?",
      choices: ["Eve", "Tom", "Ann"],
      answer: 0,
    },
    {
      subject: "colours",
      question: "Grass is green. What colour is it?",
      choices: ["red", "white", "green"],
      answer: 2,
    },
  ];
  await Deno.writeTextFile(
    `${dir}/test.jsonl`,
    rows.map((r) => JSON.stringify(r)).join("\n") + "\n",
  );
  await Deno.mkdir(`${dir}/dev`);
  await Deno.writeTextFile(
    `${dir}/dev/colours_dev.csv`,
    '"A long story about a house, a garden and a car, all painted in colours. What colour is the car?",red,blue,B\n' +
      "Milk is white. What colour is milk?,white,black,A\n",
  );
  await Deno.writeTextFile(
    `${dir}/dev/owners_dev.csv`,
    "Kim has a pen. Who has the pen?,Bob,Kim,B\nAnn has a box. Who has the box?,Ann,Tom,A\n",
  );
}

Deno.test(
  "an evaluate stage with multiple_choice records overall, macro and per-subject accuracy",
  GPU_TEST,
  async () => {
    await withTempDir("mc-run", async (dir) => {
      await writeItems(dir);
      await Deno.writeTextFile(
        `${dir}/p.yaml`,
        `version: 1
name: mc
out: ${dir}/run
stages:
  - kind: load
    model: ${Deno.cwd()}/${MODEL}
  - id: mmlu
    kind: evaluate
    metrics: [multiple_choice]
    choices:
      test: test.jsonl
      dev: dev
      shots: 2
`,
      );
      const lines: string[] = [];
      const result = await runPipeline(`${dir}/p.yaml`, { say: (l) => lines.push(l) });
      const summary = JSON.parse(await Deno.readTextFile(`${dir}/run/summary.json`));

      // The same items scored through the library.
      const gpu = await testGpu();
      using model = await loadModel(gpu, MODEL);
      const r = await evaluateMultipleChoice(model, await readChoiceItems(`${dir}/test.jsonl`), {
        tokenizer: await Tokenizer.load(MODEL),
        dev: await readChoiceItems(`${dir}/dev`),
        shots: 2,
      });
      assert.deepEqual(r.subjects.map((s) => [s.subject, s.n]), [["colours", 3], ["owners", 2]]);
      const near = (a: number, b: number) => Math.abs(a - b) < 1e-9;
      const figures = summary.mmlu;
      assert.ok(near(figures.mc_accuracy, r.accuracy), `${figures.mc_accuracy} vs ${r.accuracy}`);
      assert.ok(near(figures.mc_macro_accuracy, r.macroAccuracy));
      assert.equal(figures.mc_items, 5);
      assert.equal(figures.mc_shots, 2);
      assert.equal(figures.mc_lost_shots, r.lostShots);
      assert.ok(near(figures["mc_accuracy/colours"], r.subjects[0].accuracy));
      assert.ok(near(figures["mc_accuracy/owners"], r.subjects[1].accuracy));
      assert.equal(figures.split, undefined);
      // The long first colours shot does not fit 128 positions beside a question.
      assert.ok(r.lostShots >= 3, `lost ${r.lostShots}`);
      assert.deepEqual(result.evaluations, [{
        stage: "mmlu",
        split: "choices",
        figures: { mc_accuracy: figures.mc_accuracy, mc_macro_accuracy: figures.mc_macro_accuracy },
      }]);
      const text = lines.join("\n");
      assert.match(
        text,
        new RegExp(
          `mmlu \\(choices\\): mc_accuracy ${r.accuracy.toFixed(2)}, mc_macro_accuracy ` +
            `${r.macroAccuracy.toFixed(2)}; 5 items, 2 subjects, 2-shot \\(${r.lostShots} items ` +
            `with fewer shots, to fit the model\\)`,
        ),
      );
      assert.match(text, /subject\s+items\s+accuracy\n\s+colours\s+3\s+\d+\.\d\d\n\s+owners\s+2\s/);
      assert.match(text, new RegExp(`mean of subjects\\s+${r.macroAccuracy.toFixed(2)}`));
      assert.match(text, /stage\s+split\s+mc_accuracy\s+mc_macro_accuracy\n[- ]+\nmmlu\s+choices/);
      // The run's report lists the figures.
      assert.match(await Deno.readTextFile(`${dir}/run/report.md`), /mc_accuracy\/owners/);
    });
  },
);

Deno.test(
  "a subject without enough dev items for the shots fails at choices.shots, before scoring",
  GPU_TEST,
  async () => {
    await withTempDir("mc-short", async (dir) => {
      await writeItems(dir);
      await Deno.writeTextFile(
        `${dir}/p.yaml`,
        `version: 1
name: mc
out: ${dir}/run
stages:
  - kind: load
    model: ${Deno.cwd()}/${MODEL}
  - kind: evaluate
    metrics: [multiple_choice]
    choices:
      test: test.jsonl
      dev: dev
      shots: 3
`,
      );
      await assert.rejects(
        () => runPipeline(`${dir}/p.yaml`, { say: () => {} }),
        (e) =>
          e instanceof PipelineError &&
          e.message === `${dir}/p.yaml: stages[1].choices.shots: Cannot take 3 shots for subject ` +
              `"colours": the dev items hold 2 of it (and 1 more subject falls short); lower ` +
              `shots to 2 (line 12:14)`,
      );
    });
  },
);

Deno.test(
  "loss on a split and multiple_choice in one stage: two rows of figures, one summary",
  GPU_TEST,
  async () => {
    await withTempDir("mc-both", async (dir) => {
      await writeItems(dir);
      const task = Array.from(
        { length: 16 },
        (_, i) => JSON.stringify({ q: `count ${i}`, a: `${i + 1}` }),
      );
      await Deno.writeTextFile(`${dir}/task.jsonl`, task.join("\n") + "\n");
      await Deno.writeTextFile(
        `${dir}/p.yaml`,
        `version: 1
name: both
out: ${dir}/run
stages:
  - kind: load
    model: ${Deno.cwd()}/${MODEL}
  - kind: data
    file: task.jsonl
    split: { train: 0.5, validation: 0.5 }
    prompt: "{{ q }}:"
    completion: " {{ a }}"
    seq_len: 16
  - kind: evaluate
    metrics: [loss, multiple_choice]
    choices: { test: test.jsonl, max_items: 2 }
`,
      );
      const result = await runPipeline(`${dir}/p.yaml`, { say: () => {} });
      assert.deepEqual(result.evaluations.map((e) => [e.split, Object.keys(e.figures)]), [
        ["validation", ["loss", "perplexity"]],
        ["choices", ["mc_accuracy", "mc_macro_accuracy"]],
      ]);
      const figures = JSON.parse(await Deno.readTextFile(`${dir}/run/summary.json`)).evaluate;
      assert.equal(figures.split, "validation");
      assert.equal(figures.mc_items, 2);
      assert.equal(figures.mc_shots, 0);
      assert.equal(figures.mc_lost_shots, 0);
      assert.deepEqual(
        Object.keys(figures).filter((k) => k.startsWith("mc_accuracy/")),
        ["mc_accuracy/colours", "mc_accuracy/owners"],
      );
      assert.ok(Number.isFinite(figures.loss));
    });
  },
);
