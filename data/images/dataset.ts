/**
 * Labelled image splits for training and evaluation: sources listed, classes filtered and
 * relabelled, k-shot examples drawn, images decoded, and the transforms of each split.
 *
 * **Classes.** The train split's source names the classes (data/images/sources.ts). A `classes`
 * (names) or `classIds` (the source's ids: IDX label values, or the place in the sorted class
 * names) filter keeps those classes in the order given and relabels them `0 .. n-1`; `id2label`
 * gives the kept names by new id. The validation and test splits are mapped onto the train
 * split's classes by name; a class the train split does not have is an error naming the file.
 *
 * **k-shot sampling** (the few-shot protocol of the NOLA paper: several sampling seeds, each
 * drawing `k` training images per class): the images of each kept class, in source order, are
 * shuffled by {@linkcode permutation}`(count, samplingSeed, sourceClassId)` and the first `k`
 * taken. Each class's draw depends only on the seed and that class, not on the filter. A `k`
 * larger than a class's count is an error naming the class, the counts and the source.
 * `evalPerClass` draws at most that many of each class from the validation and test splits the
 * same way (fewer where a class has fewer).
 *
 * **Examples** are {@linkcode ImageExample}s: the decoded image and its label; their `input` is
 * the evaluation transform, computed when read. {@linkcode imageTrainBatches} streams the train
 * split with the training augmentation drawn per (seed, epoch, example); {@linkcode
 * imageEvalBatches} streams a split for evaluation.
 *
 * @module
 */

import {
  type LabelledBatch,
  labelledBatch,
  type LabelledExample,
  TrainBatches,
  type TrainBatchesOptions,
} from "../batches.ts";
import { permutation } from "../random.ts";
import { DataError } from "../readers.ts";
import { augmentImage, type AugmentSettings } from "./augment.ts";
import type { Image } from "./image.ts";
import { preprocessImage, type PreprocessSettings } from "./preprocess.ts";
import {
  type ImageEntry,
  type ImageListing,
  type ImageSourceKind,
  listImages,
  loadImage,
} from "./sources.ts";

/** The names of the splits. */
export type ImageSplitName = "train" | "validation" | "test";

/** A labelled image; its model input is computed from the image when read. */
export class ImageExample implements LabelledExample {
  readonly #preprocess: PreprocessSettings;

  /**
   * Makes an example.
   *
   * @param image The decoded image.
   * @param label Its class id.
   * @param where Where it came from, for messages.
   * @param preprocess The evaluation transform's settings.
   */
  constructor(
    readonly image: Image,
    readonly label: number,
    readonly where: string,
    preprocess: PreprocessSettings,
  ) {
    this.#preprocess = preprocess;
  }

  /** The evaluation input, `[3, H, W]` planar, computed at each read. */
  get input(): Float32Array {
    return preprocessImage(this.image, this.#preprocess);
  }
}

/** One split's examples and figures. */
export interface ImageSplit {
  /** The source given, or undefined for a split with no source. */
  path?: string;
  /** The source's kind. */
  kind?: ImageSourceKind;
  /** The chosen examples. */
  examples: ImageExample[];
  /** Images in the source (before the filter and the draw). */
  available: number;
  /** Chosen examples per class (new ids). */
  perClass: number[];
  /** Folder files skipped. */
  ignored: number;
}

/** Labelled image splits and how their inputs are made. */
export interface ImageData {
  /** The shape of one input: `[3, height, width]`. */
  inputShape: [number, number, number];
  /** Class names by id. */
  id2label: string[];
  /** The evaluation transform. */
  preprocess: PreprocessSettings;
  /** The training augmentation; absent: none. */
  augment?: AugmentSettings;
  /** The augmentation seed. */
  augmentSeed: number;
  /** The splits (empty where not given). */
  splits: Record<ImageSplitName, ImageSplit>;
}

/** Where the splits are and how to choose their examples. */
export interface ImageDataOptions {
  /** The train source: an IDX images file, a folder of class folders, or a CSV. */
  train: string;
  /** The validation source; absent: empty. */
  validation?: string;
  /** The test source; absent: empty. */
  test?: string;
  /** The kind of every source; absent: detected per path. */
  kind?: ImageSourceKind;
  /** IDX: names of the labels 0, 1, ...; absent: the digits. */
  labelNames?: readonly string[];
  /** Keep these classes (by name), relabelled in this order. */
  classes?: readonly string[];
  /** Keep these classes (by the source's id), relabelled in this order. */
  classIds?: readonly number[];
  /** Training images per class; absent: all. */
  shots?: number;
  /** Validation and test images per class at most; absent: all. */
  evalPerClass?: number;
  /** Seed of the k-shot draws. */
  samplingSeed: number;
  /** The evaluation transform. */
  preprocess: PreprocessSettings;
  /** The training augmentation; absent: none. */
  augment?: AugmentSettings;
  /** Seed of the augmentation draws. */
  augmentSeed: number;
}

/** The kept classes: source id to new id, and the names. */
function keptClasses(
  listing: ImageListing,
  options: Pick<ImageDataOptions, "classes" | "classIds">,
): { ids: number[]; names: string[] } {
  const { classes, classIds } = options;
  const all = listing.classes;
  if (classes !== undefined) {
    const ids = classes.map((name) => {
      const id = all.indexOf(name);
      if (id < 0) {
        throw new DataError(
          `Class "${name}" is not in "${listing.path}", whose classes are ${quoteList(all)}`,
          { file: listing.path },
        );
      }
      return id;
    });
    return { ids, names: [...classes] };
  }
  if (classIds !== undefined) {
    for (const id of classIds) {
      if (!Number.isInteger(id) || id < 0 || id >= all.length) {
        throw new DataError(
          `Class id ${id} is not in "${listing.path}", whose ids are 0..${all.length - 1}`,
          { file: listing.path },
        );
      }
    }
    return { ids: [...classIds], names: classIds.map((id) => all[id]) };
  }
  return { ids: all.map((_, i) => i), names: [...all] };
}

function quoteList(names: readonly string[], max = 12): string {
  const shown = names.slice(0, max).map((n) => JSON.stringify(n)).join(", ");
  return names.length > max ? `${shown} and ${names.length - max} more` : shown;
}

/**
 * Draws up to `k` entries of each class: the class's entries in source order, shuffled by
 * `permutation(count, seed, sourceId)`, the first `k` kept.
 *
 * @param byClass For each kept class (new id order): its source id and its entries.
 * @param options `k` (absent: all, in source order), `seed`, and `strict`: a class with fewer
 * than `k` entries is an error (else it gives what it has); `source` and `names` for messages.
 * @returns The chosen entries, class by class, each with its new id.
 * @throws {DataError} With `strict`, naming the class and counts.
 */
export function sampleShots(
  byClass: readonly { sourceId: number; entries: readonly ImageEntry[] }[],
  options: { k?: number; seed: number; strict: boolean; source: string; names: readonly string[] },
): { entry: ImageEntry; label: number }[] {
  const chosen: { entry: ImageEntry; label: number }[] = [];
  byClass.forEach(({ sourceId, entries }, label) => {
    const { k } = options;
    if (k === undefined) {
      for (const entry of entries) chosen.push({ entry, label });
      return;
    }
    if (entries.length < k && options.strict) {
      throw new DataError(
        `Cannot draw ${k} images of class "${options.names[label]}" from "${options.source}": ` +
          `it has ${entries.length} (counts by class: ${
            byClass.map((c, i) => `${options.names[i]} ${c.entries.length}`).join(", ")
          }); lower shots to at most ${Math.min(...byClass.map((c) => c.entries.length))}`,
        { file: options.source },
      );
    }
    const order = permutation(entries.length, options.seed, sourceId);
    for (let i = 0; i < Math.min(k, entries.length); i++) {
      chosen.push({ entry: entries[order[i]], label });
    }
  });
  return chosen;
}

async function buildSplit(
  listing: ImageListing,
  mapping: { sourceIds: number[]; names: string[] },
  options: { k?: number; strict: boolean; seed: number; preprocess: PreprocessSettings },
): Promise<ImageSplit> {
  const byClass = mapping.sourceIds.map((sourceId) => ({ sourceId, entries: [] as ImageEntry[] }));
  const slot = new Map(mapping.sourceIds.map((id, i) => [id, i]));
  for (const entry of listing.entries) {
    const i = slot.get(entry.label);
    if (i !== undefined) byClass[i].entries.push(entry);
  }
  const chosen = sampleShots(byClass, {
    k: options.k,
    seed: options.seed,
    strict: options.strict,
    source: listing.path,
    names: mapping.names,
  });
  const examples: ImageExample[] = [];
  const { mode, width, height } = options.preprocess;
  for (const { entry, label } of chosen) {
    const image = await loadImage(listing, entry);
    // Only a crop without resizing can meet an image too small for it.
    if (mode === "none" && (image.width < width || image.height < height)) {
      throw new DataError(
        `Image ${entry.where} is ${image.width}x${image.height}, smaller than the ` +
          `${width}x${height} input it is cropped to without resizing`,
        { file: entry.file ?? listing.path },
      );
    }
    examples.push(new ImageExample(image, label, entry.where, options.preprocess));
  }
  const perClass = mapping.names.map(() => 0);
  for (const e of examples) perClass[e.label]++;
  return {
    path: listing.path,
    kind: listing.kind,
    examples,
    available: listing.entries.length,
    perClass,
    ignored: listing.ignored,
  };
}

/**
 * Maps another split's classes onto the train split's by name: its source ids of the kept
 * classes, in the kept order.
 */
function mapOnto(
  listing: ImageListing,
  train: { names: string[]; all: readonly string[] },
): number[] {
  const known = new Set(train.all);
  const present = new Set(listing.entries.map((e) => e.label));
  for (const id of present) {
    const name = listing.classes[id];
    if (!known.has(name)) {
      const first = listing.entries.find((e) => e.label === id)!;
      throw new DataError(
        `Class "${name}" of ${first.where} is not a class of the train split (${
          quoteList(train.all)
        })`,
        { file: listing.path },
      );
    }
  }
  // A kept class the split lacks maps to an id no entry has: it just draws nothing.
  return train.names.map((name) => {
    const id = listing.classes.indexOf(name);
    return id < 0 ? -1 : id;
  });
}

/**
 * Reads the splits: lists the sources, filters and relabels the classes, draws the examples and
 * decodes their images.
 *
 * @param options Sources, class filter, k-shot settings, transforms and seeds.
 * @returns The splits with `id2label` and the transforms.
 * @throws {DataError} Naming the file or folder, on a source that cannot be read, an unreadable or
 * truncated image, a class folder with no images, an unknown class, or `shots` above a class's
 * count.
 *
 * @example Ten shots of Fashion-MNIST's last five classes
 * ```ts ignore
 * import { loadImageData } from "./dataset.ts";
 * import { vitDefaults } from "./preprocess.ts";
 * const dir = "/usr/share/datasets/fashion-mnist";
 * const data = await loadImageData({
 *   train: `${dir}/train-images-idx3-ubyte.gz`,
 *   test: `${dir}/t10k-images-idx3-ubyte.gz`,
 *   classIds: [5, 6, 7, 8, 9],
 *   shots: 10,
 *   samplingSeed: 0,
 *   preprocess: vitDefaults(32, 32, "example"),
 *   augmentSeed: 0,
 * });
 * data.splits.train.examples.length; // 50
 * ```
 */
export async function loadImageData(options: ImageDataOptions): Promise<ImageData> {
  const read = (path: string) =>
    listImages(path, { kind: options.kind, labelNames: options.labelNames });
  const trainListing = await read(options.train);
  const kept = keptClasses(trainListing, options);
  const empty: ImageSplit = {
    examples: [],
    available: 0,
    perClass: kept.names.map(() => 0),
    ignored: 0,
  };
  const train = await buildSplit(trainListing, { sourceIds: kept.ids, names: kept.names }, {
    k: options.shots,
    strict: true,
    seed: options.samplingSeed,
    preprocess: options.preprocess,
  });
  const splits: Record<ImageSplitName, ImageSplit> = { train, validation: empty, test: empty };
  for (const name of ["validation", "test"] as const) {
    const path = options[name];
    if (path === undefined) continue;
    const listing = await read(path);
    const sourceIds = mapOnto(listing, { names: kept.names, all: trainListing.classes });
    splits[name] = await buildSplit(listing, { sourceIds, names: kept.names }, {
      k: options.evalPerClass,
      strict: false,
      seed: options.samplingSeed,
      preprocess: options.preprocess,
    });
  }
  const { height, width } = options.preprocess;
  return {
    inputShape: [3, height, width],
    id2label: kept.names,
    preprocess: options.preprocess,
    augment: options.augment,
    augmentSeed: options.augmentSeed,
    splits,
  };
}

/**
 * The training input of one example in one epoch: augmented when the data has an augmentation,
 * else the evaluation input.
 *
 * @param data The image data.
 * @param example A train example.
 * @param at The epoch and the example's index in the train split.
 * @returns A plain labelled example.
 */
export function trainingExample(
  data: ImageData,
  example: ImageExample,
  at: { epoch: number; index: number },
): LabelledExample {
  const input = data.augment
    ? augmentImage(example.image, {
      preprocess: data.preprocess,
      augment: data.augment,
      seed: data.augmentSeed,
      epoch: at.epoch,
      index: at.index,
    })
    : example.input;
  return { input, label: example.label };
}

/**
 * The training stream of the train split, augmented per (seed, epoch, example).
 *
 * @param data The image data.
 * @param options {@linkcode TrainBatches}'s options but the shape and transform.
 * @returns The stream; its state resumes it exactly, augmentation included.
 */
export function imageTrainBatches(
  data: ImageData,
  options: Omit<TrainBatchesOptions, "inputShape" | "T" | "eosId" | "transform">,
): TrainBatches<LabelledExample> {
  const examples = data.splits.train.examples;
  return new TrainBatches<LabelledExample>(examples, {
    ...options,
    inputShape: data.inputShape,
    transform: (item: ImageExample, at) => trainingExample(data, item, at),
  });
}

/**
 * Evaluation micro-batches of a split: each example once, in order, the last padded; inputs are
 * computed one batch at a time.
 *
 * @param data The image data.
 * @param split The split.
 * @param options `B`.
 * @returns Micro-batches, `ceil(examples / B)` of them.
 */
export function* imageEvalBatches(
  data: ImageData,
  split: ImageSplitName,
  options: { B: number },
): Generator<LabelledBatch> {
  const examples = data.splits[split].examples;
  for (let i = 0; i < examples.length; i += options.B) {
    const plain = examples.slice(i, i + options.B).map((e) => ({ input: e.input, label: e.label }));
    yield labelledBatch(plain, { B: options.B, inputShape: data.inputShape });
  }
}

/**
 * Maps the data's labels onto a classifier's or adapter's `id2label`, by name: the check before
 * training or evaluating a head whose labels are fixed.
 *
 * @param data The image data.
 * @param id2label The head's class names by id (a list, or Hugging Face's `{"0": "cat"}`).
 * @param options `what`: the head's owner for messages (e.g. the adapter file).
 * @returns The data relabelled to the head's ids (examples shared, labels new).
 * @throws {DataError} Naming a source file, if one of the data's classes is not in `id2label`.
 */
export function matchLabels(
  data: ImageData,
  id2label: readonly string[] | Record<string, string>,
  options: { what: string },
): ImageData {
  const names = Array.isArray(id2label)
    ? [...id2label]
    : Object.entries(id2label).sort(([a], [b]) => +a - +b).map(([, v]) => v);
  const index = new Map(names.map((n, i) => [n, i]));
  const remap = data.id2label.map((name) => index.get(name));
  for (const split of ["train", "validation", "test"] as const) {
    const s = data.splits[split];
    const bad = s.examples.find((e) => remap[e.label] === undefined);
    if (bad) {
      throw new DataError(
        `Label "${data.id2label[bad.label]}" of ${bad.where} is unknown to ${options.what}, ` +
          `whose labels are ${quoteList(names)}`,
        { file: s.path ?? "" },
      );
    }
  }
  const relabel = (s: ImageSplit): ImageSplit => {
    const perClass = names.map(() => 0);
    const examples = s.examples.map((e) => {
      const label = remap[e.label]!;
      perClass[label]++;
      return new ImageExample(e.image, label, e.where, data.preprocess);
    });
    return { ...s, examples, perClass };
  };
  return {
    ...data,
    id2label: names,
    splits: {
      train: relabel(data.splits.train),
      validation: relabel(data.splits.validation),
      test: relabel(data.splits.test),
    },
  };
}
