/**
 * Multiple-choice items, as MMLU lays them out, for scoring by the likelihood of each answer
 * letter (`eval/multiple_choice.ts`).
 *
 * Two layouts are read:
 *
 * - **JSON Lines** (`.jsonl`, `.ndjson`), one item a line, as the rows of Hugging Face's
 *   `cais/mmlu`: `question` (string), `choices` (a list of 2 to 26 distinct strings), `answer`
 *   (the 0-based index of the right choice, its letter `"A"`..`"Z"`, or its exact text) and,
 *   optionally, `subject` (a non-empty string). Other fields are ignored; blank lines are skipped.
 * - **MMLU CSV** (`.csv`), the original release's files: no header, each row the question, the
 *   choices (four in MMLU; 2 to 26 here) and the answer letter (or the right choice's text).
 *
 * An item without a `subject` (every CSV item) belongs to the subject named after its file: the
 * file name without its extension and without a `_dev`, `_test` or `_val` suffix, so that
 * `abstract_algebra_dev.csv` and `abstract_algebra_test.csv` give the same subject. A folder is
 * read as every `.jsonl`, `.ndjson` and `.csv` file in it, in name order (MMLU's `data/test/`).
 *
 * Every mistake is a {@linkcode DataError} of one line naming the file and line.
 *
 * @module
 */

import { basename, join } from "node:path";
import { messageOf, oneLine } from "../formats/one_line.ts";
import { DataError, parseCsvRows, parseJsonlObjects } from "./readers.ts";

/** One multiple-choice question with its choices and the index of the right one. */
export interface ChoiceItem {
  /** The question as written. */
  question: string;
  /** The choices, lettered A, B, ... in this order (2 to 26, all different). */
  choices: string[];
  /** 0-based index of the right choice. */
  answer: number;
  /** The subject, e.g. `abstract_algebra`: per-subject scores and shots group by it. */
  subject: string;
  /** The file the item was read from. */
  file: string;
  /** Its 1-based line (where its row starts, for CSV). */
  line: number;
}

/** The layouts {@linkcode parseChoiceItems} reads. */
export type ChoiceFormat = "jsonl" | "csv";

/** Most choices an item may have: one a letter. */
export const MAX_CHOICES = 26;

/**
 * The letter of choice `index`: `A` for 0, `B` for 1, ...
 *
 * @param index 0 to 25.
 * @returns The capital letter.
 * @throws {RangeError} If the index has no letter.
 */
export function choiceLetter(index: number): string {
  if (!Number.isInteger(index) || index < 0 || index >= MAX_CHOICES) {
    throw new RangeError(`Choice ${index} has no letter: items have at most ${MAX_CHOICES}`);
  }
  return String.fromCharCode(65 + index);
}

/**
 * The subject a file's items belong to when they do not name one: the file name without its
 * extension and without a `_dev`, `_test` or `_val` suffix.
 *
 * @param path A file path.
 * @returns The subject, e.g. `abstract_algebra` for `data/test/abstract_algebra_test.csv`.
 *
 * @example
 * ```ts
 * import { subjectOfFile } from "./choices.ts";
 * subjectOfFile("data/dev/high_school_physics_dev.csv"); // "high_school_physics"
 * ```
 */
export function subjectOfFile(path: string): string {
  const name = basename(path).replace(/\.[^.]*$/, "");
  return name.replace(/_(dev|test|val)$/, "") || name;
}

/**
 * The layout a file name implies: `.jsonl`/`.ndjson` JSON Lines, `.csv` MMLU CSV.
 *
 * @param path A file name.
 * @returns The layout, or `undefined` for any other extension.
 */
export function choiceFormatOf(path: string): ChoiceFormat | undefined {
  const lower = path.toLowerCase();
  if (lower.endsWith(".jsonl") || lower.endsWith(".ndjson")) return "jsonl";
  if (lower.endsWith(".csv")) return "csv";
  return undefined;
}

/**
 * Parses multiple-choice items from text.
 *
 * @param text The file's contents.
 * @param options `file`: the name in messages and the subject of items without one; `format`:
 * the layout (by default from the file's extension).
 * @returns The items in file order.
 * @throws {DataError} If the layout is unknown or an item is malformed (not an object, no
 * question, fewer than 2 or more than 26 choices, a choice that is not a string or that repeats
 * another, an answer that is not one of the choices, a subject that is not a non-empty string).
 *
 * @example One item of `cais/mmlu`
 * ```ts
 * import { parseChoiceItems } from "./choices.ts";
 * const [item] = parseChoiceItems(
 *   '{"question": "2 + 2 =", "choices": ["3", "4", "5", "22"], "answer": 1, "subject": "math"}',
 *   { file: "test.jsonl" },
 * );
 * console.log(item.answer, item.subject); // 1 math
 * ```
 */
export function parseChoiceItems(
  text: string,
  options: { file?: string; format?: ChoiceFormat } = {},
): ChoiceItem[] {
  const file = options.file ?? "<text>";
  const format = options.format ?? choiceFormatOf(file);
  if (format === "jsonl") return parseJsonlItems(text, file);
  if (format === "csv") return parseCsvItems(text, file);
  throw new DataError(
    oneLine(
      `Cannot read multiple-choice items from "${file}": unknown layout; use a .jsonl file ` +
        `(cais/mmlu rows) or an MMLU .csv file`,
    ),
    { file },
  );
}

/**
 * Reads multiple-choice items from a file, or from every `.jsonl`, `.ndjson` and `.csv` file of
 * a folder in name order.
 *
 * @param path A file or a folder.
 * @returns The items, in file order.
 * @throws {DataError} If the path cannot be read, a folder holds no item file, or an item is
 * malformed (see {@linkcode parseChoiceItems}).
 *
 * @example MMLU's test files
 * ```ts
 * import { readChoiceItems } from "./choices.ts";
 * const items = await readChoiceItems("mmlu/data/test");
 * console.log(items.length, new Set(items.map((i) => i.subject)).size); // 14042 57
 * ```
 */
export async function readChoiceItems(path: string): Promise<ChoiceItem[]> {
  const cannot = (why: string) =>
    new DataError(oneLine(`Cannot read multiple-choice items "${path}": ${why}`), { file: path });
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (e) {
    throw cannot(messageOf(e));
  }
  const files: string[] = [];
  if (info.isDirectory) {
    try {
      for await (const entry of Deno.readDir(path)) {
        if (entry.isFile && choiceFormatOf(entry.name)) files.push(join(path, entry.name));
      }
    } catch (e) {
      throw cannot(messageOf(e));
    }
    if (files.length === 0) throw cannot("the folder has no .jsonl, .ndjson or .csv file");
    files.sort();
  } else files.push(path);
  const items: ChoiceItem[] = [];
  for (const file of files) {
    if (!choiceFormatOf(file)) {
      throw cannot("unknown layout; use a .jsonl file (cais/mmlu rows) or an MMLU .csv file");
    }
    let text: string;
    try {
      text = await Deno.readTextFile(file);
    } catch (e) {
      throw new DataError(`Cannot read multiple-choice items "${file}": ${messageOf(e)}`, {
        file,
      });
    }
    for (const item of parseChoiceItems(text, { file })) items.push(item);
  }
  return items;
}

function fail(file: string, line: number, why: string): never {
  throw new DataError(
    oneLine(`Invalid multiple-choice item in "${file}" line ${line}: ${why}`),
    { file, line },
  );
}

function kindOf(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  return typeof value === "object" ? "an object" : `a ${typeof value}`;
}

function shown(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function parseJsonlItems(text: string, file: string): ChoiceItem[] {
  const items: ChoiceItem[] = [];
  for (const { line, value: row } of parseJsonlObjects(text, { file })) {
    if (!("question" in row)) fail(file, line, `no "question"`);
    if (typeof row.question !== "string") {
      fail(file, line, `"question" is ${kindOf(row.question)}; expected a string`);
    }
    if (!("choices" in row)) fail(file, line, `no "choices"`);
    if (!Array.isArray(row.choices)) {
      fail(file, line, `"choices" is ${kindOf(row.choices)}; expected a list of strings`);
    }
    row.choices.forEach((c, j) => {
      if (typeof c !== "string") {
        fail(file, line, `choice ${j} is ${kindOf(c)} ${shown(c)}; expected a string`);
      }
    });
    const choices = row.choices as string[];
    checkChoices(choices, file, line);
    if (!("answer" in row)) fail(file, line, `no "answer"`);
    let subject = subjectOfFile(file);
    if ("subject" in row) {
      if (typeof row.subject !== "string" || row.subject === "") {
        fail(
          file,
          line,
          `"subject" is ${
            row.subject === "" ? "empty" : kindOf(row.subject)
          }; expected a non-empty string (or leave it out: the file's name is the subject)`,
        );
      }
      subject = row.subject;
    }
    const answer = answerIndex(row.answer, choices, { file, line, indices: true });
    items.push({ question: row.question, choices: [...choices], answer, subject, file, line });
  }
  return items;
}

function parseCsvItems(text: string, file: string): ChoiceItem[] {
  const subject = subjectOfFile(file);
  return parseCsvRows(text, { file }).map(({ line, fields }) => {
    if (fields.length < 2) {
      fail(
        file,
        line,
        "1 field; an MMLU CSV row is the question, 2 to 26 choices and the answer letter " +
          "(no header)",
      );
    }
    const choices = fields.slice(1, -1);
    checkChoices(choices, file, line);
    const answer = answerIndex(fields.at(-1), choices, { file, line, indices: false });
    return { question: fields[0], choices, answer, subject, file, line };
  });
}

function checkChoices(choices: readonly string[], file: string, line: number): void {
  if (choices.length < 2) {
    fail(
      file,
      line,
      `${choices.length} choice${choices.length === 1 ? "" : "s"}; expected 2 to 26`,
    );
  }
  if (choices.length > MAX_CHOICES) {
    fail(file, line, `${choices.length} choices; expected at most 26 (one a letter, A to Z)`);
  }
  const first = new Map<string, number>();
  choices.forEach((c, j) => {
    const k = first.get(c);
    if (k !== undefined) {
      fail(
        file,
        line,
        `choices ${choiceLetter(k)} and ${choiceLetter(j)} are both ${shown(c)}; ` +
          `every choice must differ`,
      );
    }
    first.set(c, j);
  });
}

// The answer as an index (JSON numbers only), a letter or a choice's text; a letter that is also
// the text of another choice is ambiguous.
function answerIndex(
  answer: unknown,
  choices: readonly string[],
  where: { file: string; line: number; indices: boolean },
): number {
  const { file, line } = where;
  const n = choices.length;
  const letters = `a letter A to ${choiceLetter(n - 1)}`;
  const allowed = where.indices
    ? `expected an index 0 to ${n - 1}, ${letters} or the text of a choice`
    : `expected ${letters} or the text of a choice`;
  if (typeof answer === "number") {
    if (Number.isInteger(answer) && answer >= 0 && answer < n) return answer;
    fail(file, line, `answer ${answer} is not one of its ${n} choices; ${allowed}`);
  }
  if (typeof answer !== "string") {
    fail(file, line, `answer is ${kindOf(answer)}; ${allowed}`);
  }
  const byText = choices.indexOf(answer);
  const byLetter = /^[A-Z]$/.test(answer) && answer.charCodeAt(0) - 65 < n
    ? answer.charCodeAt(0) - 65
    : -1;
  if (byLetter >= 0 && byText >= 0 && byLetter !== byText) {
    fail(
      file,
      line,
      `answer ${shown(answer)} is ambiguous: it is the letter of choice ${answer} and the text ` +
        `of choice ${choiceLetter(byText)}; give the index instead`,
    );
  }
  if (byLetter >= 0) return byLetter;
  if (byText >= 0) return byText;
  fail(file, line, `answer ${shown(answer)} is not one of its ${n} choices; ${allowed}`);
}
