// Validation of a safetensors header: everything that can be checked without the tensor data.

import { dtypeBytes, DTYPES, isDtype } from "./dtype.ts";
import type { Dtype } from "./dtype.ts";
import { oneLine } from "./one_line.ts";

/**
 * A safetensors file (or a sharded checkpoint) that cannot be read or written as given.
 *
 * @example Telling a bad file from a bug
 * ```ts
 * import { SafetensorsError, SafetensorsFile } from "./safetensors.ts";
 * try {
 *   using f = await SafetensorsFile.open("model.safetensors");
 * } catch (e) {
 *   if (e instanceof SafetensorsError) console.error(e.message);
 *   else throw e;
 * }
 * ```
 */
export class SafetensorsError extends Error {
  /** The file the error is about, as the caller named it. */
  readonly file: string;
  /** The tensor the error is about, when there is one. */
  readonly tensor?: string;

  /**
   * Creates the error.
   *
   * @param message The whole message, already naming the file and tensor; control characters
   * (from names in the file) are escaped so that it stays one line.
   * @param options Where the error happened.
   */
  constructor(message: string, options: { file: string; tensor?: string; cause?: unknown }) {
    super(oneLine(message), options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "SafetensorsError";
    this.file = options.file;
    if (options.tensor !== undefined) this.tensor = options.tensor;
  }
}

/** Where one tensor lies in a safetensors file. */
export interface TensorInfo {
  /** The tensor's name, the header key. */
  name: string;
  /** Its element type. */
  dtype: Dtype;
  /** Its dimensions; `[]` for a scalar. */
  shape: number[];
  /** Absolute byte offset of its first byte within the file. */
  begin: number;
  /** Absolute byte offset just past its last byte within the file. */
  end: number;
}

/** The largest header accepted, as in the reference implementation. */
export const MAX_HEADER_BYTES = 100_000_000;

const METADATA_KEY = "__metadata__";
const ENTRY_KEYS = ["dtype", "shape", "data_offsets"] as const;

/** What a validated header says. */
export interface ParsedHeader {
  metadata: Record<string, string>;
  tensors: Map<string, TensorInfo>;
}

/** `"a" ` for an array and so on, for messages that say what a JSON value was instead. */
export function describeJson(value: unknown): string {
  if (value === undefined) return "missing";
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  const type = typeof value;
  return type === "object" ? "an object" : `a ${type}`;
}

/** `[3,4]`, printed the way the header writes it. */
export function formatShape(shape: unknown): string {
  return JSON.stringify(shape) ?? String(shape);
}

/**
 * Validates header bytes against a data section of `dataLength` bytes that starts at absolute
 * offset `dataStart`, and returns the tensors in header order.
 */
export function parseHeader(
  bytes: Uint8Array,
  options: { file: string; dataStart: number; dataLength: number },
): ParsedHeader {
  const { file, dataStart, dataLength } = options;
  const fail: Fail = (message, tensor) => {
    throw new SafetensorsError(`Invalid safetensors file "${file}": ${message}`, { file, tensor });
  };

  let text: string;
  try {
    // ignoreBOM keeps a byte order mark in the text, so JSON.parse rejects it as the reference does.
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    return fail("header is not valid UTF-8");
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return fail(`header is not valid JSON (${e instanceof Error ? e.message : e})`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    return fail(`header JSON is ${describeJson(json)}, not an object`);
  }
  const root = json as Record<string, unknown>;

  // JSON.parse keeps only the last of duplicated keys and moves integer-like keys first, so the
  // key order and duplicates come from the text itself.
  const keys = topLevelKeys(text);
  const seen = new Set<string>();
  for (const key of keys) {
    if (seen.has(key)) {
      const isTensor = key !== METADATA_KEY;
      fail(
        `${isTensor ? "tensor " : ""}"${key}" appears twice in the header`,
        isTensor ? key : undefined,
      );
    }
    seen.add(key);
  }

  const metadata: Record<string, string> = {};
  if (Object.hasOwn(root, METADATA_KEY)) {
    const raw = root[METADATA_KEY];
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
      fail(`"${METADATA_KEY}" is ${describeJson(raw)}, not an object of strings`);
    }
    for (const [key, value] of Object.entries(raw as Record<string, unknown>)) {
      if (typeof value !== "string") {
        fail(`"${METADATA_KEY}" entry "${key}" is ${describeJson(value)}, not a string`);
      }
      metadata[key] = value as string;
    }
  }

  const tensors = new Map<string, TensorInfo>();
  for (const name of keys) {
    if (name === METADATA_KEY) continue;
    tensors.set(name, parseEntry(name, root[name], { fail, dataStart, dataLength }));
  }
  checkTiling([...tensors.values()], { fail, dataStart, dataLength });
  return { metadata, tensors };
}

// Explicitly typed so that TypeScript narrows after a call.
type Fail = (message: string, tensor?: string) => never;

interface EntryContext {
  fail: Fail;
  dataStart: number;
  dataLength: number;
}

function parseEntry(name: string, entry: unknown, ctx: EntryContext): TensorInfo {
  const fail: Fail = ctx.fail;
  const { dataStart, dataLength } = ctx;
  const t = `tensor "${name}"`;
  if (typeof entry !== "object" || entry === null || Array.isArray(entry)) {
    fail(`${t} entry is ${describeJson(entry)}, not an object`, name);
  }
  const fields = entry as Record<string, unknown>;
  for (const key of Object.keys(fields)) {
    if (!(ENTRY_KEYS as readonly string[]).includes(key)) {
      fail(`${t} has unknown key "${key}" (expected dtype, shape, data_offsets)`, name);
    }
  }
  for (const key of ENTRY_KEYS) {
    if (!Object.hasOwn(fields, key)) fail(`${t} is missing key "${key}"`, name);
  }

  const dtype = fields.dtype;
  if (!isDtype(dtype)) {
    fail(`${t} has unknown dtype ${JSON.stringify(dtype)} (expected ${DTYPES.join(", ")})`, name);
  }

  const shape = fields.shape;
  const shapeText = formatShape(shape);
  if (!Array.isArray(shape)) fail(`${t} has shape ${shapeText}, which is not an array`, name);
  let elements = 1;
  for (const dim of shape as unknown[]) {
    if (typeof dim !== "number" || !Number.isInteger(dim)) {
      fail(`${t} has shape ${shapeText}: dimension ${formatShape(dim)} is not an integer`, name);
    }
    if (dim < 0) fail(`${t} has shape ${shapeText}: dimension ${dim} is negative`, name);
    if (!Number.isSafeInteger(dim)) {
      fail(`${t} has shape ${shapeText}: dimension ${dim} is not a safe integer`, name);
    }
    elements *= dim as number;
  }
  const size = elements * dtypeBytes(dtype as Dtype);
  if (!Number.isSafeInteger(size)) {
    fail(`${t} has shape ${shapeText} whose byte size overflows (over 2**53 bytes)`, name);
  }

  const offsets = fields.data_offsets;
  const offsetsText = formatShape(offsets);
  if (
    !Array.isArray(offsets) || offsets.length !== 2 ||
    !offsets.every((o) => typeof o === "number" && Number.isSafeInteger(o) && o >= 0)
  ) {
    fail(
      `${t} has data_offsets ${offsetsText} (expected [begin, end], non-negative integers)`,
      name,
    );
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) fail(`${t} has data_offsets ${offsetsText} with begin after end`, name);

  if (end - begin !== size) {
    fail(
      `${t} has shape ${shapeText} (${elements} x ${dtype} = ${size} bytes) ` +
        `but byte range [${begin}, ${end})`,
      name,
    );
  }
  if (begin > dataLength) {
    fail(
      `${t} byte range [${begin}, ${end}) starts past the end of the data (${dataLength} bytes)`,
      name,
    );
  }
  if (end > dataLength) {
    fail(
      `${t} byte range [${begin}, ${end}) ends past the data (${dataLength} bytes): ` +
        `the file is truncated`,
      name,
    );
  }
  return {
    name,
    dtype: dtype as Dtype,
    shape: (shape as number[]).slice(),
    begin: dataStart + begin,
    end: dataStart + end,
  };
}

// The ranges must tile the data section exactly, as in the reference reader: no overlap, no hole,
// nothing after the last tensor.
function checkTiling(infos: TensorInfo[], ctx: EntryContext): void {
  const fail: Fail = ctx.fail;
  const { dataStart, dataLength } = ctx;
  const sorted = infos.slice().sort((a, b) => a.begin - b.begin || a.end - b.end);
  const rel = (x: number) => x - dataStart;
  let covered = 0;
  let previous: TensorInfo | undefined;
  for (const info of sorted) {
    const begin = rel(info.begin);
    if (previous !== undefined && begin < covered) {
      fail(
        `tensors "${previous.name}" [${rel(previous.begin)}, ${covered}) and ` +
          `"${info.name}" [${begin}, ${rel(info.end)}) overlap`,
        info.name,
      );
    }
    if (begin > covered) {
      fail(
        previous === undefined
          ? `hole of ${begin} bytes before the first tensor "${info.name}"`
          : `hole of ${begin - covered} bytes between tensor "${previous.name}" ` +
            `(ends at ${covered}) and tensor "${info.name}" (begins at ${begin})`,
        info.name,
      );
    }
    covered = rel(info.end);
    previous = info;
  }
  if (covered < dataLength) {
    const extra = dataLength - covered;
    fail(
      previous === undefined
        ? `${extra} trailing bytes after a header with no tensors`
        : `${extra} trailing bytes after the last tensor "${previous.name}"`,
      previous?.name,
    );
  }
}

/**
 * The keys of a JSON object's top level, in text order and with repeats. `text` must already be
 * known to be valid JSON holding an object.
 */
export function topLevelKeys(text: string): string[] {
  const keys: string[] = [];
  let i = text.indexOf("{") + 1;
  let depth = 0;
  let expectKey = true;
  while (i < text.length) {
    const c = text[i];
    if (c === '"') {
      const start = i;
      i++;
      while (i < text.length && text[i] !== '"') i += text[i] === "\\" ? 2 : 1;
      i++;
      if (depth === 0 && expectKey) {
        keys.push(JSON.parse(text.slice(start, i)));
        expectKey = false;
      }
      continue;
    }
    if (c === "{" || c === "[") depth++;
    else if (c === "}" || c === "]") {
      if (depth === 0) break;
      depth--;
    } else if (c === "," && depth === 0) expectKey = true;
    i++;
  }
  return keys;
}
