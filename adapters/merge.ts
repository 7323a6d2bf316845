/**
 * Folding low-rank adapters into the weights they adapt, on the GPU, and writing the merged model
 * as a Hugging Face folder in the base checkpoint's own naming and dtypes.
 *
 * An adapter computes `y[:, off : off+out] += s (x Aᵀ) Bᵀ`, so merging adds `s (B A)ᵀ` to the
 * `[in, out]` Conv1D weight (GPT-2) or `s B A` to the `[out, in]` rows of an `nn.Linear` weight;
 * the model says which layout each linear has (`Model.linearWeight`).
 * NOLA adapters merge through the same path once their A and B are materialised (after the
 * training step's `prepareStep()`).
 *
 * @module
 */

import { join } from "node:path";
import type { Matmul } from "../kernels/matmul.ts";
import { Tensor } from "../kernels/tensor.ts";
import type {
  AttachedAdapter,
  LinearAdapter,
  LinearWeight,
  Model,
  WeightLayout,
} from "../models/model.ts";
import { Checkpoint, writeSafetensors } from "../formats/safetensors.ts";
import type { TensorToWrite } from "../formats/safetensors.ts";
import { type FloatDtype, toFloatDtype } from "../formats/narrow.ts";
import { copyFileAtomic, writeTextFileAtomic } from "../formats/atomic.ts";
import { checkOutputFolder, checkOutputPath, ensureFolder } from "../formats/folder.ts";

export type { WeightLayout };

/** An adapter whose factors live on the GPU: `a` is A `[r, in]`, `b` is B `[out, r]`. */
export interface LowRankFactors extends LinearAdapter {
  readonly a: Tensor;
  readonly b: Tensor;
}

/** Adapters taken off a model by {@link mergeAdapters}, by module, in attachment order. */
export type DetachedAdapters = Map<string, AttachedAdapter[]>;

/**
 * Says whether an adapter exposes its factors (as `LowRankLinear` does) and so can be merged.
 *
 * @param adapter Any adapter a model holds.
 * @returns True when it has f32 tensors `a` [r, in] and `b` [out, r].
 */
export function isLowRank(adapter: LinearAdapter): adapter is LowRankFactors {
  const { a, b } = adapter as Partial<LowRankFactors>;
  return a instanceof Tensor && b instanceof Tensor && a.dtype === "f32" && b.dtype === "f32" &&
    a.size === adapter.r * adapter.inFeatures && b.size === adapter.outFeatures * adapter.r;
}

/** Options of {@link addLowRankDelta}. */
export interface LowRankDeltaOptions {
  /** The weight's storage layout. */
  layout: WeightLayout;
  /** First output feature the adapter writes (the q/k/v slice of `c_attn`); default 0. */
  colOffset?: number;
  /** +1 merges, -1 takes a merged adapter back out; default +1. */
  sign?: 1 | -1;
}

/**
 * Records `W += sign · s · ΔW` for one adapter with one matrix multiply: with the `conv1d` layout
 * `W[:, off : off+out] += s Aᵀ Bᵀ` (`W` is `[in, outTotal]`), with `linear`
 * `W[off : off+out, :] += s B A` (`W` is `[outTotal, in]`). Records only.
 *
 * @param matmul The device's matrix multiply.
 * @param weight The weight to update in place, f32, 2-D.
 * @param adapter The factors, their sizes and `scale`.
 * @param options The layout, column offset and sign.
 * @throws {RangeError} If the shapes do not fit the layout.
 *
 * @example Merge and unmerge a q-slice adapter of a `c_attn` weight
 * ```ts ignore
 * addLowRankDelta(matmul, model.params.get("h.0.attn.c_attn.weight")!, q, { layout: "conv1d" });
 * addLowRankDelta(matmul, weight, q, { layout: "conv1d", sign: -1 });
 * ```
 */
export function addLowRankDelta(
  matmul: Matmul,
  weight: Tensor,
  adapter: Pick<LowRankFactors, "name" | "a" | "b" | "r" | "inFeatures" | "outFeatures" | "scale">,
  options: LowRankDeltaOptions,
): void {
  const { layout, colOffset = 0, sign = 1 } = options;
  const { r, inFeatures: inF, outFeatures: outF, a, b } = adapter;
  const [rows, cols] = weight.shape;
  const total = layout === "conv1d" ? cols : rows;
  const inW = layout === "conv1d" ? rows : cols;
  if (
    weight.dtype !== "f32" || weight.shape.length !== 2 || inW !== inF ||
    !Number.isSafeInteger(colOffset) || colOffset < 0 || colOffset + outF > total ||
    a.size !== r * inF || b.size !== outF * r
  ) {
    throw new RangeError(
      `Cannot merge adapter "${adapter.name}" (${inF} -> ${outF}, rank ${r}, at output ${colOffset}) ` +
        `into ${layout} weight "${weight.buffer.label}" of shape [${weight.shape}] ${weight.dtype}`,
    );
  }
  const alpha = sign * adapter.scale;
  const variant = matmul.variant;
  if (layout === "conv1d") {
    // W[in, off..] += s Aᵀ Bᵀ: op(A) = Aᵀ from A [r, in], op(B) = Bᵀ from B [out, r].
    matmul.raw({ out: weight.buffer, a: a.buffer, b: b.buffer }, {
      m: inF,
      n: outF,
      k: r,
      transA: true,
      transB: true,
      ldc: total,
      offsetC: colOffset,
      alpha,
      accumulate: true,
      variant,
    });
  } else {
    // W[off.., in] += s B A: B [out, r] times A [r, in], rows starting at the offset.
    matmul.raw({ out: weight.buffer, a: b.buffer, b: a.buffer }, {
      m: outF,
      n: inF,
      k: r,
      ldc: inF,
      offsetC: colOffset * inF,
      alpha,
      accumulate: true,
      variant,
    });
  }
}

/**
 * Folds every adapter of a model into its weights (in each linear's layout) and detaches them, so the model
 * alone computes what it computed with them. Records the updates; the next read or flush runs them.
 *
 * @param model The model; its weights change in place.
 * @returns The detached adapters, to give to {@link unmergeAdapters}.
 * @throws {TypeError} If an adapter does not expose its factors; nothing is changed then.
 *
 * @example Merge for fast inference, then go back to training
 * ```ts ignore
 * const detached = mergeAdapters(model);
 * const logits = await model.forward(batch).logits.read();
 * unmergeAdapters(model, detached);
 * ```
 */
export function mergeAdapters(model: Model): DetachedAdapters {
  const detached: DetachedAdapters = new Map(
    [...model.adapters].map(([module, list]) => [module, [...list]]),
  );
  for (const [module, list] of detached) {
    f32WeightOf(model, module);
    for (const { adapter } of list) lowRankOf(module, adapter);
  }
  for (const [module, list] of detached) {
    const { weight, layout } = f32WeightOf(model, module);
    for (const { adapter, colOffset } of list) {
      addLowRankDelta(model.matmul, weight, lowRankOf(module, adapter), { layout, colOffset });
    }
  }
  model.detachAll();
  return detached;
}

/**
 * Takes merged adapters back out of the weights (`W -= s (B A)ᵀ`) and reattaches them in their
 * original order. The weights come back within rounding of f32 (an ulp or so), not bit for bit.
 *
 * @param model The model {@link mergeAdapters} was called on.
 * @param detached What it returned; the adapters' factors must not have changed since.
 */
export function unmergeAdapters(model: Model, detached: DetachedAdapters): void {
  for (const [module, list] of detached) {
    const { weight, layout } = f32WeightOf(model, module);
    for (const { adapter, colOffset } of list) {
      addLowRankDelta(model.matmul, weight, lowRankOf(module, adapter), {
        layout,
        colOffset,
        sign: -1,
      });
      model.attach(module, adapter, { colOffset });
    }
  }
}

/**
 * The model's weights with its attached adapters folded in, on the host, under canonical names.
 * The model itself is left exactly as it was: each adapted weight is merged in a GPU copy. A
 * linear weight kept packed (`ModelOptions.baseFormat`) is unpacked to f32 first, so its merged
 * values are the dequantized base plus the adapters' delta.
 *
 * @param model The model, with or without adapters.
 * @returns Every weight, f32, by canonical name.
 */
export async function mergedWeights(model: Model): Promise<Map<string, Float32Array>> {
  const { gpu } = model;
  // The adapters of each adapted linear, by its weight name.
  const adapted = new Map<string, { linear: LinearWeight; list: AttachedAdapter[] }>();
  for (const [module, list] of model.adapters) {
    const linear = linearOf(model, module);
    for (const { adapter } of list) lowRankOf(module, adapter);
    if (list.length > 0) adapted.set(`${module}.weight`, { linear, list });
  }
  const merge = async (name: string, copy: Tensor) => {
    const entry = adapted.get(name);
    for (const { adapter, colOffset } of entry?.list ?? []) {
      addLowRankDelta(model.matmul, copy, adapter as LowRankFactors, {
        layout: entry!.linear.layout,
        colOffset,
      });
    }
    out.set(name, await copy.read() as Float32Array);
  };
  const out = new Map<string, Float32Array>();
  for (const [name, param] of model.params) {
    if (!adapted.has(name)) {
      out.set(name, await param.read() as Float32Array);
      continue;
    }
    using copy = Tensor.empty(gpu, param.shape, { label: `merged ${name}` });
    gpu.copy(param.buffer, copy.buffer, { size: param.byteLength });
    await merge(name, copy);
  }
  for (const linear of new Set(model.sites.map((s) => s.linear))) {
    const weight = model.linearWeight(linear);
    if (!weight?.dequantize) continue;
    using copy = weight.dequantize();
    await merge(`${linear}.weight`, copy);
  }
  // Other packed weights (a 16-bit embedding or head) are copied unpacked.
  for (const name of model.packed?.keys() ?? []) {
    if (out.has(name)) continue;
    using copy = model.unpackWeight!(name);
    out.set(name, await copy.read() as Float32Array);
  }
  return out;
}

/** A sharded checkpoint's index, which loaders here read before `model.safetensors`. */
export const SHARD_INDEX = "model.safetensors.index.json";

// What a model folder holds besides its weights, copied as they are (config.json first).
const FOLDER_FILES = [
  "config.json",
  "generation_config.json",
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "added_tokens.json",
  "vocab.json",
  "merges.txt",
];
const FLOATS: readonly string[] = ["F64", "F32", "F16", "BF16"];

/**
 * Writes a Hugging Face folder of the model with its adapters merged: `model.safetensors` with
 * every weight under the source checkpoint's names (as `Model.weightNames` maps them: GPT-2's with
 * or without the `transformer.` prefix, its tied `lm_head.weight` only where the source had it) in
 * the source's dtype (F16 and BF16 rounded to nearest even), buffers dropped; `config.json` and the tokenizer
 * files copied. A sharded source is written as one file.
 *
 * A classifier whose head was replaced (`Model.replaceHead`: a new head for the task's classes)
 * writes its head under the source's names in its new shape, and a `config.json` whose classes
 * are the head's ({@link relabelConfig}).
 *
 * `outFolder` is created when missing; in an existing folder only those files are replaced, each
 * atomically (weights first, `config.json` last), and everything else is left as it was. A folder
 * holding `model.safetensors.index.json` is refused rather than cleaned: loaders would read its
 * shards instead of the new `model.safetensors`.
 *
 * @param model The model loaded from `sourceFolder`, with adapters attached (or already merged).
 * @param sourceFolder The base model's folder.
 * @param outFolder Where to write; must not be, be inside or contain the source.
 * @throws {OutputPathError} If `outFolder` overlaps the source, is a file, or holds a sharded
 * checkpoint's index.
 * @throws {RangeError} If the source and the model disagree on a tensor, or a source weight is
 * not a float.
 *
 * @example Export a fine-tuned GPT-2
 * ```ts ignore
 * await writeMergedFolder(model, "models/gpt2", "out/run/merged");
 * ```
 */
export async function writeMergedFolder(
  model: Model,
  sourceFolder: string,
  outFolder: string,
): Promise<void> {
  await checkOutputPath(outFolder, [{ path: sourceFolder, what: "model folder" }]);
  await checkOutputFolder(outFolder, { shadowedBy: [SHARD_INDEX] });
  const weights = await mergedWeights(model);
  const tensors: TensorToWrite[] = [];
  {
    using ckpt = await Checkpoint.open(sourceFolder);
    const names = ckpt.names();
    const weightNames = model.weightNames(names);
    const written = new Set<string>();
    const head = model.classifierHead;
    const headWeights = new Set(head ? [`${head.name}.weight`, `${head.name}.bias`] : []);
    for (const name of names) {
      const canonical = weightNames.get(name);
      if (canonical === null || canonical === undefined) continue;
      const { dtype, shape } = ckpt.info(name);
      const data = weights.get(canonical);
      const where = `tensor "${name}" of "${ckpt.fileOf(name)}"`;
      if (!data) throw new RangeError(`Cannot merge ${where}: the model has no "${canonical}"`);
      if (!FLOATS.includes(dtype)) {
        throw new RangeError(`Cannot write ${where} as ${dtype}: merged weights are floats`);
      }
      const modelShape = model.params.get(canonical)?.shape ?? linearShape(model, canonical);
      if (headWeights.has(canonical)) {
        // A new head has the task's classes, not the source's.
        tensors.push({
          name,
          dtype,
          shape: [...modelShape],
          data: toFloatDtype(data, dtype as FloatDtype),
        });
        written.add(canonical);
        continue;
      }
      if (shape.join() !== modelShape.join()) {
        throw new RangeError(`Cannot merge ${where}: shape [${shape}], model has [${modelShape}]`);
      }
      tensors.push({ name, dtype, shape, data: toFloatDtype(data, dtype as FloatDtype) });
      written.add(canonical);
    }
    const missing = [...weights.keys()].find((n) => !written.has(n));
    if (missing) {
      throw new RangeError(`Cannot merge: "${sourceFolder}" has no tensor for "${missing}"`);
    }
  }

  await ensureFolder(outFolder);
  // transformers refuses safetensors files without a "format" entry.
  await writeSafetensors(join(outFolder, "model.safetensors"), tensors, { format: "pt" });
  // config.json last: a folder with a config but no weights never appears.
  const labels = model.classifierHead?.labels;
  for (const file of [...FOLDER_FILES.slice(1), FOLDER_FILES[0], "preprocessor_config.json"]) {
    try {
      if (file === "config.json" && labels) {
        const text = await Deno.readTextFile(join(sourceFolder, file));
        const relabelled = relabelConfig(JSON.parse(text), labels);
        if (relabelled) {
          await writeTextFileAtomic(
            join(outFolder, file),
            JSON.stringify(relabelled, null, 2) + "\n",
          );
          continue;
        }
      }
      await copyFileAtomic(join(sourceFolder, file), join(outFolder, file));
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
}

/**
 * A classifier's `config.json` with its classes replaced by `labels`, or null when it already
 * names exactly those. Hugging Face configs (`model_type`) get `id2label` and `label2id` (and
 * `num_labels` where the source has it); timm configs (`num_classes`) get `num_classes`,
 * `label_names` and `num_classes` inside `pretrained_cfg` and `model_args` where those have it.
 *
 * @param config The parsed source config.
 * @param labels The head's class names by id.
 * @returns The new config object (the source is not changed), or null.
 */
export function relabelConfig(
  config: Record<string, unknown>,
  labels: readonly string[],
): Record<string, unknown> | null {
  const out = structuredClone(config);
  const same = (names: unknown) =>
    Array.isArray(names) && names.length === labels.length &&
    names.every((n, i) => n === labels[i]);
  if (typeof out.model_type === "string") {
    const map = out.id2label;
    const current = map && typeof map === "object"
      ? Object.entries(map).sort(([a], [b]) => +a - +b).map(([, v]) => v)
      : Array.from({ length: Number(out.num_labels ?? 2) }, (_, i) => `LABEL_${i}`);
    if (same(current)) return null;
    out.id2label = Object.fromEntries(labels.map((l, i) => [String(i), l]));
    out.label2id = Object.fromEntries(labels.map((l, i) => [l, i]));
    if ("num_labels" in out) out.num_labels = labels.length;
    return out;
  }
  const current = out.label_names ??
    Array.from({ length: Number(out.num_classes ?? 0) }, (_, i) => `LABEL_${i}`);
  if (same(current)) return null;
  out.num_classes = labels.length;
  out.label_names = [...labels];
  for (const key of ["pretrained_cfg", "model_args"]) {
    const inner = out[key] as Record<string, unknown> | undefined;
    if (inner && typeof inner === "object" && "num_classes" in inner) {
      inner.num_classes = labels.length;
    }
  }
  return out;
}

function linearOf(model: Model, module: string): LinearWeight {
  const linear = model.linearWeight(module);
  if (!linear) throw new RangeError(`Cannot merge adapters of "${module}": module not found`);
  return linear;
}

/** A linear weight's f32 tensor, refusing one kept packed (it cannot change in place). */
function f32WeightOf(model: Model, module: string): LinearWeight & { weight: Tensor } {
  const linear = linearOf(model, module);
  if (!linear.weight) {
    throw new TypeError(
      `Cannot merge adapters into "${module}" in place: its weight is kept ` +
        `${linear.packed?.layout.format ?? "packed"}; write a merged copy (mergedWeights, ` +
        `writeMergedFolder) or load the model with baseFormat "f32"`,
    );
  }
  return linear as LinearWeight & { weight: Tensor };
}

/** The shape of a packed weight: a linear's in the model's layout, a table's `[rows, cols]`. */
function linearShape(model: Model, name: string): number[] {
  const linear = model.linearWeight(name.replace(/\.weight$/, ""));
  if (!linear) {
    const layout = model.packed?.get(name)?.layout;
    return layout ? [layout.rows, layout.cols] : [];
  }
  return linear.layout === "conv1d"
    ? [linear.inFeatures, linear.outFeatures]
    : [linear.outFeatures, linear.inFeatures];
}

function lowRankOf(module: string, adapter: LinearAdapter): LowRankFactors {
  if (!isLowRank(adapter)) {
    throw new TypeError(
      `Cannot merge adapter "${adapter.name}" on "${module}": it does not expose f32 factors a ` +
        `[r, in] and b [out, r]`,
    );
  }
  return adapter;
}
