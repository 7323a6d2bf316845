/**
 * A run's folder and its two logs: `metrics.jsonl`, one JSON object a line appended as training
 * goes, and `summary.json`, the final figures of every stage, replaced atomically.
 *
 * Appends are crash-safe: each call writes whole lines with one append, so a crash can leave at
 * most one partial line at the end. Resuming from a checkpoint cuts the file back to the lines of
 * steps up to the checkpoint's, so the file matches the resumed run exactly.
 *
 * @module
 */

import { join } from "node:path";
import { writeTextFileAtomic } from "../formats/atomic.ts";

/** The data split a metric was measured on. */
export type Split = "train" | "validation" | "test";

/** One line of `metrics.jsonl`: the fixed keys, then whatever else the stage records. */
export interface MetricRecord {
  /** Optimizer step the figures belong to. */
  step: number;
  /** Split the loss was measured on. */
  split: Split;
  /** Mean loss (NaN when it diverged: written as `null`, read back as NaN). */
  loss: number;
  /** Learning rate at this step. */
  lr?: number;
  /** Throughput of the step, in tokens (or images) a second. */
  tokens_per_s?: number;
  /** Extra figures (`stage`, `grad_norm`, `accuracy`, ...). */
  [key: string]: unknown;
}

/** The final figures of each stage, keyed by stage id. */
export type Summary = Record<string, Record<string, unknown>>;

const SPLITS: readonly string[] = ["train", "validation", "test"];
// Numbers that JSON writes as null when not finite; read back as NaN so they stay numbers.
const NUMERIC_KEYS = ["loss", "lr", "tokens_per_s"];

/**
 * The folder of run `name`: `out/<name>` unless `root` (a parent folder) or `dir` (the folder
 * itself) says otherwise.
 *
 * @param name The run's name: one path segment.
 * @param options `root` replaces `out`; `dir` replaces the whole path.
 * @returns The folder's path, without a trailing slash.
 *
 * @example
 * ```ts
 * import { runDir } from "./run_log.ts";
 * runDir("gpt2-nola-e2e"); // "out/gpt2-nola-e2e"
 * ```
 */
export function runDir(name: string, options: { root?: string; dir?: string } = {}): string {
  if (options.dir !== undefined) return options.dir.replace(/\/+$/, "") || "/";
  if (name === "" || name === "." || name === ".." || /[\/\\\0]/.test(name)) {
    throw new TypeError(`Invalid run name "${name}": use one folder name, without slashes`);
  }
  return join(options.root ?? "out", name);
}

/**
 * The open logs of one run. Open with {@linkcode RunLog.open}; close when the run ends.
 *
 * @example Training loop with resume
 * ```ts
 * import { RunLog, runDir } from "./run_log.ts";
 * const log = await RunLog.open(runDir("demo"), { resumeStep: undefined });
 * await log.append({ step: 1, split: "train", loss: 3.1, lr: 1e-3, tokens_per_s: 9000 });
 * await log.recordStage("finetune", { final_train_loss: 3.1, steps: 1 });
 * log.close();
 * ```
 */
export class RunLog implements Disposable {
  /** The run folder. */
  readonly dir: string;
  /** `<dir>/metrics.jsonl`. */
  readonly metricsPath: string;
  /** `<dir>/summary.json`. */
  readonly summaryPath: string;
  #file: Deno.FsFile | undefined;
  #summary: Summary;

  private constructor(dir: string, file: Deno.FsFile, summary: Summary) {
    this.dir = dir;
    this.metricsPath = join(dir, "metrics.jsonl");
    this.summaryPath = join(dir, "summary.json");
    this.#file = file;
    this.#summary = summary;
  }

  /**
   * Creates the run folder if needed and opens its metrics for appending.
   *
   * A fresh run (`resumeStep` undefined) starts from an empty `metrics.jsonl` and summary. A
   * resumed run keeps the complete lines whose step is at most `resumeStep`, drops the rest
   * (including a partial last line left by a crash), and keeps the summary of earlier stages.
   *
   * Append a step's metrics before saving its checkpoint: then every checkpoint's step has its
   * lines on disk.
   *
   * @param dir The run folder (see {@linkcode runDir}).
   * @param options `resumeStep`: the step of the checkpoint being resumed.
   * @returns The open log.
   */
  static async open(dir: string, options: { resumeStep?: number } = {}): Promise<RunLog> {
    await Deno.mkdir(dir, { recursive: true });
    const metricsPath = join(dir, "metrics.jsonl");
    const summaryPath = join(dir, "summary.json");
    let summary: Summary = {};
    if (options.resumeStep === undefined) {
      await writeTextFileAtomic(metricsPath, "");
      await Deno.remove(summaryPath).catch((e) => {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      });
    } else {
      await truncateMetrics(metricsPath, options.resumeStep);
      summary = await readSummary(summaryPath).catch((e) => {
        if (e instanceof Deno.errors.NotFound) return {};
        throw e;
      });
    }
    const file = await Deno.open(metricsPath, { append: true, create: true });
    return new RunLog(dir, file, summary);
  }

  /**
   * Appends records as whole lines, in one write.
   *
   * @param records One record or several (a train line and a validation line of one step).
   * @returns Resolves once the bytes are handed to the OS.
   */
  async append(records: MetricRecord | readonly MetricRecord[]): Promise<void> {
    if (!this.#file) throw new Error(`Cannot append to ${this.metricsPath}: the log is closed`);
    const list = Array.isArray(records) ? records : [records as MetricRecord];
    let text = "";
    for (const record of list) {
      if (!Number.isInteger(record.step) || record.step < 0) {
        throw new TypeError(
          `Invalid metric record ${JSON.stringify(record)}: step must be an integer >= 0`,
        );
      }
      if (!SPLITS.includes(record.split)) {
        throw new TypeError(
          `Invalid metric record ${JSON.stringify(record)}: split must be one of ` +
            SPLITS.join(", "),
        );
      }
      text += `${JSON.stringify(record)}\n`;
    }
    const data = new TextEncoder().encode(text);
    let written = 0;
    while (written < data.length) written += await this.#file.write(data.subarray(written));
  }

  /**
   * Cuts `metrics.jsonl` back to the complete lines whose step is at most `step`, as opening with
   * `resumeStep` does: for a run that resumes from an older checkpoint than the log was opened
   * for (the newest one was damaged).
   *
   * @param step The step of the checkpoint the run resumes from.
   * @returns Resolves once the file is cut and open for appending again.
   */
  async rewind(step: number): Promise<void> {
    if (!this.#file) throw new Error(`Cannot rewind ${this.metricsPath}: the log is closed`);
    this.#file.close();
    this.#file = undefined;
    await truncateMetrics(this.metricsPath, step);
    this.#file = await Deno.open(this.metricsPath, { append: true, create: true });
  }

  /** The summary so far (a copy). */
  get summary(): Summary {
    return structuredClone(this.#summary);
  }

  /**
   * Sets the final figures of stage `id` and rewrites `summary.json` atomically.
   *
   * @param id The stage id (key in the summary).
   * @param figures A plain object of JSON values.
   * @returns Resolves once the file is replaced.
   */
  async recordStage(id: string, figures: Record<string, unknown>): Promise<void> {
    this.#summary[id] = structuredClone(figures);
    await writeSummary(this.summaryPath, this.#summary);
  }

  /** Flushes the metrics to disk (call before a checkpoint for the strongest guarantee). */
  async sync(): Promise<void> {
    await this.#file?.syncData();
  }

  /** Closes the metrics file; the log cannot be appended to afterwards. */
  close(): void {
    this.#file?.close();
    this.#file = undefined;
  }

  /** Same as {@linkcode RunLog.close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Reads `metrics.jsonl`. A partial last line (a crash mid-append, or a writer still writing) is
 * ignored; a broken line anywhere else is an error.
 *
 * @param path The file.
 * @returns The records in file order, `null` numbers read as NaN.
 *
 * @example
 * ```ts
 * import { readMetrics } from "./run_log.ts";
 * const rows = await readMetrics("out/demo/metrics.jsonl");
 * const validation = rows.filter((r) => r.split === "validation");
 * ```
 */
export async function readMetrics(path: string): Promise<MetricRecord[]> {
  return parseMetrics(await Deno.readTextFile(path), path).records;
}

/**
 * Cuts `metrics.jsonl` back to the complete lines whose step is at most `step`, atomically. A
 * missing file is created empty.
 *
 * @param path The file.
 * @param step The checkpoint's step.
 * @returns How many records were kept and dropped (a partial line counts as dropped).
 */
export async function truncateMetrics(
  path: string,
  step: number,
): Promise<{ kept: number; dropped: number }> {
  let text = "";
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const { records, lines, partial } = parseMetrics(text, path);
  const keep = lines.filter((_, i) => records[i].step <= step);
  await writeTextFileAtomic(path, keep.map((line) => `${line}\n`).join(""));
  return { kept: keep.length, dropped: lines.length - keep.length + (partial ? 1 : 0) };
}

/**
 * Writes `summary.json` atomically, keys of each stage in the order given.
 *
 * @param path The file.
 * @param summary The final figures keyed by stage id.
 * @returns Resolves once the file is replaced.
 */
export function writeSummary(path: string, summary: Summary): Promise<void> {
  return writeTextFileAtomic(path, `${JSON.stringify(summary, null, 2)}\n`);
}

/**
 * Reads `summary.json`.
 *
 * @param path The file.
 * @returns The summary.
 */
export async function readSummary(path: string): Promise<Summary> {
  const text = await Deno.readTextFile(path);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new SyntaxError(`Cannot parse ${path}: ${(e as Error).message}`);
  }
  if (!isPlainObject(value) || !Object.values(value).every(isPlainObject)) {
    throw new SyntaxError(`Invalid ${path}: expected an object of objects keyed by stage id`);
  }
  return value as Summary;
}

function parseMetrics(
  text: string,
  path: string,
): { records: MetricRecord[]; lines: string[]; partial: boolean } {
  const lines = text.split("\n");
  // The text after the last newline is either empty or a line whose newline never landed.
  const partial = lines.pop() !== "";
  const records: MetricRecord[] = [];
  const kept: string[] = [];
  lines.forEach((line, i) => {
    if (line.trim() === "") return;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (e) {
      throw new SyntaxError(`Cannot parse ${path} line ${i + 1}: ${(e as Error).message}`);
    }
    if (!isPlainObject(value) || typeof value.step !== "number") {
      throw new SyntaxError(`Invalid ${path} line ${i + 1}: expected an object with a step`);
    }
    for (const key of NUMERIC_KEYS) if (value[key] === null) value[key] = NaN;
    records.push(value as MetricRecord);
    kept.push(line);
  });
  return { records, lines: kept, partial };
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
