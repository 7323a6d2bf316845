/**
 * The training loop. It knows nothing about the model beyond forward / loss / backward and a
 * list of trainable tensors: the same loop trains NOLA coefficients, LoRA factors or every weight.
 *
 * Nothing is read back inside a step: each step's loss totals and gradient norm are copied into a
 * history buffer on the GPU, which is read every `logEvery` steps, before a checkpoint, and at
 * the end. A checkpoint is only written once every step before it is known to be finite.
 *
 * @module
 */

import { lossRows, type MicroBatch } from "../data/batches.ts";
import type { BatchState } from "../data/batches.ts";
import { decodeLossTotals, LOSSACC_WORDS, LossAccumulator } from "../kernels/lossacc.ts";
import { Tensor } from "../kernels/tensor.ts";
import type { Model } from "../models/model.ts";
import {
  checkpointDir,
  CheckpointError,
  findResumeCheckpoint,
  type ResumePoint,
  saveCheckpoint,
} from "./checkpoint.ts";
import { Optimizer, type OptimizerParam, type ParamGroup } from "./optimizer.ts";
import type { Progress } from "./progress.ts";
import type { MetricRecord, RunLog } from "./run_log.ts";
import { lrFactor, type Schedule } from "./schedule.ts";

/** The hooks a trainable method (NOLA, LoRA) adds around a step; all optional. */
export interface StepHooks {
  /** Zero the method's own gradient accumulators. */
  zeroGrads?(): void;
  /** Before the first forward of a step (NOLA: combine A, B from the coefficients). */
  prepareStep?(): void;
  /** After the last backward of a step (NOLA: coefficient gradients from dA, dB). */
  finishBackward?(): void;
}

/** Options of {@link train}. */
export interface TrainOptions {
  /** The model to train (adapters, if any, already attached). */
  model: Model;
  /** Parameter groups; every tensor in them is saved in checkpoints. */
  groups: ParamGroup[];
  /** Around each step: zero the method's gradients, prepare, finish the backward. */
  hooks?: StepHooks;
  /** The training stream; its length sets the number of steps. */
  batches: StepSource;
  /**
   * The learning-rate shape: step `s` multiplies every group's `lr` by `lrFactor(s, schedule)`
   * (the schedule's own `lr` only sets the ratio `minLr / lr`).
   */
  schedule: Schedule;
  /** Clip the global gradient norm to this; 0 or absent: no clipping. */
  maxGradNorm?: number;
  /** Label smoothing of the training loss, in [0, 1); default 0. */
  labelSmoothing?: number;
  /** The run's metrics and summary. */
  log: RunLog;
  /** Read losses back every this many steps; default 10. */
  logEvery?: number;
  /** Evaluate every this many steps and after the last; 0: only after the last; absent: never. */
  evalEvery?: number;
  /** Validation: returns the figure to minimise (`loss`) and any others to log. */
  evaluate?: () => Promise<{ loss: number } & Record<string, number>>;
  /** Early stopping: evaluations without a better validation loss before stopping. */
  patience?: number;
  /** Called with each new best validation loss (e.g. to save the best adapter). */
  onBest?: (step: number, loss: number) => Promise<void>;
  /** Write a checkpoint every this many steps (and at the end); 0 disables. Default 100. */
  checkpointEvery?: number;
  /**
   * Continue from the newest checkpoint of the run that verifies (`true`; damaged newer ones are
   * reported through `progress` or stderr and skipped), or from one already chosen.
   */
  resume?: boolean | ResumePoint;
  /** Stops the run at the next step boundary, after writing a checkpoint (SIGINT). */
  signal?: AbortSignal;
  /** Shows steps, loss, learning rate, throughput and ETA. */
  progress?: Progress;
  /** Called after every read-back with the steps' figures. */
  onLog?: (records: MetricRecord[]) => void;
}

/** How a run ended. */
export interface TrainResult {
  /** Optimizer steps completed. */
  steps: number;
  /** Why the run ended. */
  stoppedBy: "done" | "early-stop" | "interrupted";
  /** Mean training loss of every step of this session, by step. */
  losses: Map<number, number>;
  /** Best validation loss seen, when `evaluate` was given. */
  bestValidationLoss?: number;
  /** The step of `bestValidationLoss`. */
  bestStep?: number;
  /** The last checkpoint written, if any. */
  checkpoint?: string;
}

/** A step whose loss or gradient norm was NaN or infinite; the run stops there. */
export class NonFiniteLossError extends Error {
  /** Always `"NonFiniteLossError"`. */
  override name = "NonFiniteLossError";
  /**
   * Creates the error.
   *
   * @param step The step whose loss or gradient norm was not finite.
   * @param checkpoint The last good checkpoint, if any.
   * @param what What was not finite, e.g. `loss is NaN`.
   */
  constructor(readonly step: number, readonly checkpoint: string | undefined, what: string) {
    super(
      `Training stopped: ${what} at step ${step}` +
        (checkpoint
          ? `; the last good checkpoint is ${checkpoint} (resume from it with --resume, perhaps with a lower learning rate)`
          : "; no checkpoint was written before it (try a lower learning rate)"),
    );
  }
}

/**
 * Where the trainer takes its optimizer steps from: `TrainBatches` over token rows or labelled
 * examples, or anything else that can say where it stands and resume there.
 */
export interface StepSource {
  /** Optimizer steps of the whole run. */
  readonly totalSteps: number;
  /** The micro-batches of the next step, or null when the run is over. */
  nextStep(): MicroBatch[] | null;
  /** Where the stream stands, saved with checkpoints. */
  state(): BatchState;
  /** Continues from a saved state. */
  restore(state: BatchState): void;
}

/** Runs the loop until the batches end, early stopping, or the signal. */
export async function train(options: TrainOptions): Promise<TrainResult> {
  const { model, batches, log } = options;
  const { gpu } = model;
  const logEvery = options.logEvery ?? 10;
  const checkpointEvery = options.checkpointEvery ?? 100;
  const params: OptimizerParam[] = options.groups.flatMap((g) => g.params);
  using optimizer = await Optimizer.create(gpu, options.groups, {
    maxGradNorm: options.maxGradNorm,
  });
  using acc = await LossAccumulator.create(gpu);
  // One slot a step: the loss totals' words, then the gradient norm's bits; one read for all.
  const SLOT = LOSSACC_WORDS + 1;
  using history = Tensor.empty(gpu, [logEvery, SLOT], { dtype: "u32" });
  const losses = new Map<number, number>();
  const extra = { bestLoss: Infinity, bestStep: -1, badEvals: 0 };
  let checkpoint: string | undefined;

  if (options.resume) {
    const say = (line: string) =>
      options.progress ? options.progress.log(line) : console.error(line);
    const point = options.resume === true
      ? await findResumeCheckpoint(log.dir, { say })
      : options.resume;
    if (!point) {
      throw new CheckpointError(`Cannot resume: no checkpoint in ${checkpointDir(log.dir)}`, {
        file: checkpointDir(log.dir),
      });
    }
    const { path, data: state } = point;
    for (const p of params) {
      const values = state.params.get(p.name);
      if (!values || values.length !== p.param.size) {
        throw new CheckpointError(
          `Cannot resume from "${path}": tensor "${p.name}" is missing or resized`,
          { file: path },
        );
      }
      gpu.write(p.param.buffer, values);
    }
    optimizer.load(state.optimizer);
    batches.restore(state.batches);
    // The log may have been opened for a newer checkpoint that turned out damaged.
    await log.rewind(state.step);
    Object.assign(extra, state.extra);
    checkpoint = path;
  }
  const startStep = batches.state().step;
  let pending: { step: number; lr: number; tokens: number }[] = [];
  let lastRead = performance.now();

  // Reads the history of the pending steps, logs them, and stops on a non-finite figure.
  const readBack = async () => {
    if (pending.length === 0) return;
    const words = new Uint32Array(
      await gpu.read(history.buffer, { byteLength: pending.length * SLOT * 4 }),
    );
    const norms = new Float32Array(words.buffer);
    const now = performance.now();
    const seconds = (now - lastRead) / 1000;
    lastRead = now;
    const tokens = pending.reduce((s, p) => s + p.tokens, 0);
    const records: MetricRecord[] = pending.map((p, i) => {
      const totals = decodeLossTotals(words.subarray(i * SLOT, i * SLOT + LOSSACC_WORDS));
      return {
        step: p.step,
        split: "train" as const,
        loss: totals.mean,
        lr: p.lr,
        tokens_per_s: tokens / seconds,
        grad_norm: norms[i * SLOT + LOSSACC_WORDS],
      };
    });
    pending = [];
    const bad = records.find((r) => !Number.isFinite(r.loss) || !Number.isFinite(r.grad_norm));
    await log.append(bad ? records.slice(0, records.indexOf(bad)) : records);
    for (const r of records) losses.set(r.step, r.loss);
    if (bad) {
      const what = Number.isFinite(bad.loss)
        ? `gradient norm is ${bad.grad_norm}`
        : `loss is ${bad.loss}`;
      throw new NonFiniteLossError(bad.step, checkpoint, what);
    }
    const last = records.at(-1)!;
    options.progress?.update(last.step, { loss: last.loss, lr: last.lr, items: tokens });
    options.onLog?.(records);
  };

  const writeCheckpoint = async (step: number) => {
    await readBack();
    await log.sync();
    const values = new Map<string, Float32Array>();
    for (const p of params) values.set(p.name, await p.param.read() as Float32Array);
    checkpoint = await saveCheckpoint(log.dir, {
      step,
      params: values,
      optimizer: await optimizer.state(),
      batches: batches.state(),
      extra,
    });
  };

  const evaluate = async (step: number): Promise<boolean> => {
    if (!options.evaluate) return false;
    await readBack();
    const figures = await options.evaluate();
    await log.append({ step, split: "validation", ...figures });
    options.progress?.log(`step ${step}: validation loss ${figures.loss.toFixed(4)}`);
    if (figures.loss < extra.bestLoss) {
      Object.assign(extra, { bestLoss: figures.loss, bestStep: step, badEvals: 0 });
      await options.onBest?.(step, figures.loss);
      return false;
    }
    extra.badEvals++;
    return options.patience !== undefined && extra.badEvals >= options.patience;
  };

  let stoppedBy: TrainResult["stoppedBy"] = "done";
  let step = startStep;
  for (let micro: MicroBatch[] | null; (micro = batches.nextStep()) !== null;) {
    const lr = lrFactor(step, options.schedule);
    const total = micro.reduce((s, mb) => s + sum(mb.mask), 0) || 1;
    options.hooks?.zeroGrads?.();
    if (model.grads) model.zeroGrads();
    options.hooks?.prepareStep?.();
    acc.reset();
    let tokens = 0;
    for (const mb of micro) {
      const weights = mb.mask.map((m) => m / total);
      const acts = model.forward(mb);
      model.loss(
        { targets: mb.targets, weights, labelSmoothing: options.labelSmoothing },
        { backward: true },
      );
      model.backward();
      acc.add(acts.losses, { weights: acts.weights });
      tokens += lossRows(mb);
    }
    options.hooks?.finishBackward?.();
    optimizer.step(lr);
    const slot = pending.length;
    gpu.copy(acc.words.buffer, history.buffer, {
      size: LOSSACC_WORDS * 4,
      targetOffset: slot * SLOT * 4,
    });
    gpu.copy(optimizer.norm.buffer, history.buffer, {
      size: 4,
      targetOffset: (slot * SLOT + LOSSACC_WORDS) * 4,
    });
    gpu.flush();
    step++;
    pending.push({ step, lr: lr * (options.groups[0]?.lr ?? 1), tokens });
    if (pending.length === logEvery) await readBack();
    const last = step === batches.totalSteps;
    const evalDue = options.evalEvery === 0
      ? last
      : options.evalEvery !== undefined && (step % options.evalEvery === 0 || last);
    if (evalDue && await evaluate(step)) {
      stoppedBy = "early-stop";
    }
    if (options.signal?.aborted) stoppedBy = "interrupted";
    if (
      stoppedBy !== "done" || last || (checkpointEvery > 0 && step % checkpointEvery === 0)
    ) {
      if (checkpointEvery > 0 || stoppedBy === "interrupted") await writeCheckpoint(step);
    }
    if (stoppedBy !== "done") break;
  }
  await readBack();
  await log.sync();
  return {
    steps: step,
    stoppedBy,
    losses,
    bestValidationLoss: Number.isFinite(extra.bestLoss) ? extra.bestLoss : undefined,
    bestStep: extra.bestStep >= 0 ? extra.bestStep : undefined,
    checkpoint,
  };
}

function sum(values: Float32Array): number {
  let s = 0;
  for (const v of values) s += v;
  return s;
}
