/**
 * Examples to token rows, and train/validation/test splits.
 *
 * **Examples.** An example is a list of text {@linkcode Segment}s, each trained (the loss is taken
 * on its tokens) or not: a prompt and its completion, an Alpaca prompt and its response, or a
 * conversation rendered by a chat template with its assistant turns trained (data/instructions.ts).
 * The whole text is tokenized once, as the model reads it at inference:
 * `tokens = encodePrompt(text) ++ [eos]` (`encodePrompt` puts the beginning-of-text token first
 * where the tokenizer adds one; the end-of-text token is optional, on by default, and trained).
 * Encoding the parts apart would tokenize differently where a token can span a boundary, and with
 * SentencePiece-style files (Llama 2, Mistral) it would put a `▁` (space) before the completion.
 * Each boundary between segments is found as in the original Alpaca training script, generalised
 * to several segments: the text up to the boundary is encoded alone, and the boundary's token
 * index is the length of the common prefix of those ids and the whole text's ids. Tokens from a
 * boundary on take the mask of the segment starting there, so a token straddling a boundary
 * belongs to the later segment (with byte-level BPE, a completion starting with a newline after a
 * prompt ending with one can share that token; the loss then covers the prompt's newline too).
 *
 * The example's `mask` is per token: 1 on trained segments and the end-of-text token, 0 elsewhere.
 * Truncation keeps the start and drops the end; the report counts the tokens dropped, the
 * examples affected, and the examples left with no trained token past the first position, which
 * are removed since they would teach nothing.
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
  /**
   * A text to ids as the model reads it from the start: the beginning-of-text token first where
   * the tokenizer adds one and the text does not already start with it. Absent: `encode`.
   */
  encodePrompt?(text: string): number[];
  /** The end-of-text id. */
  readonly eosId: number;
}

/** A piece of an example's text. */
export interface Segment {
  /** The text. */
  text: string;
  /** Whether the loss is taken on its tokens. */
  train: boolean;
}

/** One tokenized example. */
export interface Example {
  /** The text's ids and (optionally) the end-of-text id. */
  tokens: Uint32Array;
  /** Per token: 1 on trained segments and the end-of-text token, 0 elsewhere. */
  mask: Uint8Array;
  /** Tokens before the first trained one (after truncation): the prompt's length. */
  promptLength: number;
}

/** One row of a micro-batch: tokens and a target mask per position. */
export interface Row {
  /** At most `T` token ids. */
  tokens: Uint32Array;
  /** `mask[p]`: 1 if predicting `tokens[p + 1]` counts (same example, trained token). */
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
  /** Of those, trained tokens (completion and end-of-text: the ones the loss would have seen). */
  droppedCompletionTokens: number;
  /** Examples left with no trained token past the first position, and so removed. */
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

function commonPrefix(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

/**
 * Tokenizes one example's segments: the whole text at once, each boundary's token index from
 * the common prefix of the ids of the text before it and the whole text's ids.
 *
 * @param segments The example's text, in order; empty segments are allowed.
 * @param encoder The tokenizer (its `encodePrompt` when it has one).
 * @param options `eos`: append the end-of-text id, trained (default true); give it for formats
 * whose text ends with a trained segment.
 * @returns `tokens` (`encodePrompt(text)`, then the end-of-text id) and the per-token `mask`.
 *
 * @example A prompt and its completion
 * ```ts
 * import { encodeSegments } from "./examples.ts";
 * const chars = { eosId: 0, encode: (s: string) => [...s].map((c) => c.charCodeAt(0)) };
 * encodeSegments([{ text: "ab", train: false }, { text: "c", train: true }], chars);
 * // { tokens: [97, 98, 99, 0], mask: Uint8Array [0, 0, 1, 1] }
 * ```
 */
export function encodeSegments(
  segments: readonly Segment[],
  encoder: TextEncoder,
  options: { eos?: boolean } = {},
): { tokens: number[]; mask: Uint8Array } {
  const start = (text: string) =>
    encoder.encodePrompt ? encoder.encodePrompt(text) : encoder.encode(text);
  const text = segments.map((s) => s.text).join("");
  const tokens = start(text);
  const eos = options.eos ?? true;
  const mask = new Uint8Array(tokens.length + (eos ? 1 : 0));
  // Runs of segments with the same flag share a mask: only a change of flag needs a boundary.
  let offset = 0;
  let from = 0;
  let train = segments.find((s) => s.text !== "")?.train ?? false;
  for (const segment of segments) {
    if (segment.train !== train && segment.text !== "") {
      const to = Math.max(from, commonPrefix(start(text.slice(0, offset)), tokens));
      if (train) mask.fill(1, from, to);
      from = to;
      train = segment.train;
    }
    offset += segment.text.length;
  }
  if (train) mask.fill(1, from, tokens.length);
  if (eos) {
    tokens.push(encoder.eosId);
    mask[tokens.length - 1] = 1;
  }
  return { tokens, mask };
}

/**
 * Tokenizes examples given as segments, truncating each to `maxLength` tokens.
 *
 * @param examples Each example's segments.
 * @param encoder The tokenizer.
 * @param options `maxLength`: keep at most this many tokens of each example (no limit when
 * absent); `eos`: append the end-of-text token, trained (default true).
 * @returns The examples (without the removed ones) and the truncation report.
 */
export function tokenizeSegments(
  examples: readonly (readonly Segment[])[],
  encoder: TextEncoder,
  options: { maxLength?: number; eos?: boolean } = {},
): { examples: Example[]; report: TruncationReport } {
  const maxLength = options.maxLength ?? Infinity;
  if (maxLength !== Infinity && (!Number.isInteger(maxLength) || maxLength < 2)) {
    throw new RangeError(`Invalid maxLength ${maxLength}: expected an integer of at least 2`);
  }
  const report: TruncationReport = {
    examples: examples.length,
    truncated: 0,
    droppedTokens: 0,
    droppedCompletionTokens: 0,
    removed: 0,
  };
  const out: Example[] = [];
  for (const segments of examples) {
    const { tokens: all, mask: allMask } = encodeSegments(segments, encoder, options);
    const kept = Math.min(all.length, maxLength);
    if (kept < all.length) {
      report.truncated++;
      report.droppedTokens += all.length - kept;
      for (let i = kept; i < all.length; i++) report.droppedCompletionTokens += allMask[i];
    }
    const mask = allMask.slice(0, kept);
    // A trained token at index 0 is never a target (nothing precedes it).
    if (mask.indexOf(1, 1) < 0) {
      report.removed++;
      continue;
    }
    const first = mask.indexOf(1);
    out.push({ tokens: Uint32Array.from(all.slice(0, kept)), mask, promptLength: first });
  }
  return { examples: out, report };
}

/**
 * Tokenizes rendered prompt/completion pairs (each two segments: the prompt untrained, the
 * completion trained), truncating each to `maxLength` tokens.
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
  return tokenizeSegments(pairSegments(pairs), encoder, options);
}

function pairSegments(pairs: readonly RenderedExample[]): Segment[][] {
  return pairs.map((p) => [{ text: p.prompt, train: false }, { text: p.completion, train: true }]);
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
  options: RowOptions & { templates: Templates },
): { rows: Row[]; truncation: TruncationReport; packing: PackingReport } {
  return buildSegmentRows(pairSegments(renderExamples(records, options.templates)), options);
}

/** How {@linkcode buildRows} and {@linkcode buildSegmentRows} tokenize and lay out. */
export interface RowOptions {
  /** The tokenizer. */
  encoder: TextEncoder;
  /** Tokens per row. */
  T: number;
  /** Pack several examples into a row (default false). */
  pack?: boolean;
  /** Append the end-of-text token, trained (default true). */
  eos?: boolean;
  /** Cut examples to `T` (default true; false: examples longer than `T` become chunks). */
  truncate?: boolean;
}

/**
 * Examples given as segments to rows: tokenize (truncated to `T` unless `truncate: false`) and
 * lay out.
 *
 * @param examples Each example's segments (data/instructions.ts makes them for Alpaca and chat).
 * @param options `encoder`, `T`; `pack`, `eos`, `truncate` as in {@linkcode buildRows}.
 * @returns The rows and both reports.
 */
export function buildSegmentRows(
  examples: readonly (readonly Segment[])[],
  options: RowOptions,
): { rows: Row[]; truncation: TruncationReport; packing: PackingReport } {
  const { examples: tokenized, report: truncation } = tokenizeSegments(examples, options.encoder, {
    maxLength: options.truncate === false ? undefined : options.T,
    eos: options.eos,
  });
  const { rows, report: packing } = makeRows(tokenized, { T: options.T, pack: options.pack });
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

/** How {@linkcode loadSplits} reads items of a kind other than flat records. */
export interface SplitReader<T> {
  /** Reads one file's items. */
  read(path: string): Promise<T[]>;
  /** An item's value of a field, `undefined` when it has none (for the split key). */
  field(item: T, name: string): unknown;
}

/**
 * Reads the records of each split.
 *
 * @param source Separate files (a missing one gives an empty split), or one file, ratios, a seed
 * and a grouping field (`key`; for the `e2e` format `mr` by default, so one meaning's references
 * never straddle splits).
 * @returns The records of each split, read by {@linkcode readRecords} in `source.format`.
 * @throws {DataError} If a file cannot be read.
 */
export function loadSplits(source: SplitSource): Promise<Splits<DataRecord>>;
/**
 * Reads the items of each split with a reader of their own (Alpaca or chat records, say).
 *
 * @param source Separate files, or one file, ratios, a seed and a grouping field (`key`).
 * @param reader How to read a file, and a field of an item for the split key.
 * @returns The items of each split.
 * @throws {DataError} If a file cannot be read.
 *
 * @example Alpaca records split by ratio
 * ```ts
 * import { loadSplits } from "./examples.ts";
 * import { type InstructionRecord, readInstructions } from "./instructions.ts";
 * const splits = await loadSplits<InstructionRecord>(
 *   { file: "alpaca.jsonl", ratios: { train: 0.9, test: 0.1 }, seed: 0 },
 *   { read: (path) => readInstructions(path, "alpaca"), field: (r, name) => r.fields[name] },
 * );
 * ```
 */
export function loadSplits<T>(source: SplitSource, reader: SplitReader<T>): Promise<Splits<T>>;
export async function loadSplits<T>(
  source: SplitSource,
  reader?: SplitReader<T>,
): Promise<Splits<T | DataRecord>> {
  const records: SplitReader<T | DataRecord> = reader as SplitReader<T | DataRecord> ?? {
    read: (path) => readRecords(path, { format: source.format }),
    field: (r, name) => name in (r as DataRecord) ? (r as DataRecord)[name] : undefined,
  };
  if ("file" in source) {
    const items = await records.read(source.file);
    const field = source.key ?? (source.format === "e2e" ? "mr" : undefined);
    return splitByRatio(items, {
      ratios: source.ratios,
      seed: source.seed,
      key: field === undefined ? undefined : (item, i) => {
        const value = records.field(item, field);
        if (value === undefined) return i;
        return `=${typeof value === "string" ? value : JSON.stringify(value)}`;
      },
    });
  }
  return {
    train: await records.read(source.train),
    validation: source.validation ? await records.read(source.validation) : [],
    test: source.test ? await records.read(source.test) : [],
  };
}
