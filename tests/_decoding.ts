/**
 * Helpers shared by the tests that hold batched decoding (greedy, sampled, beam search) to one
 * prompt at a time: the causal fixtures with the sites an adapter goes on, seeded random prompts,
 * and a NOLA adapter with non-zero coefficients.
 *
 * @module
 */

import { AdapterSet } from "../adapters/attach.ts";
import type { Model } from "../models/model.ts";
import { randomArray, rng } from "./_util.ts";

/** Each causal fixture with two sites a NOLA adapter goes on (attention, and an MLP for Qwen2). */
export const DECODING_FIXTURES = [
  ["fixtures/tiny-gpt2", ["h.*.attn.c_attn.q", "h.*.attn.c_attn.v"]],
  ["fixtures/tiny-llama", ["layers.*.self_attn.q_proj", "layers.*.self_attn.v_proj"]],
  ["fixtures/tiny-qwen2", ["layers.*.self_attn.k_proj", "layers.*.mlp.down_proj"]],
] as const;

/**
 * Seeded random prompts.
 *
 * @param seed Seed of the lengths and ids.
 * @param n Prompts.
 * @param maxLen Longest prompt; lengths are uniform in 1 .. maxLen.
 * @param vocab Ids are below this.
 * @returns `n` prompts.
 */
export function randomPrompts(seed: number, n: number, maxLen: number, vocab: number): number[][] {
  const next = rng(seed);
  return Array.from(
    { length: n },
    () => Array.from({ length: 1 + Math.floor(next() * maxLen) }, () => Math.floor(next() * vocab)),
  );
}

/** Settings of {@link attachRandomNola} that differ between the tests. */
export interface RandomNolaOptions {
  /** Seed of the random bases. */
  basisSeed: number;
  /** Rows the adapter's scratch holds (`AdapterSet.attach`'s `maxRows`). */
  maxRows: number;
}

/**
 * Attaches NOLA (r 4, k = l = 16, lora_alpha 8) with coefficients drawn uniform in [-0.5, 0.5),
 * so that the adapters change the logits, and combines the factors for decoding.
 *
 * @param model The model; detach with `model.detachAll()` or dispose of the returned set.
 * @param targets Site patterns.
 * @param seed Seed of the coefficients: module i draws alpha from seed + 2i, beta from
 *   seed + 2i + 1.
 * @param options The basis seed and the rows of scratch.
 * @returns The attached set.
 */
export async function attachRandomNola(
  model: Model,
  targets: readonly string[],
  seed: number,
  options: RandomNolaOptions,
): Promise<AdapterSet> {
  const set = await AdapterSet.attach(model, {
    method: "nola",
    targets: [...targets],
    r: 4,
    k: 16,
    l: 16,
    loraAlpha: 8,
    seed: options.basisSeed,
  }, { maxRows: options.maxRows });
  for (const [i, m] of set.modules.entries()) {
    model.gpu.write(m.nola!.alpha.buffer, randomArray(16, seed + 2 * i).map((x) => x * 0.5));
    model.gpu.write(m.nola!.beta.buffer, randomArray(16, seed + 2 * i + 1).map((x) => x * 0.5));
  }
  set.prepareStep();
  return set;
}
