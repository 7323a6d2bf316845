/**
 * Export of a model's adapters as a PEFT LoRA folder (`adapter_config.json` and
 * `adapter_model.safetensors`) that `PeftModel.from_pretrained(base, folder)` loads.
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
 * Naming: keys are `base_model.model.<prefix><module>.lora_A.weight` `[r', in]` and
 * `.lora_B.weight` `[out, r']`, as PEFT saves them (without the adapter name `default`), where the
 * family gives the prefix (`Model.peft`: GPT-2's `transformer.`, whatever prefix the base
 * checkpoint used on disk). `fan_in_fan_out` follows the weights' layout: true for Conv1D weights
 * `[in, out]` (GPT-2), where PEFT adds `(B' A')ᵀ`, false for `nn.Linear` `[out, in]`. `r` is the
 * most common module rank (the larger on a tie); modules of another rank get `rank_pattern` and
 * `alpha_pattern` entries, keyed by the module kind when every layer's module of that kind shares
 * the rank, else by the module's own name (`h.3.mlp.c_fc`); PEFT matches a key against the end of
 * the module path. A kind is the module name after its layer index (`mlp.c_fc`), written as its
 * shortest dotted suffix that no linear of another kind ends with (`c_fc`, but `attn.c_proj` and
 * `mlp.c_proj`); a kind that has none (ViT's MLP `output.dense`, a suffix of
 * `attention.output.dense`) is written module by module (`encoder.layer.0.output.dense`).
 *
 * A classifier head trained with the adapters (a new head for the task's classes, `head.ts`) is
 * exported as PEFT exports `modules_to_save`: its module name in the config's `modules_to_save`
 * and its whole weight and bias as `base_model.model.<head>.weight` and `.bias` (PEFT's saved keys
 * drop the wrapper's `modules_to_save.default`). The head sits at the top of the model, outside
 * the family's module prefix: Hugging Face ViT's `classifier`, timm's `head`. A family without a
 * PEFT task type (ViT) writes `task_type: null`.
 *
 * @module
 */

import { join } from "node:path";
import { writeSafetensors } from "../formats/safetensors.ts";
import type { TensorToWrite } from "../formats/safetensors.ts";
import type { LinearSite, Model, WeightLayout } from "../models/model.ts";
import { isLowRank } from "./merge.ts";
import { writeTextFileAtomic } from "../formats/atomic.ts";
import { ensureFolder } from "../formats/folder.ts";

/** Options of {@link exportPeft}. */
export interface PeftExportOptions {
  /** `base_model_name_or_path` of the config: a Hub id (`gpt2`) or a local path. */
  baseModelName: string;
  /**
   * A classifier head to save whole (`modules_to_save`): its module name, whose `.weight` and
   * `.bias` are read from the model's weights.
   */
  head?: string;
}

/** One module's LoRA as PEFT stores it. */
export interface PeftModule {
  /** The module's canonical name, e.g. `h.0.attn.c_attn`. */
  module: string;
  /** `r'`, the sum of the ranks of the module's adapters. */
  r: number;
  inFeatures: number;
  outFeatures: number;
  /** The base weight's layout. */
  layout: WeightLayout;
  /** A' `[r', in]`, row-major. */
  a: Float32Array;
  /** B' `[out, r']`, row-major, with each adapter's scale folded in. */
  b: Float32Array;
}

/**
 * The key prefix PEFT gives a model's modules, e.g. `base_model.model.transformer.` for GPT-2.
 *
 * @param model The model.
 * @returns The prefix.
 */
export function peftPrefix(model: Pick<Model, "peft">): string {
  return `base_model.model.${model.peft.modulePrefix}`;
}

/**
 * Assembles one LoRA a module from a model's attached adapters (their A and B must be current:
 * for NOLA, materialised by the training step).
 *
 * @param model The adapted model.
 * @returns One entry a module with adapters, in the model's module order.
 * @throws {TypeError} If an adapter does not expose its factors.
 */
export async function peftModules(model: Model): Promise<PeftModule[]> {
  const out: PeftModule[] = [];
  for (const [module, list] of model.adapters) {
    if (list.length === 0) continue;
    const linear = model.linearWeight(module);
    if (!linear) throw new RangeError(`Cannot export adapters of "${module}": module not found`);
    const { inFeatures, outFeatures, layout } = linear;
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
    out.push({ module, r, inFeatures, outFeatures, layout, a, b });
  }
  return out;
}

/** Options of {@link peftConfig}. */
export interface PeftConfigOptions {
  /** `base_model_name_or_path`. */
  baseModelName: string;
  /** The model's adaptable sites: which linears exist, to name module kinds. */
  sites: readonly LinearSite[];
  /** PEFT's `task_type`; empty: null. */
  taskType: string;
  /** Modules saved whole (`modules_to_save`); absent or empty: null. */
  modulesToSave?: readonly string[];
}

// A module's kind: its name after the layer index (`h.3.mlp.c_fc` -> `mlp.c_fc`).
function kindOf(module: string): string {
  const parts = module.split(".");
  const at = parts.findIndex((p) => /^\d+$/.test(p));
  return at < 0 ? module : parts.slice(at + 1).join(".");
}

/**
 * The `adapter_config.json` object of a set of module LoRAs (scales folded, so every module's
 * `lora_alpha` equals its rank).
 *
 * @param modules The modules, from {@link peftModules}.
 * @param options The base model's name, its sites and PEFT task type.
 * @returns The config, ready for `JSON.stringify`.
 * @throws {RangeError} If the modules mix `conv1d` and `linear` layouts (PEFT has one
 *   `fan_in_fan_out` a config).
 */
export function peftConfig(
  modules: readonly PeftModule[],
  options: PeftConfigOptions,
): Record<string, unknown> {
  const linears = options.sites.filter((s) => s.name === s.linear).map((s) => s.linear);
  const perKind = new Map<string, number>();
  for (const l of linears) perKind.set(kindOf(l), (perKind.get(kindOf(l)) ?? 0) + 1);
  // PEFT takes a module when its name is a target or ends with "." + a target: a kind's name is
  // its shortest suffix no linear of another kind ends with (ViT's "output.dense" is a suffix of
  // "attention.output.dense", so the MLP's is never named by kind).
  const clash = (suffix: string, kind: string) =>
    linears.some((l) => kindOf(l) !== kind && (l === suffix || l.endsWith(`.${suffix}`)));
  const shortName = (kind: string): string | undefined => {
    const parts = kind.split(".");
    for (let i = parts.length - 1; i >= 0; i--) {
      const suffix = parts.slice(i).join(".");
      if (!clash(suffix, kind)) return suffix;
    }
    return undefined;
  };
  const complete = (kind: string, list: PeftModule[]) =>
    list.length === perKind.get(kind) && shortName(kind) !== undefined;
  const byKind = new Map<string, PeftModule[]>();
  for (const m of modules) byKind.set(kindOf(m.module), [...byKind.get(kindOf(m.module)) ?? [], m]);
  const layouts = new Set(modules.map((m) => m.layout));
  if (layouts.size > 1) {
    throw new RangeError(
      "Cannot export to PEFT: the adapted modules mix [in, out] and [out, in] weights",
    );
  }

  const count = new Map<number, number>();
  for (const m of modules) count.set(m.r, (count.get(m.r) ?? 0) + 1);
  const [r] = [...count].sort((x, y) => y[1] - x[1] || y[0] - x[0])[0] ?? [8];

  const targets: string[] = [];
  const rankPattern: Record<string, number> = {};
  for (const [kind, list] of byKind) {
    if (complete(kind, list)) targets.push(shortName(kind)!);
    else targets.push(...list.map((m) => m.module));
    const ranks = new Set(list.map((m) => m.r));
    if (complete(kind, list) && ranks.size === 1) {
      if (list[0].r !== r) rankPattern[shortName(kind)!] = list[0].r;
    } else {
      for (const m of list) if (m.r !== r) rankPattern[m.module] = m.r;
    }
  }
  return {
    alpha_pattern: { ...rankPattern },
    auto_mapping: null,
    base_model_name_or_path: options.baseModelName,
    bias: "none",
    fan_in_fan_out: layouts.has("conv1d"),
    inference_mode: true,
    init_lora_weights: true,
    layers_pattern: null,
    layers_to_transform: null,
    lora_alpha: r,
    lora_dropout: 0,
    modules_to_save: options.modulesToSave?.length ? [...options.modulesToSave] : null,
    peft_type: "LORA",
    r,
    rank_pattern: rankPattern,
    revision: null,
    target_modules: targets.sort(),
    task_type: options.taskType || null,
  };
}

/**
 * Writes a model's adapters as a PEFT LoRA folder: `adapter_config.json` and
 * `adapter_model.safetensors` (f32), each written atomically (the config last). Other files in
 * an existing `outFolder` are left as they are.
 *
 * @param model A model with low-rank adapters attached.
 * @param outFolder The folder to create or write into.
 * @param options The base model's name for the config; `head`, a classifier head to save whole.
 * @throws {RangeError} If the model has no adapters, or no f32 weight and bias for `head`.
 * @throws {TypeError} If an adapter does not expose its factors.
 * @throws {OutputPathError} If `outFolder` is a file.
 *
 * @example Export, then load in Python
 * ```ts ignore
 * await exportPeft(model, "out/run/peft", { baseModelName: "gpt2" });
 * // PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained("gpt2"), "out/run/peft")
 * ```
 */
export async function exportPeft(
  model: Model,
  outFolder: string,
  options: PeftExportOptions,
): Promise<void> {
  const modules = await peftModules(model);
  if (modules.length === 0) {
    throw new RangeError(
      `Cannot export to PEFT folder "${outFolder}": the model has no adapters` +
        (options.head ? ` (a head alone is no LoRA: write a merged folder instead)` : ""),
    );
  }
  const config = peftConfig(modules, {
    baseModelName: options.baseModelName,
    sites: model.sites,
    taskType: model.peft.taskType,
    modulesToSave: options.head ? [options.head] : [],
  });
  const prefix = peftPrefix(model);
  const tensors: TensorToWrite[] = modules.flatMap((m) => [
    {
      name: `${prefix}${m.module}.lora_A.weight`,
      dtype: "F32",
      shape: [m.r, m.inFeatures],
      data: m.a,
    },
    {
      name: `${prefix}${m.module}.lora_B.weight`,
      dtype: "F32",
      shape: [m.outFeatures, m.r],
      data: m.b,
    },
  ]);
  if (options.head) {
    const head = options.head;
    const weight = model.params.get(`${head}.weight`);
    const bias = model.params.get(`${head}.bias`);
    if (!weight || !bias) {
      throw new RangeError(`Cannot export head "${head}" to PEFT: the model has no f32 ${head}`);
    }
    model.gpu.flush();
    tensors.push(
      {
        name: `base_model.model.${head}.weight`,
        dtype: "F32",
        shape: [...weight.shape],
        data: (await weight.read()) as Float32Array,
      },
      {
        name: `base_model.model.${head}.bias`,
        dtype: "F32",
        shape: [...bias.shape],
        data: (await bias.read()) as Float32Array,
      },
    );
  }
  await ensureFolder(outFolder);
  await writeSafetensors(join(outFolder, "adapter_model.safetensors"), tensors, { format: "pt" });
  await writeTextFileAtomic(
    join(outFolder, "adapter_config.json"),
    JSON.stringify(config, null, 2) + "\n",
  );
}
