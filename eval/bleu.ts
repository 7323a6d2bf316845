/**
 * Corpus BLEU (Papineni et al., 2002) as `mteval-v13a.pl` and sacreBLEU compute it: BLEU-4 with
 * uniform weights, n-gram matches clipped by the largest count in any one reference, matches and
 * totals summed over the corpus before the precisions are taken, and one brevity penalty over
 * the corpus whose reference length is, per hypothesis, the length of the reference closest to
 * the hypothesis (the shorter one on ties; NLTK's `corpus_bleu` and sacreBLEU's default
 * `closest` both do this).
 *
 * One difference from NLTK's `corpus_bleu`: NLTK counts `max(1, n-grams)` in the denominator of
 * each hypothesis, so a hypothesis shorter than n adds one phantom n-gram to the order-n total.
 * sacreBLEU and mteval count the real number (0), and so does this module. On corpora whose
 * hypotheses all have at least 4 tokens the two agree exactly.
 *
 * Text is tokenized with the `13a` tokenizer (mteval-v13a's, as sacreBLEU's `tokenizer_13a`)
 * unless `tokenize: "none"`, in which case it is split on whitespace only.
 *
 * @module
 */

/** How {@link corpusBleu} treats an n-gram order with no match anywhere in the corpus. */
export type BleuSmoothing = "none" | "floor" | "exp";

/** Options of {@link corpusBleu}. */
export interface BleuOptions {
  /** `"13a"` (default, mteval-v13a) or `"none"` (split on whitespace). */
  tokenize?: "13a" | "none";
  /** Lowercase hypotheses and references first. Default false. */
  lowercase?: boolean;
  /**
   * `"none"` (default): an order with no match makes the score 0. `"floor"`: its matches count as
   * 0.1 (NLTK's `method1`, sacreBLEU's `floor`). `"exp"`: the k-th such order counts as `1/2^k`
   * of a match (mteval's and sacreBLEU's `exp`).
   */
  smoothing?: BleuSmoothing;
  /** Largest n-gram order. Default 4. */
  maxOrder?: number;
}

/** Matches and lengths of one hypothesis against its references, summed over a corpus. */
export interface BleuStats {
  /** Clipped n-gram matches per order (index 0: unigrams). */
  matches: number[];
  /** N-grams of the hypothesis per order (`max(0, length - n + 1)`). */
  totals: number[];
  /** Tokens of the hypothesis. */
  hypLength: number;
  /** Length of the reference closest to the hypothesis (the shorter one on ties). */
  refLength: number;
}

/** A corpus BLEU score and the figures it is made of. */
export interface BleuResult extends BleuStats {
  /** BLEU on a 0-100 scale (sacreBLEU's). */
  score: number;
  /** Modified n-gram precisions on a 0-100 scale, after smoothing. */
  precisions: number[];
  /** Brevity penalty, `min(1, exp(1 - refLength / hypLength))` (0 for an empty corpus output). */
  brevityPenalty: number;
}

// mteval-v13a's "language-dependent part", in sacreBLEU's tokenizer_13a order. The first class
// is every ASCII symbol but the apostrophe, comma, hyphen and period: {|}~ [\]^_` space!"#$%&
// ()*+ :;<=>?@ and /.
const SYMBOLS = /([\x7b-\x7e\x5b-\x60\x20-\x26\x28-\x2b\x3a-\x40\x2f])/g;
// Period and comma unless preceded by a digit, then unless followed by one.
const PUNCT_AFTER_NON_DIGIT = /([^0-9])([.,])/g;
const PUNCT_BEFORE_NON_DIGIT = /([.,])([^0-9])/g;
// A dash after a digit.
const DASH_AFTER_DIGIT = /([0-9])(-)/g;
// Python's str.split() whitespace (str.isspace), which differs from JavaScript's \s: it has the
// ASCII separators U+001C-U+001F and U+0085, and not U+FEFF.
const PY_WHITESPACE =
  // deno-lint-ignore no-control-regex
  /[\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/;

/**
 * Tokenizes one line as mteval-v13a (sacreBLEU's `13a`): drops `<skipped>`, joins `-\n`
 * hyphenations, unescapes `&quot; &amp; &lt; &gt;`, splits off symbols and punctuation (periods
 * and commas inside numbers stay), and collapses whitespace.
 *
 * @param line One segment of text.
 * @returns The tokens (none for blank text).
 *
 * @example Punctuation is split off, numbers keep their separators
 * ```ts
 * import { tokenize13a } from "./eval/bleu.ts";
 * tokenize13a("It costs £20.50, doesn't it?"); // ["It", "costs", "£20.50", ",", "doesn't", "it", "?"]
 * ```
 */
export function tokenize13a(line: string): string[] {
  let s = line.replaceAll("<skipped>", "").replaceAll("-\n", "").replaceAll("\n", " ");
  if (s.includes("&")) {
    s = s.replaceAll("&quot;", '"').replaceAll("&amp;", "&").replaceAll("&lt;", "<")
      .replaceAll("&gt;", ">");
  }
  s = ` ${s} `
    .replace(SYMBOLS, " $1 ")
    .replace(PUNCT_AFTER_NON_DIGIT, "$1 $2 ")
    .replace(PUNCT_BEFORE_NON_DIGIT, " $1 $2")
    .replace(DASH_AFTER_DIGIT, "$1 $2 ");
  return splitWhitespace(s);
}

/** Splits on whitespace as Python's `str.split()` does (no empty tokens). */
export function splitWhitespace(s: string): string[] {
  return s.split(PY_WHITESPACE).filter((t) => t.length > 0);
}

/**
 * The tokens BLEU compares for one segment under `options` (tokenizer and lowercasing).
 *
 * @param text A hypothesis or reference.
 * @param options Tokenizer and case options of {@link corpusBleu}.
 * @returns Its tokens.
 */
export function bleuTokens(
  text: string,
  options: Pick<BleuOptions, "tokenize" | "lowercase"> = {},
): string[] {
  const s = options.lowercase ? text.toLowerCase() : text;
  return (options.tokenize ?? "13a") === "13a" ? tokenize13a(s) : splitWhitespace(s);
}

function ngramCounts(tokens: readonly string[], n: number): Map<string, number> {
  const counts = new Map<string, number>();
  for (let i = 0; i + n <= tokens.length; i++) {
    // JSON keeps n-grams apart whatever characters the tokens hold.
    const key = JSON.stringify(tokens.slice(i, i + n));
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}

/**
 * Matches and lengths of one tokenized hypothesis against its tokenized references.
 *
 * @param hyp Hypothesis tokens.
 * @param refs Tokens of each reference (at least one).
 * @param options Largest n-gram order (default 4).
 * @returns Clipped matches and totals per order, the hypothesis length and the closest
 * reference length.
 * @throws {RangeError} If there is no reference.
 */
export function sentenceBleuStats(
  hyp: readonly string[],
  refs: readonly (readonly string[])[],
  options: { maxOrder?: number } = {},
): BleuStats {
  const maxOrder = options.maxOrder ?? 4;
  if (refs.length === 0) throw new RangeError("Cannot score a hypothesis without references");
  let refLength = refs[0].length;
  for (const r of refs) {
    const d = Math.abs(r.length - hyp.length);
    const best = Math.abs(refLength - hyp.length);
    if (d < best || (d === best && r.length < refLength)) refLength = r.length;
  }
  const matches: number[] = [];
  const totals: number[] = [];
  for (let n = 1; n <= maxOrder; n++) {
    const maxRef = new Map<string, number>();
    for (const r of refs) {
      for (const [g, c] of ngramCounts(r, n)) maxRef.set(g, Math.max(maxRef.get(g) ?? 0, c));
    }
    let m = 0;
    for (const [g, c] of ngramCounts(hyp, n)) m += Math.min(c, maxRef.get(g) ?? 0);
    matches.push(m);
    totals.push(Math.max(0, hyp.length - n + 1));
  }
  return { matches, totals, hypLength: hyp.length, refLength };
}

/**
 * BLEU from corpus-summed statistics, as sacreBLEU's `compute_bleu`.
 *
 * @param stats Matches, totals and lengths summed over the corpus.
 * @param options Smoothing (default `"none"`).
 * @returns The score (0-100), precisions and brevity penalty with the statistics.
 */
export function bleuFromStats(
  stats: BleuStats,
  options: { smoothing?: BleuSmoothing } = {},
): BleuResult {
  const smoothing = options.smoothing ?? "none";
  const order = stats.matches.length;
  const precisions: number[] = [];
  let expFactor = 1;
  let logSum = 0;
  for (let n = 0; n < order; n++) {
    const total = stats.totals[n];
    const m = stats.matches[n];
    let p: number;
    if (total === 0) p = 0;
    else if (m > 0) p = (100 * m) / total;
    else if (smoothing === "exp") {
      expFactor *= 2;
      p = 100 / (expFactor * total);
    } else if (smoothing === "floor") p = (100 * 0.1) / total;
    else p = 0;
    precisions.push(p);
    logSum += p > 0 ? Math.log(p / 100) : -Infinity;
  }
  const { hypLength: c, refLength: r } = stats;
  const brevityPenalty = c >= r ? 1 : c > 0 ? Math.exp(1 - r / c) : 0;
  const score = order > 0 && logSum > -Infinity
    ? 100 * brevityPenalty * Math.exp(logSum / order)
    : 0;
  return { ...stats, score, precisions, brevityPenalty };
}

/**
 * Corpus BLEU of hypotheses against one or more references each.
 *
 * @param hyps One output per segment.
 * @param refs For each hypothesis, its references (one or more; the counts may differ).
 * @param options Tokenizer, case, smoothing and order.
 * @returns BLEU on a 0-100 scale with its precisions, brevity penalty and statistics.
 * @throws {RangeError} If the lengths differ or a hypothesis has no reference.
 *
 * @example Two segments, the second with two references
 * ```ts
 * import { corpusBleu } from "./eval/bleu.ts";
 * const { score } = corpusBleu(
 *   ["The cat sat on the mat.", "There is a dog in the garden."],
 *   [["The cat sat on the mat."], ["A dog is in the garden.", "There is a dog in the yard."]],
 * );
 * ```
 */
export function corpusBleu(
  hyps: readonly string[],
  refs: readonly (readonly string[])[],
  options: BleuOptions = {},
): BleuResult {
  if (hyps.length !== refs.length) {
    throw new RangeError(`Got ${hyps.length} hypotheses but ${refs.length} reference lists`);
  }
  const maxOrder = options.maxOrder ?? 4;
  if (!Number.isInteger(maxOrder) || maxOrder < 1) {
    throw new RangeError(`maxOrder must be a positive integer, got ${options.maxOrder}`);
  }
  const sum: BleuStats = {
    matches: new Array(maxOrder).fill(0),
    totals: new Array(maxOrder).fill(0),
    hypLength: 0,
    refLength: 0,
  };
  hyps.forEach((hyp, i) => {
    if (refs[i].length === 0) {
      throw new RangeError(`Cannot score hypothesis ${i}: it has no reference`);
    }
    const s = sentenceBleuStats(
      bleuTokens(hyp, options),
      refs[i].map((r) => bleuTokens(r, options)),
      { maxOrder },
    );
    for (let n = 0; n < maxOrder; n++) {
      sum.matches[n] += s.matches[n];
      sum.totals[n] += s.totals[n];
    }
    sum.hypLength += s.hypLength;
    sum.refLength += s.refLength;
  });
  return bleuFromStats(sum, options);
}
