/**
 * Writing a GPT-2 held on the GPU as a Hugging Face folder: `config.json`, `model.safetensors`
 * (F32, canonical names, Conv1D [in, out], tied head left out) and the tokenizer files.
 *
 * @module
 */

import type { Tensor } from "../kernels/tensor.ts";
import type { Gpt2Config } from "./gpt2_config.ts";
import { writeModelFolder } from "./_model_folder.ts";

/** `config.json` in Hugging Face's GPT2Config keys. */
export function hfConfigJson(config: Gpt2Config, extra: Record<string, unknown> = {}): string {
  return JSON.stringify(
    {
      architectures: ["GPT2LMHeadModel"],
      model_type: "gpt2",
      n_layer: config.nLayer,
      n_head: config.nHead,
      n_embd: config.nEmbd,
      n_positions: config.nPositions,
      n_ctx: config.nPositions,
      n_inner: config.nInner === 4 * config.nEmbd ? null : config.nInner,
      vocab_size: config.vocabSize,
      layer_norm_epsilon: config.layerNormEpsilon,
      activation_function: config.activationFunction,
      bos_token_id: config.bosTokenId ?? config.vocabSize - 1,
      eos_token_id: config.eosTokenId ?? config.vocabSize - 1,
      tie_word_embeddings: true,
      ...extra,
    },
    null,
    2,
  ) + "\n";
}

/**
 * Writes the model's current weights as a Hugging Face folder; tokenizer files are copied from
 * `tokenizerFrom` when present there. Each file is written atomically (weights first,
 * `config.json` last); other files of an existing folder are left as they are. A folder that is,
 * lies inside or contains `tokenizerFrom`, or holds a sharded checkpoint's index (which loaders
 * would read instead), is refused with an `OutputPathError`.
 */
export function saveGpt2Folder(
  model: { config: Gpt2Config; params: Map<string, Tensor> },
  outFolder: string,
  options: { tokenizerFrom?: string; metadata?: Record<string, string> } = {},
): Promise<void> {
  return writeModelFolder(outFolder, {
    params: model.params,
    checkpointName: (name) => name,
    configJson: hfConfigJson(model.config),
    ...options,
  });
}
