/**
 * ViT as a model family: `model_type: "vit"` (Hugging Face `ViTForImageClassification` and
 * `ViTModel` folders) and timm ViT folders (a `config.json` with `architecture: "vit_..."`).
 *
 * @module
 */

import { Random } from "../data/random.ts";
import type { ModelFamily } from "./model.ts";
import { Vit } from "./vit.ts";
import { parseVitConfig, type VitConfig, vitConfigHash } from "./vit_config.ts";
import { vitSites } from "./vit_names.ts";
import { expectedVitShapes } from "./vit_weights.ts";
import { Checkpoint } from "../formats/safetensors.ts";

/** What the registry matches a timm `config.json`'s `architecture` against. */
export const TIMM_VIT_ARCHITECTURE = /^vit_/;

/** ViT: `[out, in]` linear weights, a class-token head, either layout's names. */
export const vitFamily: ModelFamily<VitConfig> & { readonly timmArchitecture: RegExp } = {
  modelType: "vit",
  architectures: ["ViTForImageClassification", "ViTModel"],
  timmArchitecture: TIMM_VIT_ARCHITECTURE,
  parseConfig: parseVitConfig,
  shape: (config) => ({ configHash: vitConfigHash(config), sites: vitSites(config) }),
  load: async (gpu, folder, config, options) => {
    using ckpt = await Checkpoint.open(folder);
    return await Vit.fromReader(gpu, config, ckpt, options);
  },
  init: (gpu, config, options = {}) =>
    Vit.fromWeights(gpu, { config, tensors: initVitWeights(config, options.seed ?? 0) }, options),
};

/**
 * Fresh weights as timm initialises a ViT, in kind: linear weights and the patch embedding
 * normal with std 0.02, the class token std 1e-6, position embeddings std 0.02, biases zero,
 * norms one, the head zero (so every class starts equal); drawn from the project's seeded PRNG.
 *
 * @param config The architecture.
 * @param seed The seed.
 * @returns The weights by name.
 */
export function initVitWeights(
  config: VitConfig,
  seed: number,
): Map<string, { shape: number[]; data: Float32Array }> {
  const random = new Random(seed, 0);
  // Box-Muller over the PRNG's floats (1 - u keeps the log finite).
  const normal = () =>
    Math.sqrt(-2 * Math.log(1 - random.nextFloat())) * Math.cos(2 * Math.PI * random.nextFloat());
  const head = config.layout === "hf" ? "classifier." : "head.";
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const { name, shape } of expectedVitShapes(config)) {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    const isNorm = /(layernorm|norm\d?)(_before|_after)?\.weight$/.test(name) &&
      shape.length === 1;
    if (isNorm) data.fill(1);
    else if (!name.endsWith(".bias") && !name.startsWith(head)) {
      const std = /cls_token$/.test(name) ? 1e-6 : 0.02;
      for (let i = 0; i < data.length; i++) data[i] = std * normal();
    }
    out.set(name, { shape, data });
  }
  return out;
}
