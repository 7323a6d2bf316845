/** A tiny training setup on the fixture GPT-2: NOLA on q and v, synthetic rows. */

import { AdapterSet } from "../../adapters/attach.ts";
import { TrainBatches } from "../../data/batches.ts";
import type { Row } from "../../data/examples.ts";
import type { Gpu } from "../../kernels/gpu.ts";
import { Gpt2 } from "../../models/gpt2.ts";
import type { TrainOptions } from "../../train/trainer.ts";

export const FIXTURE = "fixtures/tiny-gpt2";

/** `n` rows of 24 tokens whose second half is a copy of the first (learnable), prompt masked. */
export function copyRows(n: number, seed: number): Row[] {
  let s = seed >>> 0;
  const next = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) % 250;
  return Array.from({ length: n }, () => {
    const half = Array.from({ length: 12 }, next);
    const tokens = Uint32Array.from([...half, ...half]);
    const mask = new Uint8Array(24);
    mask.fill(1, 11, 23);
    return { tokens, mask, segments: [{ example: 0, start: 0, length: 24 }] };
  });
}

/** A model with NOLA on q, v and the train options that go with it. */
export async function nolaSetup(
  gpu: Gpu,
  options: { steps: number; seed?: number },
): Promise<
  {
    model: Gpt2;
    set: AdapterSet;
    base: Omit<TrainOptions, "log" | "batches">;
    batches: () => TrainBatches;
  } & Disposable
> {
  const model = await Gpt2.load(gpu, FIXTURE);
  const set = await AdapterSet.attach(model, {
    method: "nola",
    targets: ["h.*.attn.c_attn.q", "h.*.attn.c_attn.v"],
    r: 4,
    k: 32,
    l: 32,
    loraAlpha: 4,
    seed: 7,
  }, { maxRows: 4 * 24 });
  const rows = copyRows(40, options.seed ?? 3);
  return {
    model,
    set,
    base: {
      model,
      groups: [{ kind: "adamw", lr: 2e-2, params: set.parameters() }],
      hooks: set,
      schedule: { kind: "linear", lr: 2e-2, totalSteps: options.steps, warmupSteps: 2 },
      maxGradNorm: 1,
    },
    batches: () =>
      new TrainBatches(rows, {
        B: 4,
        T: 24,
        eosId: 299,
        seed: 11,
        steps: options.steps,
        gradAccum: 2,
      }),
    [Symbol.dispose]() {
      set[Symbol.dispose]();
      model[Symbol.dispose]();
    },
  };
}
