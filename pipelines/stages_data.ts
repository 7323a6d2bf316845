/**
 * Stages on data: data (read, render, tokenize, lay out rows), evaluate (loss and generation
 * scores on a split), generate (samples).
 *
 * @module
 */

import { evalBatches } from "../data/batches.ts";
import { buildRows, loadSplits } from "../data/examples.ts";
import type { DataRecord } from "../data/readers.ts";
import { CompiledTemplate } from "../data/templates.ts";
import { evaluateGenerations, evaluateLoss, type GenerationExample } from "../eval/evaluate.ts";
import { generateText } from "../models/generate.ts";
import type { ModelTask } from "../models/model.ts";
import type { DataStage, EvaluateStage, GenerateStage, MetricName, SplitName } from "./schema.ts";
import { inputPath, need, type SplitData, stageError, type StageRunner } from "./state.ts";

const SPLITS: SplitName[] = ["train", "validation", "test"];

/**
 * Prompts with every reference written for them: records are grouped by their rendered prompt,
 * so an E2E meaning representation with three references is one example with three references.
 */
function generationExamples(
  records: readonly DataRecord[],
  templates: { prompt: CompiledTemplate; completion: CompiledTemplate },
): GenerationExample[] {
  const groups = new Map<string, string[]>();
  records.forEach((record, index) => {
    const prompt = templates.prompt.render(record, { index });
    const refs = groups.get(prompt) ?? [];
    refs.push(templates.completion.render(record, { index }).trim());
    groups.set(prompt, refs);
  });
  return [...groups].map(([prompt, refs]) => ({ prompt, refs }));
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
  const records = stage.file
    ? await loadSplits({
      file: inputPath(state, stage.file),
      ratios: stage.split!,
      seed: stage.split!.seed,
      key: stage.split!.key,
      format: stage.format,
    })
    : await loadSplits({
      train: inputPath(state, stage.train!),
      validation: stage.validation ? inputPath(state, stage.validation) : undefined,
      test: stage.test ? inputPath(state, stage.test) : undefined,
      format: stage.format,
    });
  const templates = { prompt: stage.prompt, completion: stage.completion };
  const compiled = {
    prompt: new CompiledTemplate(stage.prompt, { name: "prompt" }),
    completion: new CompiledTemplate(stage.completion, { name: "completion" }),
  };
  const splits = {} as Record<SplitName, SplitData>;
  const figures: Record<string, unknown> = {};
  for (const split of SPLITS) {
    const built = buildRows(records[split], {
      templates,
      encoder: tokenizer,
      T: stage.seqLen,
      pack: stage.pack,
      eos: stage.eos,
      truncate: stage.truncate,
    });
    splits[split] = {
      rows: built.rows,
      examples: split === "train" ? [] : generationExamples(records[split], compiled),
    };
    const { truncation: t, packing: p } = built;
    figures[split] = {
      records: records[split].length,
      rows: p.rows,
      tokens: p.tokens,
      truncated: t.truncated,
      dropped_tokens: t.droppedTokens,
    };
    if (records[split].length === 0) continue;
    state.say(
      `${split}: ${records[split].length} records -> ${p.rows} rows of ${stage.seqLen} ` +
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

// The metrics each kind of head supports.
const METRICS_OF: Record<ModelTask, readonly MetricName[]> = {
  "causal-lm": ["loss", "bleu", "rouge_l", "exact_match"],
  classification: ["loss", "accuracy"],
};

/** `evaluate`: loss / perplexity over completion tokens and generation scores on a split. */
export const evaluate: StageRunner<EvaluateStage> = async (stage, state) => {
  const model = need(state, "model");
  const tokenizer = need(state, "tokenizer");
  const { T, splits } = need(state, "data");
  const split = splits[stage.split];
  if (split.rows.length === 0) {
    throw stageError(
      state,
      "split",
      `The ${stage.split} split is empty: give the data stage a ${stage.split} file or ratio`,
    );
  }
  const supported = METRICS_OF[model.task];
  const unsupported = stage.metrics.find((m) => !supported.includes(m));
  if (unsupported) {
    throw stageError(
      state,
      "metrics",
      `${unsupported} does not apply to a ${model.modelType} model (${
        model.task === "causal-lm"
          ? "it predicts tokens, it has no classification head"
          : "it classifies, it does not generate text"
      })`,
      `use ${supported.join(", ")}`,
    );
  }
  if (stage.metrics.includes("accuracy")) {
    // Labelled splits come with an image data format; text data has none to score.
    throw stageError(state, "metrics", "accuracy needs a labelled split; this data has token rows");
  }
  state.adapters?.prepareStep();
  const figures: Record<string, number> = {};
  if (stage.metrics.includes("loss")) {
    const rows = stage.maxExamples ? split.rows.slice(0, stage.maxExamples) : split.rows;
    const r = await evaluateLoss(model, evalBatches(rows, { B: 8, T, eosId: tokenizer.eosId }));
    Object.assign(figures, { loss: r.loss, perplexity: r.perplexity });
  }
  const wanted = stage.metrics.filter((m) =>
    m === "bleu" || m === "rouge_l" || m === "exact_match"
  );
  if (wanted.length > 0) {
    const examples = stage.maxExamples
      ? split.examples.slice(0, stage.maxExamples)
      : split.examples;
    const r = await evaluateGenerations(model, tokenizer, examples, {
      decoding: stage.decoding,
      beams: stage.beams,
      lengthPenalty: stage.lengthPenalty,
      noRepeatNgram: stage.noRepeatNgram,
      maxNewTokens: stage.maxNewTokens,
      stop: stage.stop,
    });
    if (wanted.includes("bleu")) figures.bleu = r.bleu;
    if (wanted.includes("rouge_l")) figures.rouge_l = r.rougeL;
    if (wanted.includes("exact_match")) figures.exact_match = r.exactMatch;
  }
  state.evaluations.push({ stage: stage.id, split: stage.split, figures });
  state.say(
    `${stage.id} (${stage.split}): ` +
      Object.entries(figures).map(([k, v]) => `${k} ${v.toFixed(4)}`).join(", "),
  );
  if (figures.loss !== undefined && !state.resume) {
    await state.log.append({
      step: state.step,
      split: stage.split,
      stage: stage.id,
      ...figures,
      loss: figures.loss,
    });
  }
  await state.log.recordStage(stage.id, { split: stage.split, ...figures });
};

/** `generate`: samples from the given prompts or from a split's prompts. */
export const generate: StageRunner<GenerateStage> = async (stage, state) => {
  const model = need(state, "model");
  const tokenizer = need(state, "tokenizer");
  const prompts = stage.prompts ??
    need(state, "data").splits[stage.from!].examples.map((e) => e.prompt);
  state.adapters?.prepareStep();
  const samples: { prompt: string; text: string }[] = [];
  for (const [i, prompt] of prompts.slice(0, stage.n).entries()) {
    const text = await generateText(model, tokenizer, prompt, {
      maxNewTokens: stage.maxNewTokens,
      temperature: stage.temperature,
      topK: stage.topK,
      topP: stage.topP,
      seed: stage.seed + i,
      stop: stage.stop,
      noRepeatNgram: stage.noRepeatNgram,
    });
    samples.push({ prompt, text });
    state.say(`  [${i + 1}] ${JSON.stringify(prompt)}\n   -> ${JSON.stringify(text.trim())}`);
  }
  await state.log.recordStage(stage.id, { samples });
};
