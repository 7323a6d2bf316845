/**
 * What makes a long experiment survive a stop: each run's result is written atomically into its
 * own folder as the run finishes, under its full settings, and a rerun skips every run whose
 * stored settings equal the ones it would run with. Also the progress line of each run, with an
 * estimate of the time left.
 *
 * @module
 */

import { join, resolve } from "node:path";
import { writeTextFileAtomic } from "../formats/atomic.ts";

/** A finished run as stored: what it ran with and what it measured. */
export interface RunRecord<S, F> {
  /** The run's full settings (its key). */
  settings: S;
  /** What it measured. */
  figures: F;
  /** Wall-clock seconds the run took. */
  seconds: number;
  /** When it finished (ISO 8601). */
  finished: string;
}

/**
 * JSON with the keys of every object sorted, so equal settings give equal text whatever order
 * they were built in.
 *
 * @param value Plain data (objects, arrays, strings, numbers, booleans, null).
 * @returns The canonical JSON text.
 *
 * @example
 * ```ts
 * import { canonicalJson } from "./run_store.ts";
 * canonicalJson({ b: 1, a: [2, { d: 3, c: 4 }] }); // '{"a":[2,{"c":4,"d":3}],"b":1}'
 * ```
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(
    value,
    (_, v) =>
      v && typeof v === "object" && !Array.isArray(v)
        ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, v[k]]))
        : v,
  );
}

/**
 * The opening of a run's pipeline file, up to its load stage: a comment naming the script that
 * wrote it and the settings the run is keyed by, then the name, seed, output folder and base
 * model (paths made absolute). The caller appends the data stage and the rest.
 *
 * @param writer The script, e.g. `experiments/vit_fewshot.ts`.
 * @param run The run's name, settings (their `seed` is the pipeline's), folder and base model.
 * @returns YAML text ending after the load stage's model line.
 */
export function runPipelineHead(
  writer: string,
  run: { name: string; settings: Record<string, unknown>; folder: string; base: string },
): string {
  return `# Written by ${writer}; the settings it is keyed by:
# ${canonicalJson(run.settings)}
version: 1
name: ${run.name}
seed: ${run.settings.seed}
out: ${JSON.stringify(resolve(run.folder))}
stages:
  - kind: load
    model: ${JSON.stringify(resolve(run.base))}
`;
}

/**
 * The first `chars` hex digits of the SHA-256 of `data`.
 *
 * @param data Text (hashed as UTF-8) or bytes.
 * @param chars Hex digits kept; default 64 (all).
 * @returns The hex digest.
 */
export async function sha256Hex(data: string | Uint8Array, chars = 64): Promise<string> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as BufferSource));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("").slice(0, chars);
}

/** The runs of one experiment, a folder each under `<dir>/runs/`. */
export class RunStore {
  /** The experiment's output folder. */
  readonly dir: string;

  /** @param dir The experiment's output folder. */
  constructor(dir: string) {
    this.dir = dir;
  }

  /**
   * A run's folder: a readable name plus a hash of its settings, so runs that differ in any
   * setting never share a folder.
   *
   * @param name Readable part (`final-lora-r1-lr5e-3-seed0`).
   * @param settings The run's full settings.
   * @returns The folder path (not created).
   */
  async folder(name: string, settings: unknown): Promise<string> {
    return join(this.dir, "runs", `${name}-${await sha256Hex(canonicalJson(settings), 8)}`);
  }

  /**
   * The stored result of a run with exactly these settings, if one finished.
   *
   * @param folder The run's folder, from {@linkcode RunStore.folder}.
   * @param settings The settings it must have run with.
   * @returns The record, or undefined when the run has not finished (or ran otherwise).
   */
  async done<S, F>(folder: string, settings: S): Promise<RunRecord<S, F> | undefined> {
    let text: string;
    try {
      text = await Deno.readTextFile(join(folder, "result.json"));
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return undefined;
      throw e;
    }
    let record: RunRecord<S, F>;
    try {
      record = JSON.parse(text);
    } catch {
      // Written atomically, so never torn; a file edited by hand is run again.
      return undefined;
    }
    return canonicalJson(record.settings) === canonicalJson(settings) ? record : undefined;
  }

  /**
   * Stores a finished run's result, atomically.
   *
   * @param folder The run's folder.
   * @param record What it ran with and measured.
   * @returns Resolves once the file is in place.
   */
  async save<S, F>(folder: string, record: RunRecord<S, F>): Promise<void> {
    await Deno.mkdir(folder, { recursive: true });
    await writeTextFileAtomic(join(folder, "result.json"), JSON.stringify(record, null, 2) + "\n");
  }
}

/**
 * Estimates the time left of a list of runs of a few kinds (`sweep`, `final`), each with a cost
 * in units (training steps): from the seconds per unit of the runs of the same kind done so far,
 * else of all runs done so far.
 */
export class Eta {
  #seconds = new Map<string, number>();
  #units = new Map<string, number>();

  /**
   * Counts a run that was just done (not one skipped because it had finished before).
   *
   * @param kind The run's kind.
   * @param units Its cost in units.
   * @param seconds How long it took.
   */
  record(kind: string, units: number, seconds: number): void {
    this.#seconds.set(kind, (this.#seconds.get(kind) ?? 0) + seconds);
    this.#units.set(kind, (this.#units.get(kind) ?? 0) + units);
  }

  /**
   * Seconds the `remaining` runs should take; undefined before any run was timed.
   *
   * @param remaining The kind and units of each run still to do.
   * @returns The estimate in seconds.
   */
  estimate(remaining: readonly { kind: string; units: number }[]): number | undefined {
    const all = [...this.#units.values()].reduce((a, b) => a + b, 0);
    if (all === 0) return remaining.length === 0 ? 0 : undefined;
    const pooled = [...this.#seconds.values()].reduce((a, b) => a + b, 0) / all;
    let total = 0;
    for (const r of remaining) {
      const units = this.#units.get(r.kind) ?? 0;
      total += r.units * (units > 0 ? this.#seconds.get(r.kind)! / units : pooled);
    }
    return total;
  }
}

/**
 * A duration for a person: `45 s`, `3 min 20 s`, `2 h 05 min`.
 *
 * @param seconds The duration.
 * @returns The text.
 *
 * @example
 * ```ts
 * import { formatDuration } from "./run_store.ts";
 * formatDuration(7500); // "2 h 05 min"
 * ```
 */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  const minutes = Math.round(s / 60);
  return `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, "0")} min`;
}

/**
 * Ctrl-C between runs: the first SIGINT asks the experiment to stop once the current run is over
 * (a run still training stops at its next step, by the pipeline's own handler, and is run again
 * next time); a second one quits at once. Either way every finished run is kept.
 */
export class StopRequest implements Disposable {
  #requested = false;
  #installed = false;
  readonly #listener: () => void;

  /** @param say Prints the notice. */
  constructor(say: (line: string) => void) {
    this.#listener = () => {
      if (this.#requested) Deno.exit(130);
      this.#requested = true;
      say("\nStopping after this run (Ctrl-C again to quit now; finished runs are kept)");
    };
    try {
      Deno.addSignalListener("SIGINT", this.#listener);
      this.#installed = true;
    } catch {
      // No signals here (some platforms): the experiment then stops only when killed.
    }
  }

  /** True once SIGINT has arrived. */
  get requested(): boolean {
    return this.#requested;
  }

  [Symbol.dispose](): void {
    if (this.#installed) Deno.removeSignalListener("SIGINT", this.#listener);
    this.#installed = false;
  }
}
