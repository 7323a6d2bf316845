/**
 * Test images written by hand: PNG and JPEG through the same npm libraries' encoders, IDX files
 * byte by byte, and the float64 references of the preprocessing.
 *
 * @module
 */

import { encode as encodePng } from "fast-png";
import jpeg from "jpeg-js";
import { rng } from "../_util.ts";

/** An image as the encoders take it. */
export interface RawImage {
  width: number;
  height: number;
  channels: number;
  data: Uint8Array | Uint16Array;
  depth?: 1 | 2 | 4 | 8 | 16;
  palette?: number[][];
}

/** PNG bytes of an image. */
export function pngBytes(image: RawImage): Uint8Array {
  return encodePng({
    width: image.width,
    height: image.height,
    channels: image.channels,
    depth: image.depth ?? 8,
    data: image.data,
    ...(image.palette ? { palette: image.palette } : {}),
  });
}

/** JPEG bytes of an RGB image at a quality. */
export function jpegBytes(image: { width: number; height: number; rgb: Uint8Array }, quality = 95) {
  const rgba = new Uint8Array(image.width * image.height * 4);
  for (let p = 0; p < image.width * image.height; p++) {
    rgba.set(image.rgb.subarray(3 * p, 3 * p + 3), 4 * p);
    rgba[4 * p + 3] = 255;
  }
  return new Uint8Array(
    jpeg.encode({ width: image.width, height: image.height, data: rgba }, quality).data,
  );
}

/** Random 8-bit samples from a seed. */
export function randomBytes(n: number, seed: number): Uint8Array {
  const next = rng(seed);
  return Uint8Array.from({ length: n }, () => Math.floor(next() * 256));
}

/** A smooth RGB image (JPEG keeps it nearly exact): a gradient with a seeded tilt. */
export function smoothRgb(width: number, height: number, seed: number): Uint8Array {
  const next = rng(seed);
  const [a, b, c] = [next(), next(), next()];
  const out = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const p = 3 * (y * width + x);
      out[p] = Math.round(40 + 150 * a * (x / width));
      out[p + 1] = Math.round(60 + 120 * b * (y / height));
      out[p + 2] = Math.round(80 + 100 * c * ((x + y) / (width + height)));
    }
  }
  return out;
}

/** IDX bytes: magic `00 00 08 dims`, the dimensions big-endian, then the bytes. */
export function idxBytes(shape: number[], data: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + 4 * shape.length + data.length);
  out.set([0, 0, 8, shape.length]);
  const view = new DataView(out.buffer);
  shape.forEach((d, i) => view.setUint32(4 + 4 * i, d));
  out.set(data, 4 + 4 * shape.length);
  return out;
}

/** Gzip of bytes. */
export async function gzip(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream()
    .pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/**
 * Writes a class-folder dataset: `counts[c]` PNG images (grey, `size x size`) of class `names[c]`.
 *
 * @returns The pixels written, by class then file.
 */
export async function writeFolder(
  root: string,
  names: string[],
  counts: number[],
  options: { size: number; seed: number },
): Promise<Uint8Array[][]> {
  const written: Uint8Array[][] = [];
  for (let c = 0; c < names.length; c++) {
    await Deno.mkdir(`${root}/${names[c]}`, { recursive: true });
    const images: Uint8Array[] = [];
    for (let i = 0; i < counts[c]; i++) {
      const data = randomBytes(options.size * options.size, options.seed + 1000 * c + i);
      const png = pngBytes({ width: options.size, height: options.size, channels: 1, data });
      await Deno.writeFile(`${root}/${names[c]}/${String(i).padStart(3, "0")}.png`, png);
      images.push(data);
    }
    written.push(images);
  }
  return written;
}

/** Bilinear (triangle) and Keys' cubic (a = -0.5) filters, written out again for the reference. */
const FILTERS = {
  bilinear: { support: 1, f: (x: number) => Math.max(0, 1 - Math.abs(x)) },
  bicubic: {
    support: 2,
    f: (x: number) => {
      const t = Math.abs(x);
      if (t < 1) return 1.5 * t ** 3 - 2.5 * t ** 2 + 1;
      if (t < 2) return -0.5 * t ** 3 + 2.5 * t ** 2 - 4 * t + 2;
      return 0;
    },
  },
};

/**
 * Float64 reference of a Pillow-style resize, computed directly: each output sample is the sum
 * over every input pixel of the box of `wx * wy` divided by the sums of the weights, with no
 * separable passes and no window bookkeeping.
 */
export function referenceResize(
  src: { width: number; height: number; channels: number; data: ArrayLike<number> },
  out: { width: number; height: number },
  filter: "bilinear" | "bicubic",
  box = { left: 0, top: 0, width: src.width, height: src.height },
): Float64Array {
  const { f, support } = FILTERS[filter];
  const weight = (o: number, i: number, n: number, m: number) => {
    const scale = n / m;
    const stretch = Math.max(scale, 1);
    const centre = (o + 0.5) * scale;
    const d = i + 0.5 - centre;
    // Pillow's window: pixels whose centres lie within the stretched support (rounded).
    const lo = Math.max(Math.floor(centre - support * stretch + 0.5), 0);
    const hi = Math.min(Math.floor(centre + support * stretch + 0.5), n);
    return i >= lo && i < hi ? f(d / stretch) : 0;
  };
  const C = src.channels;
  const res = new Float64Array(out.width * out.height * C);
  for (let y = 0; y < out.height; y++) {
    for (let x = 0; x < out.width; x++) {
      for (let c = 0; c < C; c++) {
        let s = 0;
        let wsum = 0;
        for (let j = 0; j < box.height; j++) {
          const wy = weight(y, j, box.height, out.height);
          for (let i = 0; i < box.width; i++) {
            const w = wy * weight(x, i, box.width, out.width);
            s += w * src.data[((box.top + j) * src.width + box.left + i) * C + c];
            wsum += w;
          }
        }
        const v = s / wsum;
        res[(y * out.width + x) * C + c] = filter === "bicubic" ? Math.min(255, Math.max(0, v)) : v;
      }
    }
  }
  return res;
}
