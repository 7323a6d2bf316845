/**
 * `inspect DIR`: what a Hugging Face model folder is to this project, without a GPU: its family
 * and sizes, its weights by dtype, the GPU bytes of its linear weights in each base precision the
 * `load` stage offers, the sites adapters can target, and how a PEFT export names them.
 *
 * @module
 */

import { packedLayout } from "../formats/base_quant.ts";
import { Checkpoint } from "../formats/safetensors.ts";
import { sharedBasisKey } from "../kernels/basis_spec.ts";
import { modelShape, readModelConfig } from "../models/registry.ts";

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
