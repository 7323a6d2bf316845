/**
 * Loads a ViT folder's checkpoint (`model.safetensors` or a sharded index) into f32 host arrays
 * under the layout's own names, strictly, in either layout:
 *
 * - **Hugging Face**: `ViTForImageClassification` stores `vit.embeddings.*`, `vit.encoder.*`,
 *   `vit.layernorm.*` and `classifier.*`; a bare `ViTModel` stores the same without `vit.`, no
 *   classifier, and a `pooler.dense` (kept as a weight: the head does not use it, a merged folder
 *   keeps it). The prefix is on every encoder tensor or on none. `embeddings.mask_token` (masked
 *   image modelling) is not a weight of the classifier and is skipped.
 * - **timm**: `cls_token`, `pos_embed`, `patch_embed.proj.*`, `blocks.{i}.{norm1, attn.qkv,
 *   attn.proj, norm2, mlp.fc1, mlp.fc2}.*`, `norm.*`, `head.*`.
 *
 * The head is optional in both: a checkpoint without one (a backbone) gets a zero head of the
 * config's classes, so every class starts at the same logit and a new head is trained from zero.
 * Every other difference from {@linkcode expectedVitShapes} (a missing tensor, an extra one, a
 * wrong shape, a dtype that is not a float) is an error naming the tensor and the file; position
 * embeddings that do not fit the config's image and patch sizes say so.
 *
 * @module
 */

import { Checkpoint } from "../formats/safetensors.ts";
import type { PlannedWeight, WeightReader } from "./_base_weights.ts";
import type { HostTensor } from "./gpt2_weights.ts";
import { ModelWeightsError } from "./model.ts";
import { readVitConfig, type VitConfig, vitPatches, vitTokens } from "./vit_config.ts";
import { vitNames } from "./vit_names.ts";
import { describeCheckpoint, formatShape, sameShape } from "./_weight_files.ts";
import type { Dtype } from "../formats/safetensors.ts";

/** A loaded ViT: its architecture and every weight under its name in the layout. */
export interface VitWeights {
  /** The architecture from `config.json`. */
  config: VitConfig;
  /** Every weight, in {@linkcode expectedVitShapes} order (a zero head where none was stored). */
  tensors: Map<string, HostTensor>;
  /** Whether the checkpoint had a head (false: the zero head was made here). */
  storedHead: boolean;
  /** The checkpoint's dtype of each stored weight. */
  dtypes: Map<string, Dtype>;
}

/** A checkpoint whose tensors do not match its config. */
export class VitWeightsError extends ModelWeightsError {
  /**
   * Makes the error.
   *
   * @param message The whole message, already naming the file and tensor.
   * @param options Where the error happened.
   */
  constructor(message: string, options: { file: string; tensor?: string }) {
    super(message, options);
    this.name = "VitWeightsError";
  }
}

/** The prefix `ViTForImageClassification` puts before the encoder's weights. */
export const VIT_PREFIX = "vit.";
const FLOAT_DTYPES: readonly Dtype[] = ["F32", "F16", "BF16", "F64"];
const HF_SKIPPED = new Set(["embeddings.mask_token"]);
const HF_POOLER = ["pooler.dense.weight", "pooler.dense.bias"];

/**
 * Every weight of a ViT and its shape, in the layout's names: the embeddings, each block, the
 * final norm and the head. Linear weights are `[out, in]`; the patch embedding `[D, C, P, P]`,
 * the class token `[1, 1, D]`, the position embeddings `[1, N + 1, D]`.
 *
 * @param c The architecture.
 * @returns Names and shapes.
 */
export function expectedVitShapes(c: VitConfig): Array<{ name: string; shape: number[] }> {
  const { hiddenSize: D, intermediateSize: I, numChannels: C, patchSize: P } = c;
  const n = vitNames(c.layout);
  const out = [
    { name: n.cls, shape: [1, 1, D] },
    { name: n.pos, shape: [1, vitTokens(c), D] },
    { name: `${n.patch}.weight`, shape: [D, C, P, P] },
    { name: `${n.patch}.bias`, shape: [D] },
  ];
  const linear = (name: string, inF: number, outF: number, bias = true) => {
    out.push({ name: `${name}.weight`, shape: [outF, inF] });
    if (bias) out.push({ name: `${name}.bias`, shape: [outF] });
  };
  const norm = (name: string) => {
    out.push({ name: `${name}.weight`, shape: [D] }, { name: `${name}.bias`, shape: [D] });
  };
  for (let i = 0; i < c.numLayers; i++) {
    const b = n.block(i);
    norm(b.norm1);
    if (c.layout === "hf") { for (const m of b.qkv) linear(m, D, D, c.qkvBias); }
    else linear(b.qkv[0], D, 3 * D, c.qkvBias);
    linear(b.proj, D, D);
    norm(b.norm2);
    linear(b.fc1, D, I);
    linear(b.fc2, I, D);
  }
  norm(n.norm);
  linear(n.head, D, c.numLabels);
  return out;
}

/**
 * Checks a ViT checkpoint against its config from the header alone (names, prefix, shapes,
 * dtypes), before any weight is read, and plans the load. A missing head is planned as zeros:
 * read it through {@linkcode withZeroHead}.
 *
 * @param config The architecture.
 * @param ckpt The checkpoint (or a reader wrapping one).
 * @returns Every weight in {@linkcode expectedVitShapes} order (a ViTModel's pooler after them),
 * and whether the checkpoint stores a head.
 * @throws {VitWeightsError} On a missing, unexpected, misshapen or non-float tensor, a head with
 * only one of its weight and bias, or a prefix on some encoder tensors and not others.
 */
export async function planVitWeights(
  config: VitConfig,
  ckpt: WeightReader,
): Promise<{ plan: PlannedWeight[]; storedHead: boolean }> {
  const fail = (message: string, file: string, tensor?: string): never => {
    throw new VitWeightsError(`Invalid ViT checkpoint "${file}": ${message}`, { file, tensor });
  };
  const names = ckpt.names();
  const hf = config.layout === "hf";
  const prefix = hf && names.some((n) => n.startsWith(VIT_PREFIX)) ? VIT_PREFIX : "";
  const expected = expectedVitShapes(config);
  const shapes = new Map(expected.map((e) => [e.name, e.shape]));
  const head = vitNames(config.layout).head;
  const optional = new Set([`${head}.weight`, `${head}.bias`]);
  if (hf) {
    // A ViTModel's pooler: kept, so that a merged folder has it.
    const D = config.hiddenSize;
    for (const p of HF_POOLER) shapes.set(p, p.endsWith("weight") ? [D, D] : [D]);
    for (const p of HF_POOLER) optional.add(p);
  }
  const stored = new Map<string, string>();
  for (const name of names) {
    const canonical = weightName(name, prefix, config);
    if (canonical === null) continue;
    if (canonical === undefined) {
      fail(
        `tensor "${name}" has no "${prefix}" prefix while others have it; a checkpoint must use ` +
          `one naming for all its encoder weights`,
        ckpt.fileOf(name),
        name,
      );
    }
    const want = shapes.get(canonical!);
    if (!want) {
      const layers = hf ? "num_hidden_layers" : "depth";
      fail(
        `unexpected tensor "${name}" (a ${config.layout === "hf" ? "Hugging Face" : "timm"} ViT ` +
          `with ${layers} ${config.numLayers} and qkv_bias ${config.qkvBias} has no such weight)`,
        ckpt.fileOf(name),
        name,
      );
    }
    const { shape, dtype } = ckpt.info(name);
    if (!sameShape(shape, want!)) {
      fail(shapeMessage(name, canonical!, shape, want!, config), ckpt.fileOf(name), name);
    }
    if (!FLOAT_DTYPES.includes(dtype)) {
      fail(
        `tensor "${name}" has dtype ${dtype}; weights must be ${FLOAT_DTYPES.join(", ")}`,
        ckpt.fileOf(name),
        name,
      );
    }
    stored.set(canonical!, name);
  }
  const missing = expected.filter((e) => !stored.has(e.name) && !optional.has(e.name));
  if (missing.length > 0) {
    const first = missing[0];
    const more = missing.length > 1 ? ` (and ${missing.length - 1} more)` : "";
    const full = (hf && !first.name.startsWith("classifier") ? prefix : "") + first.name;
    fail(
      `missing tensor "${full}" with shape ${formatShape(first.shape)}${more}`,
      await describeCheckpoint(ckpt.folder),
      full,
    );
  }
  const heads = [`${head}.weight`, `${head}.bias`].filter((n) => stored.has(n));
  if (heads.length === 1) {
    const where = stored.get(heads[0])!;
    fail(
      `the head has "${where}" but not its ${heads[0].endsWith("weight") ? "bias" : "weight"}`,
      ckpt.fileOf(where),
      where,
    );
  }
  const plan: PlannedWeight[] = [];
  for (
    const { name, shape } of [
      ...expected,
      ...HF_POOLER.map((p) => ({ name: p, shape: shapes.get(p)! })),
    ]
  ) {
    const where = stored.get(name);
    if (where !== undefined) {
      plan.push({ name, stored: where, shape: [...shape], dtype: ckpt.info(where).dtype });
    } else if (optional.has(name) && name.startsWith(`${head}.`)) {
      plan.push({ name, stored: ZERO + name, shape: [...shape], dtype: "F32" });
    }
  }
  return { plan, storedHead: heads.length === 2 };
}

// Where a plan reads a weight the checkpoint lacks (a backbone's head): zeros.
const ZERO = "\u0000zero:";

/**
 * A reader that serves the zero head {@linkcode planVitWeights} planned for a checkpoint without
 * one, and everything else from the checkpoint.
 *
 * @param reader The checkpoint.
 * @param plan The plan.
 * @returns The reader to load the plan through.
 */
export function withZeroHead(reader: WeightReader, plan: readonly PlannedWeight[]): WeightReader {
  const zeros = new Map(
    plan.filter((p) => p.stored.startsWith(ZERO)).map((p) => [p.stored, p.shape]),
  );
  if (zeros.size === 0) return reader;
  const size = (name: string) => zeros.get(name)!.reduce((a, b) => a * b, 1);
  return {
    folder: reader.folder,
    names: () => reader.names(),
    fileOf: (name) => zeros.has(name) ? reader.folder : reader.fileOf(name),
    info: (name) =>
      zeros.has(name)
        ? { name, dtype: "F32", shape: [...zeros.get(name)!], begin: 0, end: 4 * size(name) }
        : reader.info(name),
    readBytes: (name) =>
      zeros.has(name) ? Promise.resolve(new Uint8Array(4 * size(name))) : reader.readBytes(name),
    readFloat32: (name) =>
      zeros.has(name) ? Promise.resolve(new Float32Array(size(name))) : reader.readFloat32(name),
  };
}

/**
 * Loads a ViT folder into host memory, checking every tensor against the config before any is
 * read ({@linkcode planVitWeights}). A model loaded for the GPU streams instead (`Vit.load`).
 *
 * @param folder A folder with `config.json` and `model.safetensors` (or an index and shards).
 * @returns The architecture and every weight as f32.
 * @throws {VitConfigError} If `config.json` is missing or invalid.
 * @throws {SafetensorsError} If a weights file is missing or invalid.
 * @throws {VitWeightsError} On a checkpoint that does not fit the config.
 *
 * @example Loading the fixture
 * ```ts
 * import { loadVitWeights } from "./vit_weights.ts";
 * const { config, tensors } = await loadVitWeights("fixtures/tiny-vit");
 * console.log(config.layout, tensors.get("embeddings.cls_token")?.shape); // hf [1, 1, 24]
 * ```
 */
export async function loadVitWeights(folder: string): Promise<VitWeights> {
  const config = await readVitConfig(folder);
  using ckpt = await Checkpoint.open(folder);
  const { plan, storedHead } = await planVitWeights(config, ckpt);
  const reader = withZeroHead(ckpt, plan);
  const tensors = new Map<string, HostTensor>();
  const dtypes = new Map<string, Dtype>();
  for (const { name, stored, shape, dtype } of plan) {
    tensors.set(name, { shape, data: await reader.readFloat32(stored) });
    if (!stored.startsWith(ZERO)) dtypes.set(name, dtype);
  }
  return { config, tensors, storedHead, dtypes };
}

// A weight's name in the layout, null to skip it, undefined when it lacks the prefix its
// checkpoint uses elsewhere.
function weightName(name: string, prefix: string, c: VitConfig): string | null | undefined {
  if (c.layout === "timm") return name;
  if (name.startsWith("classifier.")) return name;
  if (prefix !== "" && !name.startsWith(prefix)) return undefined;
  const bare = name.slice(prefix.length);
  return HF_SKIPPED.has(bare) ? null : bare;
}

function shapeMessage(
  name: string,
  canonical: string,
  shape: readonly number[],
  want: readonly number[],
  c: VitConfig,
): string {
  const base = `tensor "${name}" has shape ${formatShape(shape)}, expected ${formatShape(want)}`;
  const n = vitNames(c.layout);
  if (canonical === n.pos) {
    const [gh, gw] = [
      Math.floor(c.imageHeight / c.patchSize),
      Math.floor(c.imageWidth / c.patchSize),
    ];
    const key = c.layout === "hf" ? "image_size / patch_size" : "img_size / patch_size";
    return `${base}: the position embeddings do not fit ${key} (${c.imageHeight}x${c.imageWidth} ` +
      `/ ${c.patchSize} = ${gh}x${gw} = ${vitPatches(c)} patches + the class token); the ` +
      `checkpoint was made for another image or patch size`;
  }
  if (canonical.startsWith(`${n.head}.`)) {
    const key = c.layout === "hf" ? "id2label" : "num_classes";
    return `${base}: the head has ${shape[0]} classes, the config's "${key}" ${c.numLabels}`;
  }
  return base;
}

/**
 * Maps a ViT checkpoint's tensor names to weight names: Hugging Face's `vit.` prefix dropped
 * when the checkpoint uses it, `embeddings.mask_token` to `null`; timm's names as they are.
 *
 * @param names The checkpoint's tensor names.
 * @returns Each name's weight name, or null for a tensor that is not a weight.
 */
export function vitWeightNames(names: readonly string[]): Map<string, string | null> {
  const prefixed = names.some((n) => n.startsWith(VIT_PREFIX));
  return new Map(names.map((name) => {
    const bare = prefixed && name.startsWith(VIT_PREFIX) ? name.slice(VIT_PREFIX.length) : name;
    return [name, HF_SKIPPED.has(bare) ? null : bare];
  }));
}
