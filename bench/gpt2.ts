/**
 * GPT-2 throughput: forward, forward + backward, and cached generation tokens/s, for the fixture
 * model and for a GPT-2-small-shaped model with random weights, with the bytes each allocates.
 *
 * @module
 */

import type { Gpu } from "../kernels/gpu.ts";
import { generateTokens } from "../models/generate.ts";
import { GPT2_SMALL } from "../models/gpt2_config.ts";
import { gpt2Family } from "../models/gpt2_family.ts";
import type { Model } from "../models/model.ts";
import { loadModel } from "../models/registry.ts";

/** One model's figures. */
export interface Gpt2BenchRow {
  model: string;
  B: number;
  T: number;
  forwardTokensPerS: number;
  trainTokensPerS: number;
  generateTokensPerS: number;
  weightBytes: number;
  gradientBytes: number;
  activationBytes: number;
}

/** Runs `record` `reps` times and returns the seconds per repetition (wall, GPU synced). */
async function timeReps(gpu: Gpu, reps: number, record: () => void): Promise<number> {
  await gpu.sync();
  const start = performance.now();
  for (let i = 0; i < reps; i++) record();
  await gpu.sync();
  return (performance.now() - start) / 1000 / reps;
}

/** Measures one model at batch B x sequence T. */
export async function benchGpt2Model(
  gpu: Gpu,
  model: Model,
  options: { name: string; B: number; T: number; reps: number; genTokens: number },
): Promise<Gpt2BenchRow> {
  const { B, T, reps } = options;
  const V = model.outputs;
  const tokens = Uint32Array.from({ length: B * T }, (_, i) => (i * 7919) % V);
  const targets = Uint32Array.from({ length: B * T }, (_, i) => (i * 104729 + 1) % V);
  const batch = { B, T, tokens };
  model.forward(batch); // warm-up: pipelines, arena
  const forward = await timeReps(gpu, reps, () => model.forward(batch));
  const step = () => {
    model.forward(batch);
    model.loss({ targets }, { backward: true });
    model.backward();
  };
  step();
  const train = await timeReps(gpu, reps, step);
  const prompt = Array.from(tokens.subarray(0, 8));
  await generateTokens(model, prompt, { maxNewTokens: 2 });
  const start = performance.now();
  const made = await generateTokens(model, prompt, { maxNewTokens: options.genTokens });
  const genSeconds = (performance.now() - start) / 1000;
  const memory = model.memory();
  return {
    model: options.name,
    B,
    T,
    forwardTokensPerS: (B * T) / forward,
    trainTokensPerS: (B * T) / train,
    generateTokensPerS: made.length / genSeconds,
    weightBytes: memory.weights,
    gradientBytes: memory.gradients,
    activationBytes: memory.activations,
  };
}

/** The fixture model and GPT-2 small (random weights), each trained in full for fwd+bwd. */
export async function benchGpt2(
  gpu: Gpu,
  options: { fixture?: string; small?: boolean } = {},
): Promise<Gpt2BenchRow[]> {
  const rows: Gpt2BenchRow[] = [];
  {
    using tiny = await loadModel(gpu, options.fixture ?? "fixtures/tiny-gpt2", { trainAll: true });
    rows.push(
      await benchGpt2Model(gpu, tiny, { name: "tiny-gpt2", B: 4, T: 64, reps: 10, genTokens: 32 }),
    );
  }
  if (options.small ?? true) {
    using small = await gpt2Family.init(gpu, GPT2_SMALL, { seed: 1, trainAll: true });
    rows.push(
      await benchGpt2Model(gpu, small, {
        name: "gpt2-small (random)",
        B: 1,
        T: 128,
        reps: 1,
        genTokens: 8,
      }),
    );
  }
  return rows;
}
