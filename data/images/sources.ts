/**
 * Where labelled images come from: an IDX pair, a folder of class folders, or a CSV of paths and
 * labels. Listing a source reads no image (only IDX labels and the CSV); images are decoded once
 * the examples are chosen ({@linkcode loadImage}).
 *
 * - **IDX** (`idx`): an images file and its labels file (data/images/idx.ts). The classes are the
 *   label values `0 .. max`, named by `labelNames` when given, else by their digits.
 * - **Folder** (`folder`): one sub-folder per class, named by the class; the images (`.png`,
 *   `.jpg`, `.jpeg`, any case) directly inside it. Hidden entries (starting with `.`) are skipped;
 *   other files, and files beside the class folders, are skipped and counted in `ignored`. A class
 *   folder with no image is an error naming it.
 * - **CSV** (`csv`): a header row with the columns `path` and `label` (others are ignored), one
 *   image a row; relative paths are relative to the CSV's folder.
 *
 * Folder and CSV classes are ordered by name: numerically when every name is a whole number
 * (`2` before `10`), else by code point (torchvision's `ImageFolder` order); a class's id is its
 * place in that order.
 *
 * @module
 */

import { dirname, extname, isAbsolute, join } from "node:path";
import { messageOf } from "../../formats/one_line.ts";
import { DataError, parseCsvRows } from "../readers.ts";
import { readIdxPair } from "./idx.ts";
import { type Image, readImage } from "./image.ts";

/** The kinds of image source. */
export type ImageSourceKind = "idx" | "folder" | "csv";

/** One image of a source, not yet decoded. */
export interface ImageEntry {
  /** Its class id in the source's {@linkcode ImageListing.classes}. */
  label: number;
  /** Where it is, for messages: a path, `"a.csv" line 3`, or `"x-idx3-ubyte" image 17`. */
  where: string;
  /** The image file (folder and CSV). */
  file?: string;
  /** The image's index in the IDX file. */
  index?: number;
}

/** A source's images and classes. */
export interface ImageListing {
  /** The kind of source. */
  kind: ImageSourceKind;
  /** The path given (images file, folder or CSV). */
  path: string;
  /** Class names, by id. */
  classes: string[];
  /** Every image, in the source's order (IDX and CSV: file order; folder: class, then name). */
  entries: ImageEntry[];
  /** Files skipped in a folder (neither an image nor hidden). */
  ignored: number;
  /** IDX: the decoded pixels of every image, `width x height` grey. */
  idx?: { width: number; height: number; pixels: Uint8Array };
}

const IMAGE_EXTENSIONS = new Set([".png", ".jpg", ".jpeg"]);

/**
 * The kind of source a path is: a folder, a `.csv` file, or else IDX.
 *
 * @param path The path.
 * @returns Its kind.
 * @throws {DataError} If the path does not exist.
 */
export async function detectSource(path: string): Promise<ImageSourceKind> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable) throw e;
    throw new DataError(`Cannot read images "${path}": ${messageOf(e)}`, { file: path, cause: e });
  }
  if (info.isDirectory) return "folder";
  return extname(path).toLowerCase() === ".csv" ? "csv" : "idx";
}

/**
 * Class names in id order: numerically when all are whole numbers, else by code point.
 *
 * @param names Distinct names.
 * @returns The names sorted.
 */
export function sortClassNames(names: Iterable<string>): string[] {
  const list = [...names];
  if (list.every((n) => /^(0|[1-9][0-9]*)$/.test(n))) return list.sort((a, b) => +a - +b);
  return list.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

async function listFolder(path: string): Promise<ImageListing> {
  const dirs: string[] = [];
  let ignored = 0;
  try {
    for await (const entry of Deno.readDir(path)) {
      if (entry.name.startsWith(".")) continue;
      if (entry.isDirectory) dirs.push(entry.name);
      else ignored++;
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable) throw e;
    throw new DataError(`Cannot read image folder "${path}": ${messageOf(e)}`, {
      file: path,
      cause: e,
    });
  }
  if (dirs.length === 0) {
    throw new DataError(
      `Image folder "${path}" has no class folders: put each class's images in a sub-folder ` +
        `named by the class`,
      { file: path },
    );
  }
  const classes = sortClassNames(dirs);
  const entries: ImageEntry[] = [];
  for (let label = 0; label < classes.length; label++) {
    const folder = join(path, classes[label]);
    const files: string[] = [];
    for await (const entry of Deno.readDir(folder)) {
      if (entry.name.startsWith(".")) continue;
      if (entry.isFile && IMAGE_EXTENSIONS.has(extname(entry.name).toLowerCase())) {
        files.push(entry.name);
      } else {
        ignored++;
      }
    }
    if (files.length === 0) {
      throw new DataError(
        `Class folder "${folder}" has no images (.png, .jpg or .jpeg): add some or remove the ` +
          `folder`,
        { file: folder },
      );
    }
    files.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    for (const name of files) {
      const file = join(folder, name);
      entries.push({ label, where: `"${file}"`, file });
    }
  }
  return { kind: "folder", path, classes, entries, ignored };
}

async function listCsv(path: string): Promise<ImageListing> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable) throw e;
    throw new DataError(`Cannot read image list "${path}": ${messageOf(e)}`, {
      file: path,
      cause: e,
    });
  }
  const rows = parseCsvRows(text, { file: path });
  if (rows.length === 0) throw new DataError(`Image list "${path}" is empty`, { file: path });
  const header = rows[0].fields;
  const col = (name: string) => header.indexOf(name);
  if (col("path") < 0 || col("label") < 0) {
    throw new DataError(
      `Image list "${path}" line ${rows[0].line} must name the columns "path" and "label"; its ` +
        `header is ${header.map((h) => JSON.stringify(h)).join(", ")}`,
      { file: path, line: rows[0].line },
    );
  }
  const base = dirname(path);
  const named: { name: string; file: string; line: number }[] = [];
  for (const row of rows.slice(1)) {
    if (row.fields.length !== header.length) {
      throw new DataError(
        `Image list "${path}" line ${row.line} has ${row.fields.length} fields; the header has ` +
          `${header.length}`,
        { file: path, line: row.line },
      );
    }
    const file = row.fields[col("path")];
    const name = row.fields[col("label")];
    for (const [what, value] of [["path", file], ["label", name]]) {
      if (value.trim() === "") {
        throw new DataError(`Image list "${path}" line ${row.line} has an empty ${what}`, {
          file: path,
          line: row.line,
        });
      }
    }
    named.push({ name, file: isAbsolute(file) ? file : join(base, file), line: row.line });
  }
  if (named.length === 0) {
    throw new DataError(`Image list "${path}" has a header and no images`, { file: path });
  }
  const classes = sortClassNames(new Set(named.map((n) => n.name)));
  const ids = new Map(classes.map((c, i) => [c, i]));
  const entries = named.map(({ name, file, line }) => ({
    label: ids.get(name)!,
    where: `"${path}" line ${line} ("${file}")`,
    file,
  }));
  return { kind: "csv", path, classes, entries, ignored: 0 };
}

async function listIdx(path: string, labelNames?: readonly string[]): Promise<ImageListing> {
  const pair = await readIdxPair(path);
  let max = -1;
  for (const v of pair.labels) max = Math.max(max, v);
  if (labelNames && labelNames.length <= max) {
    throw new DataError(
      `IDX labels "${pair.labelsFile}" go up to ${max} and label_names has ${labelNames.length} ` +
        `names: give one name for each label 0..${max}`,
      { file: pair.labelsFile },
    );
  }
  const classes = Array.from({ length: max + 1 }, (_, i) => labelNames?.[i] ?? String(i));
  const entries = Array.from(pair.labels, (label, index) => ({
    label,
    where: `"${path}" image ${index}`,
    index,
  }));
  return {
    kind: "idx",
    path,
    classes,
    entries,
    ignored: 0,
    idx: { width: pair.width, height: pair.height, pixels: pair.pixels },
  };
}

/**
 * Lists a source's images and classes.
 *
 * @param path An IDX images file, a folder of class folders, or a CSV.
 * @param options `kind` (absent: {@linkcode detectSource}); `labelNames` for IDX labels.
 * @returns The listing.
 * @throws {DataError} Naming the file or folder, if the source cannot be read or is malformed.
 */
export async function listImages(
  path: string,
  options: { kind?: ImageSourceKind; labelNames?: readonly string[] } = {},
): Promise<ImageListing> {
  const kind = options.kind ?? await detectSource(path);
  if (kind === "folder") return await listFolder(path);
  if (kind === "csv") return await listCsv(path);
  return await listIdx(path, options.labelNames);
}

/**
 * Decodes one image of a listing.
 *
 * @param listing The listing.
 * @param entry One of its entries.
 * @returns The image.
 * @throws {DataError} If the file cannot be read or decoded (naming it).
 */
export async function loadImage(listing: ImageListing, entry: ImageEntry): Promise<Image> {
  if (listing.idx) {
    const { width, height, pixels } = listing.idx;
    const size = width * height;
    const data = pixels.slice(entry.index! * size, (entry.index! + 1) * size);
    return { width, height, channels: 1, data };
  }
  try {
    return await readImage(entry.file!);
  } catch (e) {
    if (e instanceof DataError && listing.kind === "csv") {
      throw new DataError(`${e.message} (listed at ${entry.where})`, { file: entry.file! });
    }
    throw e;
  }
}
