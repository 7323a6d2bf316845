import assert from "node:assert/strict";
import { makeTaskFiles, SUBJECTS } from "../../fixtures/llama-instruct/make_tasks.ts";
import { makeTinyLlamaFiles, SPECIAL_TOKENS } from "../../fixtures/make_tiny_llama_pretrained.ts";
import { Tokenizer } from "../../models/tokenizer.ts";

const DIR = "fixtures/llama-instruct";

function lines(rows: object[]): string {
  return rows.map((r) => JSON.stringify(r)).join("\n") + "\n";
}

Deno.test("the llama-instruct files are what make_tasks.ts writes, the same twice", async () => {
  const a = makeTaskFiles();
  assert.deepEqual(makeTaskFiles(), a);
  for (const [name, rows] of Object.entries(a)) {
    const file = await Deno.readTextFile(`${DIR}/${name}`);
    assert.ok(file === lines(rows), `${DIR}/${name} differs from make_tasks.ts`);
  }
});

Deno.test("the multiple-choice items are answerable from their text, and the splits are disjoint", () => {
  const files = makeTaskFiles();
  const dev = files["mc_dev.jsonl"] as {
    question: string;
    choices: string[];
    answer: number;
    subject: string;
  }[];
  const test = files["mc_test.jsonl"] as typeof dev;
  assert.equal(dev.length, 5 * SUBJECTS.length);
  assert.equal(test.length, 25 * SUBJECTS.length);
  for (const item of [...dev, ...test]) {
    assert.ok(SUBJECTS.includes(item.subject as typeof SUBJECTS[number]), item.subject);
    assert.equal(item.choices.length, 4);
    assert.equal(new Set(item.choices).size, 4, `repeated choice in ${item.question}`);
    assert.ok(item.answer >= 0 && item.answer < 4);
    const [text] = item.question.split("\n");
    // The right answer is in the text (places, names, colours and objects are all written there).
    const answer = item.choices[item.answer].replace(/^an? /, "");
    for (const word of answer.split(" ")) assert.ok(text.includes(word), `${answer} / ${text}`);
  }
  // The right letters are spread over A-D.
  const letters = new Set(test.map((i) => i.answer));
  assert.equal(letters.size, 4);
  const texts = (rows: object[], key: string) =>
    new Set(rows.map((r) => String((r as Record<string, unknown>)[key]).split("\n")[0]));
  const train = texts(files["train.jsonl"], "input");
  for (const t of texts(test, "question")) assert.ok(!train.has(t), `test text in train: ${t}`);
});

Deno.test("the tiny Llama's tokenizer and config are make_tiny_llama_pretrained.ts's, with Llama 3's tokens", async () => {
  const corpus = await Deno.readTextFile("fixtures/pretrain-corpus/corpus.txt");
  const files = makeTinyLlamaFiles(corpus);
  for (const [name, text] of Object.entries(files)) {
    const file = await Deno.readTextFile(`fixtures/tiny-llama-pretrained/${name}`);
    assert.ok(file === text, `fixtures/tiny-llama-pretrained/${name} differs from the script`);
  }
  const tok = await Tokenizer.load("fixtures/tiny-llama-pretrained");
  assert.equal(tok.vocabSize, 2047 + SPECIAL_TOKENS.length);
  assert.equal(tok.bosToken, "<|begin_of_text|>");
  assert.ok(tok.addBos);
  assert.deepEqual(tok.eosIds, [2048, 2051]);
  assert.deepEqual(tok.encodePrompt("Hi"), [2047, ...tok.encode("Hi")]);
  const chat = tok.chatTemplates.get("default")!.render(
    [{ role: "user", content: " Hi " }, { role: "assistant", content: "Yes." }],
    { addGenerationPrompt: false },
  );
  assert.equal(
    chat,
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>" +
      "<|start_header_id|>assistant<|end_header_id|>\n\nYes.<|eot_id|>",
  );
});
