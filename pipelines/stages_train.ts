/**
 * Stages that change weights: train (adapters, or every weight with `full`), and quantize
 * (post-training quantization of NOLA coefficients).
 *
 * @module
 */

import { QatHooks, quantizeInPlace } from "../train/qat.ts";
import { evalBatches, type MicroBatch, TrainBatches } from "../data/batches.ts";
import {
  type ImageData,
  imageEvalBatches,
  imageTrainBatches,
  matchLabels,
} from "../data/images/dataset.ts";
import type { Model } from "../models/model.ts";
import { evaluateLoss } from "../eval/evaluate.ts";
import type { OptimizerParam, ParamGroup } from "../train/optimizer.ts";
import { Progress } from "../train/progress.ts";
import { type StepHooks, train } from "../train/trainer.ts";
import type { QuantizeStage, TrainStage } from "./schema.ts";
import { need, outputPath, type RunState, stageError, type StageRunner } from "./state.ts";
import { saveAdapter } from "../adapters/adapter_file.ts";

/** The trainable tensors and the hooks around each step, for the stage's mode. */
async function trainables(
  stage: TrainStage,
  state: RunState,
): Promise<{ params: OptimizerParam[]; hooks?: StepHooks; finish?: () => void | Promise<void> }> {
  const model = need(state, "model");
  if (stage.full) {
    return {
      params: [...model.params].map(([name, param]) => ({
        name,
        param,
        grad: model.grads!.get(name)!,
      })),
      hooks: state.adapters,
    };
  }
  const set = need(state, "adapters");
  if (!stage.qat) return { params: set.parameters(), hooks: set };
  if (set.modules.some((m) => !m.nola)) {
    throw stageError(
      state,
      "qat",
      "Quantization-aware training applies to NOLA coefficients, not LoRA factors",
    );
  }
  const qat = await QatHooks.create(set, stage.qat);
  state.quant = stage.qat;
  return {
    // A head trained beside the adapters stays f32: QAT rounds only the coefficients.
    params: [...qat.parameters(), ...set.headParameters()],
    hooks: qat,
    finish: async () => {
      await qat.finalize();
      qat[Symbol.dispose]();
    },
  };
}

/**
 * The image data of the run with its labels mapped onto the classifier's head (by name): a class
 * the head does not know is a one-line error naming the file.
 *
 * @param state The run (its data must be images).
 * @param model The classifier.
 * @returns The data, labelled with the head's ids.
 */
export function classifierData(state: RunState, model: Model): ImageData {
  const images = need(state, "data").images!;
  const head = model.classifierHead;
  if (!head) return images;
  const what = state.adapters?.head?.source ??
    `the head of ${state.modelName} (id2label of its config.json)`;
  return matchLabels(images, head.labels, { what });
}

// The training stream and the validation batches of the run's data: token rows or images.
function trainingData(stage: TrainStage, state: RunState, model: Model) {
  const data = need(state, "data");
  const length = stage.steps !== undefined ? { steps: stage.steps } : { epochs: stage.epochs! };
  const common = { B: stage.batchSize, seed: state.pipeline.seed, gradAccum: stage.gradAccum };
  if (data.images) {
    if (model.task !== "classification") {
      throw stageError(state, undefined, `image data needs an image classifier`);
    }
    const images = classifierData(state, model);
    return {
      batches: imageTrainBatches(images, { ...common, ...length }),
      validationCount: images.splits.validation.examples.length,
      validation: (): Iterable<MicroBatch> =>
        imageEvalBatches(images, "validation", { B: stage.batchSize }),
      unit: "img",
      shape: `${stage.batchSize} x ${stage.gradAccum} images`,
    };
  }
  const tokenizer = need(state, "tokenizer");
  const { T, splits } = data;
  const rows = splits.validation.rows;
  return {
    batches: new TrainBatches(splits.train.rows, {
      ...common,
      T,
      eosId: tokenizer.eosId,
      ...length,
    }),
    validationCount: rows.length,
    validation: (): Iterable<MicroBatch> =>
      evalBatches(rows, { B: stage.batchSize, T, eosId: tokenizer.eosId }),
    unit: "tok",
    shape: `${stage.batchSize} x ${stage.gradAccum} x ${T} tokens`,
  };
}

/** `train`: the training loop, with progress, validation, checkpoints and resume. */
export const trainStage: StageRunner<TrainStage> = async (stage, state) => {
  const model = need(state, "model");
  const data = trainingData(stage, state, model);
  const { params, hooks, finish } = await trainables(stage, state);
  const batches = data.batches;
  const group: ParamGroup = stage.optimizer === "adamw"
    ? {
      name: stage.id,
      kind: "adamw",
      params,
      lr: stage.lr,
      weightDecay: stage.weightDecay,
      betas: stage.betas,
      eps: stage.eps,
    }
    : {
      name: stage.id,
      kind: "sgd",
      params,
      lr: stage.lr,
      weightDecay: stage.weightDecay,
      momentum: stage.momentum,
      dampening: stage.dampening,
      nesterov: stage.nesterov,
    };
  const warmup = stage.schedule.warmupSteps;
  if (warmup !== undefined && warmup > batches.totalSteps) {
    throw stageError(
      state,
      "schedule.warmup_steps",
      `${warmup} warmup steps is more than the ${batches.totalSteps} steps of training`,
      "lower warmup_steps, or give warmup_ratio",
    );
  }
  const canEvaluate = data.validationCount > 0;
  const bestPath = outputPath(state, `${stage.id}-best.safetensors`);
  using progress = new Progress({ total: batches.totalSteps, unit: data.unit, label: stage.id });
  const parameters = params.reduce((s, p) => s + p.param.size, 0);
  state.say(
    `training ${parameters.toLocaleString("en-US")} parameters for ${batches.totalSteps} steps ` +
      `(batch ${data.shape}, lr ${stage.lr})`,
  );
  const result = await train({
    model,
    groups: [group],
    hooks,
    batches,
    schedule: {
      kind: stage.schedule.kind,
      lr: stage.lr,
      totalSteps: batches.totalSteps,
      ...(stage.schedule.warmupSteps !== undefined
        ? { warmupSteps: stage.schedule.warmupSteps }
        : stage.schedule.warmupRatio !== undefined
        ? { warmupRatio: stage.schedule.warmupRatio }
        : {}),
      ...(stage.schedule.kind === "constant" ? {} : { minLr: stage.schedule.minLr }),
    },
    maxGradNorm: stage.maxGradNorm,
    labelSmoothing: stage.labelSmoothing,
    log: state.log,
    logEvery: stage.logEvery,
    evalEvery: canEvaluate ? stage.evalEvery : undefined,
    evaluate: canEvaluate
      ? async () => {
        hooks?.prepareStep?.();
        const r = await evaluateLoss(model, data.validation());
        return { loss: r.loss, perplexity: r.perplexity };
      }
      : undefined,
    patience: stage.patience > 0 ? stage.patience : undefined,
    onBest: state.adapters && !stage.full
      ? async () => {
        await saveAdapter(state.adapters!, bestPath, {
          baseModel: state.modelName!,
          quant: state.quant,
        });
      }
      : undefined,
    checkpointEvery: stage.checkpointEvery,
    resume: state.resumeFrom ?? state.resume,
    signal: state.signal,
    progress,
  });
  progress.finish();
  await finish?.();
  state.step = result.steps;
  const losses = [...result.losses.values()];
  const figures = {
    steps: result.steps,
    stopped_by: result.stoppedBy,
    final_train_loss: losses.at(-1) ?? NaN,
    best_validation_loss: result.bestValidationLoss ?? NaN,
    best_step: result.bestStep ?? -1,
    trainable_parameters: parameters,
  };
  await state.log.recordStage(stage.id, figures);
  if (result.stoppedBy === "interrupted") {
    state.interrupted = { step: result.steps, checkpoint: result.checkpoint };
    return;
  }
  state.say(
    `${stage.id}: ${result.steps} steps, final train loss ${figures.final_train_loss.toFixed(4)}` +
      (result.bestValidationLoss !== undefined
        ? `, best validation loss ${
          result.bestValidationLoss.toFixed(4)
        } at step ${result.bestStep}`
        : "") +
      (result.stoppedBy === "early-stop" ? " (stopped early)" : ""),
  );
};

/** `quantize`: rounds the NOLA coefficients to `bits` (post-training quantization). */
export const quantize: StageRunner<QuantizeStage> = async (stage, state) => {
  const set = need(state, "adapters");
  if (set.modules.some((m) => !m.nola)) {
    throw stageError(
      state,
      undefined,
      "Quantization applies to NOLA coefficients; this pipeline attaches LoRA",
    );
  }
  const quant = { bits: stage.bits, scheme: stage.scheme };
  const stats = await quantizeInPlace(set, quant);
  state.quant = quant;
  const worst = Math.max(...stats.map((s) => Math.max(s.alphaMaxError, s.betaMaxError)));
  state.say(
    `quantized ${stats.length} coefficient tensors to ${stage.bits} bits (${stage.scheme}); largest change ${
      worst.toExponential(2)
    }`,
  );
  await state.log.recordStage(stage.id, {
    bits: stage.bits,
    scheme: stage.scheme,
    max_error: worst,
  });
};
