/**
 * GPT-2 as a model family: `model_type: "gpt2"`, Hugging Face `GPT2LMHeadModel` folders.
 *
 * @module
 */

import { configHash, type Gpt2Config, gpt2Sites, parseGpt2Config } from "./gpt2_config.ts";
import { Gpt2 } from "./gpt2.ts";
import { initGpt2Weights } from "./gpt2_init.ts";
import { gpt2WeightNames, loadGpt2Weights } from "./gpt2_weights.ts";
import { storedDtypes } from "./_base_weights.ts";
import type { ModelFamily } from "./model.ts";

/** GPT-2: Conv1D weights `[in, out]`, tied head, optional `transformer.` prefix. */
export const gpt2Family: ModelFamily<Gpt2Config> = {
  modelType: "gpt2",
  architectures: ["GPT2LMHeadModel", "GPT2Model"],
  parseConfig: parseGpt2Config,
  shape: (config) => ({ configHash: configHash(config), sites: gpt2Sites(config) }),
  load: async (gpu, folder, config, options) => {
    const weights = await loadGpt2Weights(folder);
    // The folder's config was already parsed by the registry; both reads must agree.
    if (configHash(weights.config) !== configHash(config)) {
      throw new RangeError(`The config of "${folder}" changed while it was being loaded`);
    }
    const dtypes = options?.baseFormat === "as-stored"
      ? await storedDtypes(folder, gpt2WeightNames)
      : undefined;
    return Gpt2.fromWeights(gpu, weights, { ...options, storedDtypes: dtypes });
  },
  init: (gpu, config, options = {}) =>
    Gpt2.fromWeights(gpu, initGpt2Weights(config, { seed: options.seed }), options),
};
