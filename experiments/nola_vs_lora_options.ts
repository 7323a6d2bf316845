/**
 * The settings of the NOLA-vs-LoRA experiment: its methods by name (`lora-r1`, `nola-k256`,
 * `nola-k1024-ptq`, `nola-k1024-qat`) and its options from flags or environment variables, with
 * the defaults of the full run and of `--quick`.
 *
 * @module
 */

import { parseArgs } from "node:util";

/** NOLA's rank, as in the default job and the paper's GPT-2 runs. */
export const NOLA_RANK = 8;
/** Bits of quantized NOLA coefficients (PTQ and QAT rows). */
export const QUANT_BITS = 4;

/** One method of the comparison (a row of the table). */
export interface Method {
  /** Its name on the command line: `lora-r1`, `nola-k256`, `nola-k1024-ptq`, `nola-k1024-qat`. */
  id: string;
  /** Its name in the table: `LoRA r=1`, `NOLA k=l=256`, `NOLA k=l=1024 4-bit PTQ`. */
  label: string;
  kind: "lora" | "nola";
  /** Rank. */
  r: number;
  /** NOLA: bases per factor (k = l). */
  k?: number;
  /**
   * `ptq`: the coefficients of the same-k NOLA runs quantized after training and evaluated
   * again (no training of its own); `qat`: trained with quantized coefficients.
   */
  quant?: "ptq" | "qat";
}

/** A usage mistake: a bad flag or environment value, said in one line with how to fix it. */
export class ExperimentUsageError extends Error {
  /** @param message What is wrong and how to fix it. */
  constructor(message: string) {
    super(message);
    this.name = "ExperimentUsageError";
  }
}

/**
 * The method a command-line name stands for.
 *
 * @param id `lora-r<R>`, `nola-k<K>`, `nola-k<K>-ptq` or `nola-k<K>-qat`.
 * @returns The method.
 * @throws {ExperimentUsageError} For any other name.
 *
 * @example
 * ```ts
 * import { parseMethod } from "./nola_vs_lora_options.ts";
 * parseMethod("nola-k256-qat").label; // "NOLA k=l=256 4-bit QAT"
 * ```
 */
export function parseMethod(id: string): Method {
  const lora = /^lora-r([1-9]\d*)$/.exec(id);
  if (lora) return { id, label: `LoRA r=${lora[1]}`, kind: "lora", r: Number(lora[1]) };
  const nola = /^nola-k([1-9]\d*)(?:-(ptq|qat))?$/.exec(id);
  if (nola) {
    const quant = nola[2] as "ptq" | "qat" | undefined;
    return {
      id,
      label: `NOLA k=l=${nola[1]}` + (quant ? ` ${QUANT_BITS}-bit ${quant.toUpperCase()}` : ""),
      kind: "nola",
      r: NOLA_RANK,
      k: Number(nola[1]),
      ...(quant ? { quant } : {}),
    };
  }
  throw new ExperimentUsageError(
    `Unknown method "${id}" in --methods: write lora-r<R>, nola-k<K>, nola-k<K>-ptq or ` +
      `nola-k<K>-qat, comma-separated (e.g. --methods lora-r1,nola-k64,nola-k64-ptq)`,
  );
}

/** Everything one run of the experiment is set by. */
export interface ExperimentOptions {
  /** The base model folder; absent: the default job's (pipelines/default.yaml). */
  base?: string;
  /** A folder with `train.csv`, `validation.csv` and `test.csv` (the e2e format). */
  data: string;
  /** The output folder. */
  out: string;
  /** The rows of the table, in order. */
  methods: Method[];
  /** Training steps of every final run (the equal budget). */
  steps: number;
  /** Training steps of every sweep run. */
  sweepSteps: number;
  /** Seeds of the final runs: 0 .. seeds - 1 (the sweep uses seed 0). */
  seeds: number;
  /** The sweep's learning rates: each method's centre times each factor. */
  sweepFactors: number[];
  /** Centre of LoRA's sweep. */
  lrLora: number;
  /** Centre of NOLA's sweep (QAT too). */
  lrNola: number;
  /** Rows per optimizer step. */
  batchSize: number;
  /** Tokens per row. */
  seqLen: number;
  /** Meaning representations of the test split scored; absent: all. */
  testExamples?: number;
  /** Beam width (the paper: 10). */
  beams: number;
  /** Beam length penalty (the paper: 0.8). */
  lengthPenalty: number;
  /** No repeated n-grams of this size (the paper: 4). */
  noRepeatNgram: number;
  /** Most tokens per generation. */
  maxNewTokens: number;
  /** The `--quick` preset. */
  quick: boolean;
}

/** The full run's methods: LoRA at four ranks, NOLA at three k, 4-bit PTQ and QAT at the top k. */
export const DEFAULT_METHODS = [
  "lora-r1",
  "lora-r2",
  "lora-r4",
  "lora-r8",
  "nola-k64",
  "nola-k256",
  "nola-k1024",
  "nola-k1024-ptq",
  "nola-k1024-qat",
];

const FULL = {
  data: "fixtures/data-to-text",
  out: "out/experiments/nola-vs-lora",
  methods: DEFAULT_METHODS.join(","),
  steps: "150",
  "sweep-steps": "50",
  seeds: "3",
  "sweep-factors": "0.4,1,2.5,6.25,15.625",
  "lr-lora": "5e-3",
  "lr-nola": "3e-2",
  batch: "8",
  "seq-len": "80",
  beams: "10",
  "length-penalty": "0.8",
  "no-repeat-ngram": "4",
  "max-new-tokens": "48",
};

const QUICK: Partial<Record<keyof typeof FULL | "test-examples", string>> = {
  out: "out/experiments/nola-vs-lora-quick",
  methods: "lora-r1,nola-k64,nola-k64-ptq",
  steps: "30",
  "sweep-steps": "10",
  seeds: "2",
  "sweep-factors": "0.5,2",
  "test-examples": "5",
};

/** Flags that may also come from the environment, and the variable each reads. */
const ENV: Record<string, string> = {
  base: "NOLA_EXPERIMENT_BASE",
  data: "NOLA_EXPERIMENT_DATA",
  out: "NOLA_EXPERIMENT_OUT",
  methods: "NOLA_EXPERIMENT_METHODS",
  steps: "NOLA_EXPERIMENT_STEPS",
  "sweep-steps": "NOLA_EXPERIMENT_SWEEP_STEPS",
  seeds: "NOLA_EXPERIMENT_SEEDS",
};

/** The environment variables the experiment reads (deno.json's task allows exactly these). */
export const ENV_NAMES: readonly string[] = Object.values(ENV);

/** The help text. */
export const USAGE = `usage: deno task experiment [nola-vs-lora] [options]

LoRA r in {1,2,4,8} against NOLA at several k = l on the q and v projections of the default job's
base, each at the learning rate of lowest validation loss in a small sweep, then 3 seeds each at
an equal step budget, scored on the whole test split with beam search. A rerun skips the runs
already finished, so a stopped experiment continues where it stopped.

options (defaults in brackets):
  --base DIR              base model folder [the default job's, pipelines/default.yaml]
  --data DIR              folder with train.csv, validation.csv, test.csv [${FULL.data}]
  --out DIR               output folder [${FULL.out}]
  --methods LIST          comma-separated lora-r<R>, nola-k<K>, nola-k<K>-ptq, nola-k<K>-qat
                          [${FULL.methods}]
  --steps N               training steps of every final run [${FULL.steps}]
  --sweep-steps N         training steps of every sweep run [${FULL["sweep-steps"]}]
  --seeds N               final runs per method, seeds 0..N-1 [${FULL.seeds}]
  --sweep-factors LIST    sweep rates: the centre times each factor [${FULL["sweep-factors"]}]
  --lr-lora X             LoRA's centre [${FULL["lr-lora"]}]
  --lr-nola X             NOLA's centre, QAT's too [${FULL["lr-nola"]}]
  --batch N               rows per step [${FULL.batch}]
  --seq-len N             tokens per row, one example a row [${FULL["seq-len"]}]
  --test-examples N       score only the first N test meaning representations [all]
  --beams N               beam width [${FULL.beams}]
  --length-penalty X      beam length penalty [${FULL["length-penalty"]}]
  --no-repeat-ngram N     no repeated n-grams of this size [${FULL["no-repeat-ngram"]}]
  --max-new-tokens N      most tokens per generation [${FULL["max-new-tokens"]}]
  --quick                 a smoke run: ${QUICK.methods}, ${QUICK.steps} steps,
                          ${QUICK.seeds} seeds, a 2-point sweep, ${
  QUICK["test-examples"]
} test MRs, into ${QUICK.out}
  --help                  this text

environment (a flag wins): ${
  Object.entries(ENV).map(([flag, name]) => `${name} (--${flag})`).join(", ")
}`;

/**
 * The options of one run of the experiment: flags win over environment variables, which win
 * over the `--quick` preset, which wins over the full run's defaults.
 *
 * @param args Command-line arguments after the experiment's name.
 * @param env Reads an environment variable (default `Deno.env.get`).
 * @returns The options, or `"help"` for `--help`.
 * @throws {ExperimentUsageError} For an unknown flag or a value out of range.
 */
export function parseOptions(
  args: readonly string[],
  env: (name: string) => string | undefined = (name) => Deno.env.get(name),
): ExperimentOptions | "help" {
  const stringFlags = ["base", "test-examples", ...Object.keys(FULL)];
  let parsed;
  try {
    parsed = parseArgs({
      args: [...args],
      strict: true,
      allowPositionals: false,
      options: {
        ...Object.fromEntries(stringFlags.map((f) => [f, { type: "string" as const }])),
        quick: { type: "boolean" },
        help: { type: "boolean" },
      },
    });
  } catch (e) {
    throw new ExperimentUsageError(`${(e as Error).message.split("\n")[0]} (see --help)`);
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;
  if (values.help) return "help";
  const quick = values.quick === true;
  // Where each value came from, for the error message.
  const get = (flag: string): { text?: string; from: string } => {
    const given = values[flag];
    if (typeof given === "string") return { text: given, from: `--${flag}` };
    const name = ENV[flag];
    const fromEnv = name ? env(name) : undefined;
    if (fromEnv !== undefined && fromEnv !== "") return { text: fromEnv, from: name };
    const preset = quick ? QUICK[flag as keyof typeof QUICK] : undefined;
    return { text: preset ?? FULL[flag as keyof typeof FULL], from: `--${flag}` };
  };
  const bad = (from: string, text: string, want: string): never => {
    throw new ExperimentUsageError(`${from}="${text}": want ${want}`);
  };
  const int = (flag: string, min: number): number => {
    const { text, from } = get(flag);
    const n = Number(text);
    return Number.isInteger(n) && n >= min && /^\s*\d+\s*$/.test(text!)
      ? n
      : bad(from, text!, `a whole number of at least ${min} (e.g. --${flag} ${Math.max(min, 3)})`);
  };
  const positive = (flag: string): number => {
    const { text, from } = get(flag);
    const n = Number(text);
    return text!.trim() !== "" && Number.isFinite(n) && n > 0
      ? n
      : bad(from, text!, "a number above 0 (e.g. 5e-3)");
  };
  const finite = (flag: string): number => {
    const { text, from } = get(flag);
    const n = Number(text);
    return text!.trim() !== "" && Number.isFinite(n) ? n : bad(from, text!, "a number (e.g. 0.8)");
  };
  const list = (flag: string): string[] => {
    const { text, from } = get(flag);
    const items = text!.split(",").map((s) => s.trim()).filter((s) => s !== "");
    return items.length > 0 ? items : bad(from, text!, "a comma-separated list");
  };

  const methodIds = list("methods");
  const methods = methodIds.map(parseMethod);
  const seen = new Set<string>();
  for (const m of methods) {
    if (seen.has(m.id)) bad(get("methods").from, methodIds.join(","), `each method once (${m.id})`);
    seen.add(m.id);
  }
  const factors = list("sweep-factors").map((f) => {
    const n = Number(f);
    return Number.isFinite(n) && n > 0 ? n : bad(
      get("sweep-factors").from,
      get("sweep-factors").text!,
      "numbers above 0 (e.g. 0.4,1,2.5)",
    );
  });
  const testExamples = get("test-examples").text;
  return {
    base: get("base").text,
    data: get("data").text!,
    out: get("out").text!,
    methods,
    steps: int("steps", 1),
    sweepSteps: int("sweep-steps", 1),
    seeds: int("seeds", 1),
    sweepFactors: [...new Set(factors)].sort((a, b) => a - b),
    lrLora: positive("lr-lora"),
    lrNola: positive("lr-nola"),
    batchSize: int("batch", 1),
    seqLen: int("seq-len", 2),
    ...(testExamples !== undefined ? { testExamples: int("test-examples", 1) } : {}),
    beams: int("beams", 1),
    lengthPenalty: finite("length-penalty"),
    noRepeatNgram: int("no-repeat-ngram", 0),
    maxNewTokens: int("max-new-tokens", 1),
    quick,
  };
}
