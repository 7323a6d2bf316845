/**
 * Export of a GPT-2's adapters as a PEFT LoRA folder (`adapter_config.json` and
 * `adapter_model.safetensors`) that `PeftModel.from_pretrained(GPT2LMHeadModel, folder)` loads.
 *
 * PEFT puts one LoRA on a whole module, while here several adapters may write column slices of
 * one module (the q and v parts of `c_attn`). They export exactly as one LoRA of rank
 * `r' = r_1 + r_2 + ...` on the module: `A' = [A_1; A_2; ...]` (`r' x in`) and a block-sparse
 * `B'` (`out x r'`) holding adapter `i`'s `B_i` in rows `colOffset_i ..` and columns
 * `r_1 + ... + r_(i-1) ..`, zeros elsewhere, so `B' A' = sum_i` (B_i A_i placed at its slice).
 *
 * Scale: PEFT scales a module's update by `lora_alpha / r'`, one number a module, while the
 * adapters of one module may each have their own `s_i = lora_alpha_i / r_i`. Each `s_i` is folded
 * into its block of `B'` and the export sets `lora_alpha = r'` for every module (scale 1), so
 * `W + (lora_alpha / r') (B' A')ᵀ` is exactly the adapted model. (A consequence for anyone resuming
 * training in PEFT: the stored B' is `s B`, and the learning-rate balance between A and B differs
 * from the original run's.)
 *
 * Naming: keys are `base_model.model.transformer.<module>.lora_A.weight` `[r', in]` and
 * `.lora_B.weight` `[out, r']`, as PEFT saves them (without the adapter name `default`), whatever
 * prefix the base checkpoint used on disk. `fan_in_fan_out` is true: GPT-2's Conv1D weights are
 * `[in, out]`, so PEFT adds `(B' A')ᵀ`. `r` is the most common module rank (the larger on a tie);
 * modules of another rank get `rank_pattern` and `alpha_pattern` entries, keyed by the module kind
 * (`c_fc`) when every layer's module of that kind shares the rank, else by the module's own name
 * (`h.3.mlp.c_fc`); PEFT matches a key against the end of the module path.
 *
 * @module
 */

import { writeSafetensors } from "../formats/safetensors.ts";
import type { TensorToWrite } from "../formats/safetensors.ts";
import type { Gpt2 } from "../models/gpt2.ts";
import { isLowRank } from "./merge.ts";
import { writeFolderAtomic } from "../formats/folder.ts";

/** Options of {@link exportPeft}. */
export interface PeftExportOptions {
  /** `base_model_name_or_path` of the config: a Hub id (`gpt2`) or a local path. */
  baseModelName: string;
}

/** One module's LoRA as PEFT stores it. */
export interface PeftModule {
  /** The module's canonical name, e.g. `h.0.attn.c_attn`. */
  module: string;
  /** `r'`, the sum of the ranks of the module's adapters. */
  r: number;
  inFeatures: number;
  outFeatures: number;
  /** A' `[r', in]`, row-major. */
  a: Float32Array;
  /** B' `[out, r']`, row-major, with each adapter's scale folded in. */
  b: Float32Array;
}

/** The key prefix PEFT gives a `GPT2LMHeadModel`'s transformer modules. */
export const PEFT_PREFIX = "base_model.model.transformer.";

/**
 * Assembles one LoRA a module from a model's attached adapters (their A and B must be current:
 * for NOLA, materialised by the training step).
 *
 * @param model The adapted model.
 * @returns One entry a module with adapters, in the model's module order.
 * @throws {TypeError} If an adapter does not expose its factors.
 */
export async function peftModules(model: Gpt2): Promise<PeftModule[]> {
  const out: PeftModule[] = [];
  for (const [module, list] of model.adapters) {
    if (list.length === 0) continue;
    const shape = model.linearShape(module)!;
    const { inFeatures, outFeatures } = shape;
    for (const { adapter } of list) {
      if (!isLowRank(adapter)) {
        throw new TypeError(
          `Cannot export adapter "${adapter.name}" on "${module}" to PEFT: it does not expose f32 ` +
            `factors a [r, in] and b [out, r]`,
        );
      }
    }
    const r = list.reduce((sum, { adapter }) => sum + adapter.r, 0);
    const a = new Float32Array(r * inFeatures);
    const b = new Float32Array(outFeatures * r);
    let col = 0;
    for (const { adapter, colOffset } of list) {
      if (!isLowRank(adapter)) continue;
      const ai = await adapter.a.read() as Float32Array;
      const bi = await adapter.b.read() as Float32Array;
      a.set(ai, col * inFeatures);
      for (let o = 0; o < adapter.outFeatures; o++) {
        for (let j = 0; j < adapter.r; j++) {
          b[(colOffset + o) * r + col + j] = adapter.scale * bi[o * adapter.r + j];
        }
      }
      col += adapter.r;
    }
    out.push({ module, r, inFeatures, outFeatures, a, b });
  }
  return out;
}

/**
 * The `adapter_config.json` object of a set of module LoRAs (scales folded, so every module's
 * `lora_alpha` equals its rank).
 *
 * @param modules The modules, from {@link peftModules}.
 * @param options The base model's name and its number of layers.
 * @returns The config, ready for `JSON.stringify`.
 */
export function peftConfig(
  modules: readonly PeftModule[],
  options: { baseModelName: string; nLayer: number },
): Record<string, unknown> {
  const kindOf = (module: string) => module.replace(/^h\.\d+\./, "");
  const byKind = new Map<string, PeftModule[]>();
  for (const m of modules) byKind.set(kindOf(m.module), [...byKind.get(kindOf(m.module)) ?? [], m]);
  // `c_attn` and `c_fc` name one module a block; `c_proj` needs its parent to be unambiguous.
  const shortName = (kind: string) => kind.endsWith("c_proj") ? kind : kind.split(".").pop()!;
  const complete = (list: PeftModule[]) => list.length === options.nLayer;

  const count = new Map<number, number>();
  for (const m of modules) count.set(m.r, (count.get(m.r) ?? 0) + 1);
  const [r] = [...count].sort((x, y) => y[1] - x[1] || y[0] - x[0])[0] ?? [8];

  const targets: string[] = [];
  const rankPattern: Record<string, number> = {};
  for (const [kind, list] of byKind) {
    if (complete(list)) targets.push(shortName(kind));
    else targets.push(...list.map((m) => m.module));
    const ranks = new Set(list.map((m) => m.r));
    if (complete(list) && ranks.size === 1) {
      if (list[0].r !== r) rankPattern[shortName(kind)] = list[0].r;
    } else {
      for (const m of list) if (m.r !== r) rankPattern[m.module] = m.r;
    }
  }
  return {
    alpha_pattern: { ...rankPattern },
    auto_mapping: null,
    base_model_name_or_path: options.baseModelName,
    bias: "none",
    fan_in_fan_out: true,
    inference_mode: true,
    init_lora_weights: true,
    layers_pattern: null,
    layers_to_transform: null,
    lora_alpha: r,
    lora_dropout: 0,
    modules_to_save: null,
    peft_type: "LORA",
    r,
    rank_pattern: rankPattern,
    revision: null,
    target_modules: targets.sort(),
    task_type: "CAUSAL_LM",
  };
}

/**
 * Writes a model's adapters as a PEFT LoRA folder: `adapter_config.json` and
 * `adapter_model.safetensors` (f32), built beside `outFolder` and renamed into place.
 *
 * @param model A GPT-2 with low-rank adapters attached.
 * @param outFolder The folder to create or replace.
 * @param options The base model's name for the config.
 * @throws {RangeError} If the model has no adapters.
 * @throws {TypeError} If an adapter does not expose its factors.
 *
 * @example Export, then load in Python
 * ```ts ignore
 * await exportPeft(model, "out/run/peft", { baseModelName: "gpt2" });
 * // PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained("gpt2"), "out/run/peft")
 * ```
 */
export async function exportPeft(
  model: Gpt2,
  outFolder: string,
  options: PeftExportOptions,
): Promise<void> {
  const modules = await peftModules(model);
  if (modules.length === 0) {
    throw new RangeError(`Cannot export to PEFT folder "${outFolder}": the model has no adapters`);
  }
  const config = peftConfig(modules, { ...options, nLayer: model.config.nLayer });
  const tensors: TensorToWrite[] = modules.flatMap((m) => [
    {
      name: `${PEFT_PREFIX}${m.module}.lora_A.weight`,
      dtype: "F32",
      shape: [m.r, m.inFeatures],
      data: m.a,
    },
    {
      name: `${PEFT_PREFIX}${m.module}.lora_B.weight`,
      dtype: "F32",
      shape: [m.outFeatures, m.r],
      data: m.b,
    },
  ]);
  await writeFolderAtomic(outFolder, async (tmp) => {
    await Deno.writeTextFile(`${tmp}/adapter_config.json`, JSON.stringify(config, null, 2) + "\n");
    await writeSafetensors(`${tmp}/adapter_model.safetensors`, tensors, { format: "pt" });
  });
}
