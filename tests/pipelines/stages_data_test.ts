// The data stage with instruction data: the pipeline rules of `format: alpaca` and `format: chat`
// (no prompt/completion templates, no `eos` with chat), and the stage runner on Alpaca and chat
// files with the tiny Llama's tokenizer (a Llama 3-style tokenizer with a chat template), checked
// against token counts and prompts worked out here from the tokenizer and the Alpaca prompt text.

import assert from "node:assert/strict";
import { join } from "node:path";
import { DataError } from "../../data/readers.ts";
import type { Model } from "../../models/model.ts";
import { type ChatMessage, Tokenizer } from "../../models/tokenizer.ts";
import { parsePipeline, PipelineError } from "../../pipelines/parse.ts";
import type { DataStage } from "../../pipelines/schema.ts";
import { data } from "../../pipelines/stages_data.ts";
import type { RunState } from "../../pipelines/state.ts";
import type { RunLog } from "../../train/run_log.ts";
import { withTempDir } from "../_util.ts";

const TOKENIZER = "fixtures/tiny-llama-pretrained";

function pipelineText(data: string): string {
  return `version: 1
name: instructions
stages:
  - kind: load
    model: m
  - kind: data
${data.trim().split("\n").map((l) => `    ${l}`).join("\n")}
`;
}

function refusedAt(data: string, message: string) {
  assert.throws(
    () => parsePipeline(pipelineText(data), { file: "p.yaml" }),
    (e: unknown) => {
      assert.ok(e instanceof PipelineError, String(e));
      assert.equal(e.message, message);
      return true;
    },
  );
}

Deno.test("alpaca and chat take no templates; the other formats still need both", () => {
  const p = parsePipeline(pipelineText("format: alpaca\ntrain: a.jsonl"), { file: "p.yaml" });
  const stage = p.stages[1] as DataStage;
  assert.equal(stage.format, "alpaca");
  assert.equal(stage.prompt, undefined);
  assert.equal(stage.eos, true);
  parsePipeline(pipelineText("format: chat\ntrain: c.jsonl"), { file: "p.yaml" });
  refusedAt(
    'format: alpaca\ntrain: a.jsonl\nprompt: "{{ instruction }}"',
    'p.yaml: stages[1].prompt is not used with format "alpaca", which writes the prompt ' +
      "itself; remove it (line 9:5)",
  );
  refusedAt(
    'format: chat\ntrain: c.jsonl\ncompletion: "{{ output }}"',
    'p.yaml: stages[1].completion is not used with format "chat", which writes the prompt ' +
      "itself; remove it (line 9:5)",
  );
  refusedAt(
    'train: t.jsonl\ncompletion: " {{ a }}"',
    'p.yaml: stages[1] needs "prompt" (a Jinja template over the record\'s fields), or ' +
      '"format: alpaca" or "format: chat" for instruction data (line 6:5)',
  );
  refusedAt(
    'format: csv\ntrain: t.csv\nprompt: "{{ q }}"',
    'p.yaml: stages[1] needs "completion" (a Jinja template over the record\'s fields), or ' +
      '"format: alpaca" or "format: chat" for instruction data (line 6:5)',
  );
  refusedAt(
    "format: chat\ntrain: c.jsonl\neos: false",
    "p.yaml: stages[1].eos only applies with a format other than chat (whose template ends " +
      "each turn itself) (line 9:5)",
  );
  refusedAt(
    "format: sharegpt\ntrain: c.jsonl",
    'p.yaml: stages[1].format must be one of "jsonl", "csv", "e2e", "text", "alpaca", "chat", ' +
      '"images", got "sharegpt" (line 7:13)',
  );
});

/** The data stage run alone, on a pipeline file in `dir`, with a stand-in model. */
async function runData(dir: string, stageYaml: string, tokenizer: Tokenizer) {
  const path = join(dir, "p.yaml");
  await Deno.writeTextFile(path, pipelineText(stageYaml));
  const pipeline = parsePipeline(await Deno.readTextFile(path), { file: path });
  const said: string[] = [];
  const recorded: Record<string, unknown> = {};
  const state = {
    pipeline,
    index: 1,
    say: (line: string) => said.push(line),
    tokenizer,
    // The stage reads only the model's context length.
    model: { maxPositions: 256 } as Model,
    log: {
      recordStage: (id: string, figures: unknown) => Promise.resolve(void (recorded[id] = figures)),
    } as Pick<RunLog, "recordStage">,
  } as unknown as RunState;
  await data(pipeline.stages[1] as DataStage, state);
  return { state, said, recorded: recorded.data as Record<string, Record<string, number>> };
}

// The Alpaca prompts, written out.
const WITH_INPUT = "Below is an instruction that describes a task, paired with an input that " +
  "provides further context. Write a response that appropriately completes the request.\n\n";
const NO_INPUT = "Below is an instruction that describes a task. Write a response that " +
  "appropriately completes the request.\n\n";

const ALPACA = [
  { instruction: "Name a colour.", output: "Blue." },
  { instruction: "Add the numbers.", input: "2 and 3", output: " 5 " },
  { instruction: "Say hi.", input: "", output: "Hi!" },
  { instruction: "Spell cat.", output: "c-a-t" },
];

Deno.test("format alpaca: rows of the whole text with eos, prompts and references for evaluation", async () => {
  const tok = await Tokenizer.load(TOKENIZER);
  await withTempDir("data-alpaca", async (dir) => {
    const lines = ALPACA.map((r) => JSON.stringify(r));
    await Deno.writeTextFile(join(dir, "train.jsonl"), lines.slice(0, 3).join("\n") + "\n");
    await Deno.writeTextFile(join(dir, "test.jsonl"), lines.slice(1).join("\n"));
    const { state, said, recorded } = await runData(
      dir,
      "format: alpaca\ntrain: train.jsonl\ntest: test.jsonl\nseq_len: 256",
      tok,
    );
    const prompt = (r: (typeof ALPACA)[number]) =>
      r.input
        ? `${WITH_INPUT}### Instruction:\n${r.instruction}\n\n### Input:\n${r.input}\n\n` +
          "### Response:\n"
        : `${NO_INPUT}### Instruction:\n${r.instruction}\n\n### Response:\n`;
    const ids = (r: (typeof ALPACA)[number]) => [
      ...tok.encodePrompt(prompt(r) + r.output),
      tok.eosId,
    ];
    const splits = state.data!.splits;
    assert.deepEqual(
      splits.train.rows.map((row) => [...row.tokens]),
      ALPACA.slice(0, 3).map(ids),
    );
    for (const [i, row] of splits.train.rows.entries()) {
      // Targets: the output's tokens and eos, predicted from the position before each.
      const promptIds = tok.encodePrompt(prompt(ALPACA[i]));
      const trained = row.mask.reduce((a, b) => a + b, 0);
      assert.equal(trained, row.tokens.length - promptIds.length, `row ${i}`);
      assert.equal(row.mask.indexOf(1), promptIds.length - 1, `row ${i}`);
    }
    assert.deepEqual(
      splits.test.examples,
      ALPACA.slice(1).map((r) => ({
        prompt: prompt(r),
        refs: [r.output.trim()],
      })),
    );
    assert.deepEqual(splits.train.examples, []);
    assert.equal(recorded.train.records, 3);
    assert.equal(recorded.test.tokens, ALPACA.slice(1).reduce((n, r) => n + ids(r).length, 0));
    assert.match(said[0], /^train: 3 records -> 3 rows of 256 \(\d+% filled\)$/);
  });
});

const CHATS: ChatMessage[][] = [
  [{ role: "user", content: "Hi" }, { role: "assistant", content: "Hello." }],
  [
    { role: "system", content: "Be brief." },
    { role: "user", content: "2 + 2?" },
    { role: "assistant", content: "4" },
    { role: "user", content: "And 3 + 3?" },
    { role: "assistant", content: " 6 " },
  ],
];

Deno.test("format chat: the template's text, assistant turns trained, the last one as reference", async () => {
  const tok = await Tokenizer.load(TOKENIZER);
  await withTempDir("data-chat", async (dir) => {
    const lines = CHATS.map((messages) => JSON.stringify({ messages }));
    await Deno.writeTextFile(join(dir, "c.jsonl"), lines.join("\n") + "\n");
    const { state } = await runData(
      dir,
      "format: chat\ntrain: c.jsonl\nvalidation: c.jsonl\nseq_len: 256\npack: true",
      tok,
    );
    const { train, validation } = state.data!.splits;
    const whole = CHATS.map((m) => tok.encodePrompt(tok.applyChatTemplate(m)));
    assert.equal(train.rows.length, 1, "both conversations packed in one row");
    assert.deepEqual([...train.rows[0].tokens], whole.flat(), "no eos appended");
    // Each assistant turn is its content and <|eot_id|>: the targets are their tokens.
    const turns = CHATS.flatMap((m) => m.filter((t) => t.role === "assistant"));
    const turnTokens = turns.reduce(
      (n, t) => n + tok.encode(`${String(t.content).trim()}<|eot_id|>`).length,
      0,
    );
    assert.equal(train.rows[0].mask.reduce((a, b) => a + b, 0), turnTokens);
    assert.deepEqual(validation.examples, [
      {
        prompt: tok.applyChatTemplate(CHATS[0].slice(0, 1), { addGenerationPrompt: true }),
        refs: ["Hello."],
      },
      {
        prompt: tok.applyChatTemplate(CHATS[1].slice(0, 4), { addGenerationPrompt: true }),
        refs: ["6"],
      },
    ]);
  });
});

Deno.test("format chat without a chat template, and a bad row, are one-line errors", async () => {
  await withTempDir("data-chat-bad", async (dir) => {
    const line = JSON.stringify({ messages: CHATS[0] });
    await Deno.writeTextFile(join(dir, "c.jsonl"), `${line}\n{"messages": [{"role": "user"}]}\n`);
    const gpt2 = await Tokenizer.load("fixtures/tiny-gpt2");
    await assert.rejects(
      () => runData(dir, "format: chat\ntrain: c.jsonl\nseq_len: 64", gpt2),
      (e: unknown) => {
        assert.ok(e instanceof PipelineError, String(e));
        assert.equal(
          e.message,
          `${join(dir, "p.yaml")}: stages[1].format: format "chat" needs a chat template, and ` +
            'the tokenizer folder "fixtures/tiny-gpt2" has no chat_template (line 7:13): add a ' +
            'chat_template.jinja beside tokenizer.json (or a "chat_template" key in ' +
            'tokenizer_config.json), or use "format: alpaca"',
        );
        return true;
      },
    );
    const tok = await Tokenizer.load(TOKENIZER);
    await assert.rejects(
      () => runData(dir, "format: chat\ntrain: c.jsonl", tok),
      (e: unknown) =>
        e instanceof DataError && e.file === join(dir, "c.jsonl") && e.line === 2 &&
        e.message === `Invalid chat record in "${join(dir, "c.jsonl")}" line 2: messages[0] ` +
            'has no "content"',
    );
  });
});
