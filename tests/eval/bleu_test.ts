import assert from "node:assert/strict";
import {
  bleuFromStats,
  corpusBleu,
  sentenceBleuStats,
  splitWhitespace,
  tokenize13a,
} from "../../eval/bleu.ts";

interface ReferenceCase {
  hyp: string;
  refs: string[];
  hyp_tokens: string[];
  ref_tokens: string[][];
  nltk_matches: number[];
  nltk_denominators: number[];
  closest_ref_length: number;
}

const reference = JSON.parse(
  await Deno.readTextFile(new URL("./bleu_reference.json", import.meta.url)),
) as {
  cases: ReferenceCase[];
  corpora: {
    all: { indices: number[]; mteval_bleu_from_nltk_counts: number };
    long: { indices: number[]; nltk_corpus_bleu: number };
    no_4gram_match: {
      indices: number[];
      nltk_corpus_bleu: number;
      nltk_corpus_bleu_method1: number;
    };
    singles: Record<string, number>;
  };
};
const { cases, corpora } = reference;

function bleuOf(indices: number[], smoothing?: "none" | "floor" | "exp"): number {
  return corpusBleu(
    indices.map((i) => cases[i].hyp),
    indices.map((i) => cases[i].refs),
    { smoothing },
  ).score;
}

Deno.test("13a tokens equal the Python port's on every reference case", () => {
  assert.ok(cases.length >= 30);
  for (const c of cases) {
    assert.deepEqual(tokenize13a(c.hyp), c.hyp_tokens, JSON.stringify(c.hyp));
    c.refs.forEach((r, j) => assert.deepEqual(tokenize13a(r), c.ref_tokens[j], JSON.stringify(r)));
  }
});

Deno.test("13a tokenization follows mteval-v13a on hand-checked lines", () => {
  const expect: [string, string[]][] = [
    ["Hello, world!", ["Hello", ",", "world", "!"]],
    ["Pi is 3.14 and 1,000.", ["Pi", "is", "3.14", "and", "1,000", "."]],
    ["kid-friendly 1990-1995", ["kid-friendly", "1990", "-", "1995"]],
    ['it\'s (maybe) "fine"', ["it's", "(", "maybe", ")", '"', "fine", '"']],
    ["&quot;a&quot; &amp; &lt;b&gt;", ['"', "a", '"', "&", "<", "b", ">"]],
    ["a<skipped>b hyphen-\nated\nline", ["ab", "hyphenated", "line"]],
    [
      "x/y:z;w?v@u~t|s{r}q[p]o^n_m`l",
      "x / y : z ; w ? v @ u ~ t | s { r } q [ p ] o ^ n _ m ` l"
        .split(" "),
    ],
    ["U.S.A.", ["U", ".", "S", ".", "A", "."]],
    // A period before a digit still splits off when nothing but space precedes it.
    [".5 and 5.", [".", "5", "and", "5", "."]],
    ["café — ok", ["café", "—", "ok"]],
    ["   ", []],
    ["", []],
  ];
  for (const [line, tokens] of expect) assert.deepEqual(tokenize13a(line), tokens, line);
});

Deno.test("whitespace splitting follows Python's str.split", () => {
  // Python splits on the ASCII separators U+001C..U+001F and U+0085, not on U+FEFF.
  assert.deepEqual(splitWhitespace("a\x1cb\x85c\ufeffd \u3000e\n"), ["a", "b", "c\ufeffd", "e"]);
});

Deno.test("per-case clipped matches and reference lengths equal NLTK's", () => {
  for (const c of cases) {
    const s = sentenceBleuStats(c.hyp_tokens, c.ref_tokens);
    assert.deepEqual(s.matches, c.nltk_matches, c.hyp);
    // NLTK's denominator is max(1, n-grams); ours is the real count.
    assert.deepEqual(s.totals.map((t) => Math.max(1, t)), c.nltk_denominators, c.hyp);
    assert.deepEqual(s.totals, [0, 1, 2, 3].map((n) => Math.max(0, c.hyp_tokens.length - n)));
    assert.equal(s.refLength, c.closest_ref_length, c.hyp);
    assert.equal(s.hypLength, c.hyp_tokens.length);
  }
});

Deno.test("corpus BLEU agrees with NLTK's corpus_bleu to 0.01", () => {
  const long = bleuOf(corpora.long.indices);
  assert.ok(Math.abs(long - corpora.long.nltk_corpus_bleu) < 0.01, `${long}`);
  const all = bleuOf(corpora.all.indices);
  assert.ok(Math.abs(all - corpora.all.mteval_bleu_from_nltk_counts) < 0.01, `${all}`);
  assert.ok(Object.keys(corpora.singles).length >= 10);
  for (const [i, expected] of Object.entries(corpora.singles)) {
    const got = bleuOf([Number(i)]);
    assert.ok(Math.abs(got - expected) < 0.01, `case ${i}: ${got} vs ${expected}`);
  }
});

Deno.test("floor smoothing equals NLTK's method1 when an order has no match", () => {
  const { indices, nltk_corpus_bleu, nltk_corpus_bleu_method1 } = corpora.no_4gram_match;
  assert.ok(indices.length >= 2);
  assert.equal(bleuOf(indices), 0);
  assert.ok(nltk_corpus_bleu < 1e-6);
  const floor = bleuOf(indices, "floor");
  assert.ok(floor > 0 && Math.abs(floor - nltk_corpus_bleu_method1) < 0.01, `${floor}`);
});

Deno.test("exp smoothing halves the credit of each further order without a match", () => {
  const r = bleuFromStats(
    { matches: [3, 0, 0, 0], totals: [4, 3, 2, 1], hypLength: 4, refLength: 5 },
    { smoothing: "exp" },
  );
  assert.deepEqual(r.precisions, [75, 100 / 6, 100 / 8, 100 / 8]);
  const expected = Math.exp(1 - 5 / 4) * Math.pow(75 * (100 / 6) * (100 / 8) * (100 / 8), 1 / 4);
  assert.ok(Math.abs(r.score - expected) < 1e-9);
});

Deno.test("BLEU clips repeated n-grams by the largest count in any one reference", () => {
  const refs = [["The cat is on the mat.", "There is a cat on the mat."]];
  const cased = corpusBleu(["the the the the the the the"], refs, { maxOrder: 1 });
  assert.deepEqual([cased.matches[0], cased.totals[0]], [1, 7]);
  const lower = corpusBleu(["the the the the the the the"], refs, { maxOrder: 1, lowercase: true });
  assert.deepEqual([lower.matches[0], lower.totals[0]], [2, 7]);
  // Closest reference length: 7 tokens is as close to 6 as to 8, and the shorter one wins.
  assert.equal(lower.refLength, 7);
  assert.equal(corpusBleu(["a b c d e f g"], [["a b c d e f", "a b c d e f g h"]]).refLength, 6);
});

Deno.test("BLEU is 100 for identical text, 0 for an empty output, and checks its inputs", () => {
  assert.equal(
    corpusBleu(["The Eagle is a pub near the river."], [["The Eagle is a pub near the river."]])
      .score,
    100,
  );
  const empty = corpusBleu([""], [["Some reference here ."]]);
  assert.equal(empty.score, 0);
  assert.equal(empty.brevityPenalty, 0);
  assert.equal(corpusBleu([], []).score, 0);
  assert.throws(() => corpusBleu(["a"], []), RangeError);
  assert.throws(() => corpusBleu(["a"], [[]]), RangeError);
  assert.throws(() => corpusBleu(["a"], [["a"]], { maxOrder: 0 }), RangeError);
});
