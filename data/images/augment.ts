/**
 * Training augmentation: torchvision's `RandomResizedCrop` and `RandomHorizontalFlip`, drawn from
 * a generator seeded by (seed, epoch, example) so that a resumed run sees the same images.
 *
 * **Random resized crop** (torchvision's algorithm, same defaults): up to ten tries of a box whose
 * area is a uniform share in `scale` (default `[0.08, 1]`) of the image's and whose aspect ratio
 * `w / h` is log-uniform in `ratio` (default `[3/4, 4/3]`); `w = round(sqrt(area * ratio))`,
 * `h = round(sqrt(area / ratio))` (halves to even, as Python); the first box that fits is placed
 * uniformly at random. If none fits, the centre box of the whole image clamped to the ratio
 * range. The box is resampled to the input size with the preprocessing filter (antialiased), then
 * normalised as in evaluation. **Flip**: left to right with probability 1/2.
 *
 * **Seeding.** Example `index` (its position in the split) in epoch `epoch` draws from
 * `new Random(seed, epoch * 2^26 + index)` (data/random.ts): the draws of one example depend only
 * on those three numbers, never on batch order or on what was drawn before. Splits of up to 2^26
 * examples and 2^27 epochs are covered.
 *
 * @module
 */

import { Random } from "../random.ts";
import type { Image } from "./image.ts";
import { normalise, preprocessImage, type PreprocessSettings } from "./preprocess.ts";
import { type Box, resampleImage } from "./resample.ts";

/** The augmentation of training images. */
export interface AugmentSettings {
  /** Random resized crop: the share of the image's area, `[low, high]` in `(0, 1]`. */
  scale: [number, number];
  /** Random resized crop: the aspect ratio `width / height`, `[low, high]`. */
  ratio: [number, number];
  /** Random horizontal flip with probability 1/2. */
  flip: boolean;
  /** Do the random resized crop (false: the evaluation transform, then the flip if any). */
  crop: boolean;
}

/** torchvision's defaults: `scale (0.08, 1)`, `ratio (3/4, 4/3)`, a crop and a flip. */
export const AUGMENT_DEFAULTS: Readonly<AugmentSettings> = Object.freeze({
  scale: [0.08, 1] as [number, number],
  ratio: [3 / 4, 4 / 3] as [number, number],
  flip: true,
  crop: true,
});

const INDEX_BITS = 2 ** 26;
const EPOCH_LIMIT = 2 ** 27;

/**
 * The generator of one example in one epoch.
 *
 * @param seed The augmentation seed.
 * @param epoch The epoch, from 0, under 2^27.
 * @param index The example's index in its split, under 2^26.
 * @returns A generator that depends on exactly these three numbers.
 * @throws {RangeError} If the epoch or index is out of range.
 */
export function augmentRandom(seed: number, epoch: number, index: number): Random {
  if (!Number.isInteger(epoch) || epoch < 0 || epoch >= EPOCH_LIMIT) {
    throw new RangeError(`Invalid augmentation epoch ${epoch}: expected an integer in [0, 2^27)`);
  }
  if (!Number.isInteger(index) || index < 0 || index >= INDEX_BITS) {
    throw new RangeError(`Invalid augmentation index ${index}: expected an integer in [0, 2^26)`);
  }
  return new Random(seed, epoch * INDEX_BITS + index);
}

function uniform(random: Random, low: number, high: number): number {
  return low + (high - low) * random.nextFloat();
}

function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * The box of a random resized crop (torchvision's `RandomResizedCrop.get_params`).
 *
 * @param size The image's width and height.
 * @param options `scale` and `ratio` ranges, and the generator.
 * @returns A box inside the image.
 */
export function randomCropBox(
  size: { width: number; height: number },
  options: { scale: readonly [number, number]; ratio: readonly [number, number]; random: Random },
): Box {
  const { width, height } = size;
  const { scale, ratio, random } = options;
  const area = width * height;
  const logRatio = [Math.log(ratio[0]), Math.log(ratio[1])];
  for (let attempt = 0; attempt < 10; attempt++) {
    const target = area * uniform(random, scale[0], scale[1]);
    const aspect = Math.exp(uniform(random, logRatio[0], logRatio[1]));
    const w = roundHalfEven(Math.sqrt(target * aspect));
    const h = roundHalfEven(Math.sqrt(target / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      const top = random.below(height - h + 1);
      const left = random.below(width - w + 1);
      return { left, top, width: w, height: h };
    }
  }
  const inRatio = width / height;
  let w = width;
  let h = height;
  if (inRatio < Math.min(...ratio)) {
    h = roundHalfEven(w / Math.min(...ratio));
  } else if (inRatio > Math.max(...ratio)) {
    w = roundHalfEven(h * Math.max(...ratio));
  }
  return {
    left: Math.floor((width - w) / 2),
    top: Math.floor((height - h) / 2),
    width: w,
    height: h,
  };
}

/**
 * The training transform of one example: random resized crop and flip, then normalisation.
 *
 * @param image The decoded image.
 * @param options The preprocessing (input size, filter, normalisation), the augmentation, and
 * the `seed`, `epoch` and `index` the draws come from.
 * @returns The model input `[3, height, width]`, planar.
 *
 * @example The same three numbers give the same input
 * ```ts
 * import { augmentImage, AUGMENT_DEFAULTS } from "./augment.ts";
 * import { vitDefaults } from "./preprocess.ts";
 * const image = { width: 28, height: 28, channels: 1 as const, data: new Uint8Array(784) };
 * const at = { preprocess: vitDefaults(32, 32, "example"), augment: AUGMENT_DEFAULTS, seed: 1 };
 * augmentImage(image, { ...at, epoch: 3, index: 7 }); // equal on every call with these numbers
 * ```
 */
export function augmentImage(
  image: Image,
  options: {
    preprocess: PreprocessSettings;
    augment: AugmentSettings;
    seed: number;
    epoch: number;
    index: number;
  },
): Float32Array {
  const { preprocess, augment } = options;
  const random = augmentRandom(options.seed, options.epoch, options.index);
  const { width, height } = preprocess;
  let input: Float32Array;
  if (augment.crop) {
    const box = randomCropBox(image, { scale: augment.scale, ratio: augment.ratio, random });
    input = normalise(
      resampleImage(image, { box, width, height, resample: preprocess.resample }),
      preprocess,
    );
  } else {
    input = preprocessImage(image, preprocess);
  }
  return augment.flip && random.below(2) === 1 ? flipPlanar(input, width, height) : input;
}

function flipPlanar(input: Float32Array, width: number, height: number): Float32Array {
  const out = new Float32Array(input.length);
  const planes = input.length / (width * height);
  for (let c = 0; c < planes; c++) {
    for (let y = 0; y < height; y++) {
      const row = (c * height + y) * width;
      for (let x = 0; x < width; x++) out[row + x] = input[row + width - 1 - x];
    }
  }
  return out;
}
