/**
 * A Vision Transformer's architecture, read strictly from either `config.json` users have:
 *
 * - **Hugging Face** (`model_type: "vit"`, `ViTForImageClassification` / `ViTModel`):
 *   `hidden_size`, `num_hidden_layers`, `num_attention_heads`, `intermediate_size`,
 *   `hidden_act` (only the exact `gelu`), `layer_norm_eps`, `image_size`, `patch_size`,
 *   `num_channels`, `qkv_bias`, and the classes from `id2label` (else `num_labels`, else HF's 2).
 *   Absent optional keys take `ViTConfig`'s defaults.
 * - **timm** (the `config.json` of a timm folder on the Hugging Face hub: `architecture`,
 *   `num_classes`, `pretrained_cfg`, maybe `model_args` and `label_names`): the sizes come from the
 *   architecture's name (`vit_{tiny,small,base,large,huge}_patch{P}_{S}`, with timm's widths,
 *   depths and heads and an MLP ratio of 4), overridden by `model_args` (`img_size`,
 *   `patch_size`, `embed_dim`, `depth`, `num_heads`, `mlp_ratio`, `qkv_bias`, `in_chans`) the way
 *   `timm.create_model(name, **model_args)` does; another name needs every size in `model_args`.
 *   LayerNorm's epsilon is timm's fixed 1e-6. Variants timm builds from `model_args` that are not
 *   the plain ViT (no class token, average pooling, layer scale, register tokens, a pre-norm, a
 *   head norm) are refused naming the key.
 *
 * Either way the network is the same: patch embedding, class token, learned position embeddings,
 * pre-norm blocks with non-causal attention and the exact GELU, a final norm and a head on the
 * class token. Keys that do not change it (dropout rates, `initializer_range`, `encoder_stride`)
 * are ignored. The layout decides the weight and site names (`vit_names.ts`).
 *
 * @module
 */

import { fnv1a64 } from "../kernels/basis_spec.ts";
import { ATTENTION_MAX_TOKENS } from "../kernels/attention.ts";
import { readConfigJson } from "./config_file.ts";
import { ModelConfigError } from "./model.ts";

/** Whose names the checkpoint uses: Hugging Face's `ViTModel` or timm's `VisionTransformer`. */
export type VitLayout = "hf" | "timm";

/** What an image is turned into before the model sees it (timm's `pretrained_cfg`). */
export interface VitPreprocessing {
  /** Channel means, subtracted after scaling pixels to [0, 1]. */
  mean: number[];
  /** Channel standard deviations, divided by. */
  std: number[];
  /** Fraction of the resized image the centre crop keeps (timm's `crop_pct`), when given. */
  cropPct?: number;
  /** Resampling filter name (`bicubic`, `bilinear`), when given. */
  interpolation?: string;
}

/** The architecture of a ViT classifier. */
export interface VitConfig {
  /** Whose names the weights and sites use. */
  layout: VitLayout;
  /** `ViTForImageClassification`, `ViTModel`, or timm's architecture name. */
  architecture: string;
  /** Width D of the tokens (`hidden_size`, timm `embed_dim`). */
  hiddenSize: number;
  /** Transformer blocks (`num_hidden_layers`, timm `depth`). */
  numLayers: number;
  /** Attention heads (`num_attention_heads`, timm `num_heads`); divides `hiddenSize`. */
  numHeads: number;
  /** The MLP's hidden width (`intermediate_size`, timm `int(embed_dim * mlp_ratio)`). */
  intermediateSize: number;
  /** Epsilon of every LayerNorm (`layer_norm_eps`; timm 1e-6). */
  layerNormEps: number;
  /** Image height in pixels. */
  imageHeight: number;
  /** Image width in pixels. */
  imageWidth: number;
  /** Side of the square patches. */
  patchSize: number;
  /** Image channels (`num_channels`, timm `in_chans`). */
  numChannels: number;
  /** Whether the q, k and v projections have biases. */
  qkvBias: boolean;
  /** Classes of the head. */
  numLabels: number;
  /** Class names by id (`id2label`, timm `label_names`; `LABEL_<i>` where none is given). */
  labels: string[];
  /** timm's normalisation and crop, when its `pretrained_cfg` gives them. */
  preprocessing?: VitPreprocessing;
}

/** A `config.json` that cannot describe a ViT this project can run. */
export class VitConfigError extends ModelConfigError {
  /**
   * Makes the error.
   *
   * @param message The whole message, already naming the file and key.
   * @param options Where the error happened.
   */
  constructor(message: string, options: { file: string; key?: string; cause?: unknown }) {
    super(message, options);
    this.name = "VitConfigError";
  }
}

/** The deepest ViT accepted. */
export const VIT_MAX_LAYERS = 4096;

/** timm's ViT sizes by name: width, depth, heads (MLP ratio 4). */
const TIMM_SIZES: Record<string, [number, number, number]> = {
  tiny: [192, 12, 3],
  small: [384, 12, 6],
  base: [768, 12, 12],
  large: [1024, 24, 16],
  huge: [1280, 32, 16],
};
const TIMM_NAME = /^vit_(tiny|small|base|large|huge)_patch(\d+)_(\d+)$/;

// timm model_args this project reads, and those it accepts only at the plain ViT's value.
const TIMM_ARGS = new Set([
  "img_size",
  "patch_size",
  "embed_dim",
  "depth",
  "num_heads",
  "mlp_ratio",
  "qkv_bias",
  "in_chans",
  "num_classes",
]);
const TIMM_FIXED: ReadonlyArray<[key: string, accepted: unknown[], why: string]> = [
  ["global_pool", ["token"], "only the class token's pooling is supported"],
  ["class_token", [true], "a ViT without a class token is not supported"],
  ["no_embed_class", [false], "position embeddings without the class token's are not supported"],
  ["pre_norm", [false], "a norm before the blocks is not supported"],
  ["fc_norm", [false, null], "a norm before the head is not supported"],
  ["init_values", [null], "layer scale is not supported"],
  ["reg_tokens", [0], "register tokens are not supported"],
  ["qk_norm", [false], "q/k normalisation is not supported"],
  ["dynamic_img_size", [false], "dynamic image sizes are not supported"],
];
const TIMM_IGNORED = new Set([
  "drop_rate",
  "pos_drop_rate",
  "patch_drop_rate",
  "proj_drop_rate",
  "attn_drop_rate",
  "drop_path_rate",
  "weight_init",
]);

/**
 * Reads a ViT's architecture from a parsed `config.json`, in Hugging Face's form or timm's.
 *
 * @param json The parsed JSON.
 * @param source Where it came from, for error messages (usually the file's path).
 * @returns The architecture.
 * @throws {VitConfigError} Naming the file and the key: a required key missing or ill-typed,
 * `hidden_act` not the exact `gelu`, a width not divisible by the heads, patches larger than the
 * image, more tokens than the attention kernel takes, or a timm variant that is not the plain ViT.
 *
 * @example Parsing the fixture's config
 * ```ts
 * import { parseVitConfig } from "./vit_config.ts";
 * const path = "fixtures/tiny-vit/config.json";
 * const config = parseVitConfig(JSON.parse(await Deno.readTextFile(path)), path);
 * console.log(config.hiddenSize, config.numLabels); // 24 5
 * ```
 */
export function parseVitConfig(json: unknown, source: string): VitConfig {
  const r = reader(json, source);
  const obj = r.obj;
  const config = typeof obj.architecture === "string" && !r.has("model_type")
    ? parseTimm(r)
    : parseHf(r);
  return checkSizes(config, r);
}

/** Key readers over one config object, failing with the file and key. */
interface Reader {
  obj: Record<string, unknown>;
  source: string;
  has(key: string, obj?: Record<string, unknown>): boolean;
  fail(message: string, key?: string): never;
  positiveInt(key: string, value: unknown): number;
  size2(key: string, value: unknown): [number, number];
}

function reader(json: unknown, source: string): Reader {
  const fail = (message: string, key?: string): never => {
    throw new VitConfigError(`Invalid ViT config "${source}": ${message}`, { file: source, key });
  };
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    return fail(`expected a JSON object, found ${describe(json)}`);
  }
  const obj = json as Record<string, unknown>;
  const positiveInt = (key: string, v: unknown): number => {
    if (v === undefined) return fail(`missing key "${key}"`, key);
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 1) {
      return fail(`"${key}" is ${describe(v)}, expected a positive integer`, key);
    }
    return v;
  };
  return {
    obj,
    source,
    has: (key, o = obj) => Object.hasOwn(o, key) && o[key] !== undefined,
    fail,
    positiveInt,
    size2: (key, v) => {
      if (Array.isArray(v) && v.length === 2) {
        return [positiveInt(key, v[0]), positiveInt(key, v[1])];
      }
      if (Array.isArray(v)) return fail(`"${key}" is an array of ${v.length}, expected 2`, key);
      const n = positiveInt(key, v);
      return [n, n];
    },
  };
}

function parseHf(r: Reader): VitConfig {
  const { obj, has, fail, positiveInt } = r;
  if (obj.model_type !== "vit") {
    fail(`"model_type" is ${describe(obj.model_type)}, expected "vit"`, "model_type");
  }
  const act = has("hidden_act") ? obj.hidden_act : "gelu";
  if (act !== "gelu") {
    fail(
      `"hidden_act" is ${describe(act)}: only "gelu" (the exact erf form) is supported for ViT`,
      "hidden_act",
    );
  }
  const eps = has("layer_norm_eps") ? obj.layer_norm_eps : 1e-12;
  if (typeof eps !== "number" || !Number.isFinite(eps) || eps <= 0) {
    fail(`"layer_norm_eps" is ${describe(eps)}, expected a positive number`, "layer_norm_eps");
  }
  const qkvBias = has("qkv_bias") ? obj.qkv_bias : true;
  if (typeof qkvBias !== "boolean") {
    fail(`"qkv_bias" is ${describe(qkvBias)}, expected true or false`, "qkv_bias");
  }
  const [imageHeight, imageWidth] = r.size2("image_size", has("image_size") ? obj.image_size : 224);
  const [ph, pw] = r.size2("patch_size", has("patch_size") ? obj.patch_size : 16);
  if (ph !== pw) {
    fail(`"patch_size" is [${ph}, ${pw}]: only square patches are supported`, "patch_size");
  }
  const labels = hfLabels(r);
  const archs = Array.isArray(obj.architectures) ? obj.architectures : [];
  return {
    layout: "hf",
    architecture: typeof archs[0] === "string" ? archs[0] : "ViTForImageClassification",
    hiddenSize: positiveInt("hidden_size", obj.hidden_size),
    numLayers: positiveInt("num_hidden_layers", obj.num_hidden_layers),
    numHeads: positiveInt("num_attention_heads", obj.num_attention_heads),
    intermediateSize: positiveInt("intermediate_size", obj.intermediate_size),
    layerNormEps: eps as number,
    imageHeight,
    imageWidth,
    patchSize: ph,
    numChannels: has("num_channels") ? positiveInt("num_channels", obj.num_channels) : 3,
    qkvBias: qkvBias as boolean,
    numLabels: labels.length,
    labels,
  };
}

// The classes: id2label ("0".."n-1", every id once), else num_labels, else HF's default of 2.
function hfLabels(r: Reader): string[] {
  const { obj, has, fail } = r;
  if (has("id2label") && obj.id2label !== null) {
    const map = obj.id2label;
    if (typeof map !== "object" || Array.isArray(map)) {
      return fail(`"id2label" is ${describe(map)}, expected an object of id to name`, "id2label");
    }
    const entries = Object.entries(map as Record<string, unknown>);
    const labels: string[] = [];
    for (const [id, name] of entries) {
      const i = Number(id);
      if (!/^(0|[1-9]\d*)$/.test(id) || i >= entries.length) {
        return fail(
          `"id2label" has key "${id}"; ids must be 0 to ${entries.length - 1}`,
          "id2label",
        );
      }
      if (typeof name !== "string") {
        return fail(`"id2label" maps "${id}" to ${describe(name)}, expected a string`, "id2label");
      }
      labels[i] = name;
    }
    if (has("num_labels") && obj.num_labels !== labels.length) {
      fail(
        `"num_labels" is ${describe(obj.num_labels)} but "id2label" has ${labels.length} labels`,
        "num_labels",
      );
    }
    if (labels.length === 0) fail(`"id2label" is empty: a classifier needs a class`, "id2label");
    return labels;
  }
  const n = has("num_labels") ? r.positiveInt("num_labels", obj.num_labels) : 2;
  return Array.from({ length: n }, (_, i) => `LABEL_${i}`);
}

function parseTimm(r: Reader): VitConfig {
  const { obj, has, fail, positiveInt } = r;
  const architecture = obj.architecture as string;
  const argsValue = has("model_args") ? obj.model_args : {};
  if (typeof argsValue !== "object" || argsValue === null || Array.isArray(argsValue)) {
    return fail(`"model_args" is ${describe(argsValue)}, expected an object`, "model_args");
  }
  const args = argsValue as Record<string, unknown>;
  for (const [key, accepted, why] of TIMM_FIXED) {
    for (const [where, o] of [["model_args.", args], ["", obj]] as const) {
      if (has(key, o) && !accepted.includes(o[key])) {
        fail(`"${where}${key}" is ${describe(o[key])}: ${why}`, `${where}${key}`);
      }
    }
  }
  for (const key of Object.keys(args)) {
    if (!TIMM_ARGS.has(key) && !TIMM_IGNORED.has(key) && !TIMM_FIXED.some(([k]) => k === key)) {
      fail(`"model_args.${key}" is not supported for a timm ViT`, `model_args.${key}`);
    }
  }
  const named = TIMM_NAME.exec(architecture.split(".")[0]);
  if (
    !named &&
    !(["embed_dim", "depth", "num_heads", "patch_size", "img_size"].every((k) => has(k, args)))
  ) {
    fail(
      `"architecture" is ${describe(architecture)}: expected vit_{tiny,small,base,large,huge}_` +
        `patch<P>_<size>, or "model_args" giving img_size, patch_size, embed_dim, depth and num_heads`,
      "architecture",
    );
  }
  const [width, depth, heads] = named ? TIMM_SIZES[named[1]] : [0, 0, 0];
  const arg = (key: string, fallback: number) =>
    has(key, args) ? positiveInt(`model_args.${key}`, args[key]) : fallback;
  const hiddenSize = arg("embed_dim", width);
  const ratio = has("mlp_ratio", args) ? args.mlp_ratio : 4;
  if (typeof ratio !== "number" || !(ratio > 0)) {
    fail(
      `"model_args.mlp_ratio" is ${describe(ratio)}, expected a positive number`,
      "model_args.mlp_ratio",
    );
  }
  const pretrained = has("pretrained_cfg") ? obj.pretrained_cfg : {};
  if (typeof pretrained !== "object" || pretrained === null || Array.isArray(pretrained)) {
    return fail(
      `"pretrained_cfg" is ${describe(pretrained)}, expected an object`,
      "pretrained_cfg",
    );
  }
  const cfg = pretrained as Record<string, unknown>;
  const [imageHeight, imageWidth] = has("img_size", args)
    ? r.size2("model_args.img_size", args.img_size)
    : named
    ? [Number(named[3]), Number(named[3])]
    : [0, 0];
  const [ph, pw] = has("patch_size", args)
    ? r.size2("model_args.patch_size", args.patch_size)
    : [Number(named![2]), Number(named![2])];
  if (ph !== pw) {
    fail(`"model_args.patch_size" must be square, got [${ph}, ${pw}]`, "model_args.patch_size");
  }
  const qkvBias = has("qkv_bias", args) ? args.qkv_bias : true;
  if (typeof qkvBias !== "boolean") {
    fail(
      `"model_args.qkv_bias" is ${describe(qkvBias)}, expected true or false`,
      "model_args.qkv_bias",
    );
  }
  for (const [key, o] of [["model_args.num_classes", args], ["num_classes", obj]] as const) {
    const k = key.replace("model_args.", "");
    if (has(k, o) && o[k] === 0) {
      fail(
        `"${key}" is 0 (a backbone without a head): set it to the task's number of classes; a ` +
          `checkpoint without a head gets a zero head of that size`,
        key,
      );
    }
  }
  const numLabels = has("num_classes", args)
    ? positiveInt("model_args.num_classes", args.num_classes)
    : has("num_classes")
    ? positiveInt("num_classes", obj.num_classes)
    : 1000;
  const labels = timmLabels(r, numLabels);
  const config: VitConfig = {
    layout: "timm",
    architecture,
    hiddenSize,
    numLayers: arg("depth", depth),
    numHeads: arg("num_heads", heads),
    intermediateSize: mlpWidth(hiddenSize, ratio as number),
    layerNormEps: 1e-6,
    imageHeight,
    imageWidth,
    patchSize: ph,
    numChannels: arg("in_chans", 3),
    qkvBias: qkvBias as boolean,
    numLabels,
    labels,
  };
  const pre = timmPreprocessing(r, cfg, config);
  if (pre) config.preprocessing = pre;
  return config;
}

// timm's int(embed_dim * mlp_ratio), except that a product within rounding of an integer is that
// integer: a ratio written as I / D (as a saved folder writes it) must give I back, not I - 1.
function mlpWidth(width: number, ratio: number): number {
  const product = width * ratio;
  const nearest = Math.round(product);
  return Math.abs(product - nearest) < 1e-9 * Math.max(1, product) ? nearest : Math.trunc(product);
}

function timmLabels(r: Reader, n: number): string[] {
  const { obj, has, fail } = r;
  if (!has("label_names")) return Array.from({ length: n }, (_, i) => `LABEL_${i}`);
  const names = obj.label_names;
  if (!Array.isArray(names) || names.some((x) => typeof x !== "string")) {
    return fail(`"label_names" is ${describe(names)}, expected an array of strings`, "label_names");
  }
  if (names.length !== n) {
    fail(`"label_names" has ${names.length} names for ${n} classes`, "label_names");
  }
  return names as string[];
}

// Mean, std and crop from pretrained_cfg; input_size must agree with the model's image.
function timmPreprocessing(
  r: Reader,
  cfg: Record<string, unknown>,
  config: VitConfig,
): VitPreprocessing | undefined {
  const { has, fail } = r;
  const numbers = (key: string): number[] | undefined => {
    if (!has(key, cfg)) return undefined;
    const v = cfg[key];
    if (
      !Array.isArray(v) || v.length !== config.numChannels || v.some((x) => typeof x !== "number")
    ) {
      return fail(
        `"pretrained_cfg.${key}" is ${describe(v)}, expected ${config.numChannels} numbers`,
        `pretrained_cfg.${key}`,
      );
    }
    return v as number[];
  };
  if (has("input_size", cfg)) {
    const size = cfg.input_size;
    const want = [config.numChannels, config.imageHeight, config.imageWidth];
    if (!Array.isArray(size) || size.length !== 3 || size.some((x, i) => x !== want[i])) {
      fail(
        `"pretrained_cfg.input_size" is ${JSON.stringify(size)}, but the model takes ` +
          `[${want.join(", ")}]`,
        "pretrained_cfg.input_size",
      );
    }
  }
  const mean = numbers("mean");
  const std = numbers("std");
  if (!mean || !std) return undefined;
  const out: VitPreprocessing = { mean, std };
  if (typeof cfg.crop_pct === "number") out.cropPct = cfg.crop_pct;
  if (typeof cfg.interpolation === "string") out.interpolation = cfg.interpolation;
  return out;
}

function checkSizes(c: VitConfig, r: Reader): VitConfig {
  const key = (hf: string, timm: string) => c.layout === "hf" ? hf : `model_args.${timm}`;
  if (c.numLayers > VIT_MAX_LAYERS) {
    r.fail(
      `${c.numLayers} layers is more than the ${VIT_MAX_LAYERS} supported`,
      key("num_hidden_layers", "depth"),
    );
  }
  if (c.hiddenSize % c.numHeads !== 0) {
    r.fail(
      `the width ${c.hiddenSize} is not divisible by the ${c.numHeads} heads`,
      key("num_attention_heads", "num_heads"),
    );
  }
  if (c.patchSize > c.imageHeight || c.patchSize > c.imageWidth) {
    r.fail(
      `${c.patchSize}x${c.patchSize} patches do not fit ${c.imageHeight}x${c.imageWidth} images`,
      key("patch_size", "patch_size"),
    );
  }
  const hd = c.hiddenSize / c.numHeads;
  if (hd > 128) {
    r.fail(
      `head size ${hd} is over the attention kernel's 128`,
      key("num_attention_heads", "num_heads"),
    );
  }
  const tokens = vitTokens(c);
  if (tokens > ATTENTION_MAX_TOKENS) {
    r.fail(
      `${tokens} tokens (image ${c.imageHeight}x${c.imageWidth}, patch ${c.patchSize}) is more ` +
        `than the attention kernel's ${ATTENTION_MAX_TOKENS}`,
      key("image_size", "img_size"),
    );
  }
  return c;
}

/**
 * Patches an image is cut into: `floor(H / P) * floor(W / P)` (the convolution drops a
 * remainder, as Hugging Face's and timm's do).
 *
 * @param c The architecture.
 * @returns N.
 */
export function vitPatches(c: VitConfig): number {
  return Math.floor(c.imageHeight / c.patchSize) * Math.floor(c.imageWidth / c.patchSize);
}

/**
 * Tokens a forward runs over: the patches and the class token.
 *
 * @param c The architecture.
 * @returns N + 1.
 */
export function vitTokens(c: VitConfig): number {
  return vitPatches(c) + 1;
}

/**
 * Reads and parses `<folder>/config.json`.
 *
 * @param folder A Hugging Face or timm ViT folder.
 * @returns The architecture.
 * @throws {ModelConfigError} If the file cannot be read, is not JSON, or is not a valid config.
 */
export async function readVitConfig(folder: string): Promise<VitConfig> {
  const { path, json } = await readConfigJson(folder);
  return parseVitConfig(json, path);
}

/**
 * The canonical text {@linkcode vitConfigHash} hashes: a JSON object with exactly these keys in
 * this order, `JSON.stringify` number formatting, no spaces: `{"model_type":"vit","layout":..,
 * "hidden_size":..,"num_hidden_layers":..,"num_attention_heads":..,"intermediate_size":..,
 * "layer_norm_eps":..,"image_size":[h,w],"patch_size":..,"num_channels":..,"qkv_bias":..,
 * "num_labels":..}`. Label names and preprocessing are left out: they change no weight.
 *
 * @param c An architecture.
 * @returns The canonical JSON.
 */
export function canonicalVitConfigJson(c: VitConfig): string {
  return JSON.stringify({
    model_type: "vit",
    layout: c.layout,
    hidden_size: c.hiddenSize,
    num_hidden_layers: c.numLayers,
    num_attention_heads: c.numHeads,
    intermediate_size: c.intermediateSize,
    layer_norm_eps: c.layerNormEps,
    image_size: [c.imageHeight, c.imageWidth],
    patch_size: c.patchSize,
    num_channels: c.numChannels,
    qkv_bias: c.qkvBias,
    num_labels: c.numLabels,
  });
}

/**
 * FNV-1a 64 of {@linkcode canonicalVitConfigJson}, as 16 lowercase hex digits.
 *
 * @param c An architecture.
 * @returns 16 hex digits.
 */
export function vitConfigHash(c: VitConfig): string {
  const bytes = new TextEncoder().encode(canonicalVitConfigJson(c));
  return fnv1a64(bytes).toString(16).padStart(16, "0");
}

function describe(value: unknown): string {
  if (value === undefined) return "missing";
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) return "an array";
  if (value === null) return "null";
  if (typeof value === "object") return "an object";
  return String(value);
}
