/**
 * Fresh GPT-2 weights, as Hugging Face initialises them: N(0, 0.02) for embeddings and linear
 * weights, the residual projections scaled by 1/sqrt(2·n_layer) (GPT-2 paper), zero biases,
 * layernorms at weight 1 and bias 0. Drawn from a seeded generator, so a seed gives the same
 * model everywhere.
 *
 * @module
 */

import type { Gpt2Config } from "./gpt2_config.ts";
import { expectedGpt2Shapes, type Gpt2Weights } from "./gpt2_weights.ts";

/**
 * Initial weights for `config` from `seed`.
 *
 * @example
 * ```ts
 * import { initGpt2Weights } from "./gpt2_init.ts";
 * import { readGpt2Config } from "./gpt2_config.ts";
 * const weights = initGpt2Weights(await readGpt2Config("fixtures/tiny-gpt2"), { seed: 1 });
 * console.log(weights.tensors.get("wte.weight")!.shape); // [300, 48]
 * ```
 */
export function initGpt2Weights(config: Gpt2Config, options: { seed?: number } = {}): Gpt2Weights {
  const normal = gaussian(options.seed ?? 0);
  const residualStd = 0.02 / Math.sqrt(2 * config.nLayer);
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const { name, shape } of expectedGpt2Shapes(config)) {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    if (/ln_(1|2|f)\.weight$/.test(name)) data.fill(1);
    else if (!name.endsWith(".bias")) {
      const std = /c_proj\.weight$/.test(name) ? residualStd : 0.02;
      for (let i = 0; i < data.length; i++) data[i] = normal() * std;
    }
    tensors.set(name, { shape, data });
  }
  return { config, tensors };
}

// Standard normals from xorshift128+ through Box-Muller; seeded, platform-independent. Not
// data/random.ts's generator: fixtures/tiny-gpt2-pretrained was pretrained from these draws
// (pipelines/pretrain-tiny-gpt2.yaml, seed 0), and a re-run should give that model again.
function gaussian(seed: number): () => number {
  let s0 = BigInt.asUintN(64, BigInt(seed) * 0x9e3779b97f4a7c15n + 1n);
  let s1 = BigInt.asUintN(64, s0 * 0xbf58476d1ce4e5b9n + 7n);
  const next = () => {
    let x = s0;
    const y = s1;
    s0 = y;
    x = BigInt.asUintN(64, x ^ (x << 23n));
    s1 = x ^ y ^ (x >> 17n) ^ (y >> 26n);
    return Number(BigInt.asUintN(64, s1 + y) >> 11n) / 2 ** 53;
  };
  let spare: number | null = null;
  return () => {
    if (spare !== null) {
      const v = spare;
      spare = null;
      return v;
    }
    const u = 1 - next();
    const v = next();
    const radius = Math.sqrt(-2 * Math.log(u));
    spare = radius * Math.sin(2 * Math.PI * v);
    return radius * Math.cos(2 * Math.PI * v);
  };
}
