import assert from "node:assert/strict";
import { ModelConfigError } from "../../models/model.ts";
import { familyOf, parseModelConfig } from "../../models/registry.ts";
import {
  canonicalVitConfigJson,
  parseVitConfig,
  readVitConfig,
  vitConfigHash,
  vitTokens,
} from "../../models/vit_config.ts";
import { vitSites } from "../../models/vit_names.ts";
import { vitConfigJson } from "../../models/vit_save.ts";

const FILE = "m/config.json";

// google/vit-base-patch16-224's config.json as Hugging Face publishes it (1000 ImageNet labels,
// abbreviated to their ids here).
function hfBase(): Record<string, unknown> {
  const id2label = Object.fromEntries(Array.from({ length: 1000 }, (_, i) => [String(i), `c${i}`]));
  return {
    _name_or_path: "google/vit-base-patch16-224",
    architectures: ["ViTForImageClassification"],
    attention_probs_dropout_prob: 0.0,
    encoder_stride: 16,
    hidden_act: "gelu",
    hidden_dropout_prob: 0.0,
    hidden_size: 768,
    id2label,
    image_size: 224,
    initializer_range: 0.02,
    intermediate_size: 3072,
    label2id: Object.fromEntries(Object.entries(id2label).map(([k, v]) => [v, Number(k)])),
    layer_norm_eps: 1e-12,
    model_type: "vit",
    num_attention_heads: 12,
    num_channels: 3,
    num_hidden_layers: 12,
    patch_size: 16,
    qkv_bias: true,
    torch_dtype: "float32",
    transformers_version: "4.36.0",
  };
}

// timm/vit_base_patch16_224.augreg2_in21k_ft_in1k's config.json as the hub holds it.
function timmBase(): Record<string, unknown> {
  return {
    architecture: "vit_base_patch16_224",
    num_classes: 1000,
    num_features: 768,
    global_pool: "token",
    pretrained_cfg: {
      tag: "augreg2_in21k_ft_in1k",
      custom_load: false,
      input_size: [3, 224, 224],
      fixed_input_size: true,
      interpolation: "bicubic",
      crop_pct: 0.9,
      crop_mode: "center",
      mean: [0.5, 0.5, 0.5],
      std: [0.5, 0.5, 0.5],
      num_classes: 1000,
      pool_size: null,
      first_conv: "patch_embed.proj",
      classifier: "head",
    },
  };
}

function refused(json: unknown, key: string, message: RegExp): void {
  assert.throws(
    () => parseVitConfig(json, FILE),
    (e: unknown) => {
      assert(e instanceof ModelConfigError, `not a ModelConfigError: ${e}`);
      assert.equal(e.key, key);
      assert.equal(e.file, FILE);
      assert.match(e.message, /^Invalid ViT config "m\/config\.json": /);
      assert.match(e.message, message);
      assert(!e.message.includes("\n"), "one line");
      return true;
    },
  );
}

Deno.test("a Hugging Face ViT-B/16 config parses to its published sizes", () => {
  const c = parseVitConfig(hfBase(), FILE);
  assert.deepEqual(
    [c.layout, c.hiddenSize, c.numLayers, c.numHeads, c.intermediateSize, c.layerNormEps],
    ["hf", 768, 12, 12, 3072, 1e-12],
  );
  assert.deepEqual([c.imageHeight, c.imageWidth, c.patchSize, c.numChannels], [224, 224, 16, 3]);
  assert.equal(c.numLabels, 1000);
  assert.equal(c.labels[999], "c999");
  assert.equal(vitTokens(c), 197);
  // ViTConfig's defaults stand in for absent optional keys.
  const bare = {
    model_type: "vit",
    hidden_size: 48,
    num_hidden_layers: 1,
    num_attention_heads: 4,
    intermediate_size: 64,
  };
  const d = parseVitConfig(bare, FILE);
  assert.deepEqual([d.imageHeight, d.patchSize, d.layerNormEps, d.qkvBias, d.numLabels], [
    224,
    16,
    1e-12,
    true,
    2,
  ]);
  assert.deepEqual(d.labels, ["LABEL_0", "LABEL_1"]);
});

Deno.test("a timm ViT-B/16 config parses to the same network as Hugging Face's, timm's epsilon", () => {
  const c = parseVitConfig(timmBase(), FILE);
  assert.deepEqual(
    [c.layout, c.hiddenSize, c.numLayers, c.numHeads, c.intermediateSize, c.layerNormEps],
    ["timm", 768, 12, 12, 3072, 1e-6],
  );
  assert.deepEqual([c.imageHeight, c.imageWidth, c.patchSize, c.numLabels], [224, 224, 16, 1000]);
  assert.deepEqual(c.preprocessing, {
    mean: [0.5, 0.5, 0.5],
    std: [0.5, 0.5, 0.5],
    cropPct: 0.9,
    interpolation: "bicubic",
  });
  const large = parseVitConfig({ architecture: "vit_large_patch16_224", num_classes: 10 }, FILE);
  assert.deepEqual([large.hiddenSize, large.numLayers, large.numHeads, large.intermediateSize], [
    1024,
    24,
    16,
    4096,
  ]);
  // model_args override the name's sizes, as timm.create_model(name, **model_args) does.
  const tiny = parseVitConfig({
    architecture: "vit_tiny_patch16_224",
    num_classes: 5,
    model_args: {
      img_size: 12,
      patch_size: 4,
      embed_dim: 24,
      depth: 2,
      num_heads: 3,
      mlp_ratio: 40 / 24,
    },
  }, FILE);
  assert.deepEqual([tiny.hiddenSize, tiny.intermediateSize, tiny.imageHeight, vitTokens(tiny)], [
    24,
    40,
    12,
    10,
  ]);
});

Deno.test("the fixtures' two layouts are one network: hashes differ only by the layout", async () => {
  const hf = await readVitConfig("fixtures/tiny-vit");
  const timm = await readVitConfig("fixtures/tiny-vit-timm");
  assert.equal(
    canonicalVitConfigJson(hf).replace('"layout":"hf"', '"layout":"timm"'),
    canonicalVitConfigJson(timm),
  );
  assert.notEqual(vitConfigHash(hf), vitConfigHash(timm));
  assert.match(vitConfigHash(hf), /^[0-9a-f]{16}$/);
  assert.deepEqual(hf.labels, timm.labels);
  assert.equal(vitSites(hf).length, 2 * 6);
  assert.equal(vitSites(timm).length, 2 * 7);
});

Deno.test("the registry finds ViT by model_type, architectures, or a timm architecture", () => {
  assert.equal(familyOf({ model_type: "vit" }, FILE).modelType, "vit");
  assert.equal(familyOf({ architectures: ["ViTModel"] }, FILE).modelType, "vit");
  assert.equal(familyOf(timmBase(), FILE).modelType, "vit");
  assert.throws(() => familyOf({ architecture: "resnet50" }, FILE), /no "model_type"/);
  assert.equal(parseModelConfig(timmBase(), FILE).family.modelType, "vit");
});

Deno.test("Hugging Face ViT configs that cannot run are refused naming file and key", () => {
  const with_ = (patch: Record<string, unknown>) => ({ ...hfBase(), ...patch });
  refused(
    with_({ hidden_act: "gelu_new" }),
    "hidden_act",
    /"hidden_act" is "gelu_new": only "gelu"/,
  );
  refused(with_({ hidden_size: undefined }), "hidden_size", /missing key "hidden_size"/);
  refused(
    with_({ num_attention_heads: 5 }),
    "num_attention_heads",
    /width 768 is not divisible by the 5 heads/,
  );
  refused(with_({ patch_size: 300 }), "patch_size", /300x300 patches do not fit 224x224 images/);
  refused(with_({ patch_size: [16, 8] }), "patch_size", /only square patches/);
  refused(
    with_({ image_size: 16400, patch_size: 16 }),
    "image_size",
    /1050626 tokens .* more than the attention kernel's 1048560/,
  );
  refused(with_({ layer_norm_eps: -1 }), "layer_norm_eps", /expected a positive number/);
  refused(with_({ id2label: { "0": "a", "2": "b" } }), "id2label", /key "2"; ids must be 0 to 1/);
  refused(
    with_({ id2label: { "0": "a" }, num_labels: 3 }),
    "num_labels",
    /"num_labels" is 3 but "id2label" has 1/,
  );
  refused(with_({ model_type: "deit" }), "model_type", /expected "vit"/);
  refused(
    with_({ num_attention_heads: 4, hidden_size: 1024 }),
    "num_attention_heads",
    /head size 256 is over/,
  );
});

Deno.test("timm configs that are not the plain ViT are refused naming file and key", () => {
  const args = (model_args: Record<string, unknown>) => ({ ...timmBase(), model_args });
  refused(
    { ...timmBase(), architecture: "vit_base_patch16_clip_224" },
    "architecture",
    /expected vit_\{tiny/,
  );
  refused(args({ class_token: false }), "model_args.class_token", /without a class token/);
  refused({ ...timmBase(), global_pool: "avg" }, "global_pool", /class token's pooling/);
  refused(args({ init_values: 1e-5 }), "model_args.init_values", /layer scale/);
  refused(args({ reg_tokens: 4 }), "model_args.reg_tokens", /register tokens/);
  refused(
    args({ act_layer: "quick_gelu" }),
    "model_args.act_layer",
    /not supported for a timm ViT/,
  );
  refused(args({ mlp_ratio: "4" }), "model_args.mlp_ratio", /expected a positive number/);
  refused(
    { ...timmBase(), pretrained_cfg: { input_size: [3, 384, 384] } },
    "pretrained_cfg.input_size",
    /\[3,384,384\], but the model takes \[3, 224, 224\]/,
  );
  refused({ ...timmBase(), label_names: ["a", "b"] }, "label_names", /2 names for 1000 classes/);
  refused({ ...timmBase(), num_classes: 0 }, "num_classes", /a backbone without a head\): set it/);
});

Deno.test("a saved timm config's mlp_ratio gives its MLP width back, where int(D * ratio) would not", () => {
  // 11 * (15 / 11) is 14.999999999999998 in floating point: truncating it, as timm's int() does,
  // would make the MLP one wider than the one saved.
  const c = parseVitConfig({
    architecture: "vit_tiny_patch16_224",
    num_classes: 2,
    model_args: {
      img_size: 8,
      patch_size: 4,
      embed_dim: 11,
      depth: 1,
      num_heads: 1,
      mlp_ratio: 15 / 11,
    },
  }, FILE);
  assert.equal(c.intermediateSize, 15);
  const again = parseVitConfig(JSON.parse(vitConfigJson(c)), FILE);
  assert.equal(vitConfigHash(again), vitConfigHash(c));
  // A ratio far from a whole width truncates, as timm does.
  const d = parseVitConfig({
    architecture: "vit_tiny_patch16_224",
    num_classes: 2,
    model_args: {
      img_size: 8,
      patch_size: 4,
      embed_dim: 10,
      depth: 1,
      num_heads: 1,
      mlp_ratio: 2.55,
    },
  }, FILE);
  assert.equal(d.intermediateSize, 25);
});
