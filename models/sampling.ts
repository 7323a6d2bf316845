/**
 * Choosing the next token from a row of logits: greedy, temperature, top-k and top-p (nucleus),
 * reproducible from a seed.
 *
 * @module
 */

import { Random } from "../data/random.ts";

/** How the next token is chosen. */
export interface SamplingOptions {
  /** 0 (the default) is greedy: the argmax, lowest id on ties. */
  temperature?: number;
  /** Keep only the k most likely tokens (0 or absent: all). */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probability reaches p (1: all). */
  topP?: number;
  /** Seed of the sampling stream, a safe integer. */
  seed?: number;
}

/** Index of the largest value, the first one on ties. */
export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

/**
 * Picks tokens from logits according to {@link SamplingOptions}, drawing from its own seeded
 * stream (a {@link Random} of `data/random.ts`) so a generation is reproducible.
 *
 * @example Greedy and seeded sampling
 * ```ts
 * import { Sampler } from "./models/sampling.ts";
 * const logits = new Float32Array([0.1, 2.0, -1.0]);
 * new Sampler().next(logits); // 1
 * new Sampler({ temperature: 0.8, topK: 2, seed: 7 }).next(logits); // 0 or 1
 * ```
 */
export class Sampler {
  /** Softmax temperature; 0 picks the argmax. */
  readonly temperature: number;
  /** Keep only the k most likely tokens; 0 keeps all. */
  readonly topK: number;
  /** Keep the smallest set of tokens whose probabilities reach p; 1 keeps all. */
  readonly topP: number;
  readonly #random: Random;

  /**
   * Checks the options and seeds the sampler's stream.
   *
   * @param options Temperature, top-k, top-p and seed; default greedy.
   * @throws {RangeError} If an option is out of range.
   */
  constructor(options: SamplingOptions = {}) {
    this.temperature = options.temperature ?? 0;
    this.topK = options.topK ?? 0;
    this.topP = options.topP ?? 1;
    if (!(this.temperature >= 0)) {
      throw new RangeError(`temperature must be >= 0, got ${options.temperature}`);
    }
    if (!Number.isInteger(this.topK) || this.topK < 0) {
      throw new RangeError(`topK must be a non-negative integer, got ${options.topK}`);
    }
    if (!(this.topP > 0 && this.topP <= 1)) {
      throw new RangeError(`topP must be in (0, 1], got ${options.topP}`);
    }
    const seed = options.seed ?? 0;
    if (!Number.isSafeInteger(seed)) {
      throw new RangeError(`seed must be a safe integer, got ${options.seed}`);
    }
    this.#random = new Random(seed);
  }

  /** The next token id for one row of logits. */
  next(logits: ArrayLike<number>): number {
    if (this.temperature === 0) return argmax(logits);
    const order = Array.from({ length: logits.length }, (_, i) => i)
      .sort((a, b) => logits[b] - logits[a] || a - b);
    const keep = this.topK > 0 ? order.slice(0, this.topK) : order;
    const max = logits[keep[0]];
    const weights = keep.map((i) => Math.exp((logits[i] - max) / this.temperature));
    const total = weights.reduce((a, b) => a + b, 0);
    let cut = keep.length;
    if (this.topP < 1) {
      let cumulative = 0;
      for (let j = 0; j < keep.length; j++) {
        cumulative += weights[j] / total;
        if (cumulative >= this.topP) {
          cut = j + 1;
          break;
        }
      }
    }
    const kept = weights.slice(0, cut);
    let u = this.#random.nextFloat() * kept.reduce((a, b) => a + b, 0);
    for (let j = 0; j < cut; j++) {
      u -= kept[j];
      if (u < 0) return keep[j];
    }
    return keep[cut - 1];
  }
}

/**
 * Tokens that may not come next under a no-repeat n-gram rule: those that would complete an
 * n-gram already present in `tokens`.
 *
 * @param tokens The tokens generated so far.
 * @param n N-gram size (0: nothing banned).
 * @returns The banned token ids.
 */
export function bannedTokens(tokens: readonly number[], n: number): Set<number> {
  const banned = new Set<number>();
  if (n <= 0 || tokens.length < n - 1) return banned;
  const start = tokens.length - (n - 1);
  for (let i = 0; i + n <= tokens.length; i++) {
    let same = true;
    for (let j = 0; j < n - 1 && same; j++) same = tokens[i + j] === tokens[start + j];
    if (same) banned.add(tokens[i + n - 1]);
  }
  return banned;
}
