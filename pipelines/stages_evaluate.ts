/**
 * Stages that score and sample the model: evaluate (loss and generation scores on a split),
 * generate (samples).
 *
 * @module
 */

import { evalBatches } from "../data/batches.ts";
import { evaluateGenerations, evaluateLoss } from "../eval/evaluate.ts";
import { generateText } from "../models/generate.ts";
import type { ModelTask } from "../models/model.ts";
import type { EvaluateStage, GenerateStage, MetricName } from "./schema.ts";
import { need, stageError, type StageRunner } from "./state.ts";

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
