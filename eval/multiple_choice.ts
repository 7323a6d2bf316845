/**
 * Multiple-choice evaluation scored as MMLU is (Hendrycks et al., ICLR 2021): each question is
 * written after k solved examples of its subject, and the prediction is the answer letter the
 * model finds most likely.
 *
 * **Prompt**, as the original evaluation writes it:
 *
 *     The following are multiple choice questions (with answers) about {subject, _ as spaces}.\n\n
 *     {shot question}\nA. {choice}\nB. {choice}\n...\nAnswer: {letter}\n\n     (each shot)
 *     {question}\nA. {choice}\nB. {choice}\n...\nAnswer:
 *
 * The shots are the first k dev items of the item's subject, in file order. When a prompt and its
 * answer do not fit the model's positions, the fewest shots are dropped from the front, and the
 * item is counted in {@linkcode MultipleChoiceResult.lostShots}.
 *
 * **Score** of letter X: the log-likelihood of the continuation `" X"` after the prompt, the sum
 * of the log-probabilities of its tokens. The text `prompt + " X"` is encoded as a whole (with
 * the beginning-of-text token where the tokenizer adds one, {@linkcode Tokenizer.encodePrompt});
 * its continuation tokens are those after its common prefix with the prompt's own ids. The
 * prediction is the letter of highest log-likelihood, the earlier letter on ties.
 *
 * On the GPU: one forward per item, no gradient. When the choices' texts differ in their last
 * token only (the usual case), one row holds the prompt and the shared part of the answer: the
 * losses of that part and the logits of the last position give every choice's score (the
 * log-softmax in float64 on the host). Otherwise one row per choice, and the per-token losses of
 * each continuation from `model.loss`. Rows are padded to a multiple of 16 positions so that
 * activation arenas are reused; what the scores need is copied into one buffer read back once
 * per group of items.
 *
 * @module
 */

import { type ChoiceItem, choiceLetter, MAX_CHOICES } from "../data/choices.ts";
import { oneLine } from "../formats/one_line.ts";
import { Tensor } from "../kernels/tensor.ts";
import type { Model } from "../models/model.ts";
import type { Tokenizer } from "../models/tokenizer.ts";

export type { ChoiceItem };

/** Default number of shots (MMLU's 5-shot setting). */
export const DEFAULT_SHOTS = 5;

// Items scored per read-back, and the padding step of the sequence length.
const GROUP_ITEMS = 32;
const T_STEP = 16;

/**
 * The first line of an MMLU prompt.
 *
 * @param subject The subject, e.g. `high_school_physics`.
 * @returns `The following are multiple choice questions (with answers) about high school
 * physics.` and a blank line.
 */
export function choiceHeader(subject: string): string {
  return `The following are multiple choice questions (with answers) about ${
    subject.replaceAll("_", " ")
  }.\n\n`;
}

/**
 * One question as MMLU writes it: the question, each choice after its letter, `Answer:`.
 *
 * @param item The item.
 * @param options `answer`: end with the right letter and a blank line, as a shot does.
 * @returns The text.
 *
 * @example
 * ```ts
 * import { formatChoiceItem } from "./multiple_choice.ts";
 * const item = { question: "2 + 2 =", choices: ["3", "4"], answer: 1, subject: "math", file: "", line: 1 };
 * formatChoiceItem(item); // "2 + 2 =\nA. 3\nB. 4\nAnswer:"
 * formatChoiceItem(item, { answer: true }); // "2 + 2 =\nA. 3\nB. 4\nAnswer: B\n\n"
 * ```
 */
export function formatChoiceItem(item: ChoiceItem, options: { answer?: boolean } = {}): string {
  let text = item.question;
  item.choices.forEach((choice, j) => text += `\n${choiceLetter(j)}. ${choice}`);
  text += "\nAnswer:";
  return options.answer ? `${text} ${choiceLetter(item.answer)}\n\n` : text;
}

/**
 * The prompt of an item after its shots: the header of the item's subject, each shot with its
 * answer, then the item, ending in `Answer:`.
 *
 * @param item The item to answer.
 * @param shots The solved examples before it (MMLU: the first k dev items of the subject).
 * @returns The prompt; each letter's continuation is `" X"`.
 */
export function choicePrompt(item: ChoiceItem, shots: readonly ChoiceItem[] = []): string {
  return choiceHeader(item.subject) +
    shots.map((s) => formatChoiceItem(s, { answer: true })).join("") +
    formatChoiceItem(item);
}

/** An item's prediction, as {@linkcode choiceAccuracy} counts it. */
export interface ChoicePrediction {
  /** The subject. */
  subject: string;
  /** The right choice. */
  answer: number;
  /** The predicted choice. */
  prediction: number;
}

/** Accuracy on one subject. */
export interface SubjectAccuracy {
  /** The subject. */
  subject: string;
  /** Percent of its items predicted right. */
  accuracy: number;
  /** Items predicted right. */
  correct: number;
  /** Items. */
  n: number;
}

/** Accuracy overall and per subject. */
export interface ChoiceAccuracy {
  /** Percent of all items predicted right (0 for none). */
  accuracy: number;
  /** The mean of the subjects' accuracies, in percent (0 for none). */
  macroAccuracy: number;
  /** Items predicted right. */
  correct: number;
  /** Items. */
  n: number;
  /** Each subject, in name order. */
  subjects: SubjectAccuracy[];
}

/**
 * Accuracy of predictions overall (micro: every item counts once), per subject, and as the mean
 * over subjects (macro: every subject counts once), as MMLU papers report both.
 *
 * @param predictions One prediction an item.
 * @returns The accuracies in percent, with counts; subjects in name order.
 *
 * @example Two subjects of different sizes
 * ```ts
 * import { choiceAccuracy } from "./multiple_choice.ts";
 * const r = choiceAccuracy([
 *   { subject: "a", answer: 0, prediction: 0 },
 *   { subject: "a", answer: 1, prediction: 1 },
 *   { subject: "a", answer: 2, prediction: 0 },
 *   { subject: "b", answer: 3, prediction: 3 },
 * ]);
 * console.log(r.accuracy, r.macroAccuracy); // 75 83.33...
 * ```
 */
export function choiceAccuracy(predictions: readonly ChoicePrediction[]): ChoiceAccuracy {
  const bySubject = new Map<string, { correct: number; n: number }>();
  let correct = 0;
  for (const p of predictions) {
    const s = bySubject.get(p.subject) ?? { correct: 0, n: 0 };
    s.n++;
    if (p.prediction === p.answer) {
      s.correct++;
      correct++;
    }
    bySubject.set(p.subject, s);
  }
  const subjects = [...bySubject].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([subject, s]) => ({ subject, accuracy: (100 * s.correct) / s.n, ...s }));
  const n = predictions.length;
  return {
    accuracy: n === 0 ? 0 : (100 * correct) / n,
    macroAccuracy: subjects.length === 0
      ? 0
      : subjects.reduce((sum, s) => sum + s.accuracy, 0) / subjects.length,
    correct,
    n,
    subjects,
  };
}

/** Options of {@linkcode evaluateMultipleChoice}. */
export interface MultipleChoiceOptions {
  /** The model's tokenizer. */
  tokenizer: Tokenizer;
  /** The items the shots are taken from (MMLU's dev split); absent: no shots. */
  dev?: readonly ChoiceItem[];
  /** Shots before each question. Default {@linkcode DEFAULT_SHOTS} with `dev`, else 0. */
  shots?: number;
  /** Score only the first items. Default: all. */
  maxItems?: number;
  /** Called after each group of items is scored, with the items done and the total. */
  onProgress?: (done: number, total: number) => void;
}

/** What one item scored. */
export interface ChoiceScore {
  /** The item. */
  item: ChoiceItem;
  /** The log-likelihood (nats) of each letter's continuation, in choice order. */
  logLikelihoods: number[];
  /** The choice of highest log-likelihood (the earlier on ties). */
  prediction: number;
  /** Shots the prompt held (fewer than asked when the front ones did not fit). */
  shots: number;
}

/** Accuracy of multiple-choice items, with what each item scored. */
export interface MultipleChoiceResult extends ChoiceAccuracy {
  /** The shots asked for. */
  shotsAsked: number;
  /** Items whose prompt held fewer shots than asked, to fit the model. */
  lostShots: number;
  /** Each item's scores, in item order. */
  scores: ChoiceScore[];
}

/** Why items cannot be scored with this model, tokenizer and dev items. */
export type MultipleChoiceReason = "shots" | "length" | "tokens";

/**
 * Why items cannot be scored: too few dev items for the shots of a subject, an item longer than
 * the model, or a tokenizer whose ids the model has no logits for.
 */
export class MultipleChoiceError extends RangeError {
  /**
   * `shots`: a subject has fewer dev items than shots; `length`: an item does not fit the model
   * without shots; `tokens`: the tokenizer does not suit the model.
   */
  readonly reason: MultipleChoiceReason;

  /**
   * Makes the error.
   *
   * @param message The whole message, naming the subject or the item's file and line.
   * @param reason What is wrong.
   */
  constructor(message: string, reason: MultipleChoiceReason) {
    // Subjects and file names come from the files: control characters are escaped.
    super(oneLine(message));
    this.name = "MultipleChoiceError";
    this.reason = reason;
  }
}

/** An item ready for the GPU: each choice's ids and where its continuation starts. */
interface Planned {
  item: ChoiceItem;
  shots: number;
  /** `prompt + " X"` encoded, one a choice. */
  rows: number[][];
  /** Index of the first continuation token in each row. */
  from: number[];
}

/**
 * Scores multiple-choice items as MMLU does (see the module doc): k-shot prompts from the dev
 * items of each subject, the log-likelihood of each answer letter, accuracy overall, per subject
 * and over subjects. Reads back only the continuation tokens' losses, once per group of items.
 * Attached adapters take part as they stand (combine NOLA factors first).
 *
 * @param model A text model (`causal-lm`).
 * @param items The items to score.
 * @param options The tokenizer, the dev items and shots, `maxItems`, a progress callback.
 * @returns Accuracy overall, per subject and macro, the number of items that lost shots, and
 * each item's log-likelihoods.
 * @throws {TypeError} If the model does not predict tokens.
 * @throws {MultipleChoiceError} If a subject has fewer dev items than shots, an item does not
 * fit the model even without shots (naming its file and line), or the tokenizer gives ids the
 * model has no logits for; all before any GPU work.
 * @throws {RangeError} If an item has fewer than 2 or more than 26 choices or an answer out of
 * range.
 *
 * @example Five-shot MMLU
 * ```ts
 * import { readChoiceItems } from "../data/choices.ts";
 * import { Gpu } from "../kernels/gpu.ts";
 * import { loadModel } from "../models/registry.ts";
 * import { Tokenizer } from "../models/tokenizer.ts";
 * import { evaluateMultipleChoice } from "./multiple_choice.ts";
 * using gpu = await Gpu.acquire();
 * using model = await loadModel(gpu, "path/to/Qwen2.5-0.5B");
 * const tokenizer = await Tokenizer.load("path/to/Qwen2.5-0.5B");
 * const r = await evaluateMultipleChoice(model, await readChoiceItems("mmlu/test.jsonl"), {
 *   tokenizer,
 *   dev: await readChoiceItems("mmlu/dev.jsonl"),
 *   shots: 5,
 * });
 * console.log(r.accuracy, r.macroAccuracy, r.subjects.length, r.lostShots);
 * ```
 */
export async function evaluateMultipleChoice(
  model: Model,
  items: readonly ChoiceItem[],
  options: MultipleChoiceOptions,
): Promise<MultipleChoiceResult> {
  if (model.task !== "causal-lm") {
    throw new TypeError(
      `Cannot score multiple-choice items with a ${model.modelType} model: it classifies, it ` +
        `does not predict tokens`,
    );
  }
  const { tokenizer, dev } = options;
  const k = options.shots ?? (dev ? DEFAULT_SHOTS : 0);
  if (!Number.isInteger(k) || k < 0) {
    throw new RangeError(`Invalid shots ${k}: expected an integer of at least 0`);
  }
  if (k > 0 && !dev) {
    throw new RangeError(
      `Cannot take ${plural(k, "shot")} without dev items: give dev items or shots 0`,
    );
  }
  const max = options.maxItems;
  if (max !== undefined && (!Number.isInteger(max) || max < 1)) {
    throw new RangeError(`Invalid maxItems ${max}: expected an integer of at least 1`);
  }
  const chosen = max === undefined ? items : items.slice(0, max);
  chosen.forEach(checkItem);
  const shotsOf = subjectShots(chosen, dev ?? [], k);
  // Fail before any GPU work when an item cannot fit even alone.
  for (const item of chosen) plan(model, tokenizer, item, [], { last: true });

  const scores: ChoiceScore[] = [];
  for (let start = 0; start < chosen.length; start += GROUP_ITEMS) {
    const group = chosen.slice(start, start + GROUP_ITEMS).map((item) => {
      const shots = shotsOf.get(item.subject)!;
      for (let d = 0;; d++) {
        const planned = plan(model, tokenizer, item, shots.slice(d), { last: d === shots.length });
        if (planned) return planned;
      }
    });
    for (const [i, ll] of (await scoreGroup(model, group)).entries()) {
      let prediction = 0;
      for (let j = 1; j < ll.length; j++) if (ll[j] > ll[prediction]) prediction = j;
      scores.push({ item: group[i].item, logLikelihoods: ll, prediction, shots: group[i].shots });
    }
    options.onProgress?.(scores.length, chosen.length);
  }
  const accuracy = choiceAccuracy(
    scores.map((s) => ({
      subject: s.item.subject,
      answer: s.item.answer,
      prediction: s.prediction,
    })),
  );
  return {
    ...accuracy,
    shotsAsked: k,
    lostShots: scores.filter((s) => s.shots < k).length,
    scores,
  };
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function where(item: ChoiceItem): string {
  return `"${item.file}" line ${item.line}`;
}

function checkItem(item: ChoiceItem): void {
  const n = item.choices.length;
  if (n < 2 || n > MAX_CHOICES) {
    throw new RangeError(`Item ${where(item)} has ${n} choices; expected 2 to ${MAX_CHOICES}`);
  }
  if (!Number.isInteger(item.answer) || item.answer < 0 || item.answer >= n) {
    throw new RangeError(`Item ${where(item)} has answer ${item.answer}; expected 0 to ${n - 1}`);
  }
}

// The first k dev items of each subject of `items`; every subject must have k.
function subjectShots(
  items: readonly ChoiceItem[],
  dev: readonly ChoiceItem[],
  k: number,
): Map<string, ChoiceItem[]> {
  const bySubject = new Map<string, ChoiceItem[]>();
  for (const item of dev) {
    const list = bySubject.get(item.subject) ?? [];
    list.push(item);
    bySubject.set(item.subject, list);
  }
  const shots = new Map<string, ChoiceItem[]>();
  const short: { subject: string; have: number }[] = [];
  for (const { subject } of items) {
    if (shots.has(subject)) continue;
    const have = bySubject.get(subject) ?? [];
    if (have.length < k) short.push({ subject, have: have.length });
    shots.set(subject, have.slice(0, k));
  }
  if (short.length > 0) {
    const [first] = short;
    const fewest = Math.min(...short.map((s) => s.have));
    throw new MultipleChoiceError(
      `Cannot take ${plural(k, "shot")} for subject "${first.subject}": the dev items hold ${
        first.have === 0 ? "none" : first.have
      } of it${
        short.length === 1
          ? ""
          : ` (and ${short.length - 1} more subject${
            short.length === 2 ? " falls" : "s fall"
          } short)`
      }; ` +
        (fewest === 0
          ? "give every subject dev items, or set shots to 0"
          : `lower shots to ${fewest}`),
      "shots",
    );
  }
  return shots;
}

// Encodes an item after `shots`; undefined when it does not fit (an error when `last`).
function plan(
  model: Model,
  tokenizer: Tokenizer,
  item: ChoiceItem,
  shots: readonly ChoiceItem[],
  options: { last: boolean },
): Planned | undefined {
  const prompt = choicePrompt(item, shots);
  const promptIds = tokenizer.encodePrompt(prompt);
  const rows = item.choices.map((_, j) => tokenizer.encodePrompt(`${prompt} ${choiceLetter(j)}`));
  const longest = Math.max(...rows.map((r) => r.length)) - 1;
  if (longest > model.maxPositions) {
    if (!options.last) return undefined;
    throw new MultipleChoiceError(
      `Item ${where(item)} (subject "${item.subject}") does not fit the model: with no shots ` +
        `its prompt and answer take ${longest} positions, the model has ${model.maxPositions}`,
      "length",
    );
  }
  const from = rows.map((row, j) => {
    let p = 0;
    while (p < row.length && p < promptIds.length && row[p] === promptIds[p]) p++;
    if (p === 0 || p === row.length) {
      throw new MultipleChoiceError(
        `Cannot score choice ${choiceLetter(j)} of item ${where(item)}: the tokenizer ` +
          (p === 0
            ? "encodes the prompt with its answer from a different first token"
            : "encodes the prompt with its answer as the prompt alone"),
        "tokens",
      );
    }
    for (const id of row) {
      if (id >= model.outputs) {
        throw new MultipleChoiceError(
          `Cannot score item ${where(item)}: token ${id} is not below ${model.outputs}, the ` +
            `model's vocabulary (is the tokenizer the model's?)`,
          "tokens",
        );
      }
    }
    return p;
  });
  return { item, shots: shots.length, rows, from };
}

// Whether every choice's text differs from the others' in its last token only (the usual case:
// " A", " B", ... are one token each, or the same space token and one letter token), so one row
// scores them all from the logits of its last position.
function sharesAllButLast(rows: readonly number[][]): boolean {
  const first = rows[0];
  return rows.every((row) =>
    row.length === first.length && row.every((id, t) => t === row.length - 1 || id === first[t])
  );
}

// Records one forward per item and copies out what its scores need: with a shared prefix, the
// losses of the shared continuation tokens and the logits of the last position; else one row per
// choice and the losses of each continuation. One read for the group. Returns each item's
// log-likelihoods.
async function scoreGroup(model: Model, group: readonly Planned[]): Promise<number[][]> {
  const gpu = model.gpu;
  const V = model.outputs;
  const shared = group.map((p) => sharesAllButLast(p.rows));
  let total = 0;
  group.forEach((p, i) => {
    if (shared[i]) total += p.rows[0].length - 1 - p.from[0] + V;
    else p.rows.forEach((row, j) => total += row.length - p.from[j]);
  });
  using collected = Tensor.empty(gpu, [total], { label: "multiple-choice scores" });
  let offset = 0;
  const copy = (from: Tensor, start: number, count: number) => {
    if (count > 0) {
      gpu.copy(from.buffer, collected.buffer, {
        sourceOffset: start * 4,
        targetOffset: offset * 4,
        size: count * 4,
      });
    }
    offset += count;
  };
  group.forEach((p, i) => {
    // Padding (id 0) comes after each row's tokens, so causal attention never reads it.
    const inputs = shared[i] ? [p.rows[0].slice(0, -1)] : p.rows;
    const B = inputs.length;
    const longest = Math.max(...inputs.map((r) => r.length)) - (shared[i] ? 0 : 1);
    const T = Math.min(model.maxPositions, Math.ceil(longest / T_STEP) * T_STEP);
    const tokens = new Uint32Array(B * T);
    const targets = new Uint32Array(B * T);
    inputs.forEach((row, b) => {
      tokens.set(shared[i] ? row : row.slice(0, -1), b * T);
      targets.set(row.slice(1), b * T);
    });
    const acts = model.forward({ B, T, tokens });
    if (shared[i]) {
      // Target t is token t + 1: the shared continuation's targets are positions from - 1 ..
      // len - 3 (usually none: the answer is one token); the last token's distribution is the
      // logits row at len - 2.
      const n = p.rows[0].length;
      if (n - 1 > p.from[0]) copy(model.loss({ targets }), p.from[0] - 1, n - 1 - p.from[0]);
      copy(acts.logits, (n - 2) * acts.logitsStride, V);
      return;
    }
    const losses = model.loss({ targets });
    p.rows.forEach((row, b) => copy(losses, b * T + p.from[b] - 1, row.length - p.from[b]));
  });
  const values = await collected.read();
  offset = 0;
  return group.map((p, i) => {
    if (shared[i]) {
      const n = p.rows[0].length;
      let prefix = 0;
      for (let t = p.from[0]; t < n - 1; t++) prefix -= values[offset++];
      const logits = values.subarray(offset, offset + V);
      offset += V;
      let max = -Infinity;
      for (const x of logits) max = Math.max(max, x);
      let sum = 0;
      for (const x of logits) sum += Math.exp(x - max);
      const logZ = max + Math.log(sum);
      return p.rows.map((row) => prefix + logits[row[n - 1]] - logZ);
    }
    return p.rows.map((row, b) => {
      let ll = 0;
      for (let t = p.from[b]; t < row.length; t++) ll -= values[offset++];
      return ll;
    });
  });
}
