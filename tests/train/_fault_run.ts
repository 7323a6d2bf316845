/** One training run of the fault tests, the same in the child processes and in the test. */

import { join } from "node:path";
import { saveAdapter } from "../../adapters/adapter_file.ts";
import type { Gpu } from "../../kernels/gpu.ts";
import { findResumeCheckpoint } from "../../train/checkpoint.ts";
import { RunLog } from "../../train/run_log.ts";
import { train } from "../../train/trainer.ts";
import { nolaSetup } from "./_train_fixture.ts";

/** Optimizer steps of a whole run. */
export const STEPS = 8;

/** The adapter a run leaves in its folder. */
export function adapterPath(dir: string): string {
  return join(dir, "adapter.safetensors");
}

/**
 * Trains the fixture to the end with a checkpoint every step, continuing from the run's newest
 * checkpoint that verifies (as `--resume` does) or from scratch when it has none, then saves the
 * adapter.
 *
 * @returns The step it resumed from, if any.
 */
export async function runToEnd(
  gpu: Gpu,
  dir: string,
  options: { say?: (line: string) => void; onStep?: (step: number) => void } = {},
): Promise<{ resumedFrom?: number }> {
  using s = await nolaSetup(gpu, { steps: STEPS });
  const point = await findResumeCheckpoint(dir, { say: options.say });
  using log = await RunLog.open(dir, { resumeStep: point?.data.step });
  await train({
    ...s.base,
    batches: s.batches(),
    log,
    logEvery: 1,
    checkpointEvery: 1,
    resume: point ?? false,
    onLog: (records) => options.onStep?.(records.at(-1)!.step),
  });
  await saveAdapter(s.set, adapterPath(dir), { baseModel: "tiny-gpt2" });
  return { resumedFrom: point?.data.step };
}
