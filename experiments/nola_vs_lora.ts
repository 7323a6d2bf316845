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
  LABEL_SMOOTHING,
  methodSettings,
  num,
  pipelineYaml,
  ptqStages,
  scoreStages,
  type Summary,
  TARGETS,
  trainStages,
  WARMUP_RATIO,
} from "./nola_vs_lora_pipeline.ts";
import {
  type Diverged,
  type EvalFigures,
  type FinalFigures,
  type FinalRun,
  pickLearningRates,
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
  const seeds = Array.from({ length: options.seeds }, (_, i) => i);
  const store = new RunStore(options.out);
  await Deno.mkdir(options.out, { recursive: true });

  // Every run, in order: the whole sweep, then each method's seeds (at its pick, known later).
  const sweepPlan = trained.flatMap((t) =>
    options.sweepFactors.map((f) => ({ t, lr: roundLr(centre(options, t.method) * f) }))
  );
  const total = sweepPlan.length + trained.length * seeds.length;
  const eta = new Eta();
  let index = 0;
  let [ran, skipped] = [0, 0];
  const sweep: SweepRun[] = [];
  const finals: FinalRun[] = [];
  const common = {
    experiment: "nola-vs-lora",
    version: 1,
    targets: TARGETS,
    batchSize: options.batchSize,
    seqLen: options.seqLen,
    schedule: { kind: "linear", warmupRatio: WARMUP_RATIO },
    labelSmoothing: LABEL_SMOOTHING,
    base: { path: inputs.base, sha256: inputs.baseHash },
    data: { path: inputs.data, sha256: inputs.dataHash },
  };
  const remaining = (done: number) => {
    const left: { kind: string; units: number }[] = [];
    for (let i = done; i < total; i++) {
      left.push(
        i < sweepPlan.length
          ? { kind: "sweep", units: options.sweepSteps }
          : { kind: "final", units: options.steps },
      );
    }
    return left;
  };
  const report = () =>
    writeResults(options.out, {
      options,
      base: inputs.base,
      testMrs: Math.min(options.testExamples ?? Infinity, inputs.testMrs),
      validationMrs: inputs.validationMrs,
      slotError,
      command: ["deno task experiment nola-vs-lora", ...args].join(" "),
      sweep,
      finals,
    });

  say(
    `nola-vs-lora: ${options.methods.map((m) => m.id).join(", ")}; base ${inputs.base}\n` +
      `  sweep: ${sweepPlan.length} runs of ${options.sweepSteps} steps; final: ` +
      `${total - sweepPlan.length} runs of ${options.steps} steps, each scored on ` +
      `${Math.min(options.testExamples ?? Infinity, inputs.testMrs)} test meaning ` +
      `representations; output in ${options.out}`,
  );
  using stop = new StopRequest(say);
  using acquired = io.gpu ? undefined : await Gpu.acquire();
  const gpu = io.gpu ?? acquired!;
  const runOne = async <F extends object>(
    kind: "sweep" | "final",
    title: string,
    settings: Record<string, unknown>,
    stages: string,
    read: (summary: Summary) => F,
  ): Promise<{ figures: F | Diverged; seconds: number; folder: string } | undefined> => {
    index++;
    const name = `${kind}-${settings.method}-lr${
      lrText(settings.lr as number)
    }-seed${settings.seed}`;
    const folder = await store.folder(name, settings);
    const before = await store.done<Record<string, unknown>, F | Diverged>(folder, settings);
    if (before) {
      skipped++;
      say(`[${index}/${total}] ${title}: done before (${folder})`);
      return { figures: before.figures, seconds: before.seconds, folder };
    }
    say(`[${index}/${total}] ${title} ...`);
    await Deno.mkdir(folder, { recursive: true });
    const path = join(folder, "pipeline.yaml");
    await Deno.writeTextFile(path, pipelineYaml(name, folder, settings, stages, inputs));
    const start = performance.now();
    let figures: F | Diverged;
    try {
      const result = await runPipeline(path, { gpu, say: (line) => say(indent(line)) });
      if (result.interrupted) return undefined;
      figures = read(JSON.parse(await Deno.readTextFile(join(folder, "summary.json"))));
    } catch (e) {
      // Too high a rate is a result of the sweep, not a failure of the experiment.
      if (!(e instanceof NonFiniteLossError)) throw e;
      figures = { diverged: e.message };
    }
    const seconds = (performance.now() - start) / 1000;
    await store.save(folder, {
      settings,
      figures,
      seconds,
      finished: new Date().toISOString(),
    });
    ran++;
    eta.record(kind, kind === "sweep" ? options.sweepSteps : options.steps, seconds);
    const left = eta.estimate(remaining(index));
    say(
      `[${index}/${total}] ${title}: ${describe(figures)} (${formatDuration(seconds)})` +
        (left === undefined || index === total ? "" : `; about ${formatDuration(left)} left`),
    );
    return { figures, seconds, folder };
  };

  for (const { t, lr } of sweepPlan) {
    const settings = {
      ...common,
      ...methodSettings(t.method),
      phase: "sweep",
      lr,
      seed: seeds[0],
      steps: options.sweepSteps,
    };
    const title = `sweep ${t.method.label}, lr ${lrText(lr)}, ${options.sweepSteps} steps`;
    const done = await runOne(
      "sweep",
      title,
      settings,
      trainStages(t.method, lr, options.sweepSteps, options.batchSize),
      (s) => ({
        valLoss: num(s, "train", "best_validation_loss"),
        finalTrainLoss: num(s, "train", "final_train_loss"),
        trainableParameters: num(s, "attach", "trainable_parameters"),
      }),
    );
    if (!done) return stopped(options.out, ran, skipped, say);
    sweep.push({ method: t.method.id, lr, seed: seeds[0], steps: options.sweepSteps, ...done });
    await report();
    if (stop.requested) return stopped(options.out, ran, skipped, say);
  }

  const picks = pickLearningRates(sweep);
  const evaluation = {
    metrics: ["bleu", "rouge_l", ...(slotError ? ["slot_error"] : [])],
    decoding: "beam",
    beams: options.beams,
    lengthPenalty: options.lengthPenalty,
    noRepeatNgram: options.noRepeatNgram,
    maxNewTokens: options.maxNewTokens,
    testExamples: options.testExamples ?? null,
  };
  for (const t of trained) {
    const lr = picks.get(t.method.id)!.lr;
    for (const seed of seeds) {
      const settings = {
        ...common,
        ...methodSettings(t.method),
        phase: "final",
        lr,
        seed,
        steps: options.steps,
        ptqBits: t.ptq ? QUANT_BITS : null,
        evaluation,
      };
      const title = `${t.method.label}${t.ptq ? " (+ 4-bit PTQ)" : ""}, lr ${lrText(lr)}, ` +
        `seed ${seed}, ${options.steps} steps`;
      const stages = trainStages(t.method, lr, options.steps, options.batchSize) +
        scoreStages(options, evaluation.metrics, "") +
        (t.ptq ? ptqStages(options, evaluation.metrics) : "");
      const done = await runOne("final", title, settings, stages, (s): FinalFigures => ({
        trainableParameters: num(s, "attach", "trainable_parameters"),
        ...evalFigures(s, "", num(s, "train", "best_validation_loss")),
        ...(t.ptq ? { ptq: evalFigures(s, "_4bit", num(s, "val_4bit", "loss")) } : {}),
      }));
      if (!done) return stopped(options.out, ran, skipped, say);
      finals.push({ method: t.method.id, lr, seed, steps: options.steps, ...done });
      await report();
      if (stop.requested && index < total) return stopped(options.out, ran, skipped, say);
    }
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

function stopped(
  out: string,
  ran: number,
  skipped: number,
  say: (line: string) => void,
): ExperimentOutcome {
  say(
    `\nstopped: ${ran} runs done now, ${skipped} before; the same command continues ` +
      `(finished runs are kept in ${join(out, "runs")})`,
  );
  return { out, ran, skipped, interrupted: true };
}
