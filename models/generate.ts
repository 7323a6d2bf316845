/**
 * Text generation with a key-value cache: the prompt is run once, then one position a step, each
 * step reading only the last row of logits.
 *
 * @module
 */

import type { Model } from "./model.ts";
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
