/**
 * ROUGE-L (Lin, 2004) as the E2E NLG challenge's scripts compute it (`e2e-metrics`, through
 * `pycocoevalcap`'s `Rouge`): sentence-level, from the longest common subsequence (LCS) of tokens,
 * averaged over the corpus. With several references, precision and recall are each the maximum
 * over the references (possibly from different ones), then combined as
 * `F = (1 + β²) P R / (R + β² P)` with β = 1.2 by default (pycocoevalcap's value, weighing
 * recall a little more).
 *
 * One difference: pycocoevalcap tokenizes with the Stanford PTB tokenizer (lowercased,
 * punctuation removed); here the tokens are the `13a` tokens BLEU uses (case kept unless
 * `lowercase`), so scores are close to, not identical with, the official script's.
 *
 * Also: exact match after whitespace normalisation.
 *
 * @module
 */

import { bleuTokens } from "./bleu.ts";

/** Options of {@link rougeL}. */
export interface RougeOptions {
  /** Weight of recall against precision. Default 1.2 (pycocoevalcap). */
  beta?: number;
  /** `"13a"` (default) or `"none"` (split on whitespace). */
  tokenize?: "13a" | "none";
  /** Lowercase first. Default false. */
  lowercase?: boolean;
}

/** A corpus ROUGE-L score. */
export interface RougeResult {
  /** Mean sentence F-measure on a 0-100 scale. */
  score: number;
  /** Each hypothesis' F-measure on a 0-1 scale. */
  sentences: number[];
}

/**
 * Length of the longest common subsequence of two token lists.
 *
 * @param a One sequence.
 * @param b The other.
 * @returns The LCS length.
 */
export function lcsLength(a: readonly string[], b: readonly string[]): number {
  let prev = new Uint32Array(b.length + 1);
  let row = new Uint32Array(b.length + 1);
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      row[j] = a[i - 1] === b[j - 1] ? prev[j - 1] + 1 : Math.max(prev[j], row[j - 1]);
    }
    [prev, row] = [row, prev];
  }
  return prev[b.length];
}

/**
 * ROUGE-L F-measure of one tokenized hypothesis against its tokenized references: the maximum
 * precision and the maximum recall over the references, combined with `beta`. An empty
 * hypothesis scores 0, and an empty reference gives recall 0.
 *
 * @param hyp Hypothesis tokens.
 * @param refs Tokens of each reference.
 * @param options `beta` (default 1.2).
 * @returns The F-measure in [0, 1].
 */
export function sentenceRougeL(
  hyp: readonly string[],
  refs: readonly (readonly string[])[],
  options: { beta?: number } = {},
): number {
  const beta = options.beta ?? 1.2;
  let p = 0;
  let r = 0;
  for (const ref of refs) {
    const lcs = lcsLength(ref, hyp);
    if (hyp.length > 0) p = Math.max(p, lcs / hyp.length);
    if (ref.length > 0) r = Math.max(r, lcs / ref.length);
  }
  if (p === 0 || r === 0) return 0;
  const b2 = beta * beta;
  return ((1 + b2) * p * r) / (r + b2 * p);
}

/**
 * Corpus ROUGE-L: the mean of the sentence F-measures.
 *
 * @param hyps One output per segment.
 * @param refs For each hypothesis, its references (one or more).
 * @param options β, tokenizer and case.
 * @returns The mean on a 0-100 scale and each sentence's score.
 * @throws {RangeError} If the lengths differ or a hypothesis has no reference.
 *
 * @example
 * ```ts
 * import { rougeL } from "./eval/rouge.ts";
 * rougeL(["the cat sat on the mat"], [["the cat is on the mat"]]).score; // 83.33...
 * ```
 */
export function rougeL(
  hyps: readonly string[],
  refs: readonly (readonly string[])[],
  options: RougeOptions = {},
): RougeResult {
  if (hyps.length !== refs.length) {
    throw new RangeError(`Got ${hyps.length} hypotheses but ${refs.length} reference lists`);
  }
  const sentences = hyps.map((hyp, i) => {
    if (refs[i].length === 0) {
      throw new RangeError(`Cannot score hypothesis ${i}: it has no reference`);
    }
    return sentenceRougeL(
      bleuTokens(hyp, options),
      refs[i].map((r) => bleuTokens(r, options)),
      options,
    );
  });
  const score = sentences.length === 0
    ? 0
    : (100 * sentences.reduce((a, b) => a + b, 0)) / sentences.length;
  return { score, sentences };
}

/**
 * Trims a string and turns every run of whitespace into one space.
 *
 * @param s Any text.
 * @returns The normalised text.
 */
export function normalizeWhitespace(s: string): string {
  return s.trim().replace(/\s+/g, " ");
}

/**
 * Exact match: the share of hypotheses equal to one of their references once whitespace is
 * normalised ({@link normalizeWhitespace}); case and punctuation count.
 *
 * @param hyps One output per segment.
 * @param refs For each hypothesis, its references.
 * @returns The share on a 0-100 scale (0 for an empty corpus).
 * @throws {RangeError} If the lengths differ.
 */
export function exactMatch(
  hyps: readonly string[],
  refs: readonly (readonly string[])[],
): number {
  if (hyps.length !== refs.length) {
    throw new RangeError(`Got ${hyps.length} hypotheses but ${refs.length} reference lists`);
  }
  if (hyps.length === 0) return 0;
  let hits = 0;
  hyps.forEach((hyp, i) => {
    const h = normalizeWhitespace(hyp);
    if (refs[i].some((r) => normalizeWhitespace(r) === h)) hits++;
  });
  return (100 * hits) / hyps.length;
}
