/**
 * What the suites that time a model here and in PyTorch share (`bench/llama.ts`, `bench/vit.ts`):
 * picking the cases a `--filter` names, the timing loop, an adapter training step, finding a
 * Python that imports torch, running a `bench/torch_*.py` script, the loop that measures each
 * case on the GPU and then, the model freed, on PyTorch, and the speed table and notes that
 * report both sides.
 *
 * @module
 */

import type { AdapterSet } from "../adapters/attach.ts";
import type { Gpu } from "../kernels/gpu.ts";
import type { LabelledInput, Model, TokenInput } from "../models/model.ts";
import { initModel, loadModel, parseModelConfig } from "../models/registry.ts";
import { formatTable } from "./table.ts";

/** A model of a side-by-side suite and how often it is timed. */
export interface SideBySideCase {
  /** Name in the table; `--filter` matches it. */
  name: string;
  /** A model folder (its checkpoint), or a `config.json` object (random weights). */
  model: string | Readonly<Record<string, unknown>>;
  /** Timed repetitions of each measure (the median is reported). */
  reps: number;
  /** Forwards or training steps in one repetition. */
  inner: number;
}

/** NOLA's settings in a suite's training measure. */
export interface BenchNola {
  /** Rank. */
  r: number;
  /** A bases a module. */
  k: number;
  /** B bases a module. */
  l: number;
  /** Output scale numerator (`lora_alpha / r`). */
  loraAlpha: number;
}

/** Options of a side-by-side suite. */
export interface SideBySideOptions<C extends SideBySideCase, N extends BenchNola> {
  /**
   * Keeps the cases whose name contains this text (any case); text that matches none (meant for
   * another suite) keeps them all.
   */
  filter?: string;
  /** The models (default: the suite's). */
  cases?: readonly C[];
  /** NOLA settings (default: the suite's). */
  nola?: N;
  /** Run the PyTorch side (default true). */
  torch?: boolean;
}

/** Why the PyTorch side was not run, or did not finish. */
export interface TorchError {
  /** A line for the suite's notes. */
  error: string;
}

/** The PyTorch build a script ran on. */
export interface TorchBuild {
  /** `torch.__version__`. */
  version: string;
  /** `torch.get_num_threads()`. */
  threads: number;
  /** The BLAS library torch's matrix products went through (Debian: the libblas.so.3 chosen). */
  blas: string;
}

/** What every suite's row holds, `M` being its measures (rates by name). */
export interface SideBySideRow<M, T extends M> {
  /** The case's name. */
  model: string;
  /** `checkpoint` (a folder's weights) or `random`. */
  weights: "checkpoint" | "random";
  /** nola-gpu's rates: the median of each measure's samples. */
  ours: M;
  /** Every repetition's rate, by measure. */
  samples: Record<keyof M, number[]>;
  /** The PyTorch side, or why it did not run. */
  torch: T | TorchError;
  /** nola-gpu's rate over PyTorch's, per measure. */
  ratio?: M;
}

/** The median of a non-empty list (the mean of the middle two for an even length). */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/**
 * Warms up once, then times `reps` runs. Each run must end by reading a result back, so that the
 * GPU work it queued is inside its time.
 *
 * @param reps Timed runs.
 * @param units What one run does (tokens, images), for the rate.
 * @param run One run.
 * @param warmUp The warm-up (default `run`).
 * @returns Units per second of each run.
 */
export async function timeSamples(
  reps: number,
  units: number,
  run: () => Promise<void>,
  warmUp: () => Promise<void> = run,
): Promise<number[]> {
  await warmUp();
  const out: number[] = [];
  for (let i = 0; i < reps; i++) {
    const start = performance.now();
    await run();
    out.push(units / ((performance.now() - start) / 1000));
  }
  return out;
}

/**
 * The trainer's step without the optimizer, `steps` times: adapter gradients zeroed, factors
 * combined, forward, loss, backward, coefficient gradients from the factor gradients. It only
 * queues the work: read a result back to wait for it.
 *
 * @param model The model, with `set` attached.
 * @param set The adapters.
 * @param input The batch.
 * @param targets One target a loss row.
 * @param steps Steps to queue.
 */
export function adapterSteps(
  model: Model,
  set: AdapterSet,
  input: TokenInput | LabelledInput,
  targets: Uint32Array,
  steps: number,
): void {
  for (let i = 0; i < steps; i++) {
    set.zeroGrads();
    set.prepareStep();
    model.forward(input);
    model.loss({ targets }, { backward: true });
    model.backward();
    set.finishBackward();
  }
}

/**
 * The cases whose name contains `filter` (any case). One `--filter` serves every suite of a run,
 * so text that matches none (meant for another suite) keeps them all, and says so.
 *
 * @param all The suite's cases.
 * @param filter The `--filter` text, if any.
 * @param suite The suite's name, for the message.
 * @returns The cases to run.
 */
export function selectCases<C extends SideBySideCase>(
  all: readonly C[],
  filter: string | undefined,
  suite: string,
): readonly C[] {
  const text = filter?.toLowerCase() ?? "";
  const matching = all.filter((c) => c.name.toLowerCase().includes(text));
  if (matching.length > 0) return matching;
  console.log(`(--filter "${filter}" matches no ${suite} model: all are run)`);
  return all;
}

/** `checkpoint` for a case with a model folder, `random` for one with a config alone. */
export function weightsOf(c: SideBySideCase): "checkpoint" | "random" {
  return typeof c.model === "string" ? "checkpoint" : "random";
}

/**
 * The first Python that imports torch, or why none does.
 *
 * @returns The command to run it with, or the reason to print in its place.
 */
export async function torchPython(): Promise<{ python: string } | TorchError> {
  let why = "";
  // Debian's torch lives with Debian's python, which another python on PATH may shadow.
  for (const python of ["python3", "/usr/bin/python3"]) {
    try {
      const out = await new Deno.Command(python, {
        args: ["-c", "import torch"],
        stdout: "null",
        stderr: "piped",
      }).output();
      if (out.success) return { python };
      why = new TextDecoder().decode(out.stderr).trim().split("\n").at(-1) ?? "";
    } catch (e) {
      why = (e as Error).message;
    }
  }
  return { error: `PyTorch side not run (apt-get install python3-torch): ${why}` };
}

/**
 * Runs a PyTorch bench script on one case and parses the JSON line it prints last.
 *
 * @param python From {@link torchPython}.
 * @param script The script, relative to the repository root (`bench/torch_llama.py`).
 * @param c The case: its folder, or its config as `--config-json`.
 * @param flags `--key value` pairs, in order.
 * @param extra Further arguments after the flags.
 * @returns The parsed line, typed as the caller knows the script prints it, or the script's last
 *   line of stderr when it fails.
 */
export async function runTorchScript<R>(
  python: string,
  script: string,
  c: SideBySideCase,
  flags: Readonly<Record<string, number | string>>,
  extra: readonly string[] = [],
): Promise<R | TorchError> {
  const model = typeof c.model === "string"
    ? [c.model]
    : ["--config-json", JSON.stringify(c.model)];
  const args = [
    script,
    ...model,
    ...Object.entries(flags).flatMap(([key, value]) => [`--${key}`, String(value)]),
    ...extra,
  ];
  const out = await new Deno.Command(python, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    const last = new TextDecoder().decode(out.stderr).trim().split("\n").at(-1);
    return { error: `${script} failed on ${c.name}: ${last}` };
  }
  return JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!) as R;
}

/** One case's two sides, from {@link sideBySide}. */
export interface SideBySideResult<C, O, T> {
  /** The case. */
  c: C;
  /** What the nola-gpu side measured. */
  ours: O;
  /** What the PyTorch side measured, or why it did not. */
  torch: T | TorchError;
}

/**
 * Measures each case on the GPU (the model loaded, or initialised with seed 1 from its config, and
 * freed afterwards), then on PyTorch, printing how long each side took.
 *
 * @param gpu The device.
 * @param cases The cases, in order.
 * @param runTorch Whether to run the PyTorch side (false: a row says it was disabled).
 * @param ours Measures one case on the loaded model.
 * @param theirs Measures one case on PyTorch, given the Python to run and the GPU side's result.
 * @returns Both sides of every case.
 */
export async function sideBySide<C extends SideBySideCase, O, T>(
  gpu: Gpu,
  cases: readonly C[],
  runTorch: boolean,
  ours: (model: Model, c: C) => Promise<O>,
  theirs: (python: string, c: C, ours: O) => Promise<T | TorchError>,
): Promise<SideBySideResult<C, O, T>[]> {
  const python = runTorch ? await torchPython() : { error: "PyTorch side not run (disabled)" };
  const results: SideBySideResult<C, O, T>[] = [];
  for (const c of cases) {
    let start = performance.now();
    const seconds = () => ((performance.now() - start) / 1000).toFixed(0);
    let measured: O;
    {
      using model = typeof c.model === "string"
        ? await loadModel(gpu, c.model)
        : await initModel(gpu, parseModelConfig(c.model, c.name), { seed: 1 });
      measured = await ours(model, c);
    }
    console.log(`${c.name}: nola-gpu side ${seconds()} s`);
    start = performance.now();
    const torch = "python" in python
      ? await theirs(python.python, c, measured)
      : { error: python.error };
    if ("python" in python) console.log(`${c.name}: PyTorch side ${seconds()} s`);
    results.push({ c, ours: measured, torch });
  }
  return results;
}

/**
 * nola-gpu's rate over PyTorch's, measure by measure.
 *
 * @param ours This side's rates.
 * @param torch PyTorch's rates.
 * @param keys The measures.
 * @returns `ours[k] / torch[k]` for each measure `k`.
 */
export function ratios<K extends string>(
  ours: Readonly<Record<K, number>>,
  torch: Readonly<Record<K, number>>,
  keys: readonly K[],
): Record<K, number> {
  return Object.fromEntries(keys.map((k) => [k, ours[k] / torch[k]])) as Record<K, number>;
}

/** The columns of {@link formatSpeedTable} that differ between the suites. */
export interface SpeedColumns<R> {
  /** Header of the size column (`tokens`, `batch`). */
  size: string;
  /** The size cell of a row and measure. */
  sizeOf: (row: R, measure: string) => string;
  /** The rate's unit in the headers (`tok/s`, `img/s`). */
  unit: string;
  /** Decimals of the rates. */
  digits: number;
}

/**
 * A table with one line a model and measure: its size, both sides' rates and their ratio (`-`
 * where PyTorch did not run).
 *
 * @param rows The suite's rows.
 * @param measures Each measure's key and label, in table order.
 * @param columns The size column and the rates' unit and decimals.
 * @returns The table's text.
 */
export function formatSpeedTable<
  K extends string,
  R extends SideBySideRow<Record<K, number>, Record<K, number>>,
>(
  rows: readonly R[],
  measures: readonly (readonly [K, string])[],
  columns: SpeedColumns<R>,
): string {
  const { size, sizeOf, unit, digits } = columns;
  return formatTable(
    ["model", "measure", size, `nola-gpu ${unit}`, `PyTorch ${unit}`, "ratio"],
    rows.flatMap((r) =>
      measures.map(([key, label]) => {
        const torch = "error" in r.torch ? undefined : r.torch;
        return [
          r.model,
          label,
          sizeOf(r, key),
          r.ours[key].toFixed(digits),
          torch ? torch[key].toFixed(digits) : "-",
          r.ratio ? r.ratio[key].toFixed(2) : "-",
        ];
      })
    ),
  );
}

/**
 * The PyTorch build a suite ran against, for its notes.
 *
 * @param t The version, threads and BLAS library the script reported.
 * @returns `PyTorch <version> CPU, <threads> threads, BLAS <library>`.
 */
export function torchNote(t: TorchBuild): string {
  return `PyTorch ${t.version} CPU, ${t.threads} threads, BLAS ${t.blas}`;
}

/**
 * Whether both sides agreed on their outputs, for a row's note.
 *
 * @param same The comparison, or undefined where none was made (random weights).
 * @param what What was compared (`greedy tokens`).
 * @returns `; <what> identical on both sides`, `; <what> DIFFER between the sides`, or nothing.
 */
export function agreementNote(same: boolean | undefined, what: string): string {
  if (same === undefined) return "";
  return `; ${what} ${same ? "identical on both sides" : "DIFFER between the sides"}`;
}
