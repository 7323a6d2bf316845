/**
 * The data stage: read, render, tokenize and lay out rows of each split.
 *
 * Prompt/completion formats (`jsonl`, `csv`, `e2e`, `text`) render each record through the
 * stage's `prompt` and `completion` templates; the instruction formats (`alpaca`, `chat`) make
 * their own segments (data/instructions.ts), chat through the tokenizer's default chat template.
 * Both are tokenized by the same mechanism (data/examples.ts: the whole text at once).
 *
 * @module
 */

import { dirname } from "node:path";
import {
  buildRows,
  buildSegmentRows,
  loadSplits,
  type PackingReport,
  type Row,
  type SplitSource,
  type TruncationReport,
} from "../data/examples.ts";
import {
  type ChatRenderer,
  INSTRUCTION_FORMATS,
  instructionExample,
  type InstructionFormat,
  type InstructionRecord,
  instructionSegments,
  readInstructions,
} from "../data/instructions.ts";
import type { DataRecord } from "../data/readers.ts";
import { CompiledTemplate } from "../data/templates.ts";
import type { GenerationExample } from "../eval/evaluate.ts";
import type { Tokenizer } from "../models/tokenizer.ts";
import type { DataStage, SplitName } from "./schema.ts";
import {
  inputPath,
  need,
  type RunState,
  type SplitData,
  stageError,
  type StageRunner,
} from "./state.ts";

const SPLITS: SplitName[] = ["train", "validation", "test"];

/** One split, built: rows, evaluation examples and the reports. */
interface BuiltSplit {
  records: number;
  rows: Row[];
  examples: GenerationExample[];
  truncation: TruncationReport;
  packing: PackingReport;
}

/**
 * Prompts with every reference written for them: examples are grouped by their prompt, so an
 * E2E meaning representation with three references is one example with three references.
 */
function grouped(pairs: Iterable<{ prompt: string; ref: string }>): GenerationExample[] {
  const groups = new Map<string, string[]>();
  for (const { prompt, ref } of pairs) {
    const refs = groups.get(prompt) ?? [];
    refs.push(ref);
    groups.set(prompt, refs);
  }
  return [...groups].map(([prompt, refs]) => ({ prompt, refs }));
}

function splitSource(stage: DataStage, state: RunState): SplitSource {
  const format = stage.format as SplitSource["format"];
  return stage.file
    ? {
      file: inputPath(state, stage.file),
      ratios: stage.split!,
      seed: stage.split!.seed,
      key: stage.split!.key,
      format,
    }
    : {
      train: inputPath(state, stage.train!),
      validation: stage.validation ? inputPath(state, stage.validation) : undefined,
      test: stage.test ? inputPath(state, stage.test) : undefined,
      format,
    };
}

/** The prompt/completion formats: records rendered through the stage's templates. */
async function templateSplits(
  stage: DataStage,
  state: RunState,
  tokenizer: Tokenizer,
): Promise<Record<SplitName, BuiltSplit>> {
  const records = await loadSplits(splitSource(stage, state));
  const templates = { prompt: stage.prompt!, completion: stage.completion! };
  const compiled = {
    prompt: new CompiledTemplate(templates.prompt, { name: "prompt" }),
    completion: new CompiledTemplate(templates.completion, { name: "completion" }),
  };
  const pairs = (split: readonly DataRecord[]) =>
    split.map((record, index) => ({
      prompt: compiled.prompt.render(record, { index }),
      ref: compiled.completion.render(record, { index }).trim(),
    }));
  const out = {} as Record<SplitName, BuiltSplit>;
  for (const split of SPLITS) {
    const built = buildRows(records[split], { ...rowOptions(stage, tokenizer), templates });
    const examples = split === "train" ? [] : grouped(pairs(records[split]));
    out[split] = { records: records[split].length, examples, ...built };
  }
  return out;
}

/** The chat template a `chat` stage renders with, or a one-line error saying how to give one. */
function chatTemplate(state: RunState, tokenizer: Tokenizer): ChatRenderer {
  const template = tokenizer.chatTemplates.get("default");
  if (template !== undefined) return template;
  const folder = dirname(tokenizer.path);
  const names = [...tokenizer.chatTemplates.keys()].map((n) => JSON.stringify(n));
  throw stageError(
    state,
    "format",
    names.length > 0
      ? `format "chat" needs the default chat template, and the tokenizer in "${folder}" ` +
        `has only ${names.join(", ")}`
      : `format "chat" needs a chat template, and the tokenizer folder "${folder}" has no ` +
        `chat_template`,
    'add a chat_template.jinja beside tokenizer.json (or a "chat_template" key in ' +
      'tokenizer_config.json), or use "format: alpaca"',
  );
}

/** The instruction formats: segments from data/instructions.ts. */
async function instructionSplits(
  stage: DataStage,
  state: RunState,
  tokenizer: Tokenizer,
  format: InstructionFormat,
): Promise<Record<SplitName, BuiltSplit>> {
  const template = format === "chat" ? chatTemplate(state, tokenizer) : undefined;
  const records = await loadSplits<InstructionRecord>(splitSource(stage, state), {
    read: (path) => readInstructions(path, format),
    field: (record, name) => Object.hasOwn(record.fields, name) ? record.fields[name] : undefined,
  });
  const out = {} as Record<SplitName, BuiltSplit>;
  for (const split of SPLITS) {
    const segments = records[split].map((r) => instructionSegments(r, { template }));
    const built = buildSegmentRows(segments, {
      ...rowOptions(stage, tokenizer),
      // A chat template ends every turn itself.
      eos: format === "alpaca" && stage.eos,
    });
    const examples = split === "train"
      ? []
      : grouped(records[split].map((r) => instructionExample(r, { template })));
    out[split] = { records: records[split].length, examples, ...built };
  }
  return out;
}

function rowOptions(stage: DataStage, tokenizer: Tokenizer) {
  return {
    encoder: tokenizer,
    T: stage.seqLen,
    pack: stage.pack,
    eos: stage.eos,
    truncate: stage.truncate,
  };
}

/** `data`: the splits as rows of `seq_len` tokens, and as prompts with references. */
export const data: StageRunner<DataStage> = async (stage, state) => {
  const tokenizer = need(state, "tokenizer");
  const model = need(state, "model");
  if (stage.seqLen > model.maxPositions) {
    throw stageError(
      state,
      "seq_len",
      `seq_len ${stage.seqLen} is longer than the model's ${model.maxPositions} positions`,
    );
  }
  const format = stage.format;
  const built = (INSTRUCTION_FORMATS as readonly unknown[]).includes(format)
    ? await instructionSplits(stage, state, tokenizer, format as InstructionFormat)
    : await templateSplits(stage, state, tokenizer);
  const splits = {} as Record<SplitName, SplitData>;
  const figures: Record<string, unknown> = {};
  for (const split of SPLITS) {
    const { records, rows, examples, truncation: t, packing: p } = built[split];
    splits[split] = { rows, examples };
    figures[split] = {
      records,
      rows: p.rows,
      tokens: p.tokens,
      truncated: t.truncated,
      dropped_tokens: t.droppedTokens,
    };
    if (records === 0) continue;
    state.say(
      `${split}: ${records} records -> ${p.rows} rows of ${stage.seqLen} ` +
        `(${(100 * p.fill).toFixed(0)}% filled)` +
        (t.truncated > 0
          ? `; truncated ${t.truncated} examples, dropping ${t.droppedTokens} tokens`
          : ""),
    );
  }
  if (splits.train.rows.length === 0 && state.pipeline.stages.some((s) => s.kind === "train")) {
    throw stageError(state, undefined, "The train split is empty");
  }
  state.data = { T: stage.seqLen, splits };
  await state.log.recordStage(stage.id, figures);
};
