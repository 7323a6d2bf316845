/**
 * Text-generation metrics in one place. Every figure is on a 0-100 scale, as papers (and
 * sacreBLEU) report them: BLEU-4 (`eval/bleu.ts`: 13a tokens, closest reference length, no
 * smoothing), ROUGE-L (`eval/rouge.ts`: sentence F-measure with β = 1.2, max precision and recall
 * over references, averaged) and exact match (whitespace-normalised).
 *
 * @module
 */

import { type BleuOptions, corpusBleu } from "./bleu.ts";
import { exactMatch, rougeL } from "./rouge.ts";

export {
  bleuFromStats,
  type BleuOptions,
  type BleuResult,
  type BleuSmoothing,
  type BleuStats,
  bleuTokens,
  corpusBleu,
  sentenceBleuStats,
  splitWhitespace,
  tokenize13a,
} from "./bleu.ts";
export {
  exactMatch,
  lcsLength,
  normalizeWhitespace,
  rougeL,
  type RougeOptions,
  type RougeResult,
  sentenceRougeL,
} from "./rouge.ts";

/** Corpus scores of generated text, each on a 0-100 scale. */
export interface GenerationScores {
  /** Corpus BLEU-4. */
  bleu: number;
  /** Mean sentence ROUGE-L F-measure. */
  rougeL: number;
  /** Share of hypotheses equal to a reference after whitespace normalisation. */
  exactMatch: number;
  /** Number of hypotheses. */
  n: number;
}

/** Options of {@link scoreGenerations}: tokenizer and case apply to BLEU and ROUGE-L alike. */
export interface ScoreOptions extends Pick<BleuOptions, "tokenize" | "lowercase" | "smoothing"> {
  /** ROUGE-L's β. Default 1.2. */
  beta?: number;
}

/**
 * BLEU, ROUGE-L and exact match of hypotheses against their references.
 *
 * @param hyps One output per segment.
 * @param refs For each hypothesis, its references (one or more).
 * @param options Tokenizer, case, BLEU smoothing and ROUGE-L's β.
 * @returns The three scores (0-100) and the number of hypotheses.
 * @throws {RangeError} If the lengths differ or a hypothesis has no reference.
 *
 * @example
 * ```ts
 * import { scoreGenerations } from "./eval/metrics.ts";
 * const s = scoreGenerations(["The Eagle is a pub."], [["The Eagle is a pub.", "A pub."]]);
 * console.log(s.bleu, s.rougeL, s.exactMatch); // 100 100 100
 * ```
 */
export function scoreGenerations(
  hyps: readonly string[],
  refs: readonly (readonly string[])[],
  options: ScoreOptions = {},
): GenerationScores {
  return {
    bleu: corpusBleu(hyps, refs, options).score,
    rougeL: rougeL(hyps, refs, options).score,
    exactMatch: exactMatch(hyps, refs),
    n: hyps.length,
  };
}
