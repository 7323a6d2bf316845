/**
 * The Llama family as a model family: `model_type` `llama`, `mistral` or `qwen2`
 * (`LlamaForCausalLM`, `MistralForCausalLM`, `Qwen2ForCausalLM` folders), one network.
 *
 * @module
 */

import { readConfigJson } from "./config_file.ts";
import { Llama } from "./llama.ts";
import {
  LLAMA_MODEL_TYPES,
  type LlamaConfig,
  llamaConfigHash,
  llamaFamilyShape,
  parseLlamaConfig,
} from "./llama_config.ts";
import { initLlamaWeights } from "./llama_weights.ts";
import { Checkpoint } from "../formats/safetensors.ts";
import type { ModelFamily } from "./model.ts";

/**
 * Llama, Mistral and Qwen2: `[out, in]` weights, RMSNorm, RoPE, grouped-query attention, SwiGLU.
 * `modelType` is the first of `modelTypes`, every one of which the registry resolves here.
 */
export const llamaFamily: ModelFamily<LlamaConfig> & { readonly modelTypes: readonly string[] } = {
  modelType: "llama",
  modelTypes: Object.keys(LLAMA_MODEL_TYPES),
  architectures: Object.values(LLAMA_MODEL_TYPES).flatMap((t) => [...t.architectures]),
  parseConfig: (json, source) => parseLlamaConfig(json, source),
  shape: llamaFamilyShape,
  // Streams the checkpoint tensor by tensor against the config the registry parsed.
  load: async (gpu, folder, config, options) => {
    const { json, path } = await readConfigJson(folder);
    // The folder's config was already parsed by the registry; the text saved must be that one.
    if (llamaConfigHash(parseLlamaConfig(json, path)) !== llamaConfigHash(config)) {
      throw new RangeError(`The config of "${folder}" changed while it was being loaded`);
    }
    const configJson = JSON.stringify(json, null, 2) + "\n";
    using ckpt = await Checkpoint.open(folder);
    return await Llama.fromReader(gpu, config, ckpt, { ...options, configJson });
  },
  init: (gpu, config, options = {}) =>
    Llama.fromWeights(gpu, initLlamaWeights(config, { seed: options.seed }), options),
};
