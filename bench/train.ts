/**
 * Training throughput of the fixture GPT-2 with NOLA on q and v through the real training loop,
 * side by side with PyTorch (Debian's python3-torch, CPU) training the same model with the same
 * adapter math (`bench/torch_nola.py`), when torch is installed.
 *
 * @module
 */

import { AdapterSet } from "../adapters/attach.ts";
import { TrainBatches } from "../data/batches.ts";
import type { Row } from "../data/examples.ts";
import type { Gpu } from "../kernels/gpu.ts";
import { loadModel } from "../models/registry.ts";
import { RunLog } from "../train/run_log.ts";
import { train } from "../train/trainer.ts";

/** What {@link benchTrain} measures. */
export interface TrainBench {
  model: string;
  B: number;
  T: number;
  r: number;
  k: number;
  steps: number;
  tokensPerS: number;
  torch?: { tokensPerS: number; version: string; threads: number } | { error: string };
  /** nola-gpu tokens/s over PyTorch's. */
  ratio?: number;
  /**
   * One step's GPU time by kernel and grid, largest first (absent without `timestamp-query`):
   * every dispatch timed in a pass of its own, which costs a little, so the total is above a
   * step's and the rows are for comparing kernels.
   */
  profile?: { label: string; ms: number; count: number }[];
}

/** Runs `steps` NOLA training steps on the fixture, then the PyTorch script on the same sizes. */
export async function benchTrain(
  gpu: Gpu,
  options: { fixture?: string; B?: number; T?: number; r?: number; k?: number; steps?: number } =
    {},
): Promise<TrainBench> {
  const fixture = options.fixture ?? "fixtures/tiny-gpt2";
  const { B = 8, T = 64, r = 8, k = 256, steps = 20 } = options;
  using model = await loadModel(gpu, fixture);
  const V = model.outputs;
  using set = await AdapterSet.attach(model, {
    method: "nola",
    targets: ["h.*.attn.c_attn.q", "h.*.attn.c_attn.v"],
    r,
    k,
    l: k,
    loraAlpha: r,
    seed: 0,
  }, { maxRows: B * T });
  let s = 1;
  const rows: Row[] = Array.from({ length: B * 4 }, () => ({
    tokens: Uint32Array.from({ length: T }, () => (s = (s * 48271) % 2147483647) % V),
    mask: new Uint8Array(T).fill(1, 0, T - 1),
    segments: [{ example: 0, start: 0, length: T }],
  }));
  const dir = "out/bench/train-run";
  const run = async (n: number) => {
    using log = await RunLog.open(dir);
    const start = performance.now();
    await train({
      model,
      groups: [{ kind: "adamw", lr: 1e-3, params: set.parameters() }],
      hooks: set,
      batches: new TrainBatches(rows, { B, T, eosId: V - 1, seed: 0, steps: n }),
      schedule: { kind: "constant", lr: 1e-3, totalSteps: n },
      log,
      logEvery: 10,
      checkpointEvery: 0,
    });
    return (performance.now() - start) / 1000;
  };
  await run(2); // warm-up: pipelines, arenas
  const seconds = await run(steps);
  const tokensPerS = (B * T * steps) / seconds;
  const result: TrainBench = { model: fixture, B, T, r, k, steps, tokensPerS };
  if (gpu.hasTimestamps) {
    gpu.startProfile();
    await run(1);
    result.profile = (await gpu.stopProfile()).kernels;
  }
  const args = [fixture, ...["--batch", B, "--seq", T, "--r", r, "--k", k, "--steps", steps]];
  let error = "";
  // Debian's torch lives with Debian's python, which another python on PATH may shadow.
  for (const python of ["python3", "/usr/bin/python3"]) {
    try {
      const out = await new Deno.Command(python, {
        args: ["bench/torch_nola.py", ...args.map(String)],
        stdout: "piped",
        stderr: "piped",
      }).output();
      if (!out.success) {
        error = new TextDecoder().decode(out.stderr).trim().split("\n").at(-1) ?? "";
        continue;
      }
      const torch = JSON.parse(new TextDecoder().decode(out.stdout));
      result.torch = {
        tokensPerS: torch.tokens_per_s,
        version: torch.torch,
        threads: torch.threads,
      };
      result.ratio = tokensPerS / torch.tokens_per_s;
      return result;
    } catch (e) {
      error = (e as Error).message;
    }
  }
  result.torch = { error: `PyTorch side not run (apt-get install python3-torch): ${error}` };
  return result;
}
