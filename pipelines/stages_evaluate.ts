/**
 * Stages that score and sample the model: evaluate (loss and generation scores on a split,
 * multiple-choice accuracy on items of its own), generate (samples).
 *
 * @module
 */

import { readChoiceItems } from "../data/choices.ts";
import { evalBatches } from "../data/batches.ts";
import { evaluateGenerations, evaluateLoss, type GenerationExample } from "../eval/evaluate.ts";
import {
  evaluateMultipleChoice,
  MultipleChoiceError,
  type MultipleChoiceResult,
} from "../eval/multiple_choice.ts";
import { findMr, parseMr, type Slot, slotErrorRate, SlotLexicon } from "../eval/slot_error.ts";
import { generateText } from "../models/generate.ts";
import { evaluateClassifier } from "../eval/classify.ts";
import { imageEvalBatches } from "../data/images/dataset.ts";
import { confusionChart } from "../train/svg.ts";
import { classifierData } from "./stages_train.ts";
import type { Model, ModelTask } from "../models/model.ts";
import type { Tokenizer } from "../models/tokenizer.ts";
import type { EvaluateStage, GenerateStage, MetricName } from "./schema.ts";
import { inputPath, need, type RunState, stageError, type StageRunner } from "./state.ts";

// The metrics each kind of head supports.
const METRICS_OF: Record<ModelTask, readonly MetricName[]> = {
  "causal-lm": ["loss", "bleu", "rouge_l", "exact_match", "slot_error", "multiple_choice"],
  classification: ["loss", "accuracy", "top5_accuracy"],
};

/**
 * `evaluate`: loss / perplexity over completion tokens and generation scores on a split, and
 * multiple-choice accuracy on the items of `choices`.
 */
export const evaluate: StageRunner<EvaluateStage> = async (stage, state) => {
  const model = need(state, "model");
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
  if (model.task === "classification" && !need(state, "data").images) {
    throw stageError(
      state,
      "metrics",
      `${stage.metrics[0]} of a classifier needs labelled images; this data has token rows`,
      `give the data stage "format: images"`,
    );
  }
  state.adapters?.prepareStep();
  let recorded: Record<string, unknown> = {};
  if (stage.metrics.some((m) => m !== "multiple_choice")) {
    const figures = model.task === "classification"
      ? await onImages(stage, state, model)
      : await onSplit(stage, state, model, need(state, "tokenizer"));
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
    recorded = { split: stage.split, ...figures };
  }
  if (stage.metrics.includes("multiple_choice")) {
    const r = await multipleChoice(stage, state, model, need(state, "tokenizer"));
    const figures = { mc_accuracy: r.accuracy, mc_macro_accuracy: r.macroAccuracy };
    state.evaluations.push({ stage: stage.id, split: "choices", figures });
    state.say(
      `${stage.id} (choices): mc_accuracy ${r.accuracy.toFixed(2)}, mc_macro_accuracy ` +
        `${r.macroAccuracy.toFixed(2)}; ${r.n} items, ${r.subjects.length} subjects, ` +
        `${r.shotsAsked}-shot` +
        (r.lostShots > 0 ? ` (${r.lostShots} items with fewer shots, to fit the model)` : ""),
    );
    state.say(subjectTable(r));
    recorded = {
      ...recorded,
      ...figures,
      mc_items: r.n,
      mc_shots: r.shotsAsked,
      mc_lost_shots: r.lostShots,
      ...Object.fromEntries(r.subjects.map((s) => [`mc_accuracy/${s.subject}`, s.accuracy])),
    };
  }
  await state.log.recordStage(stage.id, recorded);
};

// Loss, accuracy, top-5 accuracy and the confusion matrix of a classifier on the stage's split.
async function onImages(
  stage: EvaluateStage,
  state: RunState,
  model: Model,
): Promise<Record<string, number>> {
  const all = classifierData(state, model);
  const split = all.splits[stage.split];
  if (split.examples.length === 0) {
    throw stageError(
      state,
      "split",
      `The ${stage.split} split has no images: give the data stage a ${stage.split} source`,
    );
  }
  const data = stage.maxExamples
    ? {
      ...all,
      splits: {
        ...all.splits,
        [stage.split]: { ...split, examples: split.examples.slice(0, stage.maxExamples) },
      },
    }
    : all;
  const classes = model.outputs;
  const top5 = stage.metrics.includes("top5_accuracy");
  if (top5 && classes <= 5) {
    throw stageError(
      state,
      "metrics",
      `top5_accuracy needs more than five classes, and the head has ${classes} (the right class ` +
        `is always among the top five)`,
      "drop top5_accuracy, or use accuracy",
    );
  }
  const batches = () => imageEvalBatches(data, stage.split, { B: 8 });
  const figures: Record<string, number> = {};
  if (stage.metrics.includes("loss")) {
    figures.loss = (await evaluateLoss(model, batches())).loss;
  }
  if (stage.metrics.includes("accuracy") || top5) {
    const r = await evaluateClassifier(model, batches(), top5 ? { topK: 5 } : {});
    if (stage.metrics.includes("accuracy")) figures.accuracy = r.accuracy;
    if (top5) figures.top5_accuracy = r.topKAccuracy!;
    if (stage.metrics.includes("accuracy")) {
      const file = `confusion-${stage.id.replace(/[^\w.-]/g, "_")}.svg`;
      const labels = model.classifierHead?.labels ?? data.id2label;
      state.reportSections = [
        ...(state.reportSections ?? []).filter((s) => s.chart?.file !== file),
        {
          title: `Confusion matrix: ${stage.id} (${stage.split})`,
          markdown: `${r.n} images, accuracy ${r.accuracy.toFixed(2)}%` +
            (top5 ? `, top-5 accuracy ${r.topKAccuracy!.toFixed(2)}%` : "") +
            `. Rows are the true classes, columns the predicted ones.`,
          chart: {
            file,
            svg: confusionChart(r.confusion, labels, { title: `${stage.id}: ${stage.split}` }),
            alt: `Confusion matrix of ${stage.id} on the ${stage.split} split`,
          },
        },
      ];
    }
  }
  return figures;
}

// Loss and generation scores on the stage's split.
async function onSplit(
  stage: EvaluateStage,
  state: RunState,
  model: Model,
  tokenizer: Tokenizer,
): Promise<Record<string, number>> {
  const { T, splits } = need(state, "data");
  const split = splits[stage.split];
  if (split.rows.length === 0) {
    throw stageError(
      state,
      "split",
      `The ${stage.split} split is empty: give the data stage a ${stage.split} file or ratio`,
    );
  }
  const figures: Record<string, number> = {};
  if (stage.metrics.includes("loss")) {
    const rows = stage.maxExamples ? split.rows.slice(0, stage.maxExamples) : split.rows;
    const r = await evaluateLoss(model, evalBatches(rows, { B: 8, T, eosId: tokenizer.eosId }));
    Object.assign(figures, { loss: r.loss, perplexity: r.perplexity });
  }
  const wanted = stage.metrics.filter((m) =>
    m === "bleu" || m === "rouge_l" || m === "exact_match" || m === "slot_error"
  );
  if (wanted.length > 0) {
    const examples = stage.maxExamples
      ? split.examples.slice(0, stage.maxExamples)
      : split.examples;
    // Read before decoding, so a prompt without a meaning representation fails at once.
    const mrs = wanted.includes("slot_error") ? splitMrs(state, split.examples) : undefined;
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
    if (mrs) {
      // Hallucinations are looked for among the values of the whole split.
      const lexicon = SlotLexicon.fromMrs(mrs);
      const s = slotErrorRate(r.generations, mrs.slice(0, examples.length), { lexicon });
      figures.slot_error = s.slotError;
      figures.slot_missing = s.missing;
      figures.slot_hallucinated = s.hallucinated;
    }
  }
  return figures;
}

// The meaning representation of every example: its record's `mr` field (E2E data), else read
// from its prompt; one that is not there or cannot be read is an error at the stage's metrics.
function splitMrs(state: RunState, examples: readonly GenerationExample[]): Slot[][] {
  return examples.map((example, i) => {
    const { prompt } = example;
    const mr = example.mr ?? findMr(prompt);
    const hint = "give records an mr field (format: e2e) or render the mr into the prompt " +
      '(prompt: "{{ mr }}\\n"), or drop slot_error';
    if (mr === undefined) {
      throw stageError(
        state,
        "metrics",
        `slot_error needs a meaning representation (slot[value], ...) for each example, and ` +
          `example ${i + 1}'s prompt ${JSON.stringify(prompt)} holds none`,
        hint,
      );
    }
    try {
      return parseMr(mr);
    } catch (e) {
      if (!(e instanceof SyntaxError)) throw e;
      throw stageError(state, "metrics", `slot_error: example ${i + 1}: ${e.message}`);
    }
  });
}

// The items of `choices`, scored; what the items cannot give becomes an error at their key.
async function multipleChoice(
  stage: EvaluateStage,
  state: RunState,
  model: Model,
  tokenizer: Tokenizer,
): Promise<MultipleChoiceResult> {
  const set = stage.choices!;
  const test = await readChoiceItems(inputPath(state, set.test));
  const dev = set.dev === undefined ? undefined : await readChoiceItems(inputPath(state, set.dev));
  const started = performance.now();
  let said = started;
  try {
    return await evaluateMultipleChoice(model, test, {
      tokenizer,
      dev,
      shots: set.shots,
      maxItems: set.maxItems,
      onProgress: (done, total) => {
        const now = performance.now();
        if (done === total || now - said < 30_000) return;
        said = now;
        state.say(`  ${done}/${total} items (${((now - started) / 1000).toFixed(0)} s)`);
      },
    });
  } catch (e) {
    if (!(e instanceof MultipleChoiceError)) throw e;
    const key = { shots: "choices.shots", length: "choices.test", tokens: "choices" }[e.reason];
    throw stageError(state, key, e.message);
  }
}

// Accuracy per subject, then over all items and the mean over subjects.
function subjectTable(r: MultipleChoiceResult): string {
  const rows = [
    ...r.subjects.map((s) => [s.subject, String(s.n), s.accuracy.toFixed(2)]),
    ["all items", String(r.n), r.accuracy.toFixed(2)],
    ["mean of subjects", "", r.macroAccuracy.toFixed(2)],
  ];
  const header = ["subject", "items", "accuracy"];
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((row) => row[c].length)));
  const line = (row: string[]) =>
    "  " + row.map((cell, c) => c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))
      .join("  ");
  return [line(header), ...rows.map(line)].join("\n");
}

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
