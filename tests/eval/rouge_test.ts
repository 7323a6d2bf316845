import assert from "node:assert/strict";
import { scoreGenerations } from "../../eval/metrics.ts";
import {
  exactMatch,
  lcsLength,
  normalizeWhitespace,
  rougeL,
  sentenceRougeL,
} from "../../eval/rouge.ts";

const close = (a: number, b: number, tol = 1e-9) =>
  assert.ok(Math.abs(a - b) <= tol, `${a} vs ${b}`);

Deno.test("lcsLength finds the longest common subsequence", () => {
  assert.equal(lcsLength([..."ABCBDAB"], [..."BDCABA"]), 4);
  assert.equal(lcsLength([..."ABC"], []), 0);
  assert.equal(lcsLength(["a", "b"], ["b", "a"]), 1);
  assert.equal(lcsLength("x a y b z c".split(" "), "a b c".split(" ")), 3);
});

Deno.test("ROUGE-L of one reference is the LCS F-measure with beta 1.2", () => {
  // LCS "the cat on the mat" = 5 of 6 tokens each side: P = R = 5/6, so F = 5/6 for any beta.
  close(rougeL(["the cat sat on the mat"], [["the cat is on the mat"]]).score, 500 / 6);
  // hyp 4 tokens, ref 2 tokens, LCS 2: P = 1/2, R = 1.
  const f = (p: number, r: number, b: number) => ((1 + b * b) * p * r) / (r + b * b * p);
  close(sentenceRougeL(["a", "b", "c", "d"], [["a", "b"]]), f(0.5, 1, 1.2));
  close(sentenceRougeL(["a", "b", "c", "d"], [["a", "b"]], { beta: 1 }), 2 / 3);
});

Deno.test("ROUGE-L takes the best precision and the best recall over references", () => {
  // ref1 "a b": LCS 2, P = 2/4, R = 1. ref2 8 tokens: LCS 3, P = 3/4, R = 3/8.
  const hyp = "a b c d".split(" ");
  const refs = ["a b".split(" "), "a b c x y z w v".split(" ")];
  const expected = (2.44 * 0.75 * 1) / (1 + 1.44 * 0.75);
  close(sentenceRougeL(hyp, refs), expected);
  close(rougeL(["a b c d"], [["a b", "a b c x y z w v"]]).score, 100 * expected);
});

Deno.test("ROUGE-L averages sentences and scores empty or disjoint outputs 0", () => {
  const r = rougeL(["the cat sat on the mat", "", "x y z"], [
    ["the cat is on the mat"],
    ["something"],
    ["a b c"],
  ]);
  assert.deepEqual(r.sentences.slice(1), [0, 0]);
  close(r.score, 500 / 6 / 3);
  // 13a tokens: the final period is its own token and case counts unless lowercased.
  // [The, pub, .] against [the, pub]: LCS 1, P = 1/3, R = 1/2.
  close(rougeL(["The pub."], [["the pub"]]).score, (100 * 2.44 / 6) / (1 / 2 + 1.44 / 3));
  close(rougeL(["The pub."], [["the pub ."]], { lowercase: true }).score, 100);
  assert.equal(rougeL([], []).score, 0);
  assert.throws(() => rougeL(["a"], [[]]), RangeError);
  assert.throws(() => rougeL(["a", "b"], [["a"]]), RangeError);
});

Deno.test("exact match compares after whitespace normalisation only", () => {
  assert.equal(normalizeWhitespace("  The\tEagle \n is  a pub. "), "The Eagle is a pub.");
  assert.equal(
    exactMatch([" The  Eagle\n is a pub. ", "the eagle is a pub.", "Yes"], [
      ["The Eagle is a pub."],
      ["The Eagle is a pub."],
      ["No", "Yes "],
    ]),
    (100 * 2) / 3,
  );
  assert.equal(exactMatch([], []), 0);
  assert.throws(() => exactMatch(["a"], []), RangeError);
});

Deno.test("scoreGenerations reports BLEU, ROUGE-L and exact match on a 0-100 scale", () => {
  const s = scoreGenerations(
    ["The Eagle is a pub near the river.", "Aromi is a coffee shop."],
    [["The Eagle is a pub near the river."], ["Aromi is a coffee shop in the city centre."]],
  );
  assert.equal(s.n, 2);
  assert.equal(s.exactMatch, 50);
  assert.ok(s.bleu > 50 && s.bleu < 100, `${s.bleu}`);
  assert.ok(s.rougeL > 50 && s.rougeL < 100, `${s.rougeL}`);
  // Three tokens have no 4-gram: BLEU-4 without smoothing is 0, as sacreBLEU's.
  const perfect = scoreGenerations(["A b."], [["x", "A b."]]);
  assert.deepEqual(perfect, { bleu: 0, rougeL: 100, exactMatch: 100, n: 1 });
});
