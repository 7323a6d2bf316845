/**
 * `inspect DIR`: what a Hugging Face model folder is to this project, without a GPU: its family
 * and sizes, its weights by dtype, the GPU bytes of its linear weights in each base precision the
 * `load` stage offers, the GPU memory of a typical NOLA run in each, the sites adapters can target,
 * and how a PEFT export names them.
 *
 * @module
 */

import { packedLayout } from "../formats/base_quant.ts";
import { Checkpoint } from "../formats/safetensors.ts";
import { sharedBasisKey } from "../kernels/basis_spec.ts";
import { ALL_LINEAR, planAdapters } from "../adapters/attach.ts";
import {
  checkpointDtypes,
  estimateTrainingMemory,
  formatEstimate,
  modelPositions,
} from "../models/memory_estimate.ts";
import type { ModelOptions } from "../models/model.ts";
import { type ModelConfig, modelShape, readModelConfig } from "../models/registry.ts";

/**
 * Describes a model folder for a person.
 *
 * @param folder A Hugging Face model folder.
 * @returns Several lines of text.
 * @throws {ModelConfigError} If its config names no supported family or does not fit it.
 * @throws {SafetensorsError} If its checkpoint is malformed.
 */
export async function inspectModelFolder(folder: string): Promise<string> {
  const config = await readModelConfig(folder);
  const shape = modelShape(config);
  const out = [
    `${folder}: ${config.family.modelType} model (config hash ${shape.configHash})`,
  ];
  using ckpt = await Checkpoint.open(folder);
  const byDtype = new Map<string, { tensors: number; elements: number; bytes: number }>();
  for (const name of ckpt.names()) {
    const info = ckpt.info(name);
    const row = byDtype.get(info.dtype) ?? { tensors: 0, elements: 0, bytes: 0 };
    row.tensors++;
    row.elements += info.shape.reduce((a, b) => a * b, 1);
    row.bytes += info.end - info.begin;
    byDtype.set(info.dtype, row);
  }
  const n = (x: number) => x.toLocaleString("en-US");
  out.push("", "weights:");
  for (const [dtype, row] of byDtype) {
    out.push(
      `  ${dtype}: ${n(row.tensors)} tensors, ${n(row.elements)} values, ${n(row.bytes)} bytes`,
    );
  }
  out.push("", ...linearBytes(shape.sites));
  out.push("", ...await trainingEstimates(folder, config));
  // Sites repeat block by block: one line a kind, with the blocks it occurs in.
  const kinds = new Map<string, { inF: number; outF: number; count: number; slice: boolean }>();
  for (const s of shape.sites) {
    const key = sharedBasisKey(s.name);
    const kind = kinds.get(key);
    if (kind) kind.count++;
    else {
      kinds.set(key, {
        inF: s.inFeatures,
        outF: s.outFeatures,
        count: 1,
        slice: s.name !== s.linear,
      });
    }
  }
  out.push("", `adaptable sites (${shape.sites.length}; targets match these names):`);
  const width = Math.max(...[...kinds.keys()].map((k) => k.length));
  for (const [key, k] of kinds) {
    out.push(
      `  ${key.padEnd(width)}  ${k.inF} -> ${k.outF}${k.count > 1 ? `  x${k.count}` : ""}` +
        (k.slice ? "  (column slice)" : ""),
    );
  }
  return out.join("\n");
}

/**
 * The GPU bytes of a model's adaptable linear weights (those `dtype` and `quantize_base` apply
 * to) in each precision, at the default block size and double quantization.
 *
 * @param sites The model's adaptable sites.
 * @returns Lines for a person.
 */
export function linearBytes(
  sites: readonly { linear: string; inFeatures: number; outFeatures: number; colOffset: number }[],
): string[] {
  // A fused linear's sites are slices of it: its whole output is the widest slice's end.
  const linears = new Map<string, { inF: number; outF: number }>();
  for (const s of sites) {
    const l = linears.get(s.linear) ?? { inF: s.inFeatures, outF: 0 };
    l.outF = Math.max(l.outF, s.colOffset + s.outFeatures);
    linears.set(s.linear, l);
  }
  const n = (x: number) => x.toLocaleString("en-US");
  const total = (format: "f16" | "int8" | "nf4" | null) =>
    [...linears.values()].reduce(
      (sum, { inF, outF }) =>
        sum + (format ? packedLayout(outF, inF, { format }).bytes : 4 * inF * outF),
      0,
    );
  const f32 = total(null);
  const row = (label: string, bytes: number) =>
    `  ${label.padEnd(28)}${n(bytes).padStart(16)} bytes  ${(bytes / f32).toFixed(3)}x`;
  return [
    `linear weights on the GPU by base precision (${linears.size} linears, block 64; the ` +
    `rest stays f32):`,
    row("f32", f32),
    row("16-bit (as-stored f16/bf16)", total("f16")),
    row("int8", total("int8")),
    row("nf4 (double quantization)", total("nf4")),
  ];
}

/** The NOLA run {@link trainingEstimates} sizes: the paper's LLaMA placement, batch 1. */
const TYPICAL = { r: 8, k: 1024, B: 1, T: 512 };

/**
 * The estimated GPU memory of a typical NOLA run on the folder's model in each base precision:
 * every linear, r 8, k = l = 1024, AdamW, one row of 512 positions (or the model's maximum).
 *
 * @param folder The model folder (its checkpoint's dtypes decide what `as-stored` keeps).
 * @param config Its parsed config.
 * @returns Lines for a person; one line saying why when the family has no estimate.
 */
export async function trainingEstimates(folder: string, config: ModelConfig): Promise<string[]> {
  const { r, k, B } = TYPICAL;
  let T: number;
  try {
    T = Math.min(TYPICAL.T, modelPositions(config));
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
    return [`no training memory estimate: ${e.message}`];
  }
  let modules;
  try {
    modules = planAdapters(modelShape(config), {
      method: "nola",
      targets: [ALL_LINEAR],
      r,
      k,
      loraAlpha: r,
      seed: 0,
    });
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
    return [`no training memory estimate: ${e.message}`];
  }
  const storedDtypes = await checkpointDtypes(folder, config);
  const bases: [string, ModelOptions][] = [
    ["f32", { baseFormat: "f32" }],
    ["as-stored", { baseFormat: "as-stored" }],
    ["int8", { baseFormat: "int8" }],
    ["nf4", { baseFormat: "nf4" }],
  ];
  return [
    `GPU memory of a NOLA run (every linear, r ${r}, k = l = ${k}, AdamW, batch ${B} x ${T}; ` +
    "`finetune` prints its own run's estimate):",
    ...bases.map(([label, model]) => {
      const e = estimateTrainingMemory(config, {
        model,
        storedDtypes,
        batch: { B, T },
        adapters: { modules, maxRows: Math.max(8, B) * T },
        optimizer: { kind: "adamw" },
      });
      return `  base ${label.padEnd(10)}${formatEstimate(e)}`;
    }),
  ];
}
