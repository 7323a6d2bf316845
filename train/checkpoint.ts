/**
 * Training checkpoints: trainable tensors, optimizer moments, the step and the data order, in
 * one safetensors file written atomically, so that a resumed run continues bit-exactly.
 *
 * Every checkpoint carries a CRC-32 of the whole file in its metadata (`formats/checksum.ts`).
 * Resuming takes the newest checkpoint that loads and verifies: a damaged newer one (truncated, a
 * flipped bit) is reported in one line and skipped, and temporary files left by a write that was
 * killed before its rename are removed.
 *
 * @module
 */

import { join } from "node:path";
import { writeFileAtomic } from "../formats/atomic.ts";
import {
  CHECKSUM_KEY,
  CHECKSUM_PLACEHOLDER,
  sealChecksum,
  verifyChecksum,
} from "../formats/checksum.ts";
import { oneLine } from "../formats/one_line.ts";
import { encodeSafetensors, SafetensorsError, SafetensorsFile } from "../formats/safetensors.ts";
import type { BatchState } from "../data/batches.ts";
import type { OptimizerState } from "./optimizer.ts";

const FORMAT = "nola-gpu-checkpoint/1";
const PATTERN = /^step-(\d{8})\.safetensors$/;
// What formats/atomic.ts names a file while writing it: `<name>.tmp-<random hex>`.
const PARTIAL = /^step-\d{8}\.safetensors\.tmp-[0-9a-f]+$/;

/** Everything a run needs to continue where it stopped. */
export interface CheckpointData {
  /** Optimizer steps completed. */
  step: number;
  /** Trainable tensors by name. */
  params: Map<string, Float32Array>;
  /** The optimizer's step count and moments. */
  optimizer: OptimizerState;
  /** Where the training stream stands. */
  batches: BatchState;
  /** Trainer state beyond the above (best validation loss, patience left, ...). */
  extra: Record<string, unknown>;
}

/** A checkpoint chosen to resume from, already loaded and verified. */
export interface ResumePoint {
  /** The checkpoint file. */
  path: string;
  /** Its contents. */
  data: CheckpointData;
}

/** A checkpoint that cannot be written, read or resumed from; the message names the file. */
export class CheckpointError extends Error {
  /** The checkpoint file, or the checkpoint folder when no file is to blame. */
  readonly file: string;

  /**
   * Creates the error.
   *
   * @param message The whole message, naming the file; control characters (from a path) are
   * escaped so that it stays one line.
   * @param options The file and an optional cause.
   */
  constructor(message: string, options: { file: string; cause?: unknown }) {
    super(oneLine(message), options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "CheckpointError";
    this.file = options.file;
  }
}

/** The checkpoint folder of a run. */
export function checkpointDir(runDir: string): string {
  return join(runDir, "checkpoints");
}

/**
 * Writes `checkpoints/step-<step>.safetensors` atomically and keeps only the newest `keep`.
 *
 * @param runDir The run folder.
 * @param data What to save.
 * @param options `keep`: how many checkpoints to keep, newest first (default 2).
 * @returns The path written.
 * @throws {CheckpointError} If the file cannot be written (a full disk): the checkpoints already
 * there are left as they were.
 */
export async function saveCheckpoint(
  runDir: string,
  data: CheckpointData,
  options: { keep?: number } = {},
): Promise<string> {
  const dir = checkpointDir(runDir);
  const tensors = [
    ...[...data.params].map(([name, values]) => ({ name: `param.${name}`, values })),
    ...[...data.optimizer.tensors].map(([name, values]) => ({ name: `optim.${name}`, values })),
  ].map(({ name, values }) => ({
    name,
    dtype: "F32" as const,
    shape: [values.length],
    data: values,
  }));
  const path = join(dir, `step-${String(data.step).padStart(8, "0")}.safetensors`);
  const bytes = sealChecksum(encodeSafetensors(tensors, {
    format: FORMAT,
    step: String(data.step),
    optimizer_step: String(data.optimizer.step),
    batches: JSON.stringify(data.batches),
    extra: JSON.stringify(data.extra),
    [CHECKSUM_KEY]: CHECKSUM_PLACEHOLDER,
  }));
  try {
    await Deno.mkdir(dir, { recursive: true });
    await writeFileAtomic(path, bytes);
  } catch (e) {
    // Deno raises an OS error it has no class for (ENOSPC, EIO) as a plain Error with a code and
    // a message that does not name the file; its own classes already say which file.
    if (!(e instanceof Error) || e.constructor !== Error || !("code" in e)) throw e;
    throw new CheckpointError(`Cannot write checkpoint "${path}": ${e.message}`, {
      file: path,
      cause: e,
    });
  }
  const keep = options.keep ?? 2;
  const all = await listCheckpoints(runDir);
  for (const old of all.slice(0, Math.max(0, all.length - keep))) await Deno.remove(old);
  return path;
}

/** Checkpoint paths of a run, oldest first (by name only: none is opened). */
export async function listCheckpoints(runDir: string): Promise<string[]> {
  const found: { step: number; path: string }[] = [];
  for (const name of await namesIn(checkpointDir(runDir))) {
    const m = PATTERN.exec(name);
    if (m) found.push({ step: Number(m[1]), path: join(checkpointDir(runDir), name) });
  }
  return found.sort((a, b) => a.step - b.step).map((f) => f.path);
}

/**
 * Reads a checkpoint written by {@link saveCheckpoint}, after checking its checksum (checkpoints
 * written before checksums load unchecked).
 *
 * @param path The checkpoint file.
 * @returns Its contents.
 * @throws {CheckpointError} If the file is not a checkpoint, is truncated, or its bytes do not
 * match its checksum.
 */
export async function loadCheckpoint(path: string): Promise<CheckpointData> {
  const fail = (reason: string, cause?: unknown): never => {
    throw new CheckpointError(`Checkpoint "${path}" is unusable: ${reason}`, { file: path, cause });
  };
  try {
    using file = await SafetensorsFile.open(path);
    const { problem } = await verifyChecksum(file);
    if (problem) fail(problem);
    const meta = file.metadata;
    if (meta.format !== FORMAT) fail(`format "${meta.format}" is not ${FORMAT}`);
    const step = Number(meta.step);
    const named = Number(PATTERN.exec(path.split(/[\\/]/).at(-1) ?? "")?.[1] ?? step);
    if (!Number.isSafeInteger(step) || step < 0 || step !== named) {
      fail(`its step "${meta.step}" does not match its name`);
    }
    const json = (key: string) => {
      try {
        return JSON.parse(meta[key]);
      } catch {
        return fail(`metadata "${key}" is not JSON`);
      }
    };
    const params = new Map<string, Float32Array>();
    const moments = new Map<string, Float32Array>();
    for (const name of file.names()) {
      const values = await file.readFloat32(name);
      if (name.startsWith("param.")) params.set(name.slice(6), values);
      else if (name.startsWith("optim.")) moments.set(name.slice(6), values);
    }
    return {
      step,
      params,
      optimizer: { step: Number(meta.optimizer_step), tensors: moments },
      batches: json("batches"),
      extra: json("extra"),
    };
  } catch (e) {
    if (e instanceof SafetensorsError) {
      // Its message already names the file.
      throw new CheckpointError(e.message, { file: path, cause: e });
    }
    throw e;
  }
}

/**
 * Chooses what `--resume` continues from: the newest checkpoint of the run that loads and
 * verifies. Each newer one that does not is reported through `say` in one line and skipped;
 * temporary files of a checkpoint write that never reached its rename are removed (and reported).
 *
 * @param runDir The run folder.
 * @param options `say`: receives the one-line reports (default `console.error`).
 * @returns The checkpoint and its contents, or `undefined` when the run has no checkpoint.
 * @throws {CheckpointError} If the run has checkpoints but none that verifies.
 *
 * @example Resuming by hand
 * ```ts
 * import { findResumeCheckpoint } from "./checkpoint.ts";
 * const point = await findResumeCheckpoint("out/demo");
 * console.log(point ? `resuming from ${point.path}` : "no checkpoint: starting afresh");
 * ```
 */
export async function findResumeCheckpoint(
  runDir: string,
  options: { say?: (line: string) => void } = {},
): Promise<ResumePoint | undefined> {
  const say = options.say ?? ((line: string) => console.error(line));
  const dir = checkpointDir(runDir);
  for (const name of await namesIn(dir)) {
    if (!PARTIAL.test(name)) continue;
    await Deno.remove(join(dir, name)).catch((e) => {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    });
    say(`removed "${join(dir, name)}", left by a checkpoint write that was interrupted`);
  }
  const paths = await listCheckpoints(runDir);
  let newest: CheckpointError | undefined;
  for (const path of paths.toReversed()) {
    try {
      return { path, data: await loadCheckpoint(path) };
    } catch (e) {
      if (!(e instanceof CheckpointError)) throw e;
      newest ??= e;
      say(`warning: ${e.message}; skipping it`);
    }
  }
  if (newest === undefined) return undefined;
  // Each was reported through `say`; the newest one's error stays as the cause.
  throw new CheckpointError(
    `Cannot resume: none of the ${paths.length} checkpoints in ${dir} is usable (see above)`,
    { file: dir, cause: newest },
  );
}

async function namesIn(dir: string): Promise<string[]> {
  const names: string[] = [];
  try {
    for await (const entry of Deno.readDir(dir)) if (entry.isFile) names.push(entry.name);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
  return names;
}
