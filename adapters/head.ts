/**
 * A classifier head trained beside the adapters, as PEFT's `modules_to_save` trains one: the
 * checkpoint's head kept frozen, the checkpoint's head trained whole, or a fresh head sized to the
 * task's classes (the few-shot ViT setting of the NOLA paper, and a linear probe when no adapter
 * is attached).
 *
 * A fresh head's weight is drawn from a normal distribution of standard deviation
 * {@linkcode HEAD_INIT_STD} (Hugging Face ViT's `initializer_range`), seeded: Box-Muller over the
 * draws of `Random(seed, HEAD_STREAM)` (`data/random.ts`), row-major; its bias is zero.
 *
 * The head goes through the model contract only (`Model.classifierHead`, `Model.replaceHead`).
 *
 * @module
 */

import { Random } from "../data/random.ts";
import type { Tensor } from "../kernels/tensor.ts";
import type { HeadGradients, Model } from "../models/model.ts";

/** Standard deviation of a fresh head's weight. */
export const HEAD_INIT_STD = 0.02;

/** The stream of `Random` a fresh head is drawn from (ASCII `head`). */
export const HEAD_STREAM = 0x68656164;

/**
 * What happens to a classifier's head: `auto` (a new head when the data's classes differ from the
 * checkpoint's in number or names, else the checkpoint's, frozen), `new` (always a fresh head for
 * the data's classes, trained), `train` (the checkpoint's head, trained; the data's classes must
 * be among its labels), `frozen` (the checkpoint's head as it is).
 */
export type HeadMode = "auto" | "new" | "train" | "frozen";

/** The head modes. */
export const HEAD_MODES: readonly HeadMode[] = ["auto", "new", "train", "frozen"];

/** A head an adapter set owns: saved in its adapter file, exported under `modules_to_save`. */
export interface AdapterHead {
  /** The head's module name (`classifier`, timm `head`). */
  name: string;
  /** Class names by id. */
  labels: string[];
  /** Features into the head. */
  inFeatures: number;
  /** Where the head came from, for messages: `a new head`, `adapter file "x"`, ... */
  source: string;
  /** Its gradients while it trains; null when frozen. */
  grads: HeadGradients | null;
}

/**
 * A fresh head's values (see the module doc).
 *
 * @param classes Rows of the weight.
 * @param options `inFeatures`, the weight's columns, and the `seed`.
 * @returns Weight `[classes, inFeatures]` row-major and a zero bias `[classes]`.
 *
 * @example
 * ```ts
 * import { freshHeadValues } from "./adapters/head.ts";
 * const { weight, bias } = freshHeadValues(10, { inFeatures: 768, seed: 0 });
 * ```
 */
export function freshHeadValues(
  classes: number,
  options: { inFeatures: number; seed: number },
): { weight: Float32Array; bias: Float32Array } {
  const { inFeatures, seed } = options;
  const rng = new Random(seed, HEAD_STREAM);
  const weight = new Float32Array(classes * inFeatures);
  for (let i = 0; i < weight.length; i += 2) {
    // 1 - u keeps the logarithm's argument in (0, 1].
    const radius = Math.sqrt(-2 * Math.log(1 - rng.nextFloat())) * HEAD_INIT_STD;
    const angle = 2 * Math.PI * rng.nextFloat();
    weight[i] = radius * Math.cos(angle);
    if (i + 1 < weight.length) weight[i + 1] = radius * Math.sin(angle);
  }
  return { weight, bias: new Float32Array(classes) };
}

/**
 * Says which head a model gets for the data's classes under a head mode.
 *
 * @param model The model (its `classifierHead`).
 * @param options `labels`, the data's class names by id (undefined when there is no labelled
 * data), and the head `mode`.
 * @returns `keep` (the checkpoint's, frozen), `train` (the checkpoint's, trained) or `new`.
 * @throws {RangeError} On a head mode for a model without a classifier head, or `new` without
 * labelled data.
 */
export function headAction(
  model: Pick<Model, "classifierHead" | "modelType">,
  options: { labels: readonly string[] | undefined; mode: HeadMode },
): "keep" | "train" | "new" {
  const { labels, mode } = options;
  const head = model.classifierHead;
  if (!head) {
    if (mode === "auto" || mode === "frozen") return "keep";
    throw new RangeError(
      `head "${mode}" needs a classifier, and the ${model.modelType} model has no classifier head`,
    );
  }
  if (mode === "frozen") return "keep";
  if (mode === "train") return "train";
  if (mode === "new") {
    if (!labels) {
      throw new RangeError(
        `head "new" sizes the head to the data's classes: put a data stage with "format: images" ` +
          `before this stage`,
      );
    }
    return "new";
  }
  const same = labels === undefined ||
    (labels.length === head.labels.length && labels.every((l, i) => l === head.labels[i]));
  return same ? "keep" : "new";
}

/**
 * Gives the model a fresh trainable head for `labels` (see the module doc for the init).
 *
 * @param model A classifier.
 * @param labels The task's class names by id.
 * @param options `seed`.
 * @returns The head.
 * @throws {RangeError} When the model has no classifier head.
 */
export function newHead(
  model: Model,
  labels: readonly string[],
  options: { seed: number },
): AdapterHead {
  const head = requireHead(model);
  const values = freshHeadValues(labels.length, {
    inFeatures: head.inFeatures,
    seed: options.seed,
  });
  const grads = model.replaceHead!(labels, values, { trainable: true });
  return {
    name: head.name,
    labels: [...labels],
    inFeatures: head.inFeatures,
    source: `the new head "${head.name}"`,
    grads,
  };
}

/**
 * Makes the checkpoint's own head trainable (its values kept).
 *
 * @param model A classifier.
 * @param options `source`: what the head is, for messages.
 * @returns The head.
 */
export async function trainCheckpointHead(
  model: Model,
  options: { source: string },
): Promise<AdapterHead> {
  const head = requireHead(model);
  const { weight, bias } = headTensors(model);
  model.gpu.flush();
  const values = {
    weight: (await weight.read()) as Float32Array,
    bias: (await bias.read()) as Float32Array,
  };
  const labels = [...head.labels];
  const grads = model.replaceHead!(labels, values, { trainable: true });
  return { name: head.name, labels, inFeatures: head.inFeatures, source: options.source, grads };
}

/**
 * Puts stored head values on the model (an adapter file's head).
 *
 * @param model A classifier.
 * @param options The class names by id (`labels`), the weight and bias (`values`), `trainable`,
 * and `source` for messages.
 * @returns The head.
 */
export function restoreHead(
  model: Model,
  options: {
    labels: readonly string[];
    values: { weight: Float32Array; bias: Float32Array };
    trainable?: boolean;
    source: string;
  },
): AdapterHead {
  const { labels, values } = options;
  const head = requireHead(model);
  const grads = model.replaceHead!(labels, values, { trainable: options.trainable });
  return {
    name: head.name,
    labels: [...labels],
    inFeatures: head.inFeatures,
    source: options.source,
    grads,
  };
}

/**
 * The head's weight and bias tensors on the GPU.
 *
 * @param model A classifier.
 * @returns `weight` `[classes, in]` and `bias` `[classes]`.
 */
export function headTensors(model: Model): { weight: Tensor; bias: Tensor } {
  const head = requireHead(model);
  const weight = model.params.get(`${head.name}.weight`);
  const bias = model.params.get(`${head.name}.bias`);
  if (!weight || !bias) {
    throw new RangeError(`The ${model.modelType} model keeps no f32 head "${head.name}"`);
  }
  return { weight, bias };
}

function requireHead(model: Model) {
  const head = model.classifierHead;
  if (!head || !model.replaceHead) {
    throw new RangeError(`The ${model.modelType} model has no classifier head to replace`);
  }
  return head;
}
