/**
 * The data stage: read, render, tokenize and lay out rows of each split.
 *
 * @module
 */

import { buildRows, loadSplits } from "../data/examples.ts";
import type { DataRecord } from "../data/readers.ts";
import { CompiledTemplate } from "../data/templates.ts";
import type { GenerationExample } from "../eval/evaluate.ts";
import type { DataStage, SplitName } from "./schema.ts";
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
