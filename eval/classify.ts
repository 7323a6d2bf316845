/**
 * Scoring a classifier: top-1 and top-k accuracy with a confusion matrix over labelled
 * micro-batches, and the top classes of single inputs with their probabilities (the `classify`
 * command).
 *
 * Ranks order classes by logit, higher first, ties to the lower class id (as
 * `evaluateAccuracy` breaks them): an example counts in the top k when fewer than k classes rank
 * above its target.
 *
 * @module
 */

import type { MicroBatch } from "../data/batches.ts";
import type { Model } from "../models/model.ts";

/** What {@link evaluateClassifier} measured. */
export interface ClassifierScores {
  /** Percent of counted examples whose top class is the target. */
  accuracy: number;
  /** Percent whose target is among the top `topK` classes; absent without `topK`. */
  topKAccuracy?: number;
  /** Counted examples (sum of the mask). */
  n: number;
  /**
   * Counts by true class (row) and predicted top class (column), `[classes][classes]`,
   * mask-weighted.
   */
  confusion: number[][];
}

/**
 * The rank of class `target` in one row of logits: how many classes come before it (higher
 * logit, or equal logit and lower id).
 *
 * @param logits The row (at least `classes` values).
 * @param options `classes` in the row and the `target` class id.
 * @returns 0 for the top class.
 *
 * @example
 * ```ts
 * import { classRank } from "./eval/classify.ts";
 * console.log(classRank([0.1, 2, 2, -1], { classes: 4, target: 2 })); // 1
 * ```
 */
export function classRank(
  logits: ArrayLike<number>,
  options: { classes: number; target: number },
): number {
  const { classes, target } = options;
  const t = logits[target];
  let rank = 0;
  for (let c = 0; c < classes; c++) {
    if (logits[c] > t || (logits[c] === t && c < target)) rank++;
  }
  return rank;
}

/**
 * Top-1 accuracy, top-k accuracy and the confusion matrix of a classifier over labelled
 * micro-batches (padding rows, mask 0, left out).
 *
 * @param model A model whose task is `classification`.
 * @param batches Labelled micro-batches; targets are class ids below `model.outputs`.
 * @param options `topK`: also count the target among the top k (k below the classes).
 * @returns The scores.
 * @throws {TypeError} If the model does not classify.
 * @throws {RangeError} On a `topK` not below the classes, a target out of range, or no example.
 *
 * @example
 * ```ts
 * import { evaluateClassifier } from "./eval/classify.ts";
 * // const s = await evaluateClassifier(model, imageEvalBatches(data, "test", { B: 8 }), { topK: 5 });
 * // console.log(s.accuracy, s.topKAccuracy, s.confusion);
 * ```
 */
export async function evaluateClassifier(
  model: Model,
  batches: Iterable<MicroBatch> | AsyncIterable<MicroBatch>,
  options: { topK?: number } = {},
): Promise<ClassifierScores> {
  if (model.task !== "classification") {
    throw new TypeError(
      `Cannot score a ${model.modelType} model as a classifier: it predicts tokens`,
    );
  }
  const C = model.outputs;
  const { topK } = options;
  if (topK !== undefined && !(Number.isSafeInteger(topK) && topK >= 1 && topK < C)) {
    throw new RangeError(
      `Cannot measure top-${topK} accuracy over ${C} classes: k must be from 1 to ${C - 1}`,
    );
  }
  const confusion = Array.from({ length: C }, () => new Array<number>(C).fill(0));
  let correct = 0;
  let inTopK = 0;
  let n = 0;
  for await (const batch of batches) {
    const rows = batch.targets.length;
    const acts = model.forward(batch);
    const stride = acts.logitsStride;
    const logits = new Float32Array(
      await model.gpu.read(acts.logits.buffer, { byteLength: rows * stride * 4 }),
    );
    for (let i = 0; i < rows; i++) {
      const m = batch.mask[i];
      if (m === 0) continue;
      const target = batch.targets[i];
      if (target >= C) {
        throw new RangeError(`Target ${target} is not a class of a ${C}-class model`);
      }
      const row = logits.subarray(i * stride, i * stride + C);
      let best = 0;
      for (let c = 1; c < C; c++) if (row[c] > row[best]) best = c;
      confusion[target][best] += m;
      if (best === target) correct += m;
      if (topK !== undefined && classRank(row, { classes: C, target }) < topK) inTopK += m;
      n += m;
    }
  }
  if (!(n > 0)) throw new RangeError("Cannot measure accuracy: the batches hold no example");
  return {
    accuracy: (100 * correct) / n,
    ...(topK !== undefined ? { topKAccuracy: (100 * inTopK) / n } : {}),
    n,
    confusion,
  };
}

/** A class and its probability. */
export interface ClassProbability {
  /** Class id. */
  id: number;
  /** Class name. */
  label: string;
  /** Softmax probability. */
  probability: number;
}

/**
 * The `k` most probable classes of one row of logits (softmax in float64), most probable first,
 * ties to the lower id.
 *
 * @param logits The row's class logits.
 * @param options `labels`, the class names by id (as many as the logits), and `k`, the classes
 * wanted (fewer when there are fewer).
 * @returns The top classes.
 *
 * @example
 * ```ts
 * import { topClasses } from "./eval/classify.ts";
 * console.log(topClasses([1, 3, 2], { labels: ["cat", "dog", "emu"], k: 2 })); // dog, emu
 * ```
 */
export function topClasses(
  logits: ArrayLike<number>,
  options: { labels: readonly string[]; k: number },
): ClassProbability[] {
  const { labels, k } = options;
  const C = labels.length;
  let max = -Infinity;
  for (let c = 0; c < C; c++) max = Math.max(max, logits[c]);
  let sum = 0;
  for (let c = 0; c < C; c++) sum += Math.exp(logits[c] - max);
  const ids = Array.from({ length: C }, (_, c) => c)
    .sort((a, b) => logits[b] - logits[a] || a - b)
    .slice(0, Math.max(0, k));
  return ids.map((id) => ({
    id,
    label: labels[id],
    probability: Math.exp(logits[id] - max) / sum,
  }));
}
