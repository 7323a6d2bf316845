/**
 * IDX files (the format of MNIST and Fashion-MNIST; Debian's `dataset-fashion-mnist` installs
 * them under `/usr/share/datasets/fashion-mnist/`), plain or gzip-compressed.
 *
 * An IDX file is a 4-byte magic number (two zero bytes, the element type, the number of
 * dimensions), each dimension as a big-endian 32-bit count, then the elements, row-major. Images
 * are unsigned bytes in three dimensions `[N, rows, columns]` (magic `00 00 08 03`); labels are
 * unsigned bytes in one dimension `[N]` (magic `00 00 08 01`). The file must end exactly where the
 * dimensions say: a short file is truncated, a longer one is not what its header claims, and both
 * are refused naming the file and the byte counts.
 *
 * An image file's labels are found beside it by name: `images` becomes `labels` and `idx3`
 * becomes `idx1` in the file name (`train-images-idx3-ubyte.gz` → `train-labels-idx1-ubyte.gz`,
 * MNIST's `train-images.idx3-ubyte` → `train-labels.idx1-ubyte`).
 *
 * @module
 */

import { basename, dirname, join } from "node:path";
import { messageOf } from "../../formats/one_line.ts";
import { DataError } from "../readers.ts";

/** Images of an IDX file: `count` grey images of `height x width` bytes, one after the other. */
export interface IdxImages {
  /** Images in the file. */
  count: number;
  /** Rows of each image. */
  height: number;
  /** Columns of each image. */
  width: number;
  /** `count * height * width` bytes. */
  pixels: Uint8Array;
}

/** Labelled images of an IDX pair. */
export interface IdxPair extends IdxImages {
  /** One label per image. */
  labels: Uint8Array;
  /** The images file. */
  imagesFile: string;
  /** The labels file. */
  labelsFile: string;
}

const TYPE_NAMES: Record<number, string> = {
  0x08: "unsigned byte",
  0x09: "signed byte",
  0x0b: "16-bit integer",
  0x0c: "32-bit integer",
  0x0d: "32-bit float",
  0x0e: "64-bit float",
};

/**
 * Whether bytes are gzip data (its two-byte magic number).
 *
 * @param bytes The first bytes of a file.
 * @returns True for gzip.
 */
export function isGzip(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
}

async function gunzip(bytes: Uint8Array, file: string): Promise<Uint8Array> {
  try {
    const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream()
      .pipeThrough(new DecompressionStream("gzip"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  } catch (e) {
    throw new DataError(
      `Cannot read IDX file "${file}": its gzip data is truncated or corrupt (${messageOf(e)})`,
      { file, cause: e },
    );
  }
}

/**
 * Parses an IDX file of unsigned bytes.
 *
 * @param bytes The file's bytes, already decompressed.
 * @param options `file`: the name messages give; `dims`: the number of dimensions expected.
 * @returns The dimensions and the elements.
 * @throws {DataError} On a bad magic number, another element type or number of dimensions, or a
 * length that does not match the dimensions.
 *
 * @example Two labels
 * ```ts
 * import { parseIdx } from "./idx.ts";
 * parseIdx(new Uint8Array([0, 0, 8, 1, 0, 0, 0, 2, 7, 3]), { file: "l.idx1", dims: 1 });
 * // { shape: [2], data: Uint8Array [7, 3] }
 * ```
 */
export function parseIdx(
  bytes: Uint8Array,
  options: { file: string; dims: number },
): { shape: number[]; data: Uint8Array } {
  const { file, dims } = options;
  const fail = (why: string): never => {
    throw new DataError(`Cannot read IDX file "${file}": ${why}`, { file });
  };
  if (bytes.length < 4 || bytes[0] !== 0 || bytes[1] !== 0) {
    fail(
      `it does not start with an IDX magic number (00 00 <type> <dims>); it starts with ${
        [...bytes.subarray(0, 4)].map((b) => b.toString(16).padStart(2, "0")).join(" ")
      }`,
    );
  }
  const type = bytes[2];
  if (type !== 0x08) {
    fail(
      `its elements are ${TYPE_NAMES[type] ?? `of unknown type 0x${type.toString(16)}`}s; ` +
        `images and labels are unsigned bytes (type 0x08)`,
    );
  }
  if (bytes[3] !== dims) {
    const what = dims === 3 ? "images [count, rows, columns]" : "labels [count]";
    fail(`it has ${bytes[3]} dimensions; ${what} have ${dims}`);
  }
  const header = 4 + 4 * dims;
  if (bytes.length < header) fail(`its header is truncated (${bytes.length} bytes)`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const shape = Array.from({ length: dims }, (_, i) => view.getUint32(4 + 4 * i));
  const elements = shape.reduce((a, b) => a * b, 1);
  const expected = header + elements;
  if (bytes.length !== expected) {
    fail(
      `its dimensions [${shape.join(", ")}] need ${expected} bytes and it holds ${bytes.length}` +
        (bytes.length < expected ? " (truncated)" : ""),
    );
  }
  return { shape, data: bytes.subarray(header) };
}

async function readIdx(path: string, dims: number): Promise<{ shape: number[]; data: Uint8Array }> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable) throw e;
    throw new DataError(`Cannot read IDX file "${path}": ${messageOf(e)}`, {
      file: path,
      cause: e,
    });
  }
  if (isGzip(bytes)) bytes = await gunzip(bytes, path);
  return parseIdx(bytes, { file: path, dims });
}

/**
 * The labels file that goes with an IDX images file, by the MNIST naming.
 *
 * @param imagesFile The images file, e.g. `t10k-images-idx3-ubyte.gz`.
 * @returns The labels file beside it, e.g. `t10k-labels-idx1-ubyte.gz`, or undefined when the
 * name has neither `images` nor `idx3` in it.
 */
export function idxLabelsPath(imagesFile: string): string | undefined {
  const name = basename(imagesFile);
  const labels = name.replace("images", "labels").replace("idx3", "idx1");
  return labels === name ? undefined : join(dirname(imagesFile), labels);
}

/**
 * Reads an IDX images file and its labels file.
 *
 * @param imagesFile The images (IDX3 of unsigned bytes, plain or gzip).
 * @param options `labelsFile`: the labels (IDX1 of unsigned bytes); absent: found beside the
 * images by {@linkcode idxLabelsPath}.
 * @returns The images with their labels.
 * @throws {DataError} If either file cannot be read, is not IDX of the right shape, or the counts
 * differ.
 */
export async function readIdxPair(
  imagesFile: string,
  options: { labelsFile?: string } = {},
): Promise<IdxPair> {
  const labelsFile = options.labelsFile ?? idxLabelsPath(imagesFile);
  if (labelsFile === undefined) {
    throw new DataError(
      `Cannot find the labels of IDX file "${imagesFile}": its name has neither "images" nor ` +
        `"idx3" to turn into "labels"/"idx1"; name the pair like train-images-idx3-ubyte.gz and ` +
        `train-labels-idx1-ubyte.gz`,
      { file: imagesFile },
    );
  }
  const images = await readIdx(imagesFile, 3);
  try {
    await Deno.stat(labelsFile);
  } catch {
    throw new DataError(
      `Cannot find the labels of IDX file "${imagesFile}": expected them in "${labelsFile}"`,
      { file: imagesFile },
    );
  }
  const labels = await readIdx(labelsFile, 1);
  const [count, height, width] = images.shape;
  if (labels.shape[0] !== count) {
    throw new DataError(
      `IDX files do not match: "${imagesFile}" holds ${count} images and "${labelsFile}" ` +
        `${labels.shape[0]} labels`,
      { file: labelsFile },
    );
  }
  if (count > 0 && (height === 0 || width === 0)) {
    throw new DataError(`Cannot read IDX file "${imagesFile}": its images are ${height}x${width}`, {
      file: imagesFile,
    });
  }
  return {
    count,
    height,
    width,
    pixels: images.data,
    labels: labels.data,
    imagesFile,
    labelsFile,
  };
}
