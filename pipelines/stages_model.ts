/**
 * Stages on the model and its adapters: load, attach, save, merge, export_peft.
 *
 * @module
 */

import { basename } from "node:path";
import { adapterAccounting } from "../adapters/accounting.ts";
import { saveAdapter } from "../adapters/adapter_file.ts";
import {
  AdapterSet,
  type AttachConfig,
  type ModulePlan,
  planAdapters,
} from "../adapters/attach.ts";
import { mergeAdapters, unmergeAdapters, writeMergedFolder } from "../adapters/merge.ts";
import { exportPeft } from "../adapters/peft.ts";
import { HEAD_INIT_STD, headAction, newHead, trainCheckpointHead } from "../adapters/head.ts";
import {
  checkpointDtypes,
  estimateTrainingMemory,
  formatEstimate,
  type MemoryEstimate,
  memoryProblem,
  modelPositions,
} from "../models/memory_estimate.ts";
import { initModel, type ModelConfig, modelShape, readModelConfig } from "../models/registry.ts";
import { Tokenizer } from "../models/tokenizer.ts";
import type { ModelOptions } from "../models/model.ts";
import type {
  AttachStage,
  DataStage,
  ExportPeftStage,
  LoadStage,
  MergeStage,
  SaveStage,
  TrainStage,
} from "./schema.ts";
import {
  inputPath,
  need,
  outputPath,
  type RunState,
  stageError,
  type StageRunner,
} from "./state.ts";

/** `load`: the model (pretrained, or fresh weights for its config) and its tokenizer. */
export const load: StageRunner<LoadStage> = async (stage, state) => {
  const folder = inputPath(state, stage.model);
  // Full fine-tuning anywhere in the pipeline needs weight gradients from the start.
  const full = state.pipeline.stages.findIndex((s) => s.kind === "train" && s.full);
  const trainAll = full >= 0;
  if (trainAll && stage.quantizeBase) {
    throw stageError(
      state,
      "quantize_base",
      `a base quantized to ${stage.quantizeBase} cannot be trained whole, and stages[${full}] is ` +
        `a train stage with "full: true"`,
      "remove quantize_base (full fine-tuning needs f32 weights) or train adapters instead",
    );
  }
  const options: ModelOptions = {
    trainAll,
    // Full fine-tuning needs f32 weights: as-stored 16-bit weights are widened then.
    baseFormat: stage.quantizeBase ?? (trainAll ? "f32" : stage.dtype),
    blockSize: stage.blockSize,
    doubleQuant: stage.doubleQuant,
  };
  const config = await readModelConfig(folder);
  const estimate = await checkTrainingMemory(state, config, {
    folder,
    options,
    random: stage.init === "random",
  });
  state.model = stage.init === "random"
    ? await initModel(state.gpu, config, { ...options, seed: state.pipeline.seed })
    : await config.family.load(state.gpu, folder, config.config, options);
  // An image classifier has no tokenizer; its preprocessing is read by the data stage.
  state.tokenizer = state.model.task === "classification"
    ? undefined
    : await Tokenizer.load(folder);
  state.modelFolder = folder;
  state.modelName = basename(folder);
  const c = state.model.summary();
  const params = c.parameters;
  const outputs = state.model.task === "causal-lm" ? "vocab" : "classes";
  state.say(
    `${stage.init === "random" ? "initialised" : "loaded"} ${state.modelName} (${c.modelType}): ` +
      `${c.layers} layers, ${c.width} wide, ${c.heads} heads, ${c.positions} positions, ` +
      `${outputs} ${c.outputs} (${params.toLocaleString("en-US")} parameters)`,
  );
  const byPrecision = state.model.memory().weightsByPrecision ?? {};
  state.say(`weights on the GPU: ${weightBytes(byPrecision)}`);
  await state.log.recordStage(stage.id, {
    parameters: params,
    init: stage.init,
    ...estimate,
    ...Object.fromEntries(
      Object.entries(byPrecision).map(([precision, bytes]) => [`weight_bytes_${precision}`, bytes]),
    ),
  });
};

/**
 * Estimates the run's GPU memory from the pipeline before the model is allocated (the base as
 * this stage keeps it, the first later attach stage's adapters, the train stages' largest
 * micro-batch at the data stage's `seq_len`, their optimizer, an evaluate stage's loss batches),
 * prints it, and refuses in one line
 * a buffer or binding over the adapter's limits or a total over `maxMemory`. Returns the figures
 * for the summary (none when the family has no estimate).
 */
async function checkTrainingMemory(
  state: RunState,
  config: ModelConfig,
  load: { folder: string; options: ModelOptions; random: boolean },
): Promise<Record<string, number>> {
  const later = state.pipeline.stages.slice(state.index + 1);
  const trains = later.filter((s): s is TrainStage => s.kind === "train");
  const data = later.find((s): s is DataStage => s.kind === "data");
  const attach = later.find((s): s is AttachStage => s.kind === "attach");
  const evaluates = later.some((s) => s.kind === "evaluate" && s.metrics.includes("loss"));
  // Image data has no token length: a classifier's forward covers its positions an image.
  let T = data?.seqLen;
  const B = Math.max(0, ...trains.map((s) => s.batchSize));
  let modules: ModulePlan[] = [];
  if (attach) {
    try {
      modules = planAdapters(modelShape(config), attachConfig(attach));
    } catch (e) {
      // The attach stage reports its own mistakes, where they are.
      if (!(e instanceof RangeError)) throw e;
    }
  }
  // A new head has the data's classes where the data stage names them (else the config's).
  const head = attach?.head === "new" || attach?.head === "train"
    ? {
      classes: attach.head === "new" ? data?.classIds?.length ?? data?.classes?.length : undefined,
      trainable: true,
    }
    : undefined;
  let estimate: MemoryEstimate;
  try {
    if (data?.format === "images") T = modelPositions(config);
    estimate = estimateTrainingMemory(config, {
      model: load.options,
      storedDtypes: load.random ? undefined : await checkpointDtypes(load.folder, config),
      batch: B > 0 && T ? { B, T } : undefined,
      // The evaluate stage's loss runs batches of 8 rows.
      evaluation: T && evaluates ? { B: 8, T } : undefined,
      adapters: { modules, maxRows: Math.max(8, B) * (T ?? 0) },
      optimizer: trains[0]
        ? { kind: trains[0].optimizer, momentum: trains[0].momentum }
        : undefined,
      head,
    });
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
    state.say(`no memory estimate: ${e.message}`);
    return {};
  }
  const batch = B > 0 && T ? `, batch ${B} x ${T}` : "";
  state.say(`GPU memory estimate${batch}: ${formatEstimate(estimate)}`);
  const kinds = Object.entries(estimate.weightsByKind)
    .map(([kind, bytes]) => `${kind} ${bytes!.toLocaleString("en-US")}`);
  state.say(`  weights by kind: ${kinds.join(", ")}`);
  const limits = state.gpu.device.limits;
  const problem = memoryProblem(estimate, {
    maxBufferSize: limits.maxBufferSize,
    maxStorageBufferBindingSize: state.gpu.maxBindingBytes - state.gpu.bindingAlignment,
    maxMemory: state.maxMemory,
  });
  if (problem) throw stageError(state, undefined, problem.message, problem.hint);
  return {
    estimate_bytes: estimate.total,
    estimate_weight_bytes: estimate.weights,
    estimate_gradient_bytes: estimate.gradients,
    estimate_adapter_bytes: estimate.adapters,
    estimate_optimizer_bytes: estimate.optimizer,
    estimate_activation_bytes: estimate.activations,
    estimate_evaluation_bytes: estimate.evaluation,
  };
}

/**
 * Weight bytes by precision for a person: `1,234,567 bytes (f32 234,567, nf4 1,000,000)`.
 *
 * @param byPrecision Bytes by precision, as `Model.memory` reports them.
 * @returns One line.
 */
export function weightBytes(byPrecision: Record<string, number>): string {
  const n = (v: number) => v.toLocaleString("en-US");
  const parts = Object.entries(byPrecision).filter(([, b]) => b > 0);
  const total = parts.reduce((s, [, b]) => s + b, 0);
  return `${n(total)} bytes (${parts.map(([p, b]) => `${p} ${n(b)}`).join(", ") || "none"})`;
}

/** The rows one forward may need: the largest batch of any train stage at the data's length. */
function maxRows(state: RunState): number {
  const batches = state.pipeline.stages.filter((s): s is TrainStage => s.kind === "train")
    .map((s) => s.batchSize);
  // Image data has no token length: a ViT's forward covers its maxPositions tokens an image.
  return Math.max(8, ...batches) * (state.data?.T || state.model!.maxPositions);
}

/** The adapters' config of an attach stage (no targets with `method: none`). */
function attachConfig(stage: AttachStage): AttachConfig {
  return {
    method: stage.method,
    targets: stage.method === "none" ? [] : stage.targets,
    r: stage.r,
    k: stage.k,
    l: stage.l,
    loraAlpha: stage.loraAlpha,
    seed: stage.seed,
    init: stage.init,
    shareBasis: stage.shareBasis,
    overrides: stage.overrides,
  };
}

/**
 * `attach`: NOLA or LoRA adapters on the modules the patterns match, and a classifier's head as
 * `head` says (new, trained, or kept).
 */
export const attach: StageRunner<AttachStage> = async (stage, state) => {
  const model = need(state, "model");
  const config = attachConfig(stage);
  const labels = state.data?.images?.id2label;
  let action: "keep" | "train" | "new";
  try {
    action = headAction(model, { labels, mode: stage.head });
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
    throw stageError(state, "head", e.message);
  }
  if (stage.method === "none" && action === "keep") {
    throw stageError(
      state,
      "head",
      `method "none" trains only the classifier head, and head "${stage.head}" keeps it frozen` +
        (stage.head === "auto" ? " (the data's classes are the checkpoint's)" : ""),
      `set head: new (a fresh head) or head: train (the checkpoint's head)`,
    );
  }
  try {
    state.adapters = await AdapterSet.attach(model, config, { maxRows: maxRows(state) });
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
    throw stageError(state, "targets", e.message);
  }
  const head = action === "new"
    ? newHead(model, labels!, { seed: stage.seed })
    : action === "train"
    ? await trainCheckpointHead(model, { source: `the head of ${state.modelName}` })
    : null;
  state.adapters.setHead(head);
  const headParams = head ? head.labels.length * (head.inFeatures + 1) : 0;
  if (head) {
    state.say(
      `${action === "new" ? "new" : "trained"} head "${head.name}": ${head.labels.length} ` +
        `classes (${head.labels.slice(0, 10).join(", ")}${head.labels.length > 10 ? ", ..." : ""}` +
        `), ${headParams.toLocaleString("en-US")} parameters` +
        (action === "new" ? `, normal(0, ${HEAD_INIT_STD}) from seed ${stage.seed}` : ""),
    );
  }
  if (stage.method === "none") {
    state.say(`no adapter: only the head trains (a linear probe)`);
    await state.log.recordStage(stage.id, {
      modules: 0,
      trainable_parameters: 0,
      head: action,
      head_parameters: headParams,
    });
    return;
  }
  const accounting = adapterAccounting(model, {
    ...config,
    k: stage.method === "nola" ? config.k : undefined,
  });
  const mine = stage.method === "nola" ? accounting[0] : accounting.at(-1)!;
  const loraR1 = accounting.find((row) => row.label === "LoRA r=1")!;
  state.say(
    `attached ${stage.method.toUpperCase()} to ${state.adapters.modules.length} modules: ` +
      `${mine.params.toLocaleString("en-US")} trainable parameters (LoRA r=1 on the same ` +
      `modules: ${loraR1.params.toLocaleString("en-US")})` +
      (head ? `, and the head's ${headParams.toLocaleString("en-US")}` : ""),
  );
  await state.log.recordStage(stage.id, {
    modules: state.adapters.modules.length,
    // The adapter's own, as the LoRA figures beside it; the head is counted apart.
    trainable_parameters: mine.params,
    head: action,
    head_parameters: headParams,
    lora_r1_parameters: loraR1.params,
    lora_same_r_parameters: accounting.at(-1)!.params,
  });
};

/** `save`: the adapter file (quantized as asked, or as training / a quantize stage left it). */
export const save: StageRunner<SaveStage> = async (stage, state) => {
  const set = need(state, "adapters");
  const path = outputPath(state, stage.path);
  const quant = stage.quant ?? state.quant;
  const { size } = await saveAdapter(set, path, { baseModel: state.modelName!, quant });
  state.say(
    `saved ${path}: ${size.toLocaleString("en-US")} bytes` + (quant ? ` (${quant.bits}-bit)` : ""),
  );
  await state.log.recordStage(stage.id, { path, bytes: size, quant_bits: quant?.bits ?? 32 });
};

/** `merge`: a Hugging Face folder of the model with the adapters merged in (or fully trained). */
export const merge: StageRunner<MergeStage> = async (stage, state) => {
  const model = need(state, "model");
  const out = outputPath(state, stage.out);
  // Every packed weight counts: a 16-bit embedding or head kept as stored next to f32 linears too.
  const packed = (model.packed?.size ?? 0) > 0;
  if (packed) {
    // Packed weights cannot change in place: the copy is the unpacked base plus the delta.
    await writeMergedFolder(model, state.modelFolder!, out);
  } else if (model.adapters.size === 0) {
    await model.save(out, { tokenizerFrom: state.modelFolder });
  } else {
    const detached = mergeAdapters(model);
    try {
      await writeMergedFolder(model, state.modelFolder!, out);
    } finally {
      unmergeAdapters(model, detached);
    }
  }
  state.say(`wrote model folder ${out}`);
  await state.log.recordStage(stage.id, { path: out });
};

/** `export_peft`: the adapters as a PEFT LoRA folder. */
export const exportPeftStage: StageRunner<ExportPeftStage> = async (stage, state) => {
  const model = need(state, "model");
  need(state, "adapters");
  const out = outputPath(state, stage.out);
  const head = state.adapters?.head?.name;
  await exportPeft(model, out, {
    baseModelName: stage.baseModelName ?? state.modelName!,
    ...(head ? { head } : {}),
  });
  state.say(`wrote PEFT LoRA folder ${out}`);
  await state.log.recordStage(stage.id, { path: out });
};
