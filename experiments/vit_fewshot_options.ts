/**
 * The settings of the ViT few-shot experiment: its methods by name (`head`, `full`, `lora-r1`,
 * `lora-r4`, `nola-k64`, `nola-k256`) and its options from flags, with the defaults of the full
 * run and of `--quick`.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { ExperimentUsageError } from "./nola_vs_lora_options.ts";

/** One method of the comparison (a row of the table a shot count). */
export interface FewShotMethod {
  /** Its name on the command line. */
  id: string;
  /** Its name in the table. */
  label: string;
  /** `head`: a linear probe; `full`: every weight; `lora` on q/v; `nola` on the MLP linears. */
  kind: "head" | "full" | "lora" | "nola";
  /** LoRA and NOLA: rank. */
  r?: number;
  /** NOLA: bases per factor (k = l). */
  k?: number;
  /** Peak learning rate (untuned: one a kind, the same for every shot count). */
  lr: number;
}

/**
 * The methods: a new head alone, full fine-tuning, LoRA r = 1 and 4 on the attention's query and
 * value, NOLA-MLP (r 1) at two sizes. On the fixture (4 blocks, 64 wide, MLP 256) NOLA k = l = 64
 * has LoRA r = 1's coefficient count and a quarter of LoRA r = 4's; k = l = 256 has r = 4's.
 */
export const FEWSHOT_METHODS: readonly FewShotMethod[] = [
  { id: "head", label: "head only (linear probe)", kind: "head", lr: 1e-2 },
  { id: "full", label: "full fine-tuning", kind: "full", lr: 5e-4 },
  { id: "lora-r1", label: "LoRA r=1 (q, v)", kind: "lora", r: 1, lr: 5e-3 },
  { id: "lora-r4", label: "LoRA r=4 (q, v)", kind: "lora", r: 4, lr: 5e-3 },
  { id: "nola-k64", label: "NOLA-MLP k=l=64", kind: "nola", r: 1, k: 64, lr: 1e-2 },
  { id: "nola-k256", label: "NOLA-MLP k=l=256", kind: "nola", r: 1, k: 256, lr: 1e-2 },
];

/** Everything a run of the experiment depends on. */
export interface FewShotOptions {
  /** The pretrained ViT folder. */
  base: string;
  /** A folder with `train-images-idx3-ubyte.gz` and `t10k-images-idx3-ubyte.gz` (and labels). */
  data: string;
  /** Fashion-MNIST label values of the few-shot classes. */
  classIds: number[];
  /** Shot counts (training images a class). */
  shots: number[];
  methods: FewShotMethod[];
  /** Sampling seeds (which k images a class): 0 .. n-1. */
  samplingSeeds: number;
  /** Initialisation seeds (new head, bases, LoRA A, augmentation): 0 .. n-1. */
  initSeeds: number;
  /** Optimizer steps a run. */
  steps: number;
  /** Largest batch (a run uses min(this, shots x classes)). */
  batchSize: number;
  /** Test images a class (at most the data's). */
  evalPerClass: number;
  /** Output folder. */
  out: string;
}

/** The full run's settings: the paper's protocol (4 sampling x 3 init seeds = 12 runs a cell). */
export const FULL_DEFAULTS: FewShotOptions = {
  base: "fixtures/tiny-vit-fashion",
  data: "fixtures/fashion-fewshot",
  classIds: [5, 6, 7, 8, 9],
  shots: [5, 10],
  methods: [...FEWSHOT_METHODS],
  samplingSeeds: 4,
  initSeeds: 3,
  steps: 60,
  batchSize: 25,
  evalPerClass: 100,
  out: "out/experiments/vit-fewshot",
};

/** `--quick`: one seed of each kind, a few steps, 4 test images a class; its own folder. */
export const QUICK_DEFAULTS: Partial<FewShotOptions> = {
  shots: [5],
  samplingSeeds: 1,
  initSeeds: 1,
  steps: 2,
  evalPerClass: 4,
  out: "out/experiments/vit-fewshot-quick",
};

/** `--help`. */
export const FEWSHOT_USAGE = `deno task experiment vit-fewshot [options]

Few-shot classification on the five Fashion-MNIST classes the fixture ViT never saw: a new head
alone, full fine-tuning, LoRA r=1 and r=4 on q/v, NOLA-MLP at two sizes; every (shots, method)
cell over sampling seeds x init seeds; mean ± std test accuracy, trainable parameters and
adapter bytes in results.md and accuracy.svg. A stopped run continues where it stopped.

  --quick                 a smoke run: 5-shot, one seed each, 2 steps (own output folder)
  --shots LIST            shot counts (default 5,10)
  --methods LIST          of ${FEWSHOT_METHODS.map((m) => m.id).join(", ")} (default all)
  --sampling-seeds N      default 4
  --init-seeds N          default 3
  --steps N               optimizer steps a run (default 60)
  --eval-per-class N      test images a class (default 100: all)
  --base DIR              default ${FULL_DEFAULTS.base}
  --data DIR              default ${FULL_DEFAULTS.data}
  --out DIR               default ${FULL_DEFAULTS.out}`;

function positive(flag: string, text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) {
    throw new ExperimentUsageError(`--${flag} ${text}: expected a whole number of at least 1`);
  }
  return n;
}

/**
 * The options of `args`, or `"help"`.
 *
 * @param args Flags after the experiment's name.
 * @returns The settings.
 * @throws {ExperimentUsageError} On an unknown flag, a bad number or an unknown method.
 *
 * @example
 * ```ts
 * import { parseFewShotOptions } from "./vit_fewshot_options.ts";
 * parseFewShotOptions(["--quick", "--methods", "head,nola-k64"]);
 * ```
 */
export function parseFewShotOptions(args: readonly string[]): FewShotOptions | "help" {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...args],
      options: {
        quick: { type: "boolean" },
        help: { type: "boolean", short: "h" },
        shots: { type: "string" },
        methods: { type: "string" },
        "sampling-seeds": { type: "string" },
        "init-seeds": { type: "string" },
        steps: { type: "string" },
        "eval-per-class": { type: "string" },
        base: { type: "string" },
        data: { type: "string" },
        out: { type: "string" },
      },
      allowPositionals: false,
    });
  } catch (e) {
    throw new ExperimentUsageError(`${(e as Error).message} (see --help)`);
  }
  const v = parsed.values;
  if (v.help) return "help";
  const o: FewShotOptions = { ...FULL_DEFAULTS, ...(v.quick ? QUICK_DEFAULTS : {}) };
  if (v.shots !== undefined) o.shots = v.shots.split(",").map((s) => positive("shots", s));
  if (v.methods !== undefined) {
    o.methods = v.methods.split(",").map((id) => {
      const m = FEWSHOT_METHODS.find((m) => m.id === id);
      if (!m) {
        throw new ExperimentUsageError(
          `--methods: unknown method "${id}": choose from ${
            FEWSHOT_METHODS.map((m) => m.id).join(", ")
          }`,
        );
      }
      return m;
    });
  }
  if (v["sampling-seeds"] !== undefined) {
    o.samplingSeeds = positive("sampling-seeds", v["sampling-seeds"]);
  }
  if (v["init-seeds"] !== undefined) o.initSeeds = positive("init-seeds", v["init-seeds"]);
  if (v.steps !== undefined) o.steps = positive("steps", v.steps);
  if (v["eval-per-class"] !== undefined) {
    o.evalPerClass = positive("eval-per-class", v["eval-per-class"]);
  }
  if (v.base !== undefined) o.base = v.base;
  if (v.data !== undefined) o.data = v.data;
  if (v.out !== undefined) o.out = v.out;
  return o;
}
