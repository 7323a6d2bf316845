/**
 * The paper's trade-off on the data-to-text task, done properly, in one command: LoRA at
 * r = 1, 2, 4, 8 against NOLA (r = 8) at several k = l, on the q and v projections of the default
 * job's base, plus NOLA with 4-bit coefficients quantized after training (PTQ) and during it
 * (QAT).
 *
 *     deno task experiment                # or: deno task experiment nola-vs-lora --help
 *
 * 1. A learning-rate sweep per method: its centre times each factor, one seed, a shorter budget;
 *    the pick is the rate of lowest validation loss (over the whole validation split).
 * 2. Every method at its pick, for each seed, with an equal step budget; scored on the test split
 *    with the paper's decoding (beam 10, length penalty 0.8, no repeated 4-grams): BLEU, ROUGE-L
 *    and, where the evaluate stage has it, the slot-error rate. PTQ rows quantize the same-k NOLA
 *    runs' coefficients after training and score them again.
 *
 * Every run is a pipeline (`runs/<name>/pipeline.yaml`, run by `runPipeline` on one shared
 * device) whose result is written atomically into its folder as it finishes; a rerun skips runs
 * already done under the same settings (base and data files included, by hash), so a stopped
 * experiment continues where it stopped. The table, the sweep, the claims and the charts are
 * rewritten after every run: `results.json`, `results.md`, `bleu.svg`, `loss.svg`.
 *
 * @module
 */

import { join } from "node:path";
import { Gpu } from "../kernels/gpu.ts";
import { runPipeline } from "../pipelines/run.ts";
import { NonFiniteLossError } from "../train/trainer.ts";
import {
  type ExperimentOptions,
  ExperimentUsageError,
  type Method,
  parseMethod,
  parseOptions,
  QUANT_BITS,
  USAGE,
} from "./nola_vs_lora_options.ts";
import {
  checkInputs,
  defaultBase,
  evalFigures,
  evaluateMetrics,
  hashInputs,
  LABEL_SMOOTHING,
  methodSettings,
  num,
  pipelineYaml,
  ptqStages,
  scoreStages,
  type Summary,
  TARGETS,
  TEMPLATES,
  trainStages,
  WARMUP_RATIO,
} from "./nola_vs_lora_pipeline.ts";
import {
  type Diverged,
  type EvalFigures,
  type FinalFigures,
  type FinalRun,
  pickLearningRates,
  type SweepFigures,
  type SweepRun,
} from "./nola_vs_lora_report.ts";
import { writeResults } from "./nola_vs_lora_output.ts";
import { Eta, formatDuration, RunStore, StopRequest } from "./run_store.ts";

/** What a run trains: a method, and for NOLA whether its coefficients are also scored at 4 bits. */
interface Trained {
  method: Method;
  ptq: boolean;
}

/** How an experiment ended. */
export interface ExperimentOutcome {
  /** The output folder. */
  out: string;
  /** Runs done now. */
  ran: number;
  /** Runs skipped because they had finished before. */
  skipped: number;
  /** True when a run was interrupted (Ctrl-C): the same command continues. */
  interrupted: boolean;
}

/** Where the experiment's messages go. */
export interface ExperimentIo {
  /** Reads an environment variable; default `Deno.env.get`. */
  env?: (name: string) => string | undefined;
  /** Prints a line for a person; default stderr. */
  say?: (line: string) => void;
  /** Run on this device (left open); default: one acquired for the experiment. */
  gpu?: Gpu;
}

/**
 * Runs the experiment with the options in `args` (see {@linkcode USAGE}).
 *
 * @param args Flags after the experiment's name.
 * @param io Environment and output.
 * @returns What ran, what was skipped, and whether it was interrupted.
 * @throws {ExperimentUsageError} For a bad flag, variable, base or data folder.
 *
 * @example A smoke run
 * ```ts
 * import { main } from "./nola_vs_lora.ts";
 * await main(["--quick"]);
 * ```
 */
export async function main(
  args: readonly string[],
  io: ExperimentIo = {},
): Promise<ExperimentOutcome> {
  const say = io.say ?? ((line: string) => console.error(line));
  const options = parseOptions(args, io.env);
  if (options === "help") {
    say(USAGE);
    return { out: "", ran: 0, skipped: 0, interrupted: false };
  }
  const base = options.base ?? await defaultBase();
  const inputs = await checkInputs(base, options.data, {
    baseFrom: options.base === undefined ? "The default job's base" : undefined,
  });
  const slotError = evaluateMetrics().includes("slot_error");
  const trained = trainedMethods(options.methods);
  const store = new RunStore(options.out);
  await Deno.mkdir(options.out, { recursive: true });

  const common = {
    experiment: "nola-vs-lora",
    version: 1,
    targets: TARGETS,
    templates: TEMPLATES,
    batchSize: options.batchSize,
    seqLen: options.seqLen,
    pack: false,
    schedule: { kind: "linear", warmupRatio: WARMUP_RATIO },
    labelSmoothing: LABEL_SMOOTHING,
    base: { path: inputs.base, sha256: inputs.baseHash },
    data: { path: inputs.data, sha256: inputs.dataHash },
  };
  const evaluation = {
    metrics: ["bleu", "rouge_l", ...(slotError ? ["slot_error"] : [])],
    decoding: "beam",
    beams: options.beams,
    lengthPenalty: options.lengthPenalty,
    noRepeatNgram: options.noRepeatNgram,
    maxNewTokens: options.maxNewTokens,
    testExamples: options.testExamples ?? null,
  };
  const job = async (kind: Job["kind"], t: Trained, lr: number, seed: number): Promise<Job> => {
    const steps = kind === "sweep" ? options.sweepSteps : options.steps;
    const settings: Record<string, unknown> = {
      ...common,
      ...methodSettings(t.method),
      phase: kind,
      lr,
      seed,
      steps,
      ...(kind === "final" ? { ptqBits: t.ptq ? QUANT_BITS : null, evaluation } : {}),
    };
    const name = `${kind}-${t.method.id}-lr${lrText(lr)}-seed${seed}`;
    const train = trainStages(t.method, lr, steps, options.batchSize);
    const j: Job = {
      kind,
      method: t.method.id,
      lr,
      seed,
      steps,
      name,
      settings,
      folder: await store.folder(name, settings),
      ...(kind === "sweep"
        ? {
          title: `sweep ${t.method.label}, lr ${lrText(lr)}, ${steps} steps`,
          stages: train,
          read: (s: Summary): SweepFigures => ({
            valLoss: num(s, "train", "best_validation_loss"),
            finalTrainLoss: num(s, "train", "final_train_loss"),
            trainableParameters: num(s, "attach", "trainable_parameters"),
          }),
        }
        : {
          title: `${t.method.label}${t.ptq ? " (+ 4-bit PTQ)" : ""}, lr ${lrText(lr)}, ` +
            `seed ${seed}, ${steps} steps`,
          stages: train + scoreStages(options, evaluation.metrics, "") +
            (t.ptq ? ptqStages(options, evaluation.metrics) : ""),
          read: (s: Summary): FinalFigures => ({
            trainableParameters: num(s, "attach", "trainable_parameters"),
            ...evalFigures(s, "", num(s, "train", "best_validation_loss")),
            ...(t.ptq ? { ptq: evalFigures(s, "_4bit", num(s, "val_4bit", "loss")) } : {}),
          }),
        }),
    };
    const before = await store.done<Record<string, unknown>, object>(j.folder, settings);
    if (before) j.done = { figures: before.figures, seconds: before.seconds };
    return j;
  };

  // Every run, in order: the whole sweep, then each method's seeds at its pick. Runs finished
  // before are found first, so the files written along the way show all that is known.
  const sweepJobs: Job[] = [];
  for (const t of trained) {
    for (const f of options.sweepFactors) {
      sweepJobs.push(await job("sweep", t, roundLr(centre(options, t.method) * f), 0));
    }
  }
  let finalJobs: Job[] = [];
  const seeds = Array.from({ length: options.seeds }, (_, i) => i);
  const planFinals = async () => {
    const picks = pickLearningRates(runsOf(sweepJobs) as SweepRun[]);
    finalJobs = [];
    for (const t of trained) {
      for (const seed of seeds) {
        finalJobs.push(await job("final", t, picks.get(t.method.id)!.lr, seed));
      }
    }
  };
  if (sweepJobs.every((j) => j.done)) await planFinals();
  const total = sweepJobs.length + trained.length * seeds.length;
  const report = () =>
    writeResults(options.out, {
      options,
      base: inputs.base,
      testMrs: Math.min(options.testExamples ?? Infinity, inputs.testMrs),
      validationMrs: inputs.validationMrs,
      slotError,
      command: ["deno task experiment nola-vs-lora", ...args].join(" "),
      sweep: runsOf(sweepJobs) as SweepRun[],
      finals: runsOf(finalJobs) as FinalRun[],
    });

  say(
    `nola-vs-lora: ${options.methods.map((m) => m.id).join(", ")}; base ${inputs.base}\n` +
      `  sweep: ${sweepJobs.length} runs of ${options.sweepSteps} steps; final: ` +
      `${total - sweepJobs.length} runs of ${options.steps} steps, each scored on ` +
      `${Math.min(options.testExamples ?? Infinity, inputs.testMrs)} test meaning ` +
      `representations; output in ${options.out}`,
  );
  // Hours long, the experiment must not mix two bases (or data sets) under one key.
  const unchanged = async () => {
    const now = await hashInputs(inputs.base, inputs.data);
    const changed = now.baseHash !== inputs.baseHash
      ? `the base model folder "${inputs.base}"`
      : now.dataHash !== inputs.dataHash
      ? `the data folder "${inputs.data}"`
      : undefined;
    if (changed) {
      throw new ExperimentUsageError(
        `${changed[0].toUpperCase()}${changed.slice(1)} changed while the experiment ran: ` +
          `finished runs are kept; give the command again to go on with the files as they are now`,
      );
    }
  };
  using stop = new StopRequest(say);
  using acquired = io.gpu ? undefined : await Gpu.acquire();
  const gpu = io.gpu ?? acquired!;
  const eta = new Eta();
  let [ran, skipped] = [0, 0];
  const stopped = (): ExperimentOutcome => {
    say(
      `\nstopped: ${ran} runs done now, ${skipped} before; the same command continues ` +
        `(finished runs are kept in ${join(options.out, "runs")})`,
    );
    return { out: options.out, ran, skipped, interrupted: true };
  };
  // Runs one job unless it finished before; false when it was interrupted.
  const execute = async (j: Job, index: number): Promise<boolean> => {
    if (j.done) {
      skipped++;
      say(`[${index}/${total}] ${j.title}: done before (${j.folder})`);
      return true;
    }
    say(`[${index}/${total}] ${j.title} ...`);
    await Deno.mkdir(j.folder, { recursive: true });
    const path = join(j.folder, "pipeline.yaml");
    await Deno.writeTextFile(path, pipelineYaml(j.name, j.folder, j.settings, j.stages, inputs));
    await unchanged();
    const start = performance.now();
    let figures: object;
    try {
      const result = await runPipeline(path, { gpu, say: (line) => say(indent(line)) });
      if (result.interrupted) return false;
      figures = j.read(JSON.parse(await Deno.readTextFile(join(j.folder, "summary.json"))));
    } catch (e) {
      // Too high a rate is a result of the sweep, not a failure of the experiment.
      if (!(e instanceof NonFiniteLossError)) throw e;
      figures = { diverged: e.message } satisfies Diverged;
    }
    const seconds = (performance.now() - start) / 1000;
    // A run that read files changed under it is not kept: it is keyed by the old ones.
    await unchanged();
    await store.save(j.folder, { settings: j.settings, figures, seconds, finished: now() });
    j.done = { figures, seconds };
    ran++;
    await report();
    eta.record(j.kind, j.steps, seconds);
    const left = eta.estimate([
      ...[...sweepJobs, ...finalJobs].filter((o) => !o.done)
        .map((o) => ({ kind: o.kind, units: o.steps })),
      // Final runs not planned yet (the sweep is not over).
      ...Array.from({ length: total - sweepJobs.length - finalJobs.length }, () => ({
        kind: "final",
        units: options.steps,
      })),
    ]);
    say(
      `[${index}/${total}] ${j.title}: ${describe(figures)} (${formatDuration(seconds)})` +
        (left === undefined || left === 0 ? "" : `; about ${formatDuration(left)} left`),
    );
    return true;
  };

  for (const [i, j] of sweepJobs.entries()) {
    if (!await execute(j, i + 1) || stop.requested) return stopped();
  }
  await planFinals();
  for (const [i, j] of finalJobs.entries()) {
    if (!await execute(j, sweepJobs.length + i + 1)) return stopped();
    if (stop.requested && i < finalJobs.length - 1) return stopped();
  }
  await report();
  say(
    `\n${ran} runs done, ${skipped} skipped (finished before); wrote ${
      ["results.json", "results.md", "bleu.svg", "loss.svg"].map((f) => join(options.out, f))
        .join(", ")
    }`,
  );
  return { out: options.out, ran, skipped, interrupted: false };
}

/** One run of the plan: its key, its pipeline's stages, and its result once it has one. */
interface Job {
  kind: "sweep" | "final";
  method: string;
  lr: number;
  seed: number;
  steps: number;
  title: string;
  /** The readable part of its folder's name. */
  name: string;
  /** Its full settings: the key it is stored under. */
  settings: Record<string, unknown>;
  /** The stages after load and data, as YAML. */
  stages: string;
  /** Its figures from the pipeline's summary. */
  read: (summary: Summary) => object;
  folder: string;
  /** Its result, once finished (now or before). */
  done?: { figures: object; seconds: number };
}

/** The finished jobs as rows of the results, in plan order. */
function runsOf(jobs: readonly Job[]): (SweepRun | FinalRun)[] {
  return jobs.filter((j) => j.done).map((j) => ({
    method: j.method,
    lr: j.lr,
    seed: j.seed,
    steps: j.steps,
    figures: j.done!.figures as SweepRun["figures"] & FinalRun["figures"],
    seconds: j.done!.seconds,
    folder: j.folder,
  }));
}

function now(): string {
  return new Date().toISOString();
}

/** The training runs the methods need: PTQ rows ride on the NOLA runs of the same k. */
function trainedMethods(methods: readonly Method[]): Trained[] {
  const trained: Trained[] = [];
  for (const m of methods) {
    const method = m.quant === "ptq" ? parseMethod(`nola-k${m.k}`) : m;
    const ptq = m.quant === "ptq";
    const at = trained.find((t) => t.method.id === method.id);
    if (at) at.ptq ||= ptq;
    else trained.push({ method, ptq });
  }
  return trained;
}

function centre(options: ExperimentOptions, m: Method): number {
  return m.kind === "lora" ? options.lrLora : options.lrNola;
}

/** Three significant digits, so 5e-3 x 0.4 is 0.002, not 0.0020000000000000005. */
function roundLr(lr: number): number {
  return Number(lr.toPrecision(3));
}

function lrText(lr: number): string {
  return lr.toExponential().replace("e+", "e");
}

function describe(figures: object): string {
  const f = figures as Record<string, unknown>;
  if (typeof f.diverged === "string") return `diverged (${f.diverged})`;
  const parts = [`val loss ${(f.valLoss as number).toFixed(4)}`];
  if (typeof f.bleu === "number") parts.push(`BLEU ${f.bleu.toFixed(2)}`);
  if (typeof f.rougeL === "number") parts.push(`ROUGE-L ${f.rougeL.toFixed(2)}`);
  if (typeof f.slotError === "number") parts.push(`slot error ${f.slotError.toFixed(2)}%`);
  const ptq = f.ptq as EvalFigures | undefined;
  if (ptq) parts.push(`4-bit: val loss ${ptq.valLoss.toFixed(4)}, BLEU ${ptq.bleu.toFixed(2)}`);
  return parts.join(", ");
}

function indent(line: string): string {
  return line.split("\n").map((l) => (l ? `    ${l}` : l)).join("\n");
}
