/**
 * Image resampling as Pillow's `Image.resize` does it, in floating point.
 *
 * Each output pixel is a weighted sum of input pixels, one axis after the other (columns, then
 * rows). Output pixel `x` of an axis that maps `n` input pixels (from `left`) onto `m` has its
 * centre at `left + (x + 0.5) * s` in input coordinates (`s = n / m`, half-pixel centres, which is
 * `align_corners=False` in PyTorch's terms). The filter is stretched by `max(s, 1)`, so shrinking
 * averages over every input pixel under the output pixel (antialiasing, as Pillow and
 * torchvision's `antialias=True`) and enlarging interpolates between neighbours; input pixel `i`
 * has weight `filter((i + 0.5 - centre) / max(s, 1))`, only pixels inside the box count, and the
 * weights are divided by their sum (so at the edges the nearest pixels take the missing weight).
 *
 * Filters: `bilinear` (triangle, support 1), `bicubic` (Keys' cubic with `a = -0.5`, support 2,
 * as Pillow) and `nearest` (the input pixel under the output pixel's centre). Unlike Pillow on
 * 8-bit images, nothing is rounded between the passes or at the end; `bicubic`, which can
 * overshoot, is clipped to 0..255 as Pillow does.
 *
 * @module
 */

import type { Image } from "./image.ts";

/** How pixels are interpolated when an image is resized. */
export type Resample = "nearest" | "bilinear" | "bicubic";

/** A rectangle of an image, in whole pixels. */
export interface Box {
  /** First column. */
  left: number;
  /** First row. */
  top: number;
  /** Columns. */
  width: number;
  /** Rows. */
  height: number;
}

/** An image of floating-point samples in `0..255`, `HWC` like {@linkcode Image}. */
export interface FloatImage {
  /** Pixels a row. */
  width: number;
  /** Rows. */
  height: number;
  /** Samples a pixel. */
  channels: number;
  /** `height * width * channels` samples, `HWC`. */
  data: Float64Array;
}

function triangle(x: number): number {
  x = Math.abs(x);
  return x < 1 ? 1 - x : 0;
}

function cubic(x: number): number {
  const a = -0.5;
  x = Math.abs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

/** One axis's weights: for each output pixel, its first input pixel and the weights from it. */
interface AxisWeights {
  first: Int32Array;
  count: Int32Array;
  /** `out * span` weights, `span` a pixel. */
  weights: Float64Array;
  span: number;
}

/**
 * The weights of one axis: `n` input pixels from `start` resampled to `m`.
 *
 * @param start First input pixel of the box.
 * @param n Input pixels in the box.
 * @param m Output pixels.
 * @param resample The filter.
 * @returns Per output pixel, the first input pixel and the normalised weights.
 */
function axisWeights(start: number, n: number, m: number, resample: Resample): AxisWeights {
  const scale = n / m;
  if (resample === "nearest") {
    const first = new Int32Array(m);
    for (let x = 0; x < m; x++) first[x] = start + Math.min(Math.floor((x + 0.5) * scale), n - 1);
    return {
      first,
      count: new Int32Array(m).fill(1),
      weights: new Float64Array(m).fill(1),
      span: 1,
    };
  }
  const [filter, support0] = resample === "bilinear" ? [triangle, 1] : [cubic, 2];
  const stretch = Math.max(scale, 1);
  const support = support0 * stretch;
  const span = Math.ceil(support) * 2 + 1;
  const first = new Int32Array(m);
  const count = new Int32Array(m);
  const weights = new Float64Array(m * span);
  for (let x = 0; x < m; x++) {
    const centre = (x + 0.5) * scale; // relative to the box
    const lo = Math.max(Math.floor(centre - support + 0.5), 0);
    const hi = Math.min(Math.floor(centre + support + 0.5), n);
    let sum = 0;
    for (let i = lo; i < hi; i++) {
      const w = filter((i + 0.5 - centre) / stretch);
      weights[x * span + i - lo] = w;
      sum += w;
    }
    for (let i = lo; i < hi; i++) weights[x * span + i - lo] /= sum;
    first[x] = start + lo;
    count[x] = hi - lo;
  }
  return { first, count, weights, span };
}

/**
 * Resamples a box of an image to a new size.
 *
 * @param image The image (8-bit or floating point).
 * @param options `box` (default the whole image), the output `width` and `height`, and the
 * `resample` filter.
 * @returns The resampled box, floating point in `0..255`.
 * @throws {RangeError} If the box is empty or not inside the image, or the size is not positive.
 *
 * @example 3 pixels to 5, bilinear
 * ```ts
 * import { resampleImage } from "./resample.ts";
 * const row = { width: 3, height: 1, channels: 1 as const, data: new Uint8Array([0, 10, 20]) };
 * resampleImage(row, { width: 5, height: 1, resample: "bilinear" }).data; // [0, 4, 10, 16, 20]
 * ```
 */
export function resampleImage(
  image: Image | FloatImage,
  options: { box?: Box; width: number; height: number; resample: Resample },
): FloatImage {
  const box = options.box ?? { left: 0, top: 0, width: image.width, height: image.height };
  const { width: m, height: mh, resample } = options;
  const inside = Number.isInteger(box.left) && Number.isInteger(box.top) &&
    Number.isInteger(box.width) && Number.isInteger(box.height) && box.left >= 0 &&
    box.top >= 0 && box.width >= 1 && box.height >= 1 &&
    box.left + box.width <= image.width && box.top + box.height <= image.height;
  if (!inside) {
    throw new RangeError(
      `Cannot resample box ${JSON.stringify(box)} of a ${image.width}x${image.height} image`,
    );
  }
  if (!Number.isInteger(m) || !Number.isInteger(mh) || m < 1 || mh < 1) {
    throw new RangeError(`Cannot resample to ${m}x${mh} pixels`);
  }
  const C = image.channels;
  const W = image.width;
  const src = image.data;
  const cols = axisWeights(box.left, box.width, m, resample);
  const rows = axisWeights(box.top, box.height, mh, resample);
  // Columns first, over the box's rows only.
  const mid = new Float64Array(box.height * m * C);
  for (let y = 0; y < box.height; y++) {
    const rowStart = (box.top + y) * W;
    for (let x = 0; x < m; x++) {
      const f = cols.first[x];
      for (let c = 0; c < C; c++) {
        let s = 0;
        for (let k = 0; k < cols.count[x]; k++) {
          s += cols.weights[x * cols.span + k] * src[(rowStart + f + k) * C + c];
        }
        mid[(y * m + x) * C + c] = s;
      }
    }
  }
  const out = new Float64Array(mh * m * C);
  for (let y = 0; y < mh; y++) {
    const f = rows.first[y] - box.top;
    for (let x = 0; x < m; x++) {
      for (let c = 0; c < C; c++) {
        let s = 0;
        for (let k = 0; k < rows.count[y]; k++) {
          s += rows.weights[y * rows.span + k] * mid[((f + k) * m + x) * C + c];
        }
        out[(y * m + x) * C + c] = resample === "bicubic" ? Math.min(Math.max(s, 0), 255) : s;
      }
    }
  }
  return { width: m, height: mh, channels: C, data: out };
}
