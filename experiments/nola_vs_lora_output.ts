/**
 * The files of the NOLA-vs-LoRA experiment: `results.json` (every run, the picks, the rows and the
 * claims), `results.md` (the tables and the claims) and two charts with error bars, `bleu.svg` and
 * `loss.svg`, each written atomically.
 *
 * @module
 */

import { join } from "node:path";
import { writeTextFileAtomic } from "../formats/atomic.ts";
import { type ChartSeries, lineChart } from "../train/svg.ts";
import {
  type ExperimentOptions,
  type Method,
  parseMethod,
  QUANT_BITS,
} from "./nola_vs_lora_options.ts";
import {
  type Claim,
  count,
  type FinalRun,
  finished,
  judgeFewerParams,
  judgeQuantCost,
  type Pick,
  pickLearningRates,
  type Row,
  type SweepRun,
  tableRows,
} from "./nola_vs_lora_report.ts";
import { formatStat, type Stat } from "./stats.ts";

/** What {@linkcode writeResults} reports on. */
export interface ExperimentData {
  options: ExperimentOptions;
  /** The base model folder. */
  base: string;
  /** Test meaning representations scored. */
  testMrs: number;
  /** Validation meaning representations (the validation loss covers all). */
  validationMrs: number;
  /** Whether the evaluate stage scored the slot-error rate. */
  slotError: boolean;
  /** The command that made the results. */
  command: string;
  sweep: SweepRun[];
  finals: FinalRun[];
}

/**
 * Writes `results.json`, `results.md`, `bleu.svg` and `loss.svg` into `out`, each atomically,
 * from the runs done so far.
 *
 * @param out The experiment's output folder.
 * @param data The settings and the runs.
 * @returns Resolves once the four files are in place.
 */
export async function writeResults(out: string, data: ExperimentData): Promise<void> {
  const picks = pickLearningRates(data.sweep);
  const rows = tableRows(data.options.methods, data.finals);
  const claims = [...judgeFewerParams(rows), ...judgeQuantCost(rows)];
  const { options } = data;
  const json = {
    experiment: "nola-vs-lora",
    settings: {
      base: data.base,
      data: options.data,
      methods: options.methods.map((m) => m.id),
      steps: options.steps,
      sweepSteps: options.sweepSteps,
      seeds: options.seeds,
      sweepFactors: options.sweepFactors,
      lrCentres: { lora: options.lrLora, nola: options.lrNola },
      batchSize: options.batchSize,
      seqLen: options.seqLen,
      testMrs: data.testMrs,
      validationMrs: data.validationMrs,
      decoding: {
        beams: options.beams,
        lengthPenalty: options.lengthPenalty,
        noRepeatNgram: options.noRepeatNgram,
        maxNewTokens: options.maxNewTokens,
      },
      slotError: data.slotError,
      std: "sample standard deviation (n - 1) over seeds",
    },
    sweep: data.sweep,
    picks: Object.fromEntries(picks),
    runs: data.finals,
    rows: rows.map((r) => ({ ...r, method: r.method.id, label: r.method.label })),
    claims,
  };
  await writeTextFileAtomic(join(out, "results.json"), JSON.stringify(json, null, 2) + "\n");
  await writeTextFileAtomic(join(out, "results.md"), markdown(data, rows, picks, claims));
  for (
    const [file, key, label] of [["bleu.svg", "bleu", "BLEU"], [
      "loss.svg",
      "valLoss",
      "validation loss",
    ]] as const
  ) {
    await writeTextFileAtomic(join(out, file), chart(rows, key, label, options.steps));
  }
}

function chart(rows: readonly Row[], key: "bleu" | "valLoss", label: string, steps: number) {
  const points = (keep: (r: Row) => boolean, name: (r: Row) => string) =>
    // By size, so a line joins the rows in order whatever order the methods were given in.
    rows.filter((r) => keep(r) && r.n > 0 && r.params !== undefined)
      .sort((a, b) => a.params! - b.params!).map((r) => ({
        x: r.params!,
        y: r[key].mean,
        yError: r[key].std,
        label: name(r),
      }));
  const series: ChartSeries[] = [
    {
      name: "LoRA",
      style: "line+markers",
      points: points((r) => r.method.kind === "lora", (r) => `r=${r.method.r}`),
    },
    {
      name: "NOLA",
      style: "line+markers",
      points: points((r) => r.method.kind === "nola" && !r.method.quant, (r) => `k=${r.method.k}`),
    },
    {
      name: `NOLA ${QUANT_BITS}-bit`,
      style: "scatter",
      points: points((r) => r.method.quant !== undefined, (r) => r.method.quant!.toUpperCase()),
    },
  ];
  return lineChart(series, {
    title: `${label} against trainable parameters (${steps} steps; mean ± std over seeds)`,
    xLabel: "trainable parameters",
    yLabel: label,
    xLog: true,
  });
}

function markdown(
  data: ExperimentData,
  rows: readonly Row[],
  picks: Map<string, Pick>,
  claims: readonly Claim[],
): string {
  const o = data.options;
  const slot = (s: Stat) => data.slotError ? formatStat(s, 2) : "n/a";
  const table = [
    "| method | trainable params | adapter bytes | lr | seeds | val loss | BLEU | ROUGE-L | slot error % |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ...rows.map((r) =>
      `| ${r.method.label} | ${r.params === undefined ? "-" : count(r.params)} | ${
        r.bytes === undefined ? "-" : count(r.bytes)
      } | ${r.lr === undefined ? "-" : r.lr} | ${r.n}${
        r.diverged ? ` (+${r.diverged} diverged)` : ""
      } | ${formatStat(r.valLoss, 4)} | ${formatStat(r.bleu, 2)} | ${formatStat(r.rougeL, 2)} | ${
        slot(r.slotError)
      } |`
    ),
  ];
  const sweepTable = [
    "| method | lr | val loss | final train loss | picked |",
    "|---|---:|---:|---:|:---:|",
    ...[...data.sweep].sort((a, b) =>
      order(o.methods, a.method) - order(o.methods, b.method) || a.lr - b.lr
    ).map((s) => {
      const pick = picks.get(s.method);
      const picked = pick?.lr === s.lr ? (pick.edge ? "yes (edge of the grid)" : "yes") : "";
      const f = s.figures;
      return finished(f)
        ? `| ${label(s.method)} | ${s.lr} | ${f.valLoss.toFixed(4)} | ${
          f.finalTrainLoss.toFixed(4)
        } | ${picked} |`
        : `| ${label(s.method)} | ${s.lr} | diverged | - | ${picked} |`;
    }),
  ];
  const runsTable = [
    "| method | seed | lr | val loss | BLEU | ROUGE-L | slot error % | time |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
    ...data.finals.map((r) => {
      const f = r.figures;
      const cells = finished(f)
        ? [
          f.valLoss.toFixed(4),
          f.bleu.toFixed(2),
          f.rougeL.toFixed(2),
          f.slotError?.toFixed(2) ?? "n/a",
        ]
        : ["diverged", "-", "-", "-"];
      return `| ${label(r.method)} | ${r.seed} | ${r.lr} | ${cells.join(" | ")} | ${
        Math.round(r.seconds)
      } s |`;
    }),
  ];
  const claimLines = claims.map((c) =>
    `- **${c.claim}** (${c.metric}): **${c.verdict}**. ${c.detail}.`
  );
  const ptq = o.methods.filter((m) => m.quant === "ptq").map((m) => m.label);
  const settings = [
    `Base \`${data.base}\`, data \`${o.data}\`.`,
    "Adapters on the q and v parts of every `c_attn`; NOLA at r = 8; lora_alpha = r (scale 1).",
    `AdamW, linear schedule with 10% warmup, label smoothing 0.1, batch ${o.batchSize} x ` +
    `${o.seqLen} tokens (one example a row, padded: packed rows would attend across examples).`,
    `**Every final run trains ${steps(o.steps)}** (the equal budget), seeds ` +
    `${seedList(o.seeds)}, at the rate its method's sweep picked.`,
    `Sweep: ${steps(o.sweepSteps)}, seed 0, lr = centre x {${o.sweepFactors.join(", ")}} ` +
    `(centres: LoRA ${o.lrLora}, NOLA ${o.lrNola}); the pick is the rate of lowest validation ` +
    `loss over the completion tokens of the whole validation split (${data.validationMrs} ` +
    `meaning representations).`,
    `Test: ${data.testMrs} meaning representations` +
    `${o.testExamples === undefined ? " (the whole split)" : ""}, beam ${o.beams}, length ` +
    `penalty ${o.lengthPenalty}, no repeated ${o.noRepeatNgram}-grams, at most ` +
    `${o.maxNewTokens} new tokens` +
    (data.slotError ? "." : "; the slot-error rate was not available in this version."),
    "Figures are mean ± sample standard deviation (n - 1) over the seeds.",
    ...(ptq.length
      ? [
        `${ptq.join(", ")}: the same runs as full-precision NOLA of that k, coefficients ` +
        `rounded to ${QUANT_BITS} bits (symmetric per tensor) after training and scored again.`,
      ]
      : []),
    ...(o.methods.some((m) => m.quant === "qat")
      ? [`QAT: trained with ${QUANT_BITS}-bit coefficients (straight-through estimator).`]
      : []),
  ].map((line) => `- ${line}`).join("\n");
  return `# NOLA against LoRA on the data-to-text task

${settings}

${table.join("\n")}

## The paper's claims, as measured here

${claimLines.join("\n")}

![BLEU against trainable parameters](bleu.svg)

![Validation loss against trainable parameters](loss.svg)

## Learning-rate sweep (${steps(o.sweepSteps)}, seed 0)

${sweepTable.join("\n")}

## Every final run

${runsTable.join("\n")}

Made by \`${data.command}\` (experiments/nola_vs_lora.ts); each run's pipeline, log and ` +
    `adapter are in \`runs/\`.
`;
}

function order(methods: readonly Method[], id: string): number {
  const i = methods.findIndex((m) => m.id === id || m.id === `${id}-ptq`);
  return i < 0 ? methods.length : i;
}

function label(id: string): string {
  return parseMethod(id).label;
}

function steps(n: number): string {
  return n === 1 ? "1 step" : `${n} steps`;
}

function seedList(n: number): string {
  return Array.from({ length: n }, (_, i) => i).join(", ");
}
