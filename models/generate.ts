/**
 * Text generation with a key-value cache: the prompt is run once, then one position a step, each
 * step reading only the last row of logits. {@link generateBatch} continues many prompts at
 * once: one forward and one readback a step for all of them, through the model's batched
 * decoding cache.
 *
 * @module
 */

import type { BatchDecodingCache, Model } from "./model.ts";
import { bannedTokens, Sampler, type SamplingOptions } from "./sampling.ts";
import type { Tokenizer } from "./tokenizer.ts";

/** Options of {@link generateTokens} and {@link generateText}. */
export interface GenerateOptions extends SamplingOptions {
  /** Most tokens to add after the prompt. Default 32. */
  maxNewTokens?: number;
  /** Token ids that end the generation (not included in the output). */
  stopTokens?: number[];
  /** Never repeat an n-gram of the generated tokens (0, the default: no rule). */
  noRepeatNgram?: number;
  /** Called with every new token as soon as it is chosen; return false to stop. */
  onToken?: (id: number) => boolean | void;
}

/**
 * Continues `prompt` (token ids) and returns only the new ids. Greedy by default (temperature
 * 0), so the result equals taking the argmax of a full forward at every step.
 */
export async function generateTokens(
  model: Model,
  prompt: ArrayLike<number>,
  options: GenerateOptions = {},
): Promise<number[]> {
  const { gpu, maxPositions } = model;
  const maxNew = options.maxNewTokens ?? 32;
  if (prompt.length === 0) throw new RangeError("Cannot generate from an empty prompt");
  const tMax = Math.min(maxPositions, prompt.length + maxNew);
  if (prompt.length > maxPositions) {
    throw new RangeError(
      `Prompt of ${prompt.length} tokens is longer than the model's ${maxPositions} positions`,
    );
  }
  const sampler = new Sampler(options);
  const stops = new Set(options.stopTokens ?? []);
  using cache = model.newCache(tMax);
  const V = model.outputs;
  const out: number[] = [];
  {
    let next = Uint32Array.from(prompt);
    while (out.length < maxNew && cache.past + next.length <= tMax) {
      const T = next.length;
      const acts = model.forward({ B: 1, T, tokens: next }, cache);
      const bytes = await gpu.read(acts.logits.buffer, {
        byteOffset: (T - 1) * acts.logitsStride * 4,
        byteLength: V * 4,
      });
      const logits = new Float32Array(bytes);
      for (const banned of bannedTokens(out, options.noRepeatNgram ?? 0)) {
        logits[banned] = -Infinity;
      }
      const id = sampler.next(logits);
      if (stops.has(id)) break;
      out.push(id);
      if (options.onToken?.(id) === false) break;
      next = Uint32Array.of(id);
    }
  }
  return out;
}

/** Options of {@link generateBatch}. */
export interface GenerateBatchOptions extends Omit<GenerateOptions, "onToken"> {
  /** Most prompts decoded by one forward; more are done in chunks of this many. Default 128. */
  maxRows?: number;
  /** Called with each prompt's index and new ids as soon as it is done. */
  onDone?: (index: number, ids: number[]) => void;
}

/** Rows {@link generateBatch} decodes at once unless told otherwise. */
export const DEFAULT_DECODE_ROWS = 128;

/**
 * Continues every prompt (token ids) as {@link generateTokens} does each one alone, with the
 * same results (each prompt has its own sampler, seeded alike), but decodes all the prompts of
 * a chunk together: the prompts are run one by one into the rows of a batched cache, then every
 * step is one forward of one token for each unfinished prompt and one readback. Models without
 * batched decoding (`Model.decode`) are run one prompt at a time.
 *
 * @param model The model (with any adapters attached).
 * @param prompts Prompt token ids, at least one each.
 * @param options As {@link generateTokens}, plus `maxRows` and `onDone`.
 * @returns The new ids of each prompt, in order.
 * @throws {RangeError} If a prompt is empty or longer than the model's positions.
 *
 * @example Greedy continuations of three prompts
 * ```ts
 * import { Gpu } from "../kernels/gpu.ts";
 * import { loadModel } from "./registry.ts";
 * import { generateBatch } from "./generate.ts";
 * using gpu = await Gpu.acquire();
 * using model = await loadModel(gpu, "fixtures/tiny-gpt2");
 * const out = await generateBatch(model, [[5, 6, 7], [8], [9, 10]], { maxNewTokens: 4 });
 * console.log(out.map((ids) => ids.length)); // [4, 4, 4]
 * ```
 */
export async function generateBatch(
  model: Model,
  prompts: readonly ArrayLike<number>[],
  options: GenerateBatchOptions = {},
): Promise<number[][]> {
  const { maxPositions } = model;
  prompts.forEach((prompt, i) => {
    if (prompt.length === 0) throw new RangeError(`Cannot generate from prompt ${i}: it is empty`);
    if (prompt.length > maxPositions) {
      throw new RangeError(
        `Prompt ${i} of ${prompt.length} tokens is longer than the model's ${maxPositions} positions`,
      );
    }
  });
  const maxRows = decodeRows(model, options.maxRows);
  const results: number[][] = [];
  if (!model.decode || !model.newBatchCache) {
    for (const [i, prompt] of prompts.entries()) {
      results.push(await generateTokens(model, prompt, options));
      options.onDone?.(i, results[i]);
    }
    return results;
  }
  for (let start = 0; start < prompts.length; start += maxRows) {
    const chunk = prompts.slice(start, start + maxRows);
    const done = await generateChunk(model, chunk, options);
    done.forEach((ids, i) => {
      results.push(ids);
      options.onDone?.(start + i, ids);
    });
  }
  return results;
}

/**
 * Rows one batched decoding step may cover: `requested` (default {@link DEFAULT_DECODE_ROWS}),
 * but no more than any attached adapter takes in one forward.
 *
 * @param model The model with its adapters.
 * @param requested The rows asked for.
 * @returns The rows to decode at once, at least 1.
 * @throws {RangeError} If `requested` is not a positive integer.
 */
export function decodeRows(model: Model, requested = DEFAULT_DECODE_ROWS): number {
  if (!(Number.isInteger(requested) && requested >= 1)) {
    throw new RangeError(`maxRows must be a positive integer, got ${requested}`);
  }
  let rows = requested;
  for (const list of model.adapters.values()) {
    for (const { adapter } of list) rows = Math.min(rows, adapter.maxRows ?? rows);
  }
  return Math.max(1, rows);
}

// One chunk of generateBatch: row i of the cache is prompt i.
async function generateChunk(
  model: Model,
  prompts: readonly ArrayLike<number>[],
  options: GenerateBatchOptions,
): Promise<number[][]> {
  const { gpu, maxPositions } = model;
  const V = model.outputs;
  const maxNew = options.maxNewTokens ?? 32;
  const ngram = options.noRepeatNgram ?? 0;
  const stops = new Set(options.stopTokens ?? []);
  const out = prompts.map((): number[] => []);
  if (maxNew <= 0) return out;
  const tMax = prompts.map((p) => Math.min(maxPositions, p.length + maxNew));
  const samplers = prompts.map(() => new Sampler(options));
  using cache = model.newBatchCache!(prompts.length, Math.max(...tMax));
  let logits = await prefill(model, cache, { prompts });
  let stride = V;
  let active = prompts.map((_, i) => i);
  while (active.length > 0) {
    const next: number[] = [];
    const tokens: number[] = [];
    active.forEach((i, b) => {
      const row = logits.slice(b * stride, b * stride + V);
      for (const banned of bannedTokens(out[i], ngram)) row[banned] = -Infinity;
      const id = samplers[i].next(row);
      if (stops.has(id)) return;
      out[i].push(id);
      // As generateTokens: the new token is fed while both limits allow one more.
      if (out[i].length < maxNew && cache.lengths[i] + 1 <= tMax[i]) {
        next.push(i);
        tokens.push(id);
      }
    });
    active = next;
    if (active.length === 0) break;
    const acts = model.decode!(tokens, cache, { rows: active });
    stride = acts.logitsStride;
    logits = new Float32Array(
      await gpu.read(acts.logits.buffer, { byteLength: active.length * stride * 4 }),
    );
  }
  return out;
}

/**
 * Runs each prompt into its row of `cache` (prompt i into row `rowOf(i)`), one `B = 1` forward
 * a prompt, and reads every prompt's last logits row back at once: `[prompts, V]`.
 *
 * @param model The model.
 * @param cache A batched cache with an empty row for each prompt.
 * @param o The prompts, and the cache row of prompt i (i by default).
 * @returns The next-token logits of each prompt, V apart.
 */
export async function prefill(
  model: Model,
  cache: BatchDecodingCache,
  o: { prompts: readonly ArrayLike<number>[]; rowOf?: (i: number) => number },
): Promise<Float32Array> {
  const { prompts, rowOf = (i: number) => i } = o;
  const { gpu } = model;
  const V = model.outputs;
  const first = gpu.buffer(prompts.length * V * 4);
  try {
    prompts.forEach((prompt, i) => {
      const T = prompt.length;
      const acts = model.forward(
        { B: 1, T, tokens: Uint32Array.from(prompt) },
        cache.row(rowOf(i)),
      );
      gpu.copy(acts.logits.buffer, first, {
        size: V * 4,
        sourceOffset: (T - 1) * acts.logitsStride * 4,
        targetOffset: i * V * 4,
      });
    });
    return new Float32Array(await gpu.read(first, { byteLength: prompts.length * V * 4 }));
  } finally {
    gpu.release(first);
  }
}

/** Options of {@link generateText}. */
export interface GenerateTextOptions extends Omit<GenerateOptions, "onToken"> {
  /** Strings that end the generation; the text is cut before the first one found. */
  stop?: string[];
  /** Called with each new piece of text as it is decoded. */
  onText?: (piece: string) => void;
}

/**
 * Continues a text prompt, streaming decoded text, and stops at an end-of-text token, a stop
 * string, or `maxNewTokens`.
 *
 * The prompt is encoded as training rows start ({@linkcode Tokenizer.encodePrompt}: the
 * beginning-of-text token first where the tokenizer adds one), and the generation stops at any
 * of the tokenizer's `eosIds` (Llama 3 Instruct's `<|eot_id|>` and `<|end_of_text|>`, say)
 * unless `stopTokens` is given.
 *
 * @param model The model.
 * @param tokenizer Its tokenizer.
 * @param prompt The text to continue.
 * @param options Sampling, `maxNewTokens`, `stopTokens`, `stop` strings and `onText`.
 * @returns The new text, cut before the first stop string.
 */
export async function generateText(
  model: Model,
  tokenizer: Tokenizer,
  prompt: string,
  options: GenerateTextOptions = {},
): Promise<string> {
  const ids: number[] = [];
  let text = "";
  let emitted = 0;
  const stop = options.stop ?? [];
  const stopTokens = options.stopTokens ?? [...tokenizer.eosIds];
  await generateTokens(model, tokenizer.encodePrompt(prompt), {
    ...options,
    stopTokens,
    onToken: (id) => {
      ids.push(id);
      text = tokenizer.decode(ids);
      const cut = firstStop(text, stop);
      if (cut >= 0) text = text.slice(0, cut);
      // Hold back what the next token may still change: a partial UTF-8 character, or the start
      // of a stop string.
      const ready = cut >= 0 ? text.length : text.length - heldBack(text, stop);
      if (ready > emitted) {
        options.onText?.(text.slice(emitted, ready));
        emitted = ready;
      }
      return cut < 0;
    },
  });
  if (text.length > emitted) options.onText?.(text.slice(emitted));
  return text;
}

function heldBack(text: string, stops: string[]): number {
  let hold = text.endsWith("\uFFFD") ? 1 : 0;
  for (const s of stops) {
    for (let n = Math.min(s.length - 1, text.length); n > hold; n--) {
      if (text.endsWith(s.slice(0, n))) {
        hold = n;
        break;
      }
    }
  }
  return hold;
}

function firstStop(text: string, stops: string[]): number {
  let cut = -1;
  for (const s of stops) {
    const i = s ? text.indexOf(s) : -1;
    if (i >= 0 && (cut < 0 || i < cut)) cut = i;
  }
  return cut;
}
