/**
 * A ViT's module names in each layout (Hugging Face's without the `vit.` prefix, or timm's) and
 * its adaptable sites by those names.
 *
 * @module
 */

import type { LinearSite } from "./model.ts";
import type { VitConfig, VitLayout } from "./vit_config.ts";

/** One block's module names in a layout (without the model's prefix). */
export interface VitBlockNames {
  /** The norm before attention. */
  norm1: string;
  /** The q, k, v projections (Hugging Face) or the one fused projection (timm). */
  qkv: readonly string[];
  /** The attention's output projection. */
  proj: string;
  /** The norm before the MLP. */
  norm2: string;
  /** The MLP's first linear. */
  fc1: string;
  /** The MLP's second linear. */
  fc2: string;
}

/** The names of the modules outside the blocks, in a layout. */
export interface VitNames {
  /** The class token `[1, 1, D]`. */
  cls: string;
  /** The position embeddings `[1, N + 1, D]`. */
  pos: string;
  /** The patch embedding, a conv `[D, C, P, P]` with a bias. */
  patch: string;
  /** The final norm. */
  norm: string;
  /** The head. */
  head: string;
  /** Block `i`'s modules. */
  block(i: number): VitBlockNames;
}

const HF_NAMES: VitNames = {
  cls: "embeddings.cls_token",
  pos: "embeddings.position_embeddings",
  patch: "embeddings.patch_embeddings.projection",
  norm: "layernorm",
  head: "classifier",
  block: (i) => {
    const h = `encoder.layer.${i}`;
    return {
      norm1: `${h}.layernorm_before`,
      qkv: ["query", "key", "value"].map((p) => `${h}.attention.attention.${p}`),
      proj: `${h}.attention.output.dense`,
      norm2: `${h}.layernorm_after`,
      fc1: `${h}.intermediate.dense`,
      fc2: `${h}.output.dense`,
    };
  },
};

const TIMM_NAMES: VitNames = {
  cls: "cls_token",
  pos: "pos_embed",
  patch: "patch_embed.proj",
  norm: "norm",
  head: "head",
  block: (i) => ({
    norm1: `blocks.${i}.norm1`,
    qkv: [`blocks.${i}.attn.qkv`],
    proj: `blocks.${i}.attn.proj`,
    norm2: `blocks.${i}.norm2`,
    fc1: `blocks.${i}.mlp.fc1`,
    fc2: `blocks.${i}.mlp.fc2`,
  }),
};

/**
 * The module names of a layout: Hugging Face's without `ViTForImageClassification`'s `vit.`
 * prefix (`encoder.layer.0.intermediate.dense`), or timm's (`blocks.0.mlp.fc1`).
 *
 * @param layout The layout.
 * @returns The names.
 */
export function vitNames(layout: VitLayout): VitNames {
  return layout === "hf" ? HF_NAMES : TIMM_NAMES;
}

/**
 * Every site a ViT offers adapters, in model order, block by block. Hugging Face:
 * `encoder.layer.{i}.attention.attention.query|key|value`, `...attention.output.dense`,
 * `...intermediate.dense`, `...output.dense`. timm: `blocks.{i}.attn.qkv` with its q, k and v
 * column slices `blocks.{i}.attn.qkv.q|k|v` (D features each at 0, D, 2D), `blocks.{i}.attn.proj`,
 * `blocks.{i}.mlp.fc1`, `blocks.{i}.mlp.fc2`. The patch embedding and the head are not sites.
 *
 * @param c The architecture.
 * @returns The sites.
 */
export function vitSites(c: VitConfig): LinearSite[] {
  const { hiddenSize: D, intermediateSize: I } = c;
  const names = vitNames(c.layout);
  const sites: LinearSite[] = [];
  const site = (name: string, linear: string, colOffset: number, inF: number, outF: number) =>
    sites.push({ name, linear, colOffset, inFeatures: inF, outFeatures: outF });
  for (let i = 0; i < c.numLayers; i++) {
    const b = names.block(i);
    if (c.layout === "hf") {
      for (const m of b.qkv) site(m, m, 0, D, D);
    } else {
      const qkv = b.qkv[0];
      site(qkv, qkv, 0, D, 3 * D);
      ["q", "k", "v"].forEach((part, j) => site(`${qkv}.${part}`, qkv, j * D, D, D));
    }
    site(b.proj, b.proj, 0, D, D);
    site(b.fc1, b.fc1, 0, D, I);
    site(b.fc2, b.fc2, 0, I, D);
  }
  return sites;
}
