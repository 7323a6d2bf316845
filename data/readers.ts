/**
 * Dataset files to records: JSON Lines, CSV (RFC 4180) and the E2E NLG format.
 *
 * - **JSON Lines** (`.jsonl`, `.ndjson`): one JSON object a line; blank lines are skipped; each
 *   value must be a string, number, boolean or null.
 * - **CSV** (`.csv`): RFC 4180. The first row names the columns; fields may be quoted, with `""`
 *   for a quote inside, and quoted fields may hold commas and line breaks (kept verbatim). Rows end
 *   with LF or CRLF; the last may have no line end. Every value stays a string (no type guessing).
 *   Entirely empty lines are skipped. Stricter than many readers on purpose: a quote inside an
 *   unquoted field, text after a closing quote, an unterminated quote or a row with the wrong
 *   number of fields is an error naming the file, line and column.
 * - **E2E** (`e2e`, named explicitly): the E2E NLG challenge's CSV with columns `mr` and `ref`,
 *   one row per reference. {@linkcode readE2e} gives one record per (mr, ref) for training;
 *   {@linkcode groupReferences} gives `{ mr, refs }` per distinct mr for evaluation against
 *   several references.
 *
 * A UTF-8 byte-order mark at the start of a file is dropped. Lines and columns are 1-based;
 * columns count UTF-16 code units from the start of the line.
 *
 * Instruction data (Alpaca and chat JSON Lines, whose `messages` are lists) is read by
 * data/instructions.ts on top of {@linkcode parseJsonlObjects}; the flat readers here keep refusing
 * nested values.
 *
 * @module
 */

import { oneLine } from "../formats/one_line.ts";

/** A value of one field of a record. */
export type FieldValue = string | number | boolean | null;

/** One record of a dataset: field name to value. */
export type DataRecord = Record<string, FieldValue>;

/** The formats {@linkcode readRecords} understands. */
export type DataFormat = "jsonl" | "csv" | "e2e" | "text";

/** One meaning representation of an E2E file with every reference written for it. */
export interface E2eGroup {
  /** The meaning representation, e.g. `name[The Mill], food[Italian]`. */
  mr: string;
  /** Its references, in file order. */
  refs: string[];
}

/** A dataset file that cannot be read, with where it went wrong. */
export class DataError extends SyntaxError {
  /** The file (or the name given for the text). */
  readonly file: string;
  /** 1-based line, when the error is at one place. */
  readonly line?: number;
  /** 1-based column, when known. */
  readonly column?: number;

  /**
   * @param message The whole message, already naming the file and place; control characters
   * (quoted from the file) are escaped so that it stays one line.
   * @param where The file and place.
   */
  constructor(
    message: string,
    where: { file: string; line?: number; column?: number; cause?: unknown },
  ) {
    super(oneLine(message), where.cause === undefined ? undefined : { cause: where.cause });
    this.name = "DataError";
    this.file = where.file;
    this.line = where.line;
    this.column = where.column;
  }
}

/**
 * A place in a dataset file as messages write it: `"train.jsonl" line 3` (`column 7` after).
 *
 * @param file The file.
 * @param line 1-based line.
 * @param column 1-based column, when known.
 * @returns The text.
 */
export function place(file: string, line: number, column?: number): string {
  return column === undefined
    ? `"${file}" line ${line}`
    : `"${file}" line ${line} column ${column}`;
}

function stripBom(text: string): string {
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

/** One object of a JSON Lines file and the line it is on. */
export interface JsonlObject {
  /** 1-based line. */
  line: number;
  /** The object, values of any JSON kind. */
  value: Record<string, unknown>;
}

/**
 * Parses JSON Lines text into objects with their line numbers, values of any JSON kind.
 *
 * @param text The file's text.
 * @param options `file`: the name used in error messages.
 * @returns One object per non-blank line.
 * @throws {DataError} If a line is not JSON or not a JSON object.
 *
 * @example Nested values come through
 * ```ts
 * import { parseJsonlObjects } from "./readers.ts";
 * parseJsonlObjects('\n{"messages": [{"role": "user", "content": "Hi"}]}\n', { file: "c.jsonl" });
 * // [{ line: 2, value: { messages: [{ role: "user", content: "Hi" }] } }]
 * ```
 */
export function parseJsonlObjects(text: string, options: { file?: string } = {}): JsonlObject[] {
  const file = options.file ?? "<text>";
  const objects: JsonlObject[] = [];
  const lines = stripBom(text).split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].endsWith("\r") ? lines[i].slice(0, -1) : lines[i];
    if (line.trim() === "") continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      throw new DataError(`Invalid JSON in ${place(file, i + 1)}: ${message}`, {
        file,
        line: i + 1,
      });
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      throw new DataError(
        `Invalid record in ${place(file, i + 1)}: expected a JSON object, found ${kindOf(value)}`,
        { file, line: i + 1 },
      );
    }
    objects.push({ line: i + 1, value: value as Record<string, unknown> });
  }
  return objects;
}

/**
 * Parses JSON Lines text of flat records.
 *
 * @param text The file's text.
 * @param options `file`: the name used in error messages.
 * @returns One record per non-blank line.
 * @throws {DataError} If a line is not JSON, not an object, or holds a nested value.
 *
 * @example Two records
 * ```ts
 * import { parseJsonl } from "./readers.ts";
 * parseJsonl('{"a": 1}\n\n{"a": "x"}\n', { file: "d.jsonl" }); // [{ a: 1 }, { a: "x" }]
 * ```
 */
export function parseJsonl(text: string, options: { file?: string } = {}): DataRecord[] {
  const file = options.file ?? "<text>";
  return parseJsonlObjects(text, { file }).map(({ line, value }) => {
    for (const [key, v] of Object.entries(value)) {
      if (v !== null && typeof v === "object") {
        throw new DataError(
          `Invalid record in ${place(file, line)}: field "${key}" is ${
            kindOf(v)
          }; expected a string, number, boolean or null`,
          { file, line },
        );
      }
    }
    return value as DataRecord;
  });
}

/**
 * What a JSON value is, for messages: `a string`, `an array`, `null`, ...
 *
 * @param value Any value.
 * @returns Its kind with an article.
 */
export function kindOf(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value === "object" ? "an object" : `a ${typeof value}`;
}

/**
 * Parses CSV text (RFC 4180) into rows of strings, without interpreting a header.
 *
 * @param text The file's text.
 * @param options `file`: the name used in error messages.
 * @returns The rows, each with the line it starts on.
 * @throws {DataError} On a stray or unterminated quote.
 */
export function parseCsvRows(
  text: string,
  options: { file?: string } = {},
): { line: number; fields: string[]; columns: number[] }[] {
  const file = options.file ?? "<text>";
  const s = stripBom(text);
  const rows: { line: number; fields: string[]; columns: number[] }[] = [];
  let line = 1;
  let lineStart = 0; // index of the first character of the current physical line
  let i = 0;
  while (i < s.length) {
    // Start of a row.
    if (s[i] === "\n" || (s[i] === "\r" && s[i + 1] === "\n")) {
      i += s[i] === "\r" ? 2 : 1; // an empty line: skipped
      line++;
      lineStart = i;
      continue;
    }
    const rowLine = line;
    const fields: string[] = [];
    const columns: number[] = [];
    for (;;) {
      columns.push(i - lineStart + 1);
      let value = "";
      if (s[i] === '"') {
        const openLine = line;
        const openColumn = i - lineStart + 1;
        i++;
        for (;;) {
          if (i >= s.length) {
            throw new DataError(
              `Invalid CSV in ${place(file, openLine, openColumn)}: unterminated quoted field`,
              { file, line: openLine, column: openColumn },
            );
          }
          const c = s[i];
          if (c === '"') {
            if (s[i + 1] === '"') {
              value += '"';
              i += 2;
              continue;
            }
            i++;
            break;
          }
          if (c === "\n") {
            line++;
            lineStart = i + 1;
          }
          value += c;
          i++;
        }
        const after = s[i];
        if (
          i < s.length && after !== "," && after !== "\n" && !(after === "\r" && s[i + 1] === "\n")
        ) {
          const column = i - lineStart + 1;
          throw new DataError(
            `Invalid CSV in ${place(file, line, column)}: ${
              JSON.stringify(after)
            } after a closing quote; expected a comma or the end of the line`,
            { file, line, column },
          );
        }
      } else {
        const start = i;
        while (i < s.length && s[i] !== "," && s[i] !== "\n" && s[i] !== "\r") {
          if (s[i] === '"') {
            const column = i - lineStart + 1;
            throw new DataError(
              `Invalid CSV in ${
                place(file, line, column)
              }: quote inside an unquoted field; quote the whole field and double the quote`,
              { file, line, column },
            );
          }
          i++;
        }
        if (s[i] === "\r" && s[i + 1] !== "\n") {
          const column = i - lineStart + 1;
          throw new DataError(
            `Invalid CSV in ${place(file, line, column)}: carriage return without a line feed`,
            { file, line, column },
          );
        }
        value = s.slice(start, i);
      }
      fields.push(value);
      if (s[i] === ",") {
        i++;
        continue;
      }
      // End of the row: end of text, LF or CRLF.
      if (i < s.length) {
        i += s[i] === "\r" ? 2 : 1;
        line++;
        lineStart = i;
      }
      break;
    }
    rows.push({ line: rowLine, fields, columns });
  }
  return rows;
}

/**
 * Parses CSV text whose first row names the columns.
 *
 * @param text The file's text.
 * @param options `file`: the name used in error messages.
 * @returns One record per data row, every value a string.
 * @throws {DataError} On malformed quoting, a missing, empty or repeated column name, or a row
 * whose number of fields differs from the header's.
 *
 * @example Quoted fields
 * ```ts
 * import { parseCsv } from "./readers.ts";
 * parseCsv('a,b\n"x, ""y""",2\n', { file: "d.csv" }); // [{ a: 'x, "y"', b: "2" }]
 * ```
 */
export function parseCsv(text: string, options: { file?: string } = {}): DataRecord[] {
  return csvTable(text, options.file ?? "<text>").records;
}

function csvTable(text: string, file: string): { header: string[]; records: DataRecord[] } {
  const rows = parseCsvRows(text, { file });
  if (rows.length === 0) {
    throw new DataError(`Invalid CSV "${file}": no header row`, { file });
  }
  const header = rows[0];
  const seen = new Set<string>();
  for (let c = 0; c < header.fields.length; c++) {
    const name = header.fields[c];
    const where = place(file, header.line, header.columns[c]);
    if (name === "") {
      throw new DataError(`Invalid CSV header in ${where}: column ${c + 1} has no name`, {
        file,
        line: header.line,
        column: header.columns[c],
      });
    }
    if (seen.has(name)) {
      throw new DataError(`Invalid CSV header in ${where}: column "${name}" appears twice`, {
        file,
        line: header.line,
        column: header.columns[c],
      });
    }
    seen.add(name);
  }
  const records: DataRecord[] = [];
  for (const row of rows.slice(1)) {
    if (row.fields.length !== header.fields.length) {
      const extra = row.fields.length > header.fields.length;
      const column = extra ? row.columns[header.fields.length] : row.columns.at(-1)!;
      throw new DataError(
        `Invalid CSV row in ${place(file, row.line, column)}: ${row.fields.length} field${
          row.fields.length === 1 ? "" : "s"
        } ${extra ? "" : "(ends early) "}where the header has ${header.fields.length}`,
        { file, line: row.line, column },
      );
    }
    const record: DataRecord = {};
    header.fields.forEach((name, c) => record[name] = row.fields[c]);
    records.push(record);
  }
  return { header: header.fields, records };
}

/**
 * Parses an E2E NLG CSV (columns `mr` and `ref`; others are kept) into one record per row.
 *
 * @param text The file's text.
 * @param options `file`: the name used in error messages.
 * @returns One `{ mr, ref, ... }` record per (mr, ref) row: the training view.
 * @throws {DataError} If the CSV is malformed or lacks the `mr` or `ref` column.
 */
export function parseE2e(text: string, options: { file?: string } = {}): DataRecord[] {
  const file = options.file ?? "<text>";
  const { header, records } = csvTable(text, file);
  for (const column of ["mr", "ref"]) {
    if (!header.includes(column)) {
      throw new DataError(
        `Invalid E2E file "${file}": no "${column}" column (the header has ${
          header.map((h) => `"${h}"`).join(", ")
        })`,
        { file, line: 1 },
      );
    }
  }
  return records;
}

/**
 * Groups (mr, ref) records by meaning representation, for evaluation against several
 * references. Groups come in order of first appearance; references in file order.
 *
 * @param records Records with string fields `mr` and `ref` (as {@linkcode parseE2e} returns).
 * @param options `mr`, `ref`: other field names to group by and collect.
 * @returns One `{ mr, refs }` per distinct mr.
 * @throws {TypeError} If a record lacks either field or it is not a string.
 *
 * @example Two references for one mr
 * ```ts
 * import { groupReferences } from "./readers.ts";
 * groupReferences([{ mr: "m", ref: "a" }, { mr: "m", ref: "b" }]); // [{ mr: "m", refs: ["a", "b"] }]
 * ```
 */
export function groupReferences(
  records: readonly DataRecord[],
  options: { mr?: string; ref?: string } = {},
): E2eGroup[] {
  const mrKey = options.mr ?? "mr";
  const refKey = options.ref ?? "ref";
  const groups = new Map<string, E2eGroup>();
  records.forEach((record, index) => {
    const mr = record[mrKey];
    const ref = record[refKey];
    if (typeof mr !== "string" || typeof ref !== "string") {
      throw new TypeError(
        `Cannot group record ${index}: fields "${mrKey}" and "${refKey}" must be strings`,
      );
    }
    const group = groups.get(mr);
    if (group) group.refs.push(ref);
    else groups.set(mr, { mr, refs: [ref] });
  });
  return [...groups.values()];
}

/**
 * The format a file name implies: `.jsonl`/`.ndjson` JSON Lines, `.csv` CSV.
 *
 * @param path A file name.
 * @returns The format, or `undefined` when the extension says nothing.
 */
export function formatOf(path: string): DataFormat | undefined {
  const lower = path.toLowerCase();
  if (lower.endsWith(".jsonl") || lower.endsWith(".ndjson")) return "jsonl";
  if (lower.endsWith(".csv")) return "csv";
  if (lower.endsWith(".txt")) return "text";
  return undefined;
}

/**
 * Plain text, one document per line (a pretraining corpus): records `{ text }`, blank lines
 * skipped.
 *
 * @param text The file's contents.
 * @returns One record per non-blank line.
 */
export function parseText(text: string): DataRecord[] {
  return text.replace(/^\uFEFF/, "").split(/\r?\n/).filter((line) => line.trim() !== "")
    .map((line) => ({ text: line }));
}

/**
 * Reads a dataset file into records.
 *
 * @param path The file.
 * @param options `format`: `jsonl`, `csv`, `e2e` or `text`; by default from the extension.
 * @returns The records (for `e2e`, one per (mr, ref) row).
 * @throws {DataError} If the file cannot be read, its format is unknown, or it is malformed.
 *
 * @example An E2E file
 * ```ts
 * import { groupReferences, readRecords } from "./readers.ts";
 * const rows = await readRecords("fixtures/data-to-text/test.csv", { format: "e2e" });
 * const groups = groupReferences(rows);
 * ```
 */
export async function readRecords(
  path: string,
  options: { format?: DataFormat } = {},
): Promise<DataRecord[]> {
  const format = options.format ?? formatOf(path);
  if (format === undefined) {
    throw new DataError(
      `Cannot read dataset "${path}": unknown format; name it (jsonl, csv, e2e or text) or use a .jsonl, .csv or .txt file`,
      { file: path },
    );
  }
  const text = await readDatasetText(path);
  if (format === "jsonl") return parseJsonl(text, { file: path });
  if (format === "csv") return parseCsv(text, { file: path });
  if (format === "e2e") return parseE2e(text, { file: path });
  if (format === "text") return parseText(text);
  throw new DataError(`Cannot read dataset "${path}": unknown format "${format}"`, { file: path });
}

/**
 * Reads a dataset file's text.
 *
 * @param path The file.
 * @returns Its text.
 * @throws {DataError} If it cannot be read (missing, a folder, no permission).
 */
export async function readDatasetText(path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    throw new DataError(`Cannot read dataset "${path}": ${message}`, { file: path, cause: e });
  }
}
