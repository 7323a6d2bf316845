import assert from "node:assert/strict";
import {
  buildRows,
  buildSegmentRows,
  encodeSegments,
  type Example,
  loadSplits,
  makeRows,
  splitByRatio,
  tokenizeExamples,
  tokenizeSegments,
} from "../../data/examples.ts";
import { groupReferences } from "../../data/readers.ts";
import { Tokenizer } from "../../models/tokenizer.ts";

/** One token per character (its code), end-of-text 0: positions are easy to read. */
const chars = { eosId: 0, encode: (s: string) => [...s].map((c) => c.charCodeAt(0)) };

function example(prompt: number, completion: number): Example {
  const n = prompt + completion;
  const tokens = Uint32Array.from({ length: n }, (_, i) => 100 + i);
  return { tokens, mask: new Uint8Array(n).fill(1, prompt), promptLength: prompt };
}

Deno.test("tokenizeExamples masks the prompt and keeps the completion and eos", () => {
  const { examples, report } = tokenizeExamples([{ prompt: "abc", completion: "de" }], chars);
  assert.deepEqual([...examples[0].tokens], [97, 98, 99, 100, 101, 0]);
  assert.deepEqual([...examples[0].mask], [0, 0, 0, 1, 1, 1]);
  assert.equal(examples[0].promptLength, 3);
  assert.equal(report.truncated, 0);
  const noEos = tokenizeExamples([{ prompt: "abc", completion: "de" }], chars, { eos: false });
  assert.deepEqual([...noEos.examples[0].mask], [0, 0, 0, 1, 1]);
});

Deno.test("tokenizeExamples with GPT-2's tokenizer: the ids of the whole text, split where the prompt ends", async () => {
  const tok = await Tokenizer.load("fixtures/tiny-gpt2");
  const pair = { prompt: "name[The Mill]\n", completion: " The Mill is here." };
  const { examples } = tokenizeExamples([pair], tok);
  assert.deepEqual([...examples[0].tokens], [
    ...tok.encode(pair.prompt + pair.completion),
    tok.eosId,
  ]);
  // Byte-level BPE splits a space-led word from a newline, so the boundary is where the prompt's
  // own ids end, and the ids are those of encoding the two apart.
  const p = tok.encode(pair.prompt);
  const c = tok.encode(pair.completion);
  assert.deepEqual([...examples[0].tokens], [...p, ...c, tok.eosId]);
  assert.equal(examples[0].mask.indexOf(1), p.length);
  assert.equal(examples[0].mask.reduce((a, b) => a + b, 0), c.length + 1);
});

/**
 * A little BPE, worked by hand: characters are their codes, "ab" merges into 1000 and
 * "<s>" is one token, 1. `encodePrompt` puts 1 first unless the text starts with it.
 */
const merging = {
  eosId: 0,
  encode(text: string): number[] {
    const ids: number[] = [];
    for (let i = 0; i < text.length;) {
      if (text.startsWith("<s>", i)) [ids[ids.length], i] = [1, i + 3];
      else if (text.startsWith("ab", i)) [ids[ids.length], i] = [1000, i + 2];
      else [ids[ids.length], i] = [text.charCodeAt(i), i + 1];
    }
    return ids;
  },
  encodePrompt(text: string): number[] {
    const ids = this.encode(text);
    return ids[0] === 1 ? ids : [1, ...ids];
  },
};

Deno.test("encodeSegments encodes the whole text once; a token across a boundary goes to the later segment", () => {
  // "xa" + "by": the whole text is x, ab, y; the prompt alone is x, a, so the common prefix is
  // [1, x] and "ab" is trained with "y".
  const { tokens, mask } = encodeSegments(
    [{ text: "xa", train: false }, { text: "by", train: true }],
    merging,
  );
  assert.deepEqual(tokens, [1, 120, 1000, 121, 0]);
  assert.deepEqual([...mask], [0, 0, 1, 1, 1]);
  // Encoding the parts apart would have given x, a, b, y: not what the model reads.
  assert.deepEqual([...merging.encodePrompt("xa"), ...merging.encode("by")], [1, 120, 97, 98, 121]);
});

Deno.test("encodeSegments: several segments, empty ones, a text that starts with the BOS, no eos", () => {
  const segments = [
    { text: "<s>p", train: false },
    { text: "", train: true },
    { text: "c", train: true },
    { text: "q", train: false },
    { text: "", train: false },
    { text: "dd", train: true },
    { text: "e", train: false },
  ];
  const { tokens, mask } = encodeSegments(segments, merging, { eos: false });
  assert.deepEqual(tokens, [1, 112, 99, 113, 100, 100, 101]);
  assert.deepEqual([...mask], [0, 0, 1, 0, 1, 1, 0]);
  // Without encodePrompt, encode: no BOS.
  const plain = encodeSegments([{ text: "ab", train: false }, { text: "c", train: true }], {
    eosId: 0,
    encode: merging.encode,
  });
  assert.deepEqual(plain.tokens, [1000, 99, 0]);
  assert.deepEqual([...plain.mask], [0, 1, 1]);
  // A trained first segment: the BOS goes with it (it is never a target).
  const first = encodeSegments([{ text: "c", train: true }, { text: "d", train: false }], merging, {
    eos: false,
  });
  assert.deepEqual([...first.mask], [1, 1, 0]);
});

Deno.test("tokenizeSegments removes examples with no trained token past the first position", () => {
  const { examples, report } = tokenizeSegments(
    [
      [{ text: "c", train: true }], // c, eos: both trained, c is never a target but eos is
      [{ text: "abc", train: false }, { text: "", train: true }], // only eos, cut away below
      [{ text: "", train: false }, { text: "zz", train: true }, { text: "y", train: false }],
    ],
    { eosId: 0, encode: merging.encode },
    { maxLength: 2 },
  );
  assert.deepEqual(examples.map((e) => [...e.tokens]), [[99, 0], [122, 122]]);
  assert.deepEqual(examples.map((e) => [...e.mask]), [[1, 1], [1, 1]]);
  assert.deepEqual(examples.map((e) => e.promptLength), [0, 0]);
  assert.deepEqual(report, {
    examples: 3,
    truncated: 2,
    droppedTokens: 1 + 2, // 1000, 99, [eos] and z, z, 121, [eos] kept to 2
    droppedCompletionTokens: 1 + 1,
    removed: 1,
  });
});

Deno.test("truncation keeps the start and reports dropped tokens and examples", () => {
  const pairs = [
    { prompt: "ab", completion: "cdefg" }, // 8 tokens with eos: 3 dropped, all completion
    { prompt: "abcdefg", completion: "h" }, // 9: prompt cut, no completion left: removed
    { prompt: "a", completion: "b" }, // 3: untouched
  ];
  const { examples, report } = tokenizeExamples(pairs, chars, { maxLength: 5 });
  assert.deepEqual(report, {
    examples: 3,
    truncated: 2,
    droppedTokens: 3 + 4,
    droppedCompletionTokens: 3 + 2,
    removed: 1,
  });
  assert.equal(examples.length, 2);
  assert.deepEqual([...examples[0].tokens], [97, 98, 99, 100, 101]);
  assert.deepEqual([...examples[0].mask], [0, 0, 1, 1, 1]);
  assert.deepEqual([...examples[1].mask], [0, 1, 1]);
});

Deno.test("unpacked rows shift the mask to target positions", () => {
  const { rows, report } = makeRows([example(3, 2)], { T: 8 });
  // Position p predicts token p + 1: tokens 3 and 4 are completion, so positions 2 and 3 count.
  assert.deepEqual([...rows[0].mask], [0, 0, 1, 1, 0]);
  assert.deepEqual(report, { rows: 1, tokens: 5, targets: 2, fill: 5 / 8, split: 0 });
});

Deno.test("packing keeps every example whole with its mask and reports the fill", () => {
  const examples = [example(2, 3), example(4, 4), example(1, 2), example(3, 2), example(6, 3)];
  const T = 10;
  const { rows, report } = makeRows(examples, { T, pack: true });
  const seen = rows.flatMap((r) => r.segments.map((s) => s.example)).sort();
  assert.deepEqual(seen, [0, 1, 2, 3, 4]);
  for (const row of rows) {
    assert.ok(row.tokens.length <= T);
    let at = 0;
    for (const s of row.segments) {
      const ex = examples[s.example];
      assert.equal(s.start, 0);
      assert.equal(s.length, ex.tokens.length);
      assert.deepEqual([...row.tokens.subarray(at, at + s.length)], [...ex.tokens]);
      const expected = [...ex.mask.subarray(1), 0]; // no target across the boundary
      assert.deepEqual([...row.mask.subarray(at, at + s.length)], expected);
      at += s.length;
    }
  }
  const tokens = examples.reduce((n, e) => n + e.tokens.length, 0);
  assert.equal(report.tokens, tokens);
  assert.equal(report.rows, rows.length);
  assert.equal(report.fill, tokens / (rows.length * T));
  // Lengths 5, 8, 3, 5, 9: the 3 goes into the row with 5 free (best fit), the second 5 fits
  // nowhere (2 and 2 free) and opens a row.
  assert.deepEqual(rows.map((r) => r.segments.map((s) => s.example)), [[0, 2], [1], [3], [4]]);
  assert.equal(report.targets, 3 + 4 + 2 + 2 + 3); // every completion token (prompts are non-empty)
});

Deno.test("only examples longer than T are split across rows", () => {
  const { rows, report } = makeRows([example(2, 10), example(1, 1)], { T: 5, pack: true });
  assert.equal(report.split, 1);
  assert.deepEqual(
    rows.map((r) => r.segments),
    [
      [{ example: 0, start: 0, length: 5 }],
      [{ example: 0, start: 5, length: 5 }],
      [{ example: 0, start: 10, length: 2 }, { example: 1, start: 0, length: 2 }],
    ],
  );
});

Deno.test("splitByRatio is deterministic, disjoint, complete and keeps groups together", () => {
  const items = Array.from({ length: 300 }, (_, i) => ({ mr: `m${i % 100}`, ref: `r${i}` }));
  const options = {
    ratios: { train: 0.8, validation: 0.1, test: 0.1 },
    seed: 11,
    key: (r: { mr: string }) => r.mr,
  };
  const a = splitByRatio(items, options);
  const b = splitByRatio(items, options);
  assert.deepEqual(a, b);
  const mrs = (xs: { mr: string }[]) => new Set(xs.map((x) => x.mr));
  assert.equal(mrs(a.train).size, 80);
  assert.equal(mrs(a.validation).size, 10);
  assert.equal(mrs(a.test).size, 10);
  assert.equal(a.train.length + a.validation.length + a.test.length, items.length);
  for (const x of mrs(a.test)) assert.ok(!mrs(a.train).has(x) && !mrs(a.validation).has(x));
  for (const x of mrs(a.validation)) assert.ok(!mrs(a.train).has(x));
  // Input order inside each split.
  assert.deepEqual(a.test, [...a.test].sort((x, y) => +x.ref.slice(1) - +y.ref.slice(1)));
  const other = splitByRatio(items, { ...options, seed: 12 });
  assert.notDeepEqual(mrs(other.test), mrs(a.test));
  assert.throws(
    () => splitByRatio(items, { ratios: { train: 0.8, test: 0.1 }, seed: 1 }),
    /Invalid split ratios/,
  );
});

Deno.test("loadSplits reads separate files, or splits one E2E file keeping an mr's refs together", async () => {
  const dir = "fixtures/data-to-text";
  const files = await loadSplits({
    train: `${dir}/validation.csv`,
    test: `${dir}/test.csv`,
    format: "e2e",
  });
  assert.equal(files.validation.length, 0);
  assert.equal(groupReferences(files.test).length, 80);
  const split = await loadSplits({
    file: `${dir}/validation.csv`,
    ratios: { train: 0.5, validation: 0.25, test: 0.25 },
    seed: 4,
    format: "e2e",
  });
  const counts = [split.train, split.validation, split.test].map((s) => groupReferences(s).length);
  assert.deepEqual(counts, [40, 20, 20]);
  assert.equal(
    split.train.length + split.validation.length + split.test.length,
    files.train.length,
  );
});

Deno.test("loadSplits with a reader of its own keeps items with the same key field together", async () => {
  // Twelve conversations, three per topic; the split key is a field outside the records' text.
  const items = Array.from({ length: 12 }, (_, i) => ({ topic: { name: `t${i % 4}` }, n: i }));
  const read = (path: string) => Promise.resolve(path === "all" ? items : []);
  const split = await loadSplits(
    { file: "all", ratios: { train: 0.5, test: 0.5 }, seed: 3, key: "topic" },
    { read, field: (item, name) => name === "topic" ? item.topic : undefined },
  );
  const topics = (xs: typeof items) => new Set(xs.map((x) => x.topic.name));
  assert.equal(topics(split.train).size, 2);
  assert.equal(topics(split.test).size, 2);
  for (const t of topics(split.test)) assert.ok(!topics(split.train).has(t));
  assert.equal(split.train.length + split.test.length, 12);
  const files = await loadSplits({ train: "all", test: "none" }, { read, field: () => undefined });
  assert.deepEqual([files.train.length, files.validation.length, files.test.length], [12, 0, 0]);
});

Deno.test("buildSegmentRows lays out segments as buildRows lays out pairs", () => {
  const segments = [[{ text: "abc:", train: false }, { text: "defghij", train: true }]];
  const { rows, truncation } = buildSegmentRows(segments, { encoder: chars, T: 8 });
  assert.equal(truncation.truncated, 1);
  assert.deepEqual([...rows[0].tokens], [97, 98, 99, 58, 100, 101, 102, 103]);
  assert.deepEqual([...rows[0].mask], [0, 0, 0, 1, 1, 1, 1, 0]);
});

Deno.test("buildRows renders, truncates to T and reports", () => {
  const records = [{ mr: "abc", ref: "defghij" }, { mr: "x", ref: "y" }];
  const { rows, truncation, packing } = buildRows(records, {
    templates: { prompt: "{{ mr }}:", completion: "{{ ref }}" },
    encoder: chars,
    T: 8,
    pack: true,
  });
  assert.equal(truncation.truncated, 1);
  assert.equal(truncation.droppedTokens, 4 + 7 + 1 - 8);
  assert.equal(packing.rows, 2);
  assert.deepEqual(rows.map((r) => r.tokens.length), [8, 4]);
  assert.deepEqual([...rows[1].mask], [0, 1, 1, 0]);
});
