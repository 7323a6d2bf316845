/**
 * Decoded images and the PNG and JPEG decoders.
 *
 * An {@linkcode Image} is 8-bit pixels, rows top to bottom, channels interleaved (`HWC`), with one
 * channel (grey) or three (RGB). Decoding keeps what the file holds and drops only what a
 * classifier does not read:
 *
 * - **PNG** (npm `fast-png`, MIT): grey, grey+alpha, RGB, RGBA and palette images at every bit
 *   depth. Alpha is dropped (as `PIL.Image.convert("RGB")` does: no compositing); a palette is
 *   expanded to RGB; depths under 8 are scaled to 0..255 (`v * 255 / (2^d - 1)`); 16-bit samples
 *   are rounded to 8 bits (`round(v / 257)`).
 * - **JPEG** (npm `jpeg-js`, BSD-3-Clause): baseline and progressive, grey, YCbCr, CMYK; grey
 *   stays one channel, everything else comes out RGB.
 *
 * The format is recognised by the file's first bytes, not its name. A file that is neither, or
 * that a decoder refuses (truncated, corrupt), is a {@linkcode DataError} naming the file.
 *
 * @module
 */

import { decode as decodePngFile } from "fast-png";
import jpeg from "jpeg-js";
import { messageOf } from "../../formats/one_line.ts";
import { DataError } from "../readers.ts";

/** An image of 8-bit samples: `height` rows of `width` pixels of `channels` samples (`HWC`). */
export interface Image {
  /** Pixels a row. */
  width: number;
  /** Rows. */
  height: number;
  /** 1 (grey) or 3 (RGB). */
  channels: 1 | 3;
  /** `height * width * channels` samples, row-major, channels interleaved. */
  data: Uint8Array;
}

/** The image formats {@linkcode decodeImage} reads. */
export type ImageFormat = "png" | "jpeg";

// Larger images are refused before decoding: 100 megapixels is well past any classifier's input.
const MAX_PIXELS = 100_000_000;

/**
 * The format of an image file, from its first bytes.
 *
 * @param bytes The file's bytes (the first eight are enough).
 * @returns `png`, `jpeg`, or undefined for anything else.
 */
export function sniffImage(bytes: Uint8Array): ImageFormat | undefined {
  const png = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  if (bytes.length >= 8 && png.every((b, i) => bytes[i] === b)) return "png";
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) {
    return "jpeg";
  }
  return undefined;
}

/**
 * Decodes a PNG or JPEG file's bytes.
 *
 * @param bytes The file's bytes.
 * @param options `file`: the name messages give.
 * @returns The image, grey or RGB.
 * @throws {DataError} If the bytes are not a PNG or JPEG, or the decoder refuses them.
 *
 * @example A 2x1 RGB PNG
 * ```ts
 * import { encode } from "fast-png";
 * import { decodeImage } from "./image.ts";
 * const png = encode({ width: 2, height: 1, channels: 3, depth: 8, data: new Uint8Array(6) });
 * decodeImage(png, { file: "black.png" }); // { width: 2, height: 1, channels: 3, data: ... }
 * ```
 */
export function decodeImage(bytes: Uint8Array, options: { file: string }): Image {
  const { file } = options;
  const format = sniffImage(bytes);
  if (format === undefined) {
    throw new DataError(
      `Cannot read image "${file}": it is neither a PNG nor a JPEG (it starts with bytes ${
        hex(bytes.subarray(0, 4))
      })`,
      { file },
    );
  }
  let image: Image;
  try {
    image = format === "png" ? decodePng(bytes) : decodeJpeg(bytes);
  } catch (e) {
    if (e instanceof DataError) {
      throw new DataError(`Cannot read image "${file}": ${e.message}`, { file, cause: e });
    }
    throw new DataError(
      `Cannot read image "${file}": the ${format.toUpperCase()} data is truncated or corrupt ` +
        `(${messageOf(e)})`,
      { file, cause: e },
    );
  }
  if (image.width < 1 || image.height < 1) {
    throw new DataError(
      `Cannot read image "${file}": it is ${image.width}x${image.height} pixels`,
      { file },
    );
  }
  return image;
}

/**
 * Reads and decodes an image file.
 *
 * @param path The file.
 * @returns The image.
 * @throws {DataError} If the file cannot be read or decoded.
 */
export async function readImage(path: string): Promise<Image> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable) throw e;
    throw new DataError(`Cannot read image "${path}": ${messageOf(e)}`, { file: path, cause: e });
  }
  return decodeImage(bytes, { file: path });
}

function hex(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join(" ") || "(none)";
}

function checkSize(width: number, height: number): void {
  if (width * height > MAX_PIXELS) {
    throw new DataError(`${width}x${height} pixels is over the limit of ${MAX_PIXELS}`, {
      file: "",
    });
  }
}

function decodePng(bytes: Uint8Array): Image {
  // The header's size is checked before the decoder allocates for it.
  if (bytes.length >= 24) {
    const view = new DataView(bytes.buffer, bytes.byteOffset, 24);
    checkSize(view.getUint32(16), view.getUint32(20));
  }
  const png = decodePngFile(bytes);
  const { width, height, depth } = png;
  checkSize(width, height);
  const stored = png.channels;
  const palette = png.palette;
  // Samples of one row as stored: depths under 8 are packed, each row starting on a byte.
  const perRow = width * stored;
  const samples = new Uint16Array(width * height * stored);
  const src = png.data;
  if (depth >= 8) {
    if (src.length < samples.length) throw new RangeError("too few samples for the image size");
    samples.set(src.subarray(0, samples.length));
  } else {
    const rowBytes = Math.ceil((perRow * depth) / 8);
    if (src.length < rowBytes * height) throw new RangeError("too few bytes for the image size");
    const mask = (1 << depth) - 1;
    for (let y = 0; y < height; y++) {
      for (let i = 0; i < perRow; i++) {
        const bit = i * depth;
        const byte = src[y * rowBytes + (bit >> 3)];
        samples[y * perRow + i] = (byte >> (8 - depth - (bit & 7))) & mask;
      }
    }
  }
  const n = width * height;
  if (palette) {
    const data = new Uint8Array(n * 3);
    for (let p = 0; p < n; p++) {
      const entry = palette[samples[p]];
      if (!entry) throw new RangeError(`palette index ${samples[p]} past its ${palette.length}`);
      data[3 * p] = entry[0];
      data[3 * p + 1] = entry[1];
      data[3 * p + 2] = entry[2];
    }
    return { width, height, channels: 3, data };
  }
  const to8 = depth === 16
    ? (v: number) => Math.round(v / 257)
    : depth === 8
    ? (v: number) => v
    : (v: number) => Math.round((v * 255) / ((1 << depth) - 1));
  // Grey (1), grey+alpha (2), RGB (3), RGBA (4): alpha is dropped.
  const channels = stored <= 2 ? 1 : 3;
  const data = new Uint8Array(n * channels);
  for (let p = 0; p < n; p++) {
    for (let c = 0; c < channels; c++) data[p * channels + c] = to8(samples[p * stored + c]);
  }
  return { width, height, channels, data };
}

function decodeJpeg(bytes: Uint8Array): Image {
  const out = jpeg.decode(bytes, {
    useTArray: true,
    formatAsRGBA: true,
    maxResolutionInMP: MAX_PIXELS / 1e6,
    tolerantDecoding: false,
  });
  const { width, height } = out;
  checkSize(width, height);
  const rgba = out.data;
  if (rgba.length !== width * height * 4) {
    throw new RangeError(`${rgba.length} samples for ${width}x${height} pixels`);
  }
  let grey = true;
  for (let p = 0; p < width * height && grey; p++) {
    grey = rgba[4 * p] === rgba[4 * p + 1] && rgba[4 * p] === rgba[4 * p + 2];
  }
  const channels = grey ? 1 : 3;
  const data = new Uint8Array(width * height * channels);
  for (let p = 0; p < width * height; p++) {
    for (let c = 0; c < channels; c++) data[p * channels + c] = rgba[4 * p + c];
  }
  return { width, height, channels, data };
}
