/**
 * NOLA against LoRA on equal terms: the time of one optimizer step with each (side by side, in
 * alternation, in one run), the GPU bytes NOLA's adapters keep at small and large k, and basis
 * generation throughput.
 *
 * @module
 */

import { AdapterSet, type AttachConfig } from "../adapters/attach.ts";
import type { Gpu } from "../kernels/gpu.ts";
import type { Gpt2Config } from "../models/gpt2_config.ts";
import { gpt2Family } from "../models/gpt2_family.ts";
import type { Model } from "../models/model.ts";
import { Optimizer } from "../train/optimizer.ts";

/** GPT-2 small's width with 2 layers and a 1024-token vocabulary. */
export const STEP_MODEL: Gpt2Config = {
  nLayer: 2,
  nHead: 12,
  nEmbd: 768,
  nPositions: 1024,
  vocabSize: 1024,
  nInner: 3072,
  layerNormEpsilon: 1e-5,
  activationFunction: "gelu_new",
};

const QV = ["h.*.attn.c_attn.q", "h.*.attn.c_attn.v"];

/** What {@link benchAdapters} measures. */
export interface AdapterBench {
  model: string;
  B: number;
  T: number;
  steps: number;
  nolaStepMs: number;
  loraStepMs: number;
  /** nolaStepMs / loraStepMs: the target is at most 1.15. */
  ratio: number;
  /** Of one NOLA step: the time of combine + coefficient gradients alone. */
  nolaOverheadMs: number;
  /** Queue submits of one step with each method (the last timed step). */
  submitsPerStep: { nola: number; lora: number };
  /** GPU bytes NOLA's q/v adapters keep (persistent) and the step's pooled peak, per k. */
  memory: { k: number; adapterBytes: number; stepPeakBytes: number; coefficients: number }[];
}

/** One optimizer step in the documented order, recorded and waited for. */
async function step(
  model: Model,
  set: AdapterSet,
  optimizer: Optimizer,
  batch: { B: number; T: number; tokens: Uint32Array; targets: Uint32Array },
): Promise<void> {
  set.zeroGrads();
  set.prepareStep();
  model.forward(batch);
  model.loss({ targets: batch.targets }, { backward: true });
  model.backward();
  set.finishBackward();
  optimizer.step(1);
  await model.gpu.sync();
}

/** An AdamW optimizer over the set's trainable tensors. */
function adamw(set: AdapterSet): Promise<Optimizer> {
  return Optimizer.create(set.model.gpu, [{ kind: "adamw", lr: 1e-3, params: set.parameters() }]);
}

/**
 * Times NOLA (q, v; r = 8, k = l = 1024) against LoRA (q, v; r = 8) steps on {@link STEP_MODEL}
 * at batch 4 x 128, alternating so both see the same machine load.
 */
export async function benchAdapters(
  gpu: Gpu,
  options: { B?: number; T?: number; steps?: number } = {},
): Promise<AdapterBench> {
  const B = options.B ?? 4;
  const T = options.T ?? 128;
  const steps = options.steps ?? 3;
  using model = await gpt2Family.init(gpu, STEP_MODEL, { seed: 1 });
  const V = STEP_MODEL.vocabSize;
  const batch = {
    B,
    T,
    tokens: Uint32Array.from({ length: B * T }, (_, i) => (i * 7919) % V),
    targets: Uint32Array.from({ length: B * T }, (_, i) => (i * 104729 + 1) % V),
  };
  const base = { targets: QV, r: 8, loraAlpha: 8, seed: 0 };
  const nolaConfig: AttachConfig = { ...base, method: "nola", k: 1024, l: 1024 };
  const loraConfig: AttachConfig = { ...base, method: "lora" };
  const runs = { nola: [] as number[], lora: [] as number[] };
  const overhead: number[] = [];
  const submitsPerStep = { nola: 0, lora: 0 };
  for (const config of [nolaConfig, loraConfig]) {
    // Warm-up: pipelines, arenas, the pool.
    using set = await AdapterSet.attach(model, config, { maxRows: B * T });
    using optimizer = await adamw(set);
    await step(model, set, optimizer, batch);
    set.detach();
  }
  for (let i = 0; i < steps; i++) {
    for (const [method, config] of [["nola", nolaConfig], ["lora", loraConfig]] as const) {
      using set = await AdapterSet.attach(model, config, { maxRows: B * T });
      using optimizer = await adamw(set);
      await gpu.sync();
      const start = performance.now();
      const submits = gpu.submits;
      await step(model, set, optimizer, batch);
      runs[method].push(performance.now() - start);
      submitsPerStep[method] = gpu.submits - submits;
      if (method === "nola") {
        const { ms } = await gpu.time(() => {
          set.prepareStep();
          set.finishBackward();
        });
        overhead.push(ms);
      }
      set.detach();
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const memory = [];
  for (const k of [64, 4096]) {
    using set = await AdapterSet.attach(model, { ...nolaConfig, k, l: k }, { maxRows: B * T });
    await gpu.sync();
    gpu.pool.resetPeak();
    const before = gpu.pool.stats().inUse;
    set.prepareStep();
    set.finishBackward();
    await gpu.sync();
    memory.push({
      k,
      adapterBytes: set.bytes,
      stepPeakBytes: gpu.pool.stats().peak - before,
      coefficients: set.parameters().reduce((s, p) => s + p.param.size, 0),
    });
    set.detach();
  }
  const nolaStepMs = median(runs.nola);
  const loraStepMs = median(runs.lora);
  return {
    model: "GPT-2 small width, 2 layers, vocab 1024",
    B,
    T,
    steps,
    nolaStepMs,
    loraStepMs,
    ratio: nolaStepMs / loraStepMs,
    nolaOverheadMs: median(overhead),
    submitsPerStep,
    memory,
  };
}
