/**
 * `inspect DIR`: what a Hugging Face model folder is to this project, without a GPU: its family
 * and sizes, its weights by dtype, the sites adapters can target, and how a PEFT export names them.
 *
 * @module
 */

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
