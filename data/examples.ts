/**
 * Rendered prompt/completion pairs to token rows, and train/validation/test splits.
 *
 * **Examples.** `tokens = encode(prompt) ++ encode(completion) ++ [eos]` (the end-of-text token is
 * optional, on by default), encoded separately so the prompt/completion boundary is exact.
 * The example's `mask` is per token: 0 over the prompt, 1 over the completion and the
 * end-of-text token. Truncation keeps the start (the prompt) and drops the end; the report counts
 * the tokens dropped, the examples affected, and the examples left with no completion token,
 * which are removed since they would teach nothing.
 *
 * **Rows.** A {@linkcode Row} is what one row of a micro-batch holds: at most `T` tokens and a
 * target mask per position: `mask[p]` says whether predicting `tokens[p + 1]` counts, that is the
 * example mask of token `p + 1` when tokens `p` and `p + 1` belong to the same example, else 0.
 * So the first token of an example is never a target and nothing is learnt across examples.
 * Without packing each example is one row. With packing, examples are placed best-fit (in input
 * order, each into the open row with the least room that still holds it, a new row when none does)
 * so no example is split across rows unless it is longer than `T`; an example that long (possible
 * only without truncation) is cut into chunks of `T`. Packed examples share a row's causal
 * attention (no block-diagonal mask), as in most packing implementations; the report gives the
 * fill ratio, tokens over `rows * T`.
 *
 * **Splits.** From separate files, or from one file by ratio: the distinct split keys (a field
 * such as `mr`, so all references of one meaning land in one split; by default each record is its
 * own key) are ordered by {@linkcode permutation}`(keys, seed, -1)`; the first
 * `keys - round(keys * validation) - round(keys * test)` go to train, the next
 * `round(keys * validation)` to validation, the rest to test. Records keep their file order within
 * a split.
 *
 * @module
 */

import { permutation } from "./random.ts";
import { type DataFormat, type DataRecord, readRecords } from "./readers.ts";
import { type RenderedExample, renderExamples, type Templates } from "./templates.ts";

/** What tokenization needs of a tokenizer (models/tokenizer.ts's `Tokenizer` has it). */
export interface TextEncoder {
  /** Text to ids, nothing added around it. */
  encode(text: string): number[];
  /** The end-of-text id. */
  readonly eosId: number;
}

/** One tokenized example. */
export interface Example {
  /** Prompt, completion and (optionally) end-of-text ids. */
  tokens: Uint32Array;
  /** Per token: 1 for completion and end-of-text tokens, 0 for the prompt. */
  mask: Uint8Array;
  /** Prompt tokens kept (after truncation). */
  promptLength: number;
}

/** One row of a micro-batch: tokens and a target mask per position. */
export interface Row {
  /** At most `T` token ids. */
  tokens: Uint32Array;
  /** `mask[p]`: 1 if predicting `tokens[p + 1]` counts (same example, completion token). */
  mask: Uint8Array;
  /** The examples (or chunks of one) the row holds, in order. */
  segments: { example: number; start: number; length: number }[];
}

/** What truncation did. */
export interface TruncationReport {
  /** Examples tokenized. */
  examples: number;
  /** Examples that lost tokens. */
  truncated: number;
  /** Tokens dropped, in all. */
  droppedTokens: number;
  /** Of those, completion and end-of-text tokens (the ones the loss would have seen). */
  droppedCompletionTokens: number;
  /** Examples left with no completion token, and so removed. */
  removed: number;
}

/** How full the rows are. */
export interface PackingReport {
  /** Rows made. */
  rows: number;
  /** Tokens in them. */
  tokens: number;
  /** Targets that count (sum of the row masks). */
  targets: number;
  /** `tokens / (rows * T)`. */
  fill: number;
  /** Examples longer than `T` that were cut into chunks. */
  split: number;
}

/**
 * Tokenizes rendered examples, truncating each to `maxLength` tokens.
 *
 * @param pairs Rendered prompts and completions.
 * @param encoder The tokenizer.
 * @param options `maxLength`: keep at most this many tokens of each example (no limit when
 * absent); `eos`: append the end-of-text token (default true).
 * @returns The examples (without the removed ones) and the truncation report.
 *
 * @example
 * ```ts
 * import { Tokenizer } from "../models/tokenizer.ts";
 * import { tokenizeExamples } from "./examples.ts";
 * const tok = await Tokenizer.load("fixtures/tiny-gpt2");
 * const { examples, report } = tokenizeExamples([{ prompt: "a =", completion: " b" }], tok, {
 *   maxLength: 64,
 * });
 * ```
 */
export function tokenizeExamples(
  pairs: readonly RenderedExample[],
  encoder: TextEncoder,
  options: { maxLength?: number; eos?: boolean } = {},
): { examples: Example[]; report: TruncationReport } {
  const maxLength = options.maxLength ?? Infinity;
  if (maxLength !== Infinity && (!Number.isInteger(maxLength) || maxLength < 2)) {
    throw new RangeError(`Invalid maxLength ${maxLength}: expected an integer of at least 2`);
  }
  const eos = options.eos ?? true;
  const report: TruncationReport = {
    examples: pairs.length,
    truncated: 0,
    droppedTokens: 0,
    droppedCompletionTokens: 0,
    removed: 0,
  };
  const examples: Example[] = [];
  for (const pair of pairs) {
    const prompt = encoder.encode(pair.prompt);
    const completion = encoder.encode(pair.completion);
    if (eos) completion.push(encoder.eosId);
    const total = prompt.length + completion.length;
    const kept = Math.min(total, maxLength);
    const promptLength = Math.min(prompt.length, kept);
    if (kept < total) {
      report.truncated++;
      report.droppedTokens += total - kept;
      report.droppedCompletionTokens += completion.length - (kept - promptLength);
    }
    // A completion token at index 0 is never a target (nothing precedes it), so at least one
    // completion token past the first position must remain.
    if (kept - promptLength === 0 || (promptLength === 0 && kept < 2)) {
      report.removed++;
      continue;
    }
    const tokens = new Uint32Array(kept);
    tokens.set(prompt.slice(0, promptLength));
    tokens.set(completion.slice(0, kept - promptLength), promptLength);
    const mask = new Uint8Array(kept).fill(1, promptLength);
    examples.push({ tokens, mask, promptLength });
  }
  return { examples, report };
}

/**
 * Lays examples out in rows of at most `T` tokens, one per row or packed.
 *
 * @param examples Tokenized examples.
 * @param options `T`: tokens per row; `pack`: pack several examples into a row (default false).
 * @returns The rows and how full they are.
 */
export function makeRows(
  examples: readonly Example[],
  options: { T: number; pack?: boolean },
): { rows: Row[]; report: PackingReport } {
  const { T } = options;
  if (!Number.isInteger(T) || T < 2) {
    throw new RangeError(`Invalid T ${T}: expected an integer of at least 2`);
  }
  // Pieces: whole examples, or chunks of T for examples longer than T.
  const pieces: { example: number; start: number; length: number }[] = [];
  let split = 0;
  examples.forEach((ex, example) => {
    const n = ex.tokens.length;
    if (n > T) split++;
    for (let start = 0; start < n; start += T) {
      pieces.push({ example, start, length: Math.min(T, n - start) });
    }
  });
  const bins: Row["segments"][] = [];
  if (options.pack) {
    // byRoom[r]: rows with exactly r free positions (r > 0), most recently changed last.
    const byRoom: number[][] = Array.from({ length: T + 1 }, () => []);
    for (const piece of pieces) {
      let room = piece.length;
      while (room <= T && byRoom[room].length === 0) room++;
      let bin: number;
      if (room > T) {
        bin = bins.length;
        bins.push([]);
        room = T;
      } else {
        bin = byRoom[room].pop()!;
      }
      bins[bin].push(piece);
      const left = room - piece.length;
      if (left > 0) byRoom[left].push(bin);
    }
  } else {
    for (const piece of pieces) bins.push([piece]);
  }
  let tokens = 0;
  let targets = 0;
  const rows = bins.map((segments): Row => {
    const length = segments.reduce((sum, s) => sum + s.length, 0);
    const row: Row = { tokens: new Uint32Array(length), mask: new Uint8Array(length), segments };
    let at = 0;
    for (const s of segments) {
      const ex = examples[s.example];
      row.tokens.set(ex.tokens.subarray(s.start, s.start + s.length), at);
      // Position at + p predicts token p + 1 of the same segment; the segment's last does not.
      row.mask.set(ex.mask.subarray(s.start + 1, s.start + s.length), at);
      at += s.length;
    }
    tokens += length;
    for (const m of row.mask) targets += m;
    return row;
  });
  const fill = rows.length === 0 ? 0 : tokens / (rows.length * T);
  return { rows, report: { rows: rows.length, tokens, targets, fill, split } };
}

/**
 * Records to rows in one go: render, tokenize (truncated to `T` unless `truncate: false`), lay out.
 *
 * @param records The records of one split.
 * @param options `templates`, `encoder`, `T`; `pack` (default false), `eos` (default true),
 * `truncate` (default true; when false, examples longer than `T` are cut into chunks).
 * @returns The rows and both reports.
 * @throws {TemplateError} If a record lacks a field a template uses.
 *
 * @example
 * ```ts
 * import { Tokenizer } from "../models/tokenizer.ts";
 * import { buildRows } from "./examples.ts";
 * import { readRecords } from "./readers.ts";
 * const records = await readRecords("fixtures/data-to-text/train.csv", { format: "e2e" });
 * const { rows, truncation, packing } = buildRows(records, {
 *   templates: { prompt: "{{ mr }}\n", completion: " {{ ref }}" },
 *   encoder: await Tokenizer.load("fixtures/tiny-gpt2"),
 *   T: 256,
 *   pack: true,
 * });
 * ```
 */
export function buildRows(
  records: readonly DataRecord[],
  options: {
    templates: Templates;
    encoder: TextEncoder;
    T: number;
    pack?: boolean;
    eos?: boolean;
    truncate?: boolean;
  },
): { rows: Row[]; truncation: TruncationReport; packing: PackingReport } {
  const { examples, report: truncation } = tokenizeExamples(
    renderExamples(records, options.templates),
    options.encoder,
    { maxLength: options.truncate === false ? undefined : options.T, eos: options.eos },
  );
  const { rows, report: packing } = makeRows(examples, { T: options.T, pack: options.pack });
  return { rows, truncation, packing };
}

/** Shares of a dataset, summing to 1. */
export interface SplitRatios {
  /** Share for training. */
  train: number;
  /** Share for validation (default 0). */
  validation?: number;
  /** Share for test (default 0). */
  test?: number;
}

/** A dataset in three parts. */
export interface Splits<T> {
  /** Training items. */
  train: T[];
  /** Validation items. */
  validation: T[];
  /** Test items. */
  test: T[];
}

/**
 * Splits items by ratio, deterministically from a seed; items with the same key stay together.
 *
 * @param items The items.
 * @param options `ratios`; `seed`; `key`: the grouping key of an item (default: its index).
 * @returns Disjoint splits covering every item, each in input order.
 * @throws {RangeError} If a ratio is negative or they do not sum to 1.
 *
 * @example All references of an mr in one split
 * ```ts
 * import { splitByRatio } from "./examples.ts";
 * const rows = [{ mr: "a", ref: "1" }, { mr: "a", ref: "2" }, { mr: "b", ref: "3" }];
 * splitByRatio(rows, { ratios: { train: 0.5, test: 0.5 }, seed: 7, key: (r) => r.mr });
 * ```
 */
export function splitByRatio<T>(
  items: readonly T[],
  options: { ratios: SplitRatios; seed: number; key?: (item: T, index: number) => unknown },
): Splits<T> {
  const { train, validation = 0, test = 0 } = options.ratios;
  if (
    ![train, validation, test].every((r) => Number.isFinite(r) && r >= 0) ||
    Math.abs(train + validation + test - 1) > 1e-9
  ) {
    throw new RangeError(
      `Invalid split ratios ${
        JSON.stringify(options.ratios)
      }: expected non-negative shares summing to 1`,
    );
  }
  const keyOf = options.key ?? ((_: T, i: number) => i);
  const keyIndex = new Map<unknown, number>();
  const itemKeys = items.map((item, i) => {
    const k = keyOf(item, i);
    let index = keyIndex.get(k);
    if (index === undefined) {
      index = keyIndex.size;
      keyIndex.set(k, index);
    }
    return index;
  });
  const n = keyIndex.size;
  const nValidation = Math.round(n * validation);
  const nTest = Math.min(Math.round(n * test), n - nValidation);
  const nTrain = n - nValidation - nTest;
  const splitOfKey = new Uint8Array(n);
  permutation(n, options.seed, -1).forEach((key, rank) => {
    splitOfKey[key] = rank < nTrain ? 0 : rank < nTrain + nValidation ? 1 : 2;
  });
  const out: Splits<T> = { train: [], validation: [], test: [] };
  const parts = [out.train, out.validation, out.test];
  items.forEach((item, i) => parts[splitOfKey[itemKeys[i]]].push(item));
  return out;
}

/** Where the splits come from: separate files, or one file split by ratio. */
export type SplitSource =
  | { train: string; validation?: string; test?: string; format?: DataFormat }
  | { file: string; ratios: SplitRatios; seed: number; key?: string; format?: DataFormat };

/**
 * Reads the records of each split.
 *
 * @param source Separate files (a missing one gives an empty split), or one file, ratios, a seed
 * and a grouping field (`key`; for the `e2e` format `mr` by default, so one meaning's references
 * never straddle splits).
 * @returns The records of each split.
 * @throws {DataError} If a file cannot be read.
 */
export async function loadSplits(source: SplitSource): Promise<Splits<DataRecord>> {
  const options = { format: source.format };
  if ("file" in source) {
    const records = await readRecords(source.file, options);
    const field = source.key ?? (source.format === "e2e" ? "mr" : undefined);
    return splitByRatio(records, {
      ratios: source.ratios,
      seed: source.seed,
      key: field === undefined ? undefined : (r, i) => field in r ? `=${r[field]}` : i,
    });
  }
  return {
    train: await readRecords(source.train, options),
    validation: source.validation ? await readRecords(source.validation, options) : [],
    test: source.test ? await readRecords(source.test, options) : [],
  };
}
