/**
 * The data stage: read, render, tokenize and lay out rows of each split.
 *
 * Prompt/completion formats (`jsonl`, `csv`, `e2e`, `text`) render each record through the
 * stage's `prompt` and `completion` templates; the instruction formats (`alpaca`, `chat`) make
 * their own segments (data/instructions.ts), chat through the tokenizer's default chat template.
 * Both are tokenized by the same mechanism (data/examples.ts: the whole text at once).
 *
 * `format: images` reads labelled images instead (data/images/): no tokenizer, no rows; the
 * splits, their classes and transforms land in `state.data.images`.
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
import { DataError, type DataRecord } from "../data/readers.ts";
import { type ImageData, loadImageData } from "../data/images/dataset.ts";
import { type PreprocessSettings, preprocessSettings } from "../data/images/preprocess.ts";
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
function grouped(
  pairs: Iterable<{ prompt: string; ref: string; mr?: string }>,
): GenerationExample[] {
  const groups = new Map<string, GenerationExample>();
  for (const { prompt, ref, mr } of pairs) {
    const group = groups.get(prompt);
    if (group) group.refs.push(ref);
    else groups.set(prompt, { prompt, refs: [ref], ...(mr !== undefined ? { mr } : {}) });
  }
  return [...groups.values()];
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
      ...(typeof record.mr === "string" ? { mr: record.mr } : {}),
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
  if (stage.format === "images") return await imageStage(stage, state);
  // The keys take folders for image sources; text data is files only.
  for (const key of ["train", "validation", "test"] as const) {
    const path = stage[key];
    if (path === undefined) continue;
    const info = await Deno.stat(inputPath(state, path));
    if (info.isDirectory) {
      throw stageError(
        state,
        key,
        `"${path}" is a folder; text data is read from files (folders hold images, with ` +
          `"format: images")`,
      );
    }
  }
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

/** Figures of one image split for the run summary. */
function imageFigures(data: ImageData, split: SplitName) {
  const s = data.splits[split];
  return {
    source: s.path ?? null,
    kind: s.kind ?? null,
    available: s.available,
    images: s.examples.length,
    per_class: Object.fromEntries(data.id2label.map((name, i) => [name, s.perClass[i]])),
    ignored_files: s.ignored,
  };
}

function settingsText(p: PreprocessSettings): string {
  const resize = p.mode === "squash"
    ? `resize to ${p.width}x${p.height}`
    : p.mode === "shorter"
    ? `shorter side to ${p.resize}, centre ${p.width}x${p.height}`
    : `centre ${p.width}x${p.height}`;
  const list = (v: readonly number[]) => `[${v.map((x) => +x.toFixed(4)).join(", ")}]`;
  return `${resize} (${p.resample}), mean ${list(p.mean)}, std ${list(p.std)}; from ${p.from}`;
}

/** `data` with `format: images`: labelled image splits for a classifier. */
async function imageStage(stage: DataStage, state: RunState): Promise<void> {
  const model = state.model;
  if (model && model.task !== "classification") {
    throw stageError(
      state,
      "format",
      `format "images" needs an image classifier, and the loaded ${model.modelType} model ` +
        `predicts tokens`,
      "load an image classification model (a ViT), or use a text format",
    );
  }
  const p = stage.preprocess ?? {};
  let preprocess: PreprocessSettings;
  try {
    preprocess = await preprocessSettings(model ? state.modelFolder : undefined, {
      imageSize: p.imageSize,
      mode: p.mode,
      cropPct: p.cropPct,
      resample: p.resample,
      mean: p.mean,
      std: p.std,
    });
  } catch (e) {
    if (e instanceof DataError && e.file === "") throw stageError(state, "preprocess", e.message);
    if (e instanceof RangeError) throw stageError(state, "preprocess", e.message);
    throw e;
  }
  const a = stage.augment;
  const source = (path?: string) => (path === undefined ? undefined : inputPath(state, path));
  const images = await loadImageData({
    train: source(stage.train)!,
    validation: source(stage.validation),
    test: source(stage.test),
    kind: stage.source,
    labelNames: stage.labelNames,
    classes: stage.classes,
    classIds: stage.classIds,
    shots: stage.shots,
    evalPerClass: stage.evalPerClass,
    samplingSeed: stage.samplingSeed ?? state.pipeline.seed,
    preprocess,
    augment: a ? { crop: a.crop, scale: a.scale, ratio: a.ratio, flip: a.flip } : undefined,
    augmentSeed: a?.seed ?? state.pipeline.seed,
  });
  if (stage.labelNames && images.splits.train.kind !== "idx") {
    throw stageError(
      state,
      "label_names",
      `only applies to IDX sources; "${stage.train}" is a ${images.splits.train.kind}, whose ` +
        `class names come from the ${
          images.splits.train.kind === "csv" ? "label column" : "folders"
        }`,
    );
  }
  const empty = (): SplitData => ({ rows: [], examples: [] });
  state.data = {
    T: 0,
    splits: { train: empty(), validation: empty(), test: empty() },
    images,
  };
  const classes = images.id2label.length;
  state.say(
    `images: ${classes} classes (${images.id2label.slice(0, 10).join(", ")}` +
      `${classes > 10 ? ", ..." : ""}); input ${images.inputShape.join("x")}: ` +
      settingsText(preprocess),
  );
  for (const split of SPLITS) {
    const s = images.splits[split];
    if (s.path === undefined) continue;
    const counts = [...new Set(s.perClass)];
    state.say(
      `${split}: ${s.examples.length} of ${s.available} images from ${s.kind} "${s.path}"` +
        (counts.length === 1 ? `, ${counts[0]} a class` : "") +
        (split === "train" && stage.shots
          ? ` (${stage.shots}-shot, sampling seed ${stage.samplingSeed})`
          : "") +
        (s.ignored > 0 ? `; ${s.ignored} other files skipped` : ""),
    );
  }
  if (a) {
    const list = (v: readonly number[]) => `[${v.map((x) => +x.toFixed(4)).join(", ")}]`;
    const crop = a.crop
      ? `random resized crop (scale ${list(a.scale)}, ratio ${list(a.ratio)})`
      : "no crop";
    state.say(`augment: ${crop}${a.flip ? ", flip" : ""}, seed ${a.seed}`);
  }

  await state.log.recordStage(stage.id, {
    format: "images",
    id2label: images.id2label,
    input_shape: images.inputShape,
    preprocess: settingsText(preprocess),
    shots: stage.shots ?? null,
    sampling_seed: stage.samplingSeed ?? null,
    augment: a ?? null,
    train: imageFigures(images, "train"),
    validation: imageFigures(images, "validation"),
    test: imageFigures(images, "test"),
  });
}
