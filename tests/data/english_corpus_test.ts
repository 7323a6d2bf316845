import * as assert from "node:assert/strict";
import { Random } from "../../data/batches.ts";
import { tokenizerJson, trainBpe } from "../../data/bpe_train.ts";
import { Tokenizer } from "../../models/tokenizer.ts";
import {
  detokenize,
  entryDocuments,
  freshNameDocuments,
  guideDocuments,
} from "../../fixtures/english-corpus/make_corpus.ts";

const CORPUS = "fixtures/english-corpus/corpus.txt";

Deno.test("detokenize turns Brown Form C sentences into running text", () => {
  assert.equal(
    detokenize(
      "\tThe/at jury/nn said/vbd ``/`` it's/pps+bez fine/jj ''/'' ,/, and/cc left/vbd ./.",
    ),
    'The jury said "it\'s fine", and left.',
  );
  assert.equal(
    detokenize("He/pps did/dod n't/* know/vb (/( or/cc care/vb )/) ;/. Mary's/np$ dog/nn !/."),
    "He didn't know (or care); Mary's dog!",
  );
  assert.equal(detokenize("1/cd-hl 1/2/cd"), "1 1/2");
});

Deno.test("english-corpus/corpus.txt holds the script's guide documents and Brown text, no meaning representations", async () => {
  const file = await Deno.readTextFile(CORPUS);
  const docs = file.split("\n");
  assert.equal(docs.pop(), "");
  const set = new Set(docs);
  // The guide documents are drawn first from the seeded generator, before the shuffle.
  const guides = guideDocuments(4000, new Random(20261202, 0));
  const missing = guides.filter((d) => !set.has(d));
  assert.equal(missing.length, 0, `${missing.length} guide documents missing, e.g. ${missing[0]}`);
  const brown = docs.length - guides.length;
  assert.ok(brown > 1000, `${brown} Brown documents`);
  assert.ok(docs.some((d) => d.includes("Fulton County Grand Jury said Friday")));
  assert.ok(!/\w\[[^\]]*\]/.test(file), "a meaning representation in the corpus");
  assert.ok(!docs.some((d) => d.trim() === "" || d.includes("\r")), "an empty document or a CR");
  assert.ok(!/\w\/(at|nn|vbd|in|jj|np)\b/.test(file), "a Brown tag left in the text");
  const bytes = new TextEncoder().encode(file).length;
  assert.ok(bytes > 2_000_000 && bytes < 3_500_000, `corpus is ${bytes} bytes`);
});

Deno.test("english-corpus/corpus-2.txt holds guide documents and lone entries with made-up names and a fifth of the Brown text", async () => {
  const file = await Deno.readTextFile("fixtures/english-corpus/corpus-2.txt");
  const docs = file.split("\n");
  assert.equal(docs.pop(), "");
  const set = new Set(docs);
  // The generator draws the guide documents, then the lone entries.
  const random = new Random(20261203, 0);
  const guides = freshNameDocuments(1000, random);
  const entries = entryDocuments(3500, random);
  const missing = [...guides, ...entries].filter((d) => !set.has(d));
  assert.equal(
    missing.length,
    0,
    `${missing.length} generated documents missing, e.g. ${missing[0]}`,
  );
  const brown = docs.length - guides.length - entries.length;
  assert.ok(brown > 200 && brown < 400, `${brown} Brown documents`);
  assert.ok(!/\w\[[^\]]*\]/.test(file), "a meaning representation in the corpus");
  // Each entry opens with its heading (name, then facts), and its description names the venue
  // again; made-up names are too many to learn by heart, so the stage teaches stating the
  // heading's name, wherever it comes from.
  const names = new Set<string>();
  for (const doc of entries) {
    const m = /^([A-Z][\w' ]+): ([^.]+)\. (.*)$/.exec(doc);
    assert.ok(m, doc);
    assert.ok(m[3].includes(m[1]), doc);
    names.add(m[1]);
  }
  assert.ok(names.size > entries.length / 2, `${names.size} names in ${entries.length} entries`);
});

Deno.test("the committed tiny-gpt2-english tokenizer.json is trainBpe on the English corpus, 4,096 tokens", async () => {
  const corpus = await Deno.readTextFile(CORPUS);
  const json = tokenizerJson(trainBpe(corpus.split("\n"), { vocabSize: 4096 }));
  const file = await Deno.readTextFile("fixtures/tiny-gpt2-english/tokenizer.json");
  assert.ok(
    file === JSON.stringify(json, null, 2) + "\n",
    "tokenizer.json differs from make_tokenizer.ts",
  );
  const tok = await Tokenizer.load("fixtures/tiny-gpt2-english");
  assert.equal(tok.vocabSize, 4096);
  assert.equal(tok.eosId, 4095);
  const mr = "name[The Copper Kettle], eatType[coffee shop], food[French], area[riverside]";
  assert.equal(tok.decode(tok.encode(mr)), mr);
  // Domain words are single tokens: the base reads the task's vocabulary cheaply.
  for (const word of [" restaurant", " coffee", " Italian", " expensive", " children"]) {
    assert.equal(tok.encode(word).length, 1, word);
  }
});
