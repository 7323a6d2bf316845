/**
 * The paper's few-shot ViT table, on the project's fixture: the ViT pretrained on five
 * Fashion-MNIST classes (`fixtures/tiny-vit-fashion/`) learns the other five from 5 or 10 images
 * a class, by a new head alone (a linear probe), full fine-tuning, LoRA r = 1 and r = 4 on the
 * attention's query and value, and NOLA-MLP (r 1) at two sizes, each with a new head trained with
 * it. Every (shots, method) cell runs the paper's protocol, sampling seeds x initialisation seeds
 * (4 x 3 = 12 runs by default), and is scored by test accuracy.
 *
 *     deno task experiment vit-fewshot            # the full run
 *     deno task experiment vit-fewshot --quick    # a smoke run
 *
 * Every run is a pipeline (`runs/<name>/pipeline.yaml`, run by `runPipeline` on one shared
 * device) whose result is written atomically into its folder as it finishes; a rerun skips runs
 * already done under the same settings (base and data files included, by hash). The table and the
 * chart are rewritten after every run: `results.json`, `results.md`, `accuracy.svg`.
 *
 * @module
 */

import { join, resolve } from "node:path";
import { Gpu } from "../kernels/gpu.ts";
import { runPipeline } from "../pipelines/run.ts";
import { ExperimentUsageError } from "./nola_vs_lora_options.ts";
import {
  Eta,
  formatDuration,
  runPipelineHead,
  RunStore,
  sha256Hex,
  StopRequest,
} from "./run_store.ts";
import {
  FEWSHOT_USAGE,
  type FewShotMethod,
  type FewShotOptions,
  parseFewShotOptions,
} from "./vit_fewshot_options.ts";
import { type FewShotRun, writeFewShotResults } from "./vit_fewshot_report.ts";

/** Fashion-MNIST's class names by label value. */
export const FASHION_LABELS = [
  "T-shirt/top",
  "Trouser",
  "Pullover",
  "Dress",
  "Coat",
  "Sandal",
  "Shirt",
  "Sneaker",
  "Bag",
  "Ankle boot",
];

/** LoRA's targets: the attention's query and value in both ViT layouts' Hugging Face names. */
export const QV_TARGETS = [
  "encoder.layer.*.attention.attention.query",
  "encoder.layer.*.attention.attention.value",
];

/** How an experiment ended. */
export interface FewShotOutcome {
  /** The output folder. */
  out: string;
  /** Runs done now. */
  ran: number;
  /** Runs skipped because they had finished before. */
  skipped: number;
  /** True when a run was interrupted (Ctrl-C): the same command continues. */
  interrupted: boolean;
}

/** Where the experiment's messages go, and the device. */
export interface FewShotIo {
  /** Prints a line for a person; default stderr. */
  say?: (line: string) => void;
  /** Run on this device (left open); default: one acquired for the experiment. */
  gpu?: Gpu;
}

const DATA_FILES = [
  "train-images-idx3-ubyte.gz",
  "train-labels-idx1-ubyte.gz",
  "t10k-images-idx3-ubyte.gz",
  "t10k-labels-idx1-ubyte.gz",
];

/** Hashes of the base's weights and config and of the data files; one line naming what is missing. */
async function hashInputs(o: FewShotOptions): Promise<Record<string, string>> {
  const hashes: Record<string, string> = {};
  const files = [
    ...["config.json", "model.safetensors"].map((f) => ({ path: join(o.base, f), what: "--base" })),
    ...DATA_FILES.map((f) => ({ path: join(o.data, f), what: "--data" })),
  ];
  for (const { path, what } of files) {
    try {
      hashes[path] = await sha256Hex(await Deno.readFile(path), 16);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
      const fix = what === "--base"
        ? "make it with pipelines/pretrain-tiny-vit.yaml (fixtures/README.md) or give --base"
        : "make it with fixtures/fashion-fewshot/make_subset.ts or give --data";
      throw new ExperimentUsageError(`${what}: ${path} is missing: ${fix}`);
    }
  }
  return hashes;
}

/** The stages after `data` for one method: attach, train, evaluate, and save for adapters. */
export function methodStages(
  method: FewShotMethod,
  options: { steps: number; batchSize: number },
): string {
  const attach = method.kind === "head"
    ? "  - { kind: attach, method: none, head: new }\n"
    : method.kind === "full"
    ? "  - { kind: attach, method: none, head: new }\n"
    : method.kind === "lora"
    ? `  - kind: attach\n    method: lora\n    targets: ${JSON.stringify(QV_TARGETS)}\n` +
      `    r: ${method.r}\n    lora_alpha: ${method.r}\n    head: new\n`
    : `  - { kind: attach, method: nola, targets: [mlp], r: ${method.r}, k: ${method.k}, ` +
      `l: ${method.k}, head: new }\n`;
  const warmup = Math.max(1, Math.round(options.steps / 10));
  return attach +
    `  - kind: train\n` +
    (method.kind === "full" ? "    full: true\n" : "") +
    `    steps: ${options.steps}\n    batch_size: ${options.batchSize}\n    lr: ${method.lr}\n` +
    `    schedule: { kind: linear, warmup_steps: ${warmup} }\n    label_smoothing: 0.1\n` +
    `  - { id: after, kind: evaluate, split: test, metrics: [accuracy] }\n` +
    (method.kind === "full" ? "" : "  - { kind: save }\n");
}

/** A run's whole pipeline; paths absolute, so it runs from its own folder. */
export function fewShotYaml(
  name: string,
  folder: string,
  settings: {
    seed: number;
    samplingSeed: number;
    shots: number;
    classIds: number[];
    evalPerClass: number;
  },
  options: { base: string; data: string; stages: string },
): string {
  const data = (f: string) => JSON.stringify(resolve(options.data, f));
  return runPipelineHead("experiments/vit_fewshot.ts", {
    name,
    settings,
    folder,
    base: options.base,
  }) +
    `  - kind: data
    format: images
    train: ${data("train-images-idx3-ubyte.gz")}
    test: ${data("t10k-images-idx3-ubyte.gz")}
    label_names: ${JSON.stringify(FASHION_LABELS)}
    class_ids: ${JSON.stringify(settings.classIds)}
    shots: ${settings.shots}
    sampling_seed: ${settings.samplingSeed}
    eval_per_class: ${settings.evalPerClass}
    augment: { crop: false, flip: true }
${options.stages}`;
}

/**
 * Runs the experiment with the options in `args` (see `--help`).
 *
 * @param args Flags after the experiment's name.
 * @param io Output and device.
 * @returns What ran, what was skipped, and whether it was interrupted.
 * @throws {ExperimentUsageError} For a bad flag or a missing base or data file.
 *
 * @example A smoke run
 * ```ts
 * import { main } from "./vit_fewshot.ts";
 * await main(["--quick"]);
 * ```
 */
export async function main(args: readonly string[], io: FewShotIo = {}): Promise<FewShotOutcome> {
  const say = io.say ?? ((line: string) => console.error(line));
  const options = parseFewShotOptions(args);
  if (options === "help") {
    say(FEWSHOT_USAGE);
    return { out: "", ran: 0, skipped: 0, interrupted: false };
  }
  const hashes = await hashInputs(options);
  const store = new RunStore(options.out);
  await Deno.mkdir(options.out, { recursive: true });
  const plan = options.shots.flatMap((shots) =>
    options.methods.flatMap((method) =>
      Array.from(
        { length: options.samplingSeeds },
        (_, s) => Array.from({ length: options.initSeeds }, (_, i) => ({ shots, method, s, i })),
      ).flat()
    )
  );
  const classes = options.classIds.length;
  say(
    `vit-fewshot: ${plan.length} runs (${options.shots.join(", ")}-shot x ` +
      `${options.methods.length} methods x ${options.samplingSeeds} sampling x ` +
      `${options.initSeeds} init seeds) of ${options.steps} steps on ${options.base}, ` +
      `${classes} classes, ${options.evalPerClass} test images a class at most; output in ` +
      options.out,
  );
  const runs: FewShotRun[] = [];
  const command = ["deno task experiment vit-fewshot", ...args].join(" ");
  const eta = new Eta();
  let [ran, skipped] = [0, 0];
  using stop = new StopRequest(say);
  using acquired = io.gpu ? undefined : await Gpu.acquire();
  const gpu = io.gpu ?? acquired!;
  for (const [index, { shots, method, s, i }] of plan.entries()) {
    const batchSize = Math.min(options.batchSize, shots * classes);
    const settings = {
      experiment: "vit-fewshot",
      version: 1,
      method: method.id,
      lr: method.lr,
      shots,
      samplingSeed: s,
      seed: i,
      steps: options.steps,
      batchSize,
      classIds: options.classIds,
      evalPerClass: options.evalPerClass,
      inputs: hashes,
    };
    const name = `${shots}shot-${method.id}-s${s}-i${i}`;
    const title = `[${index + 1}/${plan.length}] ${shots}-shot ${method.label}, ` +
      `sampling seed ${s}, init seed ${i}`;
    const folder = await store.folder(name, settings);
    const before = await store.done<typeof settings, FewShotRun["figures"]>(folder, settings);
    if (before) {
      skipped++;
      runs.push({ method: method.id, shots, samplingSeed: s, seed: i, figures: before.figures });
      say(`${title}: done before (${folder})`);
      continue;
    }
    say(`${title} ...`);
    await Deno.mkdir(folder, { recursive: true });
    const path = join(folder, "pipeline.yaml");
    const stages = methodStages(method, { steps: options.steps, batchSize });
    await Deno.writeTextFile(
      path,
      fewShotYaml(name, folder, settings, { base: options.base, data: options.data, stages }),
    );
    const start = performance.now();
    const result = await runPipeline(path, { gpu, say: () => {} });
    if (result.interrupted) return { out: options.out, ran, skipped, interrupted: true };
    const summary = JSON.parse(await Deno.readTextFile(join(folder, "summary.json")));
    const trainable = summary.train.trainable_parameters as number;
    const figures = {
      accuracy: summary.after.accuracy as number,
      trainable,
      headParameters: summary.attach.head_parameters as number,
      // Full fine-tuning ships the whole model: its f32 weights stand for its adapter.
      adapterBytes: method.kind === "full" ? 4 * trainable : summary.save.bytes as number,
      finalTrainLoss: summary.train.final_train_loss as number,
    };
    const seconds = (performance.now() - start) / 1000;
    await store.save(folder, { settings, figures, seconds, finished: new Date().toISOString() });
    ran++;
    runs.push({ method: method.id, shots, samplingSeed: s, seed: i, figures });
    eta.record("run", 1, seconds);
    const left = eta.estimate(plan.slice(index + 1).map(() => ({ kind: "run", units: 1 })));
    say(
      `${title}: accuracy ${figures.accuracy.toFixed(1)}% (${formatDuration(seconds)})` +
        (left === undefined || index + 1 === plan.length
          ? ""
          : `; about ${formatDuration(left)} left`),
    );
    await writeFewShotResults(options.out, { options, command, runs });
    if (stop.requested) return { out: options.out, ran, skipped, interrupted: true };
  }
  await writeFewShotResults(options.out, { options, command, runs });
  say(`vit-fewshot: ${ran} runs done, ${skipped} done before; ${options.out}/results.md`);
  return { out: options.out, ran, skipped, interrupted: false };
}
