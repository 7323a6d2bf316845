/**
 * Writing a Llama-family model held on the GPU as a Hugging Face folder: `config.json` (the one
 * it was loaded with, or one written from its architecture), `model.safetensors` (F32, the
 * `model.` prefix as `LlamaForCausalLM` saves it, `lm_head.weight` only when untied) and the
 * tokenizer files.
 *
 * @module
 */

import type { Tensor } from "../kernels/tensor.ts";
import { LLAMA_MODEL_TYPES, type LlamaConfig, ropeScalingJson } from "./llama_config.ts";
import { MODEL_PREFIX } from "./llama_weights.ts";
import { writeModelFolder } from "./_model_folder.ts";

/**
 * `config.json` in Hugging Face's keys for an architecture (used when the model was not loaded
 * from a folder).
 *
 * @param config The architecture.
 * @returns The JSON text.
 */
export function hfLlamaConfigJson(config: LlamaConfig): string {
  const json: Record<string, unknown> = {
    architectures: [LLAMA_MODEL_TYPES[config.modelType].architectures[0]],
    model_type: config.modelType,
    hidden_act: "silu",
    hidden_size: config.hiddenSize,
    intermediate_size: config.intermediateSize,
    num_hidden_layers: config.numHiddenLayers,
    num_attention_heads: config.numAttentionHeads,
    num_key_value_heads: config.numKeyValueHeads,
    head_dim: config.headDim,
    vocab_size: config.vocabSize,
    max_position_embeddings: config.maxPositionEmbeddings,
    rms_norm_eps: config.rmsNormEps,
    rope_theta: config.ropeTheta,
    rope_scaling: ropeScalingJson(config.ropeScaling),
    tie_word_embeddings: config.tieWordEmbeddings,
    initializer_range: config.initializerRange,
    torch_dtype: "float32",
  };
  if (config.modelType === "llama") json.attention_bias = config.oBias;
  if (config.bosTokenId !== undefined) json.bos_token_id = config.bosTokenId;
  if (config.eosTokenIds !== undefined) {
    json.eos_token_id = config.eosTokenIds.length === 1
      ? config.eosTokenIds[0]
      : config.eosTokenIds;
  }
  return JSON.stringify(json, null, 2) + "\n";
}

/**
 * Writes the model's current weights as a Hugging Face folder; tokenizer files are copied from
 * `tokenizerFrom` when present there. Each file is written atomically (weights first,
 * `config.json` last). A folder that is, lies inside or contains `tokenizerFrom`, or holds a
 * sharded checkpoint's index, is refused with an `OutputPathError`.
 */
export function saveLlamaFolder(
  model: { config: LlamaConfig; configJson?: string; params: Map<string, Tensor> },
  outFolder: string,
  options: { tokenizerFrom?: string } = {},
): Promise<void> {
  return writeModelFolder(outFolder, {
    params: model.params,
    checkpointName: (name) => name === "lm_head.weight" ? name : MODEL_PREFIX + name,
    configJson: model.configJson ?? hfLlamaConfigJson(model.config),
    tokenizerFrom: options.tokenizerFrom,
  });
}
