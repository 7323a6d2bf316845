/**
 * A run's `report.md`: the summary of every stage as a table and the loss curves as `loss.svg`
 * beside it (a relative link, so the report reads the same on GitHub and on disk).
 *
 * @module
 */

import { join } from "node:path";
import { writeTextFileAtomic } from "../formats/atomic.ts";
import { type MetricRecord, readMetrics, type Split, type Summary } from "./run_log.ts";
import { type ChartSeries, lineChart } from "./svg.ts";

/** Extra markdown after the loss curves, optionally with a chart written next to the report. */
export interface ReportSection {
  /** Heading of the section. */
  title: string;
  /** Markdown body. */
  markdown?: string;
  /** An SVG (from {@linkcode lineChart}) saved as `file` in the run folder and embedded. */
  chart?: { file: string; svg: string; alt?: string };
}

/** What {@linkcode writeReport} puts in the report. */
export interface ReportOptions {
  /** The report's heading. */
  title: string;
  /** Final figures keyed by stage id, as in `summary.json`. */
  summary: Summary;
  /** The run's `metrics.jsonl`; a missing file means no curves. */
  metricsPath?: string;
  /** Further sections, in order. */
  sections?: readonly ReportSection[];
}

const LOSS_SVG = "loss.svg";
const SPLIT_ORDER: readonly Split[] = ["train", "validation", "test"];

/**
 * Writes `report.md` (and `loss.svg`, and each section's chart) into `runDir`, each atomically;
 * the report is written last, so it never links to a chart that is not there yet.
 *
 * @param runDir The run folder.
 * @param options Title, summary, metrics and extra sections.
 * @returns The paths written, the report last.
 *
 * @example
 * ```ts
 * import { writeReport } from "./report.ts";
 * await writeReport("out/demo", {
 *   title: "GPT-2 + NOLA on E2E",
 *   summary: { finetune: { final_train_loss: 2.41, steps: 1200 } },
 *   metricsPath: "out/demo/metrics.jsonl",
 * });
 * ```
 */
export async function writeReport(runDir: string, options: ReportOptions): Promise<string[]> {
  for (const section of options.sections ?? []) {
    const file = section.chart?.file;
    if (file !== undefined && (!/^[\w.-]+\.svg$/.test(file) || file === LOSS_SVG)) {
      throw new TypeError(
        `Invalid chart file "${file}" in report section "${section.title}": use a plain name ` +
          `ending in .svg, other than ${LOSS_SVG}`,
      );
    }
  }
  let records: MetricRecord[] = [];
  if (options.metricsPath !== undefined) {
    try {
      records = await readMetrics(options.metricsPath);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }

  const written: string[] = [];
  const md: string[] = [
    `# ${oneLine(options.title)}`,
    "",
    "## Summary",
    "",
    summaryTable(options.summary),
  ];
  const loss = lossChart(records, { title: `${oneLine(options.title)}: loss` });
  md.push("", "## Loss", "");
  if (loss) {
    await writeTextFileAtomic(join(runDir, LOSS_SVG), loss);
    written.push(join(runDir, LOSS_SVG));
    md.push(`![Loss against step for each split](${LOSS_SVG})`);
  } else {
    // A stale chart from an earlier run in this folder would contradict the report.
    await Deno.remove(join(runDir, LOSS_SVG)).catch(() => {});
    md.push("_No losses recorded._");
  }
  for (const section of options.sections ?? []) {
    md.push("", `## ${oneLine(section.title)}`);
    if (section.markdown) md.push("", section.markdown.trimEnd());
    if (section.chart) {
      await writeTextFileAtomic(join(runDir, section.chart.file), section.chart.svg);
      written.push(join(runDir, section.chart.file));
      md.push("", `![${oneLine(section.chart.alt ?? section.title)}](${section.chart.file})`);
    }
  }
  await writeTextFileAtomic(join(runDir, "report.md"), md.join("\n") + "\n");
  written.push(join(runDir, "report.md"));
  return written;
}

/**
 * The loss curves of a run: one series per split (and per stage, when records carry a `stage`
 * and there are several), train as a thin line, validation with markers, test as points.
 *
 * @param records Metric records, in file order.
 * @param options Chart title.
 * @returns The SVG, or undefined when no record has a loss.
 */
export function lossChart(
  records: readonly MetricRecord[],
  options: { title?: string } = {},
): string | undefined {
  const stages = new Set(records.map((r) => (typeof r.stage === "string" ? r.stage : "")));
  const groups = new Map<string, { stage: string; split: Split; points: MetricRecord[] }>();
  for (const r of records) {
    if (typeof r.loss !== "number") continue;
    const stage = typeof r.stage === "string" ? r.stage : "";
    const key = `${stage}\u0000${r.split}`;
    if (!groups.has(key)) groups.set(key, { stage, split: r.split, points: [] });
    groups.get(key)!.points.push(r);
  }
  if (groups.size === 0) return undefined;
  const ordered = [...groups.values()].sort((a, b) =>
    SPLIT_ORDER.indexOf(a.split) - SPLIT_ORDER.indexOf(b.split)
  );
  const series: ChartSeries[] = ordered.map((g) => ({
    name: `${stages.size > 1 && g.stage ? `${g.stage} ` : ""}${g.split} loss`,
    points: g.points.map((r) => ({ x: r.step, y: r.loss })),
    style: g.split === "train" ? "line" : g.split === "validation" ? "line+markers" : "scatter",
    width: g.split === "train" ? 1.25 : 1.75,
  }));
  return lineChart(series, { title: options.title, xLabel: "step", yLabel: "loss" });
}

/**
 * The summary as one markdown table: a row per figure, the stage named on its first row.
 *
 * @param summary Final figures keyed by stage id.
 * @returns The table, or a note when there are no figures.
 */
export function summaryTable(summary: Summary): string {
  const rows: string[] = [];
  for (const [stage, figures] of Object.entries(summary)) {
    Object.entries(figures).forEach(([key, value], i) => {
      rows.push(`| ${i === 0 ? cell(stage) : ""} | ${cell(key)} | ${cell(formatValue(value))} |`);
    });
  }
  if (rows.length === 0) return "_No figures recorded._";
  return ["| stage | figure | value |", "| --- | --- | ---: |", ...rows].join("\n");
}

/** Integers with thousands separators, other numbers to five significant digits. */
function formatValue(value: unknown): string {
  if (typeof value === "number") {
    if (Number.isInteger(value)) return value.toLocaleString("en-US");
    return Number.isFinite(value) ? String(Number(value.toPrecision(5))) : String(value);
  }
  if (value === null || value === undefined) return "—";
  if (typeof value === "string") return value;
  return `\`${JSON.stringify(value)}\``;
}

function cell(text: string): string {
  return oneLine(text).replace(/\|/g, "\\|");
}

function oneLine(text: string): string {
  return text.replace(/\s*[\r\n]+\s*/g, " ");
}
