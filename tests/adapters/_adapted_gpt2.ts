// The fixture GPT-2 with random non-zero low-rank adapters on the q and v slices of c_attn and on
// mlp.c_fc, shared by the merge and PEFT export tests.

import { LowRankLinear } from "../../adapters/linear_adapter.ts";
import type { Gpt2 } from "../../models/gpt2.ts";
import { randomArray } from "../_util.ts";

export const FIXTURE = "fixtures/tiny-gpt2";
export const B = 2;
export const T = 7;

/** Token ids of one batch, from the seed. */
export function batchTokens(seed: number, vocab: number): Uint32Array {
  const u = randomArray(B * T, seed);
  return Uint32Array.from(u, (v) => Math.floor((v + 1) / 2 * vocab) % vocab);
}

/** The logits of one batch, on the host. */
export async function logitsOf(model: Gpt2, tokens: Uint32Array): Promise<Float32Array> {
  return await model.forward({ B, T, tokens }).logits.read() as Float32Array;
}

/**
 * Attaches adapters with different ranks and scales to every layer: q (r 4), v (r 2) of c_attn
 * and c_fc (r 3). Factors are scaled so each adapter moves the logits noticeably, not wildly.
 */
export function attachRandomAdapters(model: Gpt2, seed: number): LowRankLinear[] {
  const { nLayer, nEmbd: C, nInner } = model.config;
  const made: LowRankLinear[] = [];
  let s = seed;
  const add = (module: string, slice: string, o: { out: number; r: number; alpha: number }) => {
    const inF = C; // c_attn and c_fc both read the C channels
    const a = randomArray(o.r * inF, s++).map((v) => v * 0.4);
    const b = randomArray(o.out * o.r, s++).map((v) => v * 0.4);
    const adapter = LowRankLinear.create(model.ops.matmul, {
      name: `${module}${slice}`,
      inFeatures: inF,
      outFeatures: o.out,
      r: o.r,
      loraAlpha: o.alpha,
      maxRows: B * T,
      a,
      b,
    });
    made.push(adapter);
    return adapter;
  };
  for (let l = 0; l < nLayer; l++) {
    const attn = `h.${l}.attn.c_attn`;
    model.attach(attn, add(attn, ".q", { out: C, r: 4, alpha: 8 }), { colOffset: 0 });
    model.attach(attn, add(attn, ".v", { out: C, r: 2, alpha: 3 }), { colOffset: 2 * C });
    const fc = `h.${l}.mlp.c_fc`;
    model.attach(fc, add(fc, "", { out: nInner, r: 3, alpha: 3 }));
  }
  return made;
}
