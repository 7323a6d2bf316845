/**
 * Writing a ViT held on the GPU as a folder in the layout it was loaded from: Hugging Face's
 * (`config.json` of `ViTForImageClassification`, `vit.`-prefixed weights and `classifier`) or
 * timm's (`config.json` with `architecture`, `num_classes`, every size in `model_args`, the
 * `pretrained_cfg` normalisation). `preprocessor_config.json` is copied from the source folder
 * when it has one.
 *
 * @module
 */

import { join } from "node:path";
import { copyFileAtomic } from "../formats/atomic.ts";
import type { Tensor } from "../kernels/tensor.ts";
import type { VitConfig } from "./vit_config.ts";
import { VIT_PREFIX } from "./vit_weights.ts";
import { writeModelFolder } from "./_model_folder.ts";

/**
 * `config.json` of a ViT in its layout's form.
 *
 * @param c The architecture.
 * @returns The JSON text.
 */
export function vitConfigJson(c: VitConfig): string {
  const json = c.layout === "hf"
    ? {
      architectures: ["ViTForImageClassification"],
      model_type: "vit",
      hidden_act: "gelu",
      hidden_size: c.hiddenSize,
      num_hidden_layers: c.numLayers,
      num_attention_heads: c.numHeads,
      intermediate_size: c.intermediateSize,
      layer_norm_eps: c.layerNormEps,
      image_size: c.imageHeight === c.imageWidth ? c.imageHeight : [c.imageHeight, c.imageWidth],
      patch_size: c.patchSize,
      num_channels: c.numChannels,
      qkv_bias: c.qkvBias,
      id2label: Object.fromEntries(c.labels.map((name, i) => [String(i), name])),
      label2id: Object.fromEntries(c.labels.map((name, i) => [name, i])),
      torch_dtype: "float32",
    }
    : {
      architecture: c.architecture,
      num_classes: c.numLabels,
      num_features: c.hiddenSize,
      global_pool: "token",
      model_args: {
        img_size: c.imageHeight === c.imageWidth ? c.imageHeight : [c.imageHeight, c.imageWidth],
        patch_size: c.patchSize,
        embed_dim: c.hiddenSize,
        depth: c.numLayers,
        num_heads: c.numHeads,
        mlp_ratio: c.intermediateSize / c.hiddenSize,
        qkv_bias: c.qkvBias,
        in_chans: c.numChannels,
      },
      pretrained_cfg: {
        input_size: [c.numChannels, c.imageHeight, c.imageWidth],
        num_classes: c.numLabels,
        classifier: "head",
        first_conv: "patch_embed.proj",
        ...(c.preprocessing
          ? {
            mean: c.preprocessing.mean,
            std: c.preprocessing.std,
            ...(c.preprocessing.cropPct !== undefined ? { crop_pct: c.preprocessing.cropPct } : {}),
            ...(c.preprocessing.interpolation
              ? { interpolation: c.preprocessing.interpolation }
              : {}),
          }
          : {}),
      },
      label_names: c.labels,
    };
  return JSON.stringify(json, null, 2) + "\n";
}

/**
 * Writes the model's current weights (F32) as a folder of its layout; each file atomically,
 * `config.json` after the weights. A folder that is, lies inside or contains `source` is refused
 * with an `OutputPathError`.
 *
 * @param model The architecture and the weights by name.
 * @param outFolder The folder (created if missing).
 * @param options `source`: the folder the model came from, whose `preprocessor_config.json` is
 * copied.
 */
export async function saveVitFolder(
  model: { config: VitConfig; params: Map<string, Tensor> },
  outFolder: string,
  options: { source?: string } = {},
): Promise<void> {
  const hf = model.config.layout === "hf";
  await writeModelFolder(outFolder, {
    params: model.params,
    checkpointName: (name) => hf && !name.startsWith("classifier.") ? VIT_PREFIX + name : name,
    configJson: vitConfigJson(model.config),
    tokenizerFrom: options.source,
  });
  if (!options.source) return;
  try {
    await copyFileAtomic(
      join(options.source, "preprocessor_config.json"),
      join(outFolder, "preprocessor_config.json"),
    );
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
}
