/**
 * GPT-2 as a model family: `model_type: "gpt2"`, Hugging Face `GPT2LMHeadModel` folders.
 *
 * @module
 */

import { configHash, type Gpt2Config, gpt2Sites, parseGpt2Config } from "./gpt2_config.ts";
import { Gpt2 } from "./gpt2.ts";
import { initGpt2Weights } from "./gpt2_init.ts";
import { Checkpoint } from "../formats/safetensors.ts";
import type { ModelFamily } from "./model.ts";

/** GPT-2: Conv1D weights `[in, out]`, tied head, optional `transformer.` prefix. */
export const gpt2Family: ModelFamily<Gpt2Config> = {
  modelType: "gpt2",
  architectures: ["GPT2LMHeadModel", "GPT2Model"],
  parseConfig: parseGpt2Config,
  shape: (config) => ({ configHash: configHash(config), sites: gpt2Sites(config) }),
  // Streams the checkpoint tensor by tensor against the config the registry parsed.
  load: async (gpu, folder, config, options) => {
    using ckpt = await Checkpoint.open(folder);
    return await Gpt2.fromReader(gpu, config, ckpt, options);
  },
  init: (gpu, config, options = {}) =>
    Gpt2.fromWeights(gpu, initGpt2Weights(config, { seed: options.seed }), options),
};
