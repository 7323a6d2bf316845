/**
 * Training checkpoints: trainable tensors, optimizer moments, the step and the data order, in
 * one safetensors file written atomically, so that a resumed run continues bit-exactly.
 *
 * @module
 */

import { join } from "node:path";
import { writeSafetensors } from "../formats/safetensors.ts";
import { SafetensorsFile } from "../formats/safetensors.ts";
import type { BatchState } from "../data/batches.ts";
import type { OptimizerState } from "./optimizer.ts";

const FORMAT = "nola-gpu-checkpoint/1";
const PATTERN = /^step-(\d{8})\.safetensors$/;

/** Everything a run needs to continue where it stopped. */
export interface CheckpointData {
  /** Optimizer steps completed. */
  step: number;
  /** Trainable tensors by name. */
  params: Map<string, Float32Array>;
  optimizer: OptimizerState;
  batches: BatchState;
  /** Trainer state beyond the above (best validation loss, patience left, ...). */
  extra: Record<string, unknown>;
}

/** The checkpoint folder of a run. */
export function checkpointDir(runDir: string): string {
  return join(runDir, "checkpoints");
}

/**
 * Writes `checkpoints/step-<step>.safetensors` atomically and keeps only the newest `keep`.
 *
 * @returns The path written.
 */
export async function saveCheckpoint(
  runDir: string,
  data: CheckpointData,
  options: { keep?: number } = {},
): Promise<string> {
  const dir = checkpointDir(runDir);
  await Deno.mkdir(dir, { recursive: true });
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
  await writeSafetensors(path, tensors, {
    format: FORMAT,
    step: String(data.step),
    optimizer_step: String(data.optimizer.step),
    batches: JSON.stringify(data.batches),
    extra: JSON.stringify(data.extra),
  });
  const keep = options.keep ?? 2;
  const all = await listCheckpoints(runDir);
  for (const old of all.slice(0, Math.max(0, all.length - keep))) await Deno.remove(old);
  return path;
}

/** Checkpoint paths of a run, oldest first. */
export async function listCheckpoints(runDir: string): Promise<string[]> {
  const found: { step: number; path: string }[] = [];
  try {
    for await (const entry of Deno.readDir(checkpointDir(runDir))) {
      const m = entry.isFile ? PATTERN.exec(entry.name) : null;
      if (m) found.push({ step: Number(m[1]), path: join(checkpointDir(runDir), entry.name) });
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
  return found.sort((a, b) => a.step - b.step).map((f) => f.path);
}

/** Reads a checkpoint written by {@link saveCheckpoint}. */
export async function loadCheckpoint(path: string): Promise<CheckpointData> {
  using file = await SafetensorsFile.open(path);
  const meta = file.metadata;
  if (meta.format !== FORMAT) {
    throw new Error(`Cannot resume from "${path}": format "${meta.format}" is not ${FORMAT}`);
  }
  const params = new Map<string, Float32Array>();
  const moments = new Map<string, Float32Array>();
  for (const name of file.names()) {
    const values = await file.readFloat32(name);
    if (name.startsWith("param.")) params.set(name.slice(6), values);
    else if (name.startsWith("optim.")) moments.set(name.slice(6), values);
  }
  return {
    step: Number(meta.step),
    params,
    optimizer: { step: Number(meta.optimizer_step), tensors: moments },
    batches: JSON.parse(meta.batches),
    extra: JSON.parse(meta.extra),
  };
}
