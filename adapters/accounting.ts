/**
 * What an adapter costs, without a GPU or a model: trainable parameters and exact file sizes of
 * NOLA next to LoRA at rank 1 and LoRA at the same rank, for any attach config and model shape.
 *
 * @module
 */

import { type AttachConfig, planAdapters } from "./attach.ts";
import { adapterFileSize } from "./adapter_file.ts";
import type { QuantOptions } from "../formats/quantize.ts";
import type { ModelShape } from "../models/model.ts";

/** One line of the comparison. */
export interface AccountingRow {
  /** E.g. `NOLA r=8 k=1024 l=1024`, `LoRA r=1`. */
  label: string;
  /** The method of the row's adapters. */
  method: "nola" | "lora";
  /** Adapted modules. */
  modules: number;
  /** Trainable numbers: `k + l` per NOLA module, `r (in + out)` per LoRA module. */
  params: number;
  /** Bytes of the adapter file with F32 values. */
  fileBytes: number;
  /** Bytes of the quantized adapter file (NOLA only). */
  quantBytes?: number;
}

/**
 * NOLA (when the config has `k`), LoRA at rank 1 and LoRA at the config's rank, on the same
 * targets and overrides (LoRA at rank 1 drops every rank override).
 *
 * @param base The model's shape: config hash and adaptable sites (a `Model`, or `modelShape` of a
 *   config).
 * @param config The attach config (its `method` does not matter).
 * @param options Quantization of the NOLA file (default 4-bit symmetric) and the base's name.
 * @returns The rows, NOLA first.
 * @throws {RangeError} As `planAdapters` does.
 *
 * @example The paper's GPT-2 setting
 * ```ts
 * import { adapterAccounting, formatAccounting } from "./adapters/accounting.ts";
 * import { GPT2_SMALL } from "./models/gpt2_config.ts";
 * import { gpt2Family } from "./models/gpt2_family.ts";
 * console.log(formatAccounting(adapterAccounting(gpt2Family.shape(GPT2_SMALL), {
 *   method: "nola", targets: ["h.*.attn.c_attn.q", "h.*.attn.c_attn.v"], r: 8, k: 1024,
 *   loraAlpha: 8, seed: 0,
 * })));
 * ```
 */
export function adapterAccounting(
  base: ModelShape,
  config: AttachConfig,
  options: { quant?: QuantOptions; baseModel?: string } = {},
): AccountingRow[] {
  const quant = options.quant ?? { bits: 4, scheme: "symmetric" };
  const row = (
    label: string,
    attach: AttachConfig & { method: "nola" | "lora" },
  ): AccountingRow => {
    const modules = planAdapters(base, attach);
    const desc = {
      baseModel: options.baseModel ?? "gpt2",
      baseConfigHash: base.configHash,
      config: attach,
      modules,
    };
    const nola = attach.method === "nola";
    const out: AccountingRow = {
      label,
      method: attach.method,
      modules: modules.length,
      params: modules.reduce(
        (s, m) => s + (nola ? m.k + m.l : m.r * (m.inFeatures + m.outFeatures)),
        0,
      ),
      fileBytes: adapterFileSize(desc),
    };
    if (nola) out.quantBytes = adapterFileSize(desc, { quant });
    return out;
  };
  const rows: AccountingRow[] = [];
  if (config.k !== undefined) {
    const l = config.l ?? config.k;
    rows.push(row(`NOLA r=${config.r} k=${config.k} l=${l}`, { ...config, method: "nola" }));
  }
  const { k: _k, l: _l, init: _i, shareBasis: _s, ...common } = config;
  const lora = { ...common, method: "lora" as const };
  const rank1 = lora.overrides?.map(({ r: _r, ...o }) => o);
  rows.push(row("LoRA r=1", { ...lora, r: 1, ...(rank1 ? { overrides: rank1 } : {}) }));
  if (config.r !== 1 || config.overrides?.some((o) => o.r !== undefined)) {
    rows.push(row(`LoRA r=${config.r}`, lora));
  }
  return rows;
}

/**
 * A Markdown table of {@link adapterAccounting}'s rows, numbers with thousands separators.
 *
 * @param rows The rows.
 * @param options The quantized column's heading (default `4-bit file`).
 * @returns The table, one row a line.
 */
export function formatAccounting(
  rows: AccountingRow[],
  options: { quantLabel?: string } = {},
): string {
  const n = (x: number) => x.toLocaleString("en-US");
  const kb = (x: number) => `${n(x)} B (${(x / 1024).toFixed(1)} KiB)`;
  const lines = [
    `| adapter | modules | trainable params | f32 file | ${options.quantLabel ?? "4-bit file"} |`,
    "|---|---:|---:|---:|---:|",
    ...rows.map((r) =>
      `| ${r.label} | ${r.modules} | ${n(r.params)} | ${kb(r.fileBytes)} | ${
        r.quantBytes === undefined ? "-" : kb(r.quantBytes)
      } |`
    ),
  ];
  return lines.join("\n");
}
