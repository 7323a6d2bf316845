// The byte-level BPE trainer against a straightforward reference (all pairs recounted each round),
// its tokenizer.json through models/tokenizer.ts, and the pretraining corpus and tokenizer fixtures.

import assert from "node:assert/strict";
import {
  bytesToUnicode,
  countPreTokens,
  END_OF_TEXT,
  preTokenize,
  toByteLevel,
  tokenizerJson,
  trainBpe,
} from "../../data/bpe_train.ts";
import { Tokenizer } from "../../models/tokenizer.ts";
import { makeCorpus, makeDocuments } from "../../fixtures/pretrain-corpus/make_corpus.ts";

/** Reference BPE: recount every pair each round; highest count, ties to the smaller pair. */
function referenceMerges(
  counts: Map<string, number>,
  vocabSize: number,
  minFrequency: number,
): { merges: Array<[string, string]>; tokens: string[] } {
  const tokens = bytesToUnicode().map(([, c]) => c);
  const known = new Set(tokens);
  const words = [...counts].map(([w, n]) => ({ symbols: Array.from(w), n }));
  const merges: Array<[string, string]> = [];
  while (tokens.length < vocabSize) {
    const pairs = new Map<string, { a: string; b: string; n: number }>();
    for (const { symbols, n } of words) {
      for (let i = 0; i + 1 < symbols.length; i++) {
        const key = JSON.stringify([symbols[i], symbols[i + 1]]);
        const entry = pairs.get(key) ?? { a: symbols[i], b: symbols[i + 1], n: 0 };
        entry.n += n;
        pairs.set(key, entry);
      }
    }
    let best: { a: string; b: string; n: number } | undefined;
    for (const p of pairs.values()) {
      if (
        !best || p.n > best.n ||
        (p.n === best.n && (p.a < best.a || (p.a === best.a && p.b < best.b)))
      ) best = p;
    }
    if (!best || best.n < minFrequency) break;
    merges.push([best.a, best.b]);
    if (!known.has(best.a + best.b)) {
      known.add(best.a + best.b);
      tokens.push(best.a + best.b);
    }
    for (const word of words) {
      const out: string[] = [];
      for (let i = 0; i < word.symbols.length;) {
        if (word.symbols[i] === best.a && word.symbols[i + 1] === best.b) {
          out.push(best.a + best.b);
          i += 2;
        } else {
          out.push(word.symbols[i]);
          i += 1;
        }
      }
      word.symbols = out;
    }
  }
  return { merges, tokens };
}

/** Reference encoder: per pre-token, apply the lowest-rank merge first (HF's BPE model). */
function referenceEncode(text: string, vocab: Map<string, number>, merges: string[][]): number[] {
  const rank = new Map(merges.map(([a, b], i) => [`${a} ${b}`, i]));
  const ids: number[] = [];
  for (const piece of preTokenize(text)) {
    const symbols = Array.from(toByteLevel(piece));
    for (;;) {
      let bestRank = Infinity;
      let at = -1;
      for (let i = 0; i + 1 < symbols.length; i++) {
        const r = rank.get(`${symbols[i]} ${symbols[i + 1]}`);
        if (r !== undefined && r < bestRank) [bestRank, at] = [r, i];
      }
      if (at < 0) break;
      symbols.splice(at, 2, symbols[at] + symbols[at + 1]);
    }
    for (const s of symbols) ids.push(vocab.get(s)!);
  }
  return ids;
}

async function withTokenizer(
  json: Record<string, unknown>,
  fn: (tok: Tokenizer) => Promise<void> | void,
): Promise<void> {
  await Deno.mkdir("out/tmp", { recursive: true });
  const dir = await Deno.makeTempDir({ dir: "out/tmp", prefix: "bpe-train-" });
  try {
    await Deno.writeTextFile(`${dir}/tokenizer.json`, JSON.stringify(json));
    await fn(await Tokenizer.load(dir));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const SMALL_TEXT = [
  "The lantern in the lane was lit at nine. Lanterns, lanes and lamps: the lamplighter's lot.",
  "Anna's café served no one; she'd gone to the hills.\nThe hills were high, the lane was long!",
  "aaaa aaa aa a bbbb abab ababab -- ... !!! 12 123 1234 12345",
  "Ünïcödé wörds: naïve, façade, 東京, 東京タワー, emoji 🙂🙂 and tabs\there.",
].join("\n");

Deno.test("bytesToUnicode is GPT-2's table: 256 distinct characters, ! first, Ġ at 220", () => {
  const table = bytesToUnicode();
  assert.equal(table.length, 256);
  assert.equal(new Set(table.map(([b]) => b)).size, 256);
  assert.equal(new Set(table.map(([, c]) => c)).size, 256);
  assert.deepEqual(table[0], [33, "!"]);
  assert.deepEqual(table[220], [32, "Ġ"]);
  assert.equal(toByteLevel(" the\n"), "ĠtheĊ");
  assert.deepEqual(preTokenize("It's a test,  ok?\n"), [
    "It",
    "'s",
    " a",
    " test",
    ",",
    " ",
    " ok",
    "?",
    "\n",
  ]);
});

Deno.test("trainBpe's merges equal the reference BPE's (all pairs recounted each round)", () => {
  const texts = [SMALL_TEXT, makeCorpus({ count: 40, seed: 7 })];
  for (const text of texts) {
    for (const [vocabSize, minFrequency] of [[300, 2], [420, 1], [700, 2], [5000, 1]]) {
      const counts = countPreTokens(text);
      const ref = referenceMerges(counts, vocabSize - 1, minFrequency);
      const model = trainBpe(text, { vocabSize, minFrequency });
      assert.deepEqual(
        model.merges,
        ref.merges,
        `vocabSize ${vocabSize}, minFrequency ${minFrequency}`,
      );
      assert.deepEqual([...model.vocab.keys()], [...ref.tokens, END_OF_TEXT]);
      assert.deepEqual([...model.vocab.values()], [...model.vocab.keys()].map((_, i) => i));
    }
  }
});

Deno.test("training stops early when no pair occurs minFrequency times", () => {
  const model = trainBpe("ab ab ab cd cd", { vocabSize: 1000, minFrequency: 2 });
  // "ab" once, " ab" and " cd" twice: a b (3), then ties of 2 go to the smaller pair ("c" < "Ġ").
  assert.deepEqual(model.merges, [["a", "b"], ["c", "d"], ["Ġ", "ab"], ["Ġ", "cd"]]);
  assert.equal(model.vocab.size, 256 + 4 + 1);
  assert.equal(model.vocab.get(END_OF_TEXT), 260);
});

Deno.test("the tokenizer.json loads, round-trips any text, and agrees with a reference encoder", async () => {
  const corpus = makeCorpus({ count: 200 });
  const model = trainBpe(corpus, { vocabSize: 600 });
  const json = tokenizerJson(model);
  assert.equal(model.vocab.get(END_OF_TEXT), 599);
  await withTokenizer(json, (tok) => {
    assert.equal(tok.eosId, 599);
    assert.equal(tok.vocabSize, 600);
    for (
      const text of [
        "",
        SMALL_TEXT,
        "  leading spaces, trailing spaces  \n\n\r\n\ttabs\t",
        "emoji 🙂👍🏽‍♀️ family 👨‍👩‍👧 flags 🇫🇷, CJK 漢字かな, Greek αβγ, Arabic مرحبا",
        "lone surrogate-free astral 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 and control \u0000\u0001\u007f",
        `first document${END_OF_TEXT}second document\n${END_OF_TEXT}`,
        corpus.slice(0, 3000),
      ]
    ) {
      const ids = tok.encode(text);
      assert.equal(tok.decode(ids), text);
      const pieces = text.split(END_OF_TEXT);
      const expected = pieces.flatMap((p, i) =>
        i === 0
          ? referenceEncode(p, model.vocab, model.merges)
          : [599, ...referenceEncode(p, model.vocab, model.merges)]
      );
      assert.deepEqual(ids, expected, JSON.stringify(text.slice(0, 40)));
    }
    // Training words are one token each, with their leading space.
    const the = model.vocab.get("Ġthe")!;
    assert.ok(the !== undefined && the > 255, "Ġthe was learned");
    assert.deepEqual(tok.encode(" the."), [the, model.vocab.get(".")]);
    const longest = [...model.vocab.keys()].filter((t) => /^Ġ[a-z]+$/.test(t))
      .sort((a, b) => b.length - a.length || (a < b ? -1 : 1))[0];
    assert.ok(longest.length >= 7, longest);
    const word = longest.slice(1);
    assert.deepEqual(tok.encode(` ${word}`), [model.vocab.get(longest)]);
    const id = (t: string) => model.vocab.get(t)!;
    assert.deepEqual(tok.encode(`A ${word}, the ${word}!`).slice(-5), [
      id(longest),
      id(","),
      the,
      id(longest),
      id("!"),
    ]);
    assert.deepEqual(tok.encode("<|endoftext|>"), [599]);
  });
});

Deno.test("trainBpe rejects vocabulary sizes it cannot honour", () => {
  assert.throws(() => trainBpe("abc", { vocabSize: 256 }), RangeError);
  assert.throws(() => trainBpe("abc", { vocabSize: 70000 }), RangeError);
  assert.throws(() => trainBpe("abc", { vocabSize: 300, minFrequency: 0 }), RangeError);
});

Deno.test("the corpus generator is deterministic and matches the committed corpus.txt", async () => {
  assert.deepEqual(makeDocuments({ count: 30 }), makeDocuments({ count: 30 }));
  assert.notDeepEqual(makeDocuments({ count: 30, seed: 1 }), makeDocuments({ count: 30 }));
  const corpus = makeCorpus();
  assert.ok(corpus.startsWith(makeCorpus({ count: 30 })));
  const file = await Deno.readTextFile("fixtures/pretrain-corpus/corpus.txt");
  assert.ok(file === corpus, "fixtures/pretrain-corpus/corpus.txt differs from make_corpus.ts");
  const bytes = new TextEncoder().encode(file).length;
  assert.ok(bytes > 1_000_000 && bytes <= 2_000_000, `corpus is ${bytes} bytes`);
  assert.ok(!/restaurant|coffee shop|\bcuisine\b|\bfood\b|\bpub\b/i.test(file));
});

Deno.test("the committed tiny-gpt2-pretrained tokenizer.json is trainBpe on corpus.txt, 2,048 tokens", async () => {
  const corpus = await Deno.readTextFile("fixtures/pretrain-corpus/corpus.txt");
  const json = tokenizerJson(trainBpe(corpus.split("\n"), { vocabSize: 2048 }));
  const file = await Deno.readTextFile("fixtures/tiny-gpt2-pretrained/tokenizer.json");
  assert.ok(
    file === JSON.stringify(json, null, 2) + "\n",
    "tokenizer.json differs from make_tokenizer.ts",
  );
  const tok = await Tokenizer.load("fixtures/tiny-gpt2-pretrained");
  assert.equal(tok.vocabSize, 2048);
  assert.equal(tok.eosId, 2047);
  const mr = "name[The Copper Kettle], eatType[coffee shop], food[French], area[riverside]";
  assert.equal(tok.decode(tok.encode(mr)), mr);
});
