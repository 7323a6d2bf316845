/**
 * Beam search with one key-value cache per beam, as the E2E decoding of the LoRA and NOLA papers
 * does it (`examples/NLG/src/gpt2_beam.py` in both repositories: beam 10, length
 * penalty 0.8, no-repeat n-gram 4):
 *
 * - Each step, every live beam's next-token log-probabilities are
 *   `log_softmax(logits with banned tokens at -inf)` (the ban is applied before the softmax, so
 *   the allowed tokens' probabilities are renormalised), added to the beam's running sum; the
 *   `beams` best (beam, token) pairs over all live beams become the next beams (the first step
 *   expands the prompt alone).
 * - A beam whose new token is one of `eosIds` ends: it becomes a finished hypothesis and keeps its slot
 *   for this step only, so fewer beams may run on. After `maxNewTokens` steps every live beam
 *   ends too. The search also stops when no beam is live.
 * - A hypothesis scores `sum of log-probabilities / length ** lengthPenalty`, `length` counting
 *   its generated tokens, the end token included: Hugging Face `generate`'s `length_penalty`
 *   (not GNMT's `((5 + length) / 6) ** lp`). The best score wins, the earlier one on ties.
 * - No-repeat n-gram (fairseq's rule): a beam may not produce a token that completes an n-gram
 *   already in its generated tokens (the prompt is not included, unlike Hugging Face's processor).
 *
 * Unlike Hugging Face's `BeamSearchScorer`, candidates are the top `beams` (not `2 * beams`), a
 * finished beam is not replaced in its step, and there is no early stopping. With `beams: 1` and
 * no n-gram ban the result equals greedy decoding.
 *
 * {@link beamSearchBatch} searches many prompts at once with the same results: all their beams are
 * rows of one batched cache, one forward and one readback a step.
 *
 * @module
 */

import { Tensor } from "../kernels/tensor.ts";
import type { DecodingCache, Model } from "../models/model.ts";
import { decodeRows, prefill } from "../models/generate.ts";
import { bannedTokens } from "../models/sampling.ts";

export { bannedTokens };

/** Options of {@link beamSearch}. */
export interface BeamSearchOptions {
  /** Beam width. Default 4. */
  beams?: number;
  /** Exponent of the hypothesis length dividing its log-probability. Default 1. */
  lengthPenalty?: number;
  /** Forbid repeating any generated n-gram of this size (0: off). Default 0. */
  noRepeatNgram?: number;
  /** Most tokens to add after the prompt. Default 32. */
  maxNewTokens?: number;
  /** Tokens that end a hypothesis (not included in the output), e.g. `Tokenizer.eosIds`. */
  eosIds?: readonly number[];
}

/** A finished hypothesis: its tokens (the end token included if it has one) and score. */
export interface BeamHypothesis {
  tokens: number[];
  /** Sum of the log-probabilities of its tokens. */
  logProb: number;
  /** `logProb / tokens.length ** lengthPenalty`. */
  score: number;
}

interface LiveBeam {
  tokens: number[];
  logProb: number;
  cache: DecodingCache;
}

interface Candidate {
  logProb: number;
  beam: number;
  token: number;
}

/**
 * Continues `prompt` (token ids) by beam search and returns the new ids of the best hypothesis,
 * without its end token.
 *
 * @param model GPT-2 (with any adapters attached).
 * @param prompt Prompt token ids (at least one).
 * @param options Beam width, length penalty, no-repeat n-gram size, new-token limit, end token.
 * @returns The best hypothesis' new tokens (empty when every continuation was banned).
 * @throws {RangeError} If the prompt is empty or longer than the model's context, or an option
 * is out of range.
 *
 * @example E2E decoding settings
 * ```ts
 * import { Gpu } from "../kernels/gpu.ts";
 * import { loadModel } from "../models/registry.ts";
 * import { beamSearch } from "./beam.ts";
 * using gpu = await Gpu.acquire();
 * using model = await loadModel(gpu, "fixtures/tiny-gpt2");
 * const ids = await beamSearch(model, [5, 6, 7], {
 *   beams: 10,
 *   lengthPenalty: 0.8,
 *   noRepeatNgram: 4,
 *   maxNewTokens: 16,
 *   eosIds: [299],
 * });
 * ```
 */
export async function beamSearch(
  model: Model,
  prompt: ArrayLike<number>,
  options: BeamSearchOptions = {},
): Promise<number[]> {
  const best = await beamSearchHypothesis(model, prompt, options);
  if (!best) return [];
  // Only a hypothesis ended by the end token has it, as its last token.
  const last = best.tokens.at(-1);
  const ended = last !== undefined && (options.eosIds ?? []).includes(last);
  return ended ? best.tokens.slice(0, -1) : best.tokens;
}

/**
 * Like {@link beamSearch}, but returns the best hypothesis with its end token and scores, or
 * null when every continuation was banned (or `maxNewTokens` is 0).
 *
 * @param model GPT-2 (with any adapters attached).
 * @param prompt Prompt token ids (at least one).
 * @param options As {@link beamSearch}.
 * @returns The best hypothesis, or null.
 */
export async function beamSearchHypothesis(
  model: Model,
  prompt: ArrayLike<number>,
  options: BeamSearchOptions = {},
): Promise<BeamHypothesis | null> {
  const { gpu, maxPositions } = model;
  const { width, lp, ngram, maxNew } = settings(options);
  if (prompt.length === 0) throw new RangeError("Cannot generate from an empty prompt");
  if (prompt.length > maxPositions) {
    throw new RangeError(
      `Prompt of ${prompt.length} tokens is longer than the model's ${maxPositions} positions`,
    );
  }
  // Step s reads the logits after prompt + s tokens; the last new token is never fed.
  const steps = Math.min(maxNew, maxPositions - prompt.length + 1);
  if (steps === 0) return null;
  const V = model.outputs;
  const ends = new Set(options.eosIds ?? []);
  const tMax = prompt.length + steps - 1;
  const caches: DecodingCache[] = [];
  const newCache = (): DecodingCache => {
    const cache = model.newCache(tMax);
    caches.push(cache);
    return cache;
  };
  const rows = Tensor.empty(gpu, [width, V], { label: "beam logits" });
  let best: BeamHypothesis | null = null;
  const finish = (tokens: number[], logProb: number) => {
    const score = logProb / Math.pow(tokens.length, lp);
    if (!best || score > best.score) best = { tokens, logProb, score };
  };
  try {
    let live: LiveBeam[] = [{ tokens: [], logProb: 0, cache: newCache() }];
    // Each live beam's last logits row lands in row b of `rows`; one readback per step.
    forwardInto(model, rows, 0, Uint32Array.from(prompt), live[0].cache);
    for (let step = 0; step < steps; step++) {
      const logits = new Float32Array(
        await gpu.read(rows.buffer, { byteLength: live.length * V * 4 }),
      );
      const rowOf = (b: number) => logits.subarray(b * V, (b + 1) * V);
      const top = selectTop(live, rowOf, { V, width, ngram });
      const next: { parent: LiveBeam; tokens: number[]; logProb: number }[] = [];
      for (const c of top) {
        const parent = live[c.beam];
        const tokens = [...parent.tokens, c.token];
        if (ends.has(c.token)) finish(tokens, c.logProb);
        else next.push({ parent, tokens, logProb: c.logProb });
      }
      if (step === steps - 1) {
        for (const n of next) finish(n.tokens, n.logProb);
        break;
      }
      if (next.length === 0) break;
      live = assignCaches(live, next, newCache);
      live.forEach((beam, b) => {
        forwardInto(model, rows, b, Uint32Array.of(beam.tokens.at(-1)!), beam.cache);
      });
    }
  } finally {
    rows[Symbol.dispose]();
    for (const cache of caches) cache[Symbol.dispose]();
  }
  return best;
}

function check(ok: boolean, message: string): void {
  if (!ok) throw new RangeError(message);
}

function settings(options: BeamSearchOptions) {
  const width = options.beams ?? 4;
  const lp = options.lengthPenalty ?? 1;
  const ngram = options.noRepeatNgram ?? 0;
  const maxNew = options.maxNewTokens ?? 32;
  check(Number.isInteger(width) && width >= 1, `beams must be a positive integer, got ${width}`);
  check(Number.isFinite(lp), `lengthPenalty must be a finite number, got ${lp}`);
  check(Number.isInteger(ngram) && ngram >= 0, `noRepeatNgram must be >= 0, got ${ngram}`);
  check(Number.isInteger(maxNew) && maxNew >= 0, `maxNewTokens must be >= 0, got ${maxNew}`);
  return { width, lp, ngram, maxNew };
}

/** Options of {@link beamSearchBatch} and {@link beamSearchMany}. */
export interface BeamSearchBatchOptions extends BeamSearchOptions {
  /**
   * Most cache rows (prompts x beams) one forward decodes; prompts are searched in chunks of
   * `max(1, floor(maxRows / beams))`. Default `DEFAULT_DECODE_ROWS`, capped by what the attached
   * adapters take in one forward.
   */
  maxRows?: number;
  /** Called with each prompt's index and best hypothesis as soon as its chunk is done. */
  onDone?: (index: number, best: BeamHypothesis | null) => void;
}

/** A prompt's search in a batch: its live beams hold cache rows of its own group. */
interface PromptSearch {
  steps: number;
  live: { tokens: number[]; logProb: number; row: number }[];
  best: BeamHypothesis | null;
  rows: number[];
}

/**
 * {@link beamSearchHypothesis} of many prompts at once, with the same results (the same tokens,
 * scores equal up to float rounding): every live beam of every prompt of a chunk is a row of one
 * batched cache, so that a step is one forward and one readback for all of them. A prompt's
 * beams live in its own group of `beams` rows; a beam that takes over a copy of its parent's
 * cache gets it by a row copy on the GPU. Models without batched decoding run one prompt at a
 * time.
 *
 * @param model The model (with any adapters attached).
 * @param prompts Prompt token ids, at least one each.
 * @param options As {@link beamSearch}, plus `maxRows` and `onDone`.
 * @returns Each prompt's best hypothesis, or null where every continuation was banned.
 * @throws {RangeError} If a prompt is empty or too long, or an option is out of range.
 *
 * @example E2E decoding of two prompts
 * ```ts
 * import { Gpu } from "../kernels/gpu.ts";
 * import { loadModel } from "../models/registry.ts";
 * import { beamSearchBatch } from "./beam.ts";
 * using gpu = await Gpu.acquire();
 * using model = await loadModel(gpu, "fixtures/tiny-gpt2");
 * const best = await beamSearchBatch(model, [[5, 6, 7], [8, 9]], {
 *   beams: 10,
 *   lengthPenalty: 0.8,
 *   noRepeatNgram: 4,
 *   maxNewTokens: 8,
 *   eosIds: [299],
 * });
 * console.log(best.map((h) => h?.tokens));
 * ```
 */
export async function beamSearchBatch(
  model: Model,
  prompts: readonly ArrayLike<number>[],
  options: BeamSearchBatchOptions = {},
): Promise<(BeamHypothesis | null)[]> {
  const { maxPositions } = model;
  const { width } = settings(options);
  prompts.forEach((prompt, i) => {
    if (prompt.length === 0) throw new RangeError(`Cannot generate from prompt ${i}: it is empty`);
    if (prompt.length > maxPositions) {
      throw new RangeError(
        `Prompt ${i} of ${prompt.length} tokens is longer than the model's ${maxPositions} positions`,
      );
    }
  });
  const results: (BeamHypothesis | null)[] = [];
  const rows = decodeRows(model, options.maxRows);
  const perChunk = model.decode && model.newBatchCache ? Math.max(1, Math.floor(rows / width)) : 0;
  for (let start = 0; start < prompts.length; start += Math.max(1, perChunk)) {
    const chunk = perChunk > 0
      ? await searchChunk(model, prompts.slice(start, start + perChunk), options)
      : [await beamSearchHypothesis(model, prompts[start], options)];
    chunk.forEach((best, i) => {
      results.push(best);
      options.onDone?.(start + i, best);
    });
  }
  return results;
}

/**
 * {@link beamSearch} of many prompts at once ({@link beamSearchBatch}): each prompt's best new
 * ids without the end token.
 *
 * @param model The model (with any adapters attached).
 * @param prompts Prompt token ids, at least one each.
 * @param options As {@link beamSearchBatch}.
 * @returns The new ids of each prompt, in order.
 */
export async function beamSearchMany(
  model: Model,
  prompts: readonly ArrayLike<number>[],
  options: BeamSearchBatchOptions = {},
): Promise<number[][]> {
  const ends = options.eosIds ?? [];
  const best = await beamSearchBatch(model, prompts, options);
  return best.map((h) => {
    if (!h) return [];
    const last = h.tokens.at(-1);
    return last !== undefined && ends.includes(last) ? h.tokens.slice(0, -1) : h.tokens;
  });
}

// One chunk of beamSearchBatch: prompt p's beams use cache rows p * width .. p * width + width - 1.
async function searchChunk(
  model: Model,
  prompts: readonly ArrayLike<number>[],
  options: BeamSearchOptions,
): Promise<(BeamHypothesis | null)[]> {
  const { gpu, maxPositions } = model;
  const { width, lp, ngram, maxNew } = settings(options);
  const V = model.outputs;
  const ends = new Set(options.eosIds ?? []);
  const searches: PromptSearch[] = prompts.map((prompt, p) => ({
    steps: Math.min(maxNew, maxPositions - prompt.length + 1),
    live: [{ tokens: [], logProb: 0, row: p * width }],
    best: null,
    rows: Array.from({ length: width }, (_, i) => p * width + i),
  }));
  const running = searches.filter((s) => s.steps > 0);
  if (running.length === 0) return searches.map(() => null);
  const capacity = Math.max(...prompts.map((p, i) => p.length + searches[i].steps - 1));
  using cache = model.newBatchCache!(prompts.length * width, Math.max(1, capacity));
  const finish = (search: PromptSearch, tokens: number[], logProb: number) => {
    const score = logProb / Math.pow(tokens.length, lp);
    if (!search.best || score > search.best.score) search.best = { tokens, logProb, score };
  };
  const started = searches.map((s, p) => ({ s, p })).filter(({ s }) => s.steps > 0);
  const first = await prefill(model, cache, {
    prompts: started.map(({ p }) => prompts[p]),
    rowOf: (i) => started[i].p * width,
  });
  // Each running search's live beams, in order, own consecutive rows of `logits`.
  let logits = first;
  let stride = V;
  let active = started.map(({ s }) => s);
  for (let step = 0; active.length > 0; step++) {
    const copies: { from: number; to: number }[] = [];
    const next: PromptSearch[] = [];
    let at = 0;
    for (const search of active) {
      const base = at;
      at += search.live.length;
      const rowOf = (b: number) => logits.subarray((base + b) * stride, (base + b) * stride + V);
      const top = selectTop(search.live, rowOf, { V, width, ngram });
      const children: { parent: number; tokens: number[]; logProb: number }[] = [];
      for (const c of top) {
        const tokens = [...search.live[c.beam].tokens, c.token];
        if (ends.has(c.token)) finish(search, tokens, c.logProb);
        else children.push({ parent: c.beam, tokens, logProb: c.logProb });
      }
      if (step === search.steps - 1) {
        for (const c of children) finish(search, c.tokens, c.logProb);
        continue;
      }
      if (children.length === 0) continue;
      search.live = assignRows(search, children, copies);
      next.push(search);
    }
    active = next;
    if (active.length === 0) break;
    // Copies first: a parent's rows are copied before its heir extends them.
    if (copies.length > 0) cache.copyRows(copies);
    const beams = active.flatMap((s) => s.live);
    const acts = model.decode!(beams.map((b) => b.tokens.at(-1)!), cache, {
      rows: beams.map((b) => b.row),
    });
    stride = acts.logitsStride;
    logits = new Float32Array(
      await gpu.read(acts.logits.buffer, { byteLength: beams.length * stride * 4 }),
    );
  }
  return searches.map((s) => s.best);
}

// As assignCaches, with rows of the prompt's group: a parent's first child keeps its row, the
// others copy it into rows no child keeps.
function assignRows(
  search: PromptSearch,
  children: { parent: number; tokens: number[]; logProb: number }[],
  copies: { from: number; to: number }[],
): PromptSearch["live"] {
  const heirs = new Map<number, number>();
  children.forEach((c, i) => {
    if (!heirs.has(c.parent)) heirs.set(c.parent, i);
  });
  const kept = new Set([...heirs.keys()].map((b) => search.live[b].row));
  const spare = search.rows.filter((r) => !kept.has(r));
  return children.map((c, i) => {
    const row = search.live[c.parent].row;
    if (heirs.get(c.parent) === i) return { tokens: c.tokens, logProb: c.logProb, row };
    const to = spare.pop()!;
    copies.push({ from: row, to });
    return { tokens: c.tokens, logProb: c.logProb, row: to };
  });
}

// Records a cached forward of `tokens` and copies its last logits row into row `row` of `rows`.
function forwardInto(
  model: Model,
  rows: Tensor,
  row: number,
  tokens: Uint32Array,
  cache: DecodingCache,
): void {
  const V = model.outputs;
  const acts = model.forward({ B: 1, T: tokens.length, tokens }, cache);
  model.gpu.copy(acts.logits.buffer, rows.buffer, {
    size: V * 4,
    sourceOffset: (tokens.length - 1) * acts.logitsStride * 4,
    targetOffset: row * V * 4,
  });
}

// The first child of a parent takes over its cache; the others get a copy of its rows, in the
// cache of a beam without children or a new one. All copies are recorded before any forward of
// the step, so a parent's rows are copied before its heir extends them.
function assignCaches(
  live: LiveBeam[],
  next: { parent: LiveBeam; tokens: number[]; logProb: number }[],
  newCache: () => DecodingCache,
): LiveBeam[] {
  const heirs = new Map<LiveBeam, number>();
  next.forEach((n, i) => {
    if (!heirs.has(n.parent)) heirs.set(n.parent, i);
  });
  const spare = live.filter((b) => !heirs.has(b)).map((b) => b.cache);
  return next.map((n, i) => {
    const { tokens, logProb, parent } = n;
    if (heirs.get(parent) === i) return { tokens, logProb, cache: parent.cache };
    const cache = spare.pop() ?? newCache();
    cache.copyFrom(parent.cache);
    return { tokens, logProb, cache };
  });
}

// The `width` best (beam, token) candidates, best first; ties go to the lower beam, then the
// lower token. `rowOf(b)` is live beam b's logits (at least V values).
function selectTop(
  live: readonly { tokens: number[]; logProb: number }[],
  rowOf: (b: number) => Float32Array,
  o: { V: number; width: number; ngram: number },
): Candidate[] {
  const top: Candidate[] = [];
  live.forEach((beam, b) => {
    const row = rowOf(b);
    const banned = bannedTokens(beam.tokens, o.ngram);
    let max = -Infinity;
    for (let v = 0; v < o.V; v++) if (!banned.has(v) && row[v] > max) max = row[v];
    if (max === -Infinity) return;
    let sum = 0;
    for (let v = 0; v < o.V; v++) if (!banned.has(v)) sum += Math.exp(row[v] - max);
    const logZ = max + Math.log(sum);
    for (let v = 0; v < o.V; v++) {
      if (banned.has(v)) continue;
      const logProb = beam.logProb + row[v] - logZ;
      if (top.length === o.width && !(logProb > top[top.length - 1].logProb)) continue;
      let at = top.length;
      while (at > 0 && top[at - 1].logProb < logProb) at--;
      top.splice(at, 0, { logProb, beam: b, token: v });
      if (top.length > o.width) top.pop();
    }
  });
  return top;
}
