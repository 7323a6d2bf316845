/**
 * The pipelines of the NOLA-vs-LoRA experiment's runs, as YAML (each run is an ordinary pipeline
 * file, kept in its folder), the figures read back from a run's `summary.json`, and the checked
 * inputs (base model and data folder) with the hashes that key the runs.
 *
 * @module
 */

import { join, relative, resolve } from "node:path";
import { groupReferences, parseE2e } from "../data/readers.ts";
import { loadPipeline } from "../pipelines/parse.ts";
import { type Field, stageSchema } from "../pipelines/schema.ts";
import {
  type ExperimentOptions,
  ExperimentUsageError,
  type Method,
  QUANT_BITS,
} from "./nola_vs_lora_options.ts";
import type { EvalFigures } from "./nola_vs_lora_report.ts";
import { runPipelineHead, sha256Hex } from "./run_store.ts";

/** The modules adapted: the query and value projections, as in the paper's GPT-2 runs. */
export const TARGETS = ["h.*.attn.c_attn.q", "h.*.attn.c_attn.v"];
/**
 * The prompt and completion templates, the default job's (a test holds pipelines/default.yaml to
 * them): the MR with each value after a colon and a space, so a value is spelt with the same
 * tokens as in the sentence.
 */
export const TEMPLATES = {
  prompt: "{{ mr | replace('[', ': ') | replace(']', '') }}",
  completion: " {{ ref }}",
} as const;
/** Label smoothing of every run, as in the paper. */
export const LABEL_SMOOTHING = 0.1;
/** Warmup share of the linear schedule. */
export const WARMUP_RATIO = 0.1;

/** The metric names the evaluate stage accepts, from the schema's table. */
export function evaluateMetrics(): string[] {
  const field = stageSchema("evaluate")?.fields.find((f: Field) => f.key === "metrics");
  const type = field?.type;
  if (type?.type !== "list" || type.item.type !== "enum") return [];
  return [...type.item.values];
}

/** The settings that name a method in a run's key. */
export function methodSettings(m: Method) {
  return {
    method: m.id,
    kind: m.kind,
    r: m.r,
    k: m.k ?? null,
    qatBits: m.quant === "qat" ? QUANT_BITS : null,
  };
}

/** The attach and train stages of a run, as YAML. */
export function trainStages(m: Method, lr: number, steps: number, batchSize: number): string {
  return `  - kind: attach
    method: ${m.kind}
    targets: ${JSON.stringify(TARGETS)}
    r: ${m.r}
${m.k ? `    k: ${m.k}\n` : ""}  - kind: train
    steps: ${steps}
    batch_size: ${batchSize}
    lr: ${lr}
    schedule: { kind: linear, warmup_ratio: ${WARMUP_RATIO} }
    label_smoothing: ${LABEL_SMOOTHING}
    checkpoint_every: 0
${m.quant === "qat" ? `    qat: { bits: ${QUANT_BITS} }\n` : ""}`;
}

/** The test-split scoring and the adapter file, as YAML; `suffix` names the stages apart. */
export function scoreStages(options: ExperimentOptions, metrics: string[], suffix: string): string {
  return `  - id: test${suffix}
    kind: evaluate
    split: test
    metrics: ${JSON.stringify(metrics)}
    decoding: beam
    beams: ${options.beams}
    length_penalty: ${options.lengthPenalty}
    no_repeat_ngram: ${options.noRepeatNgram}
    max_new_tokens: ${options.maxNewTokens}
${options.testExamples ? `    max_examples: ${options.testExamples}\n` : ""}  - id: save${suffix}
    kind: save
    path: adapter${suffix}.safetensors
`;
}

/** Post-training quantization, then the validation loss and the test scores again, as YAML. */
export function ptqStages(options: ExperimentOptions, metrics: string[]): string {
  return `  - kind: quantize\n    bits: ${QUANT_BITS}\n` +
    `  - id: val_4bit\n    kind: evaluate\n    split: validation\n    metrics: [loss]\n` +
    scoreStages(options, metrics, "_4bit");
}

/** A whole run's pipeline, as YAML (JSON strings are YAML strings). */
export function pipelineYaml(
  name: string,
  folder: string,
  settings: Record<string, unknown>,
  stages: string,
  inputs: Inputs,
): string {
  const data = (split: string) => JSON.stringify(resolve(inputs.data, `${split}.csv`));
  return runPipelineHead("experiments/nola_vs_lora.ts", {
    name,
    settings,
    folder,
    base: inputs.base,
  }) +
    `  - kind: data
    format: e2e
    train: ${data("train")}
    validation: ${data("validation")}
    test: ${data("test")}
    prompt: ${JSON.stringify(TEMPLATES.prompt)}
    completion: ${JSON.stringify(TEMPLATES.completion)}
    seq_len: ${settings.seqLen}
    pack: ${settings.pack}
${stages}`;
}

/** A run's `summary.json`: figures by stage id. */
export type Summary = Record<string, Record<string, unknown>>;

/** The number `key` of stage `stage` in a run's summary, which must be there. */
export function num(summary: Summary, stage: string, key: string): number {
  const value = summary[stage]?.[key];
  if (typeof value !== "number") {
    throw new Error(`The run's summary.json lacks the number ${stage}.${key}`);
  }
  return value;
}

/** The scores of the test stage named `test<suffix>` and its save stage. */
export function evalFigures(s: Summary, suffix: string, valLoss: number): EvalFigures {
  const test = s[`test${suffix}`] ?? {};
  const optional = (key: string) => typeof test[key] === "number" ? test[key] as number : undefined;
  const figures: EvalFigures = {
    valLoss,
    bleu: num(s, `test${suffix}`, "bleu"),
    rougeL: num(s, `test${suffix}`, "rouge_l"),
    adapterBytes: num(s, `save${suffix}`, "bytes"),
  };
  const slot = {
    slotError: optional("slot_error"),
    slotMissing: optional("slot_missing"),
    slotHallucinated: optional("slot_hallucinated"),
  };
  for (const [k, v] of Object.entries(slot)) {
    if (v !== undefined) Object.assign(figures, { [k]: v });
  }
  return figures;
}

/** The default job's base model folder (its load stage), relative to the working folder. */
export async function defaultBase(): Promise<string> {
  const pipeline = await loadPipeline("pipelines/default.yaml");
  const load = pipeline.stages.find((s) => s.kind === "load");
  if (!load || load.kind !== "load") {
    throw new ExperimentUsageError(
      "pipelines/default.yaml has no load stage to take the base from: give --base DIR",
    );
  }
  return relative(".", resolve(pipeline.baseDir, load.model));
}

/** The inputs, checked, with the hashes that key the runs. */
export interface Inputs {
  base: string;
  baseHash: string;
  data: string;
  dataHash: string;
  testMrs: number;
  validationMrs: number;
}

/**
 * Checks the base model folder and the data folder, and hashes their files.
 *
 * @throws {ExperimentUsageError} When either is missing or lacks a file.
 */
export async function checkInputs(
  base: string,
  data: string,
  options: { baseFrom?: string } = {},
): Promise<Inputs> {
  // Where the base came from, for the message: the flag, or the default job.
  const baseFrom = options.baseFrom ?? "--base";
  const files = async (dir: string, flag: string, names: (list: string[]) => string[]) => {
    const list: string[] = [];
    try {
      for await (const e of Deno.readDir(dir)) if (e.isFile) list.push(e.name);
      list.sort();
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory)) throw e;
      const fix = flag === "--data" ? "--data DIR" : "--base DIR";
      throw new ExperimentUsageError(`${flag} "${dir}": no such folder; give ${fix}`);
    }
    return names(list);
  };
  const weights = await files(base, baseFrom, (l) => l.filter((n) => n.endsWith(".safetensors")));
  if (!weights.length || !(await exists(join(base, "config.json")))) {
    throw new ExperimentUsageError(
      `${baseFrom} "${base}" is not a model folder (it needs config.json and ` +
        `model.safetensors): give another with --base DIR or NOLA_EXPERIMENT_BASE`,
    );
  }
  const splits = ["train.csv", "validation.csv", "test.csv"];
  const present = await files(data, "--data", (l) => l.filter((n) => splits.includes(n)));
  const missing = splits.filter((s) => !present.includes(s));
  if (missing.length) {
    throw new ExperimentUsageError(
      `--data "${data}" lacks ${missing.join(", ")} (the e2e columns mr,ref): give another ` +
        `with --data DIR or NOLA_EXPERIMENT_DATA`,
    );
  }
  const mrs = async (split: string) => {
    const path = join(data, split);
    return groupReferences(parseE2e(await Deno.readTextFile(path), { file: path })).length;
  };
  return {
    ...await hashInputs(base, data),
    testMrs: await mrs("test.csv"),
    validationMrs: await mrs("validation.csv"),
  };
}

/**
 * The hashes that key the runs: of the base folder's weights, config and tokenizer, and of the
 * three split files.
 *
 * @param base The base model folder.
 * @param data The data folder.
 * @returns The folders and their hashes.
 */
export async function hashInputs(
  base: string,
  data: string,
): Promise<Pick<Inputs, "base" | "baseHash" | "data" | "dataHash">> {
  const names: string[] = [];
  for await (const e of Deno.readDir(base)) {
    if (
      e.isFile && (e.name.endsWith(".safetensors") || /^(config|tokenizer)\.json$/.test(e.name))
    ) {
      names.push(e.name);
    }
  }
  const hashFiles = async (dir: string, files: string[]) =>
    await sha256Hex(
      (await Promise.all(
        files.sort().map(async (n) => `${n} ${await sha256Hex(await Deno.readFile(join(dir, n)))}`),
      )).join("\n"),
    );
  return {
    base,
    baseHash: await hashFiles(base, names),
    data,
    dataHash: await hashFiles(data, ["train.csv", "validation.csv", "test.csv"]),
  };
}

async function exists(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}
