/**
 * Evaluation of a model (with its adapters): loss and perplexity over the completion tokens of
 * micro-batches, text generation scored by BLEU / ROUGE-L / exact match, and classification
 * accuracy by label-token logits. Evaluation reads back from the GPU once per batch, example or
 * decoding step: it is not in the training loop's inner path.
 *
 * @module
 */

import { lossRows, type MicroBatch } from "../data/batches.ts";
import { generateBatch } from "../models/generate.ts";
import type { Model } from "../models/model.ts";
import type { Tokenizer } from "../models/tokenizer.ts";
import { beamSearchBatch } from "./beam.ts";
import { type GenerationScores, scoreGenerations, type ScoreOptions } from "./metrics.ts";

/** Mean loss over completion tokens. */
export interface LossResult {
  /** `sum(mask * loss) / sum(mask)`, cross-entropy in nats without label smoothing. */
  loss: number;
  /** `exp(loss)`. */
  perplexity: number;
  /** `sum(mask)`: the completion tokens counted. */
  tokens: number;
}

/**
 * Cross-entropy over the completion tokens of every micro-batch: each token's loss weighs
 * `mask / (sum of mask over all batches)`, as the trainer weighs a step, so the result is the
 * mean over completion tokens whatever the batch sizes. Targets under a zero mask are never read.
 *
 * @param model GPT-2 (with any adapters attached).
 * @param batches Micro-batches `{ B, T, tokens, targets, mask }`.
 * @returns The mean loss, its perplexity and the number of tokens.
 * @throws {RangeError} If a batch is malformed, a counted target is not in the vocabulary, or no
 * token is counted.
 */
export async function evaluateLoss(
  model: Model,
  batches: Iterable<MicroBatch> | AsyncIterable<MicroBatch>,
): Promise<LossResult> {
  const V = model.outputs;
  let sum = 0;
  let tokens = 0;
  let index = 0;
  for await (const batch of batches) {
    const n = lossRows(batch);
    checkRows(batch, index);
    // A masked target may be any id; the loss kernel gives NaN for one out of range.
    const targets = new Uint32Array(n);
    for (let i = 0; i < n; i++) {
      if (batch.mask[i] === 0) continue;
      if (batch.targets[i] >= V) {
        throw new RangeError(
          `Batch ${index} target ${batch.targets[i]} at ${i} is not below ${V}, the model's ` +
            `number of outputs`,
        );
      }
      targets[i] = batch.targets[i];
    }
    model.forward(batch);
    const losses = await model.loss({ targets }).read();
    for (let i = 0; i < n; i++) {
      const m = batch.mask[i];
      if (m === 0) continue;
      sum += m * losses[i];
      tokens += m;
    }
    index++;
  }
  if (!(tokens > 0)) {
    throw new RangeError("Cannot evaluate the loss: the batches hold no completion token");
  }
  const loss = sum / tokens;
  return { loss, perplexity: Math.exp(loss), tokens };
}

/** A prompt and the texts that count as correct continuations. */
export interface GenerationExample {
  /** The text the model continues. */
  prompt: string;
  /** The references a generation is scored against (at least one). */
  refs: string[];
  /**
   * The meaning representation the prompt was rendered from (`slot[value], ...`), when the
   * record holds one in an `mr` field (E2E data); the slot error rate reads it from here, so a
   * template may present the MR in any form.
   */
  mr?: string;
}

/** Options of {@link evaluateGenerations}. */
export interface EvaluateGenerationsOptions extends ScoreOptions {
  /** `"greedy"` (default) or `"beam"`. */
  decoding?: "greedy" | "beam";
  /** Beam width for `"beam"`. Default 4. */
  beams?: number;
  /** Length penalty for `"beam"` (Hugging Face's: log-probability / length ** lp). Default 1. */
  lengthPenalty?: number;
  /** No-repeat n-gram size over the generated tokens (0: off); applies to both decodings. */
  noRepeatNgram?: number;
  /** Most tokens generated per example. Default 32. */
  maxNewTokens?: number;
  /** Strings that end a generation: the text is cut before the first one. */
  stop?: string[];
  /**
   * Most rows (prompts, times beams for `"beam"`) decoded by one forward: prompts are decoded
   * together in chunks that fit. Default 128, capped by what the attached adapters take.
   */
  maxRows?: number;
  /** Called with each generation as soon as it is done (a chunk of prompts at a time). */
  onGeneration?: (index: number, text: string) => void;
}

/** Scores of a set of generations, with the generations. */
export interface GenerationEvaluation extends GenerationScores {
  /** The text generated for each example, cut at the end token or the first stop string. */
  generations: string[];
}

/**
 * Generates a continuation of every prompt (ending at the tokenizer's end-of-text token, a stop
 * string or `maxNewTokens`), many prompts a forward (`generateBatch`, `beamSearchBatch`: the
 * same results as one prompt at a time), and scores them against the references: BLEU, ROUGE-L and exact match
 * on a 0-100 scale (see `eval/metrics.ts`). The text is scored as decoded; tokenization makes
 * leading and trailing spaces irrelevant.
 *
 * @param model GPT-2 (with any adapters attached).
 * @param tokenizer Its tokenizer.
 * @param examples Prompts with their references (at least one each).
 * @param options Decoding and scoring options.
 * @returns The scores and the generations.
 * @throws {RangeError} If an example has no reference or its prompt does not fit the model.
 *
 * @example E2E-style decoding
 * ```ts
 * import { Gpu } from "../kernels/gpu.ts";
 * import { loadModel } from "../models/registry.ts";
 * import { Tokenizer } from "../models/tokenizer.ts";
 * import { evaluateGenerations } from "./evaluate.ts";
 * using gpu = await Gpu.acquire();
 * using model = await loadModel(gpu, "fixtures/tiny-gpt2");
 * const tokenizer = await Tokenizer.load("fixtures/tiny-gpt2");
 * const result = await evaluateGenerations(model, tokenizer, [
 *   { prompt: "name : The Eagle | type : pub ||", refs: ["The Eagle is a pub."] },
 * ], { decoding: "beam", beams: 10, lengthPenalty: 0.8, noRepeatNgram: 4, maxNewTokens: 64 });
 * console.log(result.bleu, result.generations[0]);
 * ```
 */
export async function evaluateGenerations(
  model: Model,
  tokenizer: Tokenizer,
  examples: readonly GenerationExample[],
  options: EvaluateGenerationsOptions = {},
): Promise<GenerationEvaluation> {
  examples.forEach((e, i) => {
    if (e.refs.length === 0) throw new RangeError(`Cannot score example ${i}: it has no reference`);
  });
  const stop = options.stop ?? [];
  const maxNewTokens = options.maxNewTokens ?? 32;
  const noRepeatNgram = options.noRepeatNgram ?? 0;
  const generations: string[] = [];
  const prompts = examples.map((e) => tokenizer.encodePrompt(e.prompt));
  const done = (i: number, ids: number[]) => {
    generations[i] = cutAtStop(tokenizer.decode(ids), stop);
    options.onGeneration?.(i, generations[i]);
  };
  if (options.decoding !== "beam" && noRepeatNgram === 0) {
    await generateBatch(model, prompts, {
      maxNewTokens,
      stopTokens: [...tokenizer.eosIds],
      maxRows: options.maxRows,
      onDone: done,
    });
  } else {
    // Greedy with an n-gram ban is beam search with one beam.
    const ends = tokenizer.eosIds;
    await beamSearchBatch(model, prompts, {
      beams: options.decoding === "beam" ? options.beams ?? 4 : 1,
      lengthPenalty: options.lengthPenalty,
      noRepeatNgram,
      maxNewTokens,
      eosIds: ends,
      maxRows: options.maxRows,
      onDone: (i, best) => {
        const ids = best?.tokens ?? [];
        const last = ids.at(-1);
        done(i, last !== undefined && ends.includes(last) ? ids.slice(0, -1) : ids);
      },
    });
  }
  const scores = scoreGenerations(generations, examples.map((e) => e.refs), options);
  return { ...scores, generations };
}

function cutAtStop(text: string, stop: readonly string[]): string {
  let cut = text.length;
  for (const s of stop) {
    const i = s ? text.indexOf(s) : -1;
    if (i >= 0 && i < cut) cut = i;
  }
  return text.slice(0, cut);
}

/** A classification example: prompt token ids and the index of its gold label. */
export interface ClassificationExample {
  /** The prompt's token ids; the label is read from the logits after its last token. */
  prompt: ArrayLike<number>;
  /** Index into `labelIds` of the correct label. */
  label: number;
}

/** Classification accuracy and what was predicted. */
export interface AccuracyResult {
  /** Share of correct predictions on a 0-100 scale (0 for no example). */
  accuracy: number;
  /** Examples predicted right. */
  correct: number;
  /** Examples. */
  n: number;
  /** Predicted label index per example. */
  predictions: number[];
}

/**
 * Accuracy of label-token classification: the prediction is the label whose token has the
 * largest logit at the last prompt position (the first label on ties), which is the label with
 * the largest next-token probability, compared with the gold label index. Labels are single
 * tokens (for multi-token labels, score the continuations by loss instead).
 *
 * @param model GPT-2 (with any adapters attached).
 * @param examples Prompt ids and gold label indices.
 * @param options `labelIds`: one token id per label (for example the ids of " A", " B", ...).
 * @returns Accuracy (0-100), counts and predictions.
 * @throws {RangeError} If a label id is not in the vocabulary, a gold label is not an index of
 * `labelIds`, or a prompt is empty or too long.
 */
export async function accuracy(
  model: Model,
  examples: readonly ClassificationExample[],
  options: { labelIds: readonly number[] },
): Promise<AccuracyResult> {
  const { labelIds } = options;
  const V = model.outputs;
  if (labelIds.length === 0) throw new RangeError("Cannot classify without label ids");
  for (const id of labelIds) {
    if (!Number.isInteger(id) || id < 0 || id >= V) {
      throw new RangeError(`Label id ${id} is not a token id below vocab ${V}`);
    }
  }
  const predictions: number[] = [];
  let correct = 0;
  for (const [i, { prompt, label }] of examples.entries()) {
    if (!Number.isInteger(label) || label < 0 || label >= labelIds.length) {
      throw new RangeError(
        `Example ${i} has label ${label}, expected an index below ${labelIds.length}`,
      );
    }
    const T = prompt.length;
    if (T === 0) throw new RangeError(`Example ${i} has an empty prompt`);
    const acts = model.forward({ B: 1, T, tokens: Uint32Array.from(prompt) });
    const row = new Float32Array(
      await model.gpu.read(acts.logits.buffer, {
        byteOffset: (T - 1) * acts.logitsStride * 4,
        byteLength: V * 4,
      }),
    );
    let best = 0;
    for (let k = 1; k < labelIds.length; k++) if (row[labelIds[k]] > row[labelIds[best]]) best = k;
    predictions.push(best);
    if (best === label) correct++;
  }
  const n = examples.length;
  return { accuracy: n === 0 ? 0 : (100 * correct) / n, correct, n, predictions };
}

// Targets and mask must have one value a loss row.
function checkRows(batch: MicroBatch, index: number): void {
  const n = lossRows(batch);
  if (batch.targets.length !== n || batch.mask.length !== n) {
    const rows = batch.kind === "labelled" ? "B" : "B*T";
    throw new RangeError(
      `Batch ${index} has ${batch.targets.length} targets and ${batch.mask.length} mask ` +
        `values, expected ${rows} = ${n}`,
    );
  }
}

/** What {@link evaluateAccuracy} measured. */
export interface BatchAccuracy {
  /** Percent of counted rows whose largest logit is the target. */
  accuracy: number;
  /** Counted rows predicted right (mask-weighted). */
  correct: number;
  /** Counted rows (sum of the mask). */
  n: number;
}

/**
 * Classification accuracy over micro-batches: for each loss row with a non-zero mask (an example
 * of a labelled batch), whether the largest logit is the target; ties go to the lower class.
 *
 * @param model A model whose task is `classification`.
 * @param batches Labelled micro-batches.
 * @returns Accuracy in percent, weighted by the mask.
 * @throws {TypeError} If the model does not classify.
 * @throws {RangeError} On targets or mask of the wrong length, or no counted row.
 */
export async function evaluateAccuracy(
  model: Model,
  batches: Iterable<MicroBatch> | AsyncIterable<MicroBatch>,
): Promise<BatchAccuracy> {
  if (model.task !== "classification") {
    throw new TypeError(
      `Cannot measure classification accuracy on a ${model.modelType} model: its head predicts ` +
        `tokens`,
    );
  }
  const V = model.outputs;
  let correct = 0;
  let n = 0;
  let index = 0;
  for await (const batch of batches) {
    checkRows(batch, index);
    const rows = lossRows(batch);
    const acts = model.forward(batch);
    const stride = acts.logitsStride;
    const logits = new Float32Array(
      await model.gpu.read(acts.logits.buffer, { byteLength: rows * stride * 4 }),
    );
    for (let i = 0; i < rows; i++) {
      const m = batch.mask[i];
      if (m === 0) continue;
      let best = 0;
      for (let c = 1; c < V; c++) if (logits[i * stride + c] > logits[i * stride + best]) best = c;
      if (best === batch.targets[i]) correct += m;
      n += m;
    }
    index++;
  }
  if (!(n > 0)) throw new RangeError("Cannot measure accuracy: the batches hold no example");
  return { accuracy: (100 * correct) / n, correct, n };
}
