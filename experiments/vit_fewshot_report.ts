/**
 * The ViT few-shot experiment's outputs: one row a (shots, method) cell with the mean ± std test
 * accuracy over its runs, the trainable parameters and adapter bytes; a sentence a shot count on
 * the paper's ordering (NOLA-MLP about LoRA r = 4, both above full fine-tuning, with far fewer
 * parameters); and a chart of accuracy against trainable parameters with error bars.
 * `results.json`, `results.md`, `accuracy.svg`, written atomically.
 *
 * @module
 */

import { join } from "node:path";
import { writeTextFileAtomic } from "../formats/atomic.ts";
import { type ChartSeries, lineChart } from "../train/svg.ts";
import { formatStat, pooledStd, type Stat, stat } from "./stats.ts";
import { FEWSHOT_METHODS, type FewShotOptions } from "./vit_fewshot_options.ts";

/** One finished run. */
export interface FewShotRun {
  method: string;
  shots: number;
  samplingSeed: number;
  seed: number;
  figures: {
    /** Test accuracy after training, percent. */
    accuracy: number;
    /** Numbers trained (the head's included). */
    trainable: number;
    /** Of those, the new head's. */
    headParameters: number;
    /** The adapter file (full fine-tuning: the model's f32 weights). */
    adapterBytes: number;
    finalTrainLoss: number;
  };
}

/** One (shots, method) cell of the table. */
export interface FewShotRow {
  shots: number;
  method: string;
  label: string;
  trainable: number;
  headParameters: number;
  adapterBytes: number;
  accuracy: Stat;
}

/**
 * The table's rows, in the order of the shot counts and methods given.
 *
 * @param runs Finished runs.
 * @param options The shot counts and methods.
 * @returns One row a cell with at least one run.
 */
export function fewShotRows(
  runs: readonly FewShotRun[],
  options: Pick<FewShotOptions, "shots" | "methods">,
): FewShotRow[] {
  const rows: FewShotRow[] = [];
  for (const shots of options.shots) {
    for (const m of options.methods) {
      const cell = runs.filter((r) => r.shots === shots && r.method === m.id);
      if (cell.length === 0) continue;
      rows.push({
        shots,
        method: m.id,
        label: m.label,
        trainable: cell[0].figures.trainable,
        headParameters: cell[0].figures.headParameters,
        adapterBytes: Math.max(...cell.map((r) => r.figures.adapterBytes)),
        accuracy: stat(cell.map((r) => r.figures.accuracy)),
      });
    }
  }
  return rows;
}

/**
 * A sentence on the paper's ordering at one shot count: NOLA-MLP (the smaller size present)
 * within one pooled standard deviation of LoRA r = 4 or above it, and above full fine-tuning.
 *
 * @param rows The rows of one shot count.
 * @returns The sentence, or undefined when a method it needs is missing.
 */
export function orderingClaim(rows: readonly FewShotRow[]): string | undefined {
  const find = (id: string) => rows.find((r) => r.method === id);
  const nola = find("nola-k64") ?? find("nola-k256");
  const lora = find("lora-r4");
  const full = find("full");
  if (!nola || !lora || !full) return undefined;
  const pct = (s: Stat) => `${s.mean.toFixed(1)}%`;
  const spread = pooledStd(nola.accuracy, lora.accuracy);
  const nearLora = nola.accuracy.mean >= lora.accuracy.mean - spread;
  const aboveFull = nola.accuracy.mean > full.accuracy.mean;
  const count = (r: FewShotRow) => (r.trainable - r.headParameters).toLocaleString("en-US");
  const holds = nearLora && aboveFull ? "holds" : "does not hold";
  return `${nola.shots}-shot: ${nola.label} (${count(nola)} adapter numbers) ${
    pct(nola.accuracy)
  }, LoRA r=4 (${count(lora)}) ${pct(lora.accuracy)}, full fine-tuning ${pct(full.accuracy)}: ` +
    `the paper's ordering ${holds} here (NOLA-MLP ${
      nearLora ? "within" : "below"
    } one pooled std, ${spread.toFixed(1)} points, of LoRA r=4${nearLora ? " or above it" : ""}; ${
      aboveFull ? "above" : "not above"
    } full fine-tuning).`;
}

/** Accuracy against trainable parameters (log x), one series a shot count, bars ± one std. */
export function fewShotChart(rows: readonly FewShotRow[], steps: number): string {
  const shots = [...new Set(rows.map((r) => r.shots))];
  const series: ChartSeries[] = shots.map((k) => ({
    name: `${k}-shot`,
    style: "scatter",
    points: rows.filter((r) => r.shots === k).map((r) => ({
      x: r.trainable,
      y: r.accuracy.mean,
      yError: r.accuracy.std,
      label: r.method,
    })),
  }));
  return lineChart(series, {
    title: `Few-shot test accuracy against trainable parameters (${steps} steps; mean ± std)`,
    xLabel: "trainable parameters (head included)",
    yLabel: "test accuracy %",
    xLog: true,
  });
}

function markdown(
  options: FewShotOptions,
  command: string,
  rows: readonly FewShotRow[],
  runs: number,
): string {
  const n = (x: number) => x.toLocaleString("en-US");
  const table = [
    "| shots | method | trainable (head) | adapter bytes | lr | runs | test accuracy % |",
    "|---:|---|---:|---:|---:|---:|---:|",
    ...rows.map((r) => {
      const lr = FEWSHOT_METHODS.find((m) => m.id === r.method)?.lr;
      return `| ${r.shots} | ${r.label} | ${n(r.trainable)} (${n(r.headParameters)}) | ${
        n(r.adapterBytes)
      } | ${lr} | ${r.accuracy.n} | ${formatStat(r.accuracy, 1)} |`;
    }),
  ];
  const claims = options.shots.map((k) => orderingClaim(rows.filter((r) => r.shots === k)))
    .filter((c): c is string => c !== undefined);
  return [
    "# ViT few-shot: head, full fine-tuning, LoRA and NOLA-MLP",
    "",
    "```sh",
    command,
    "```",
    "",
    `- Base: \`${options.base}\`; data: \`${options.data}\`, Fashion-MNIST classes ` +
    `${options.classIds.join(", ")} (unseen in pretraining); test: at most ` +
    `${options.evalPerClass} images a class.`,
    `- ${options.steps} AdamW steps a run, batch min(${options.batchSize}, shots x classes), ` +
    "linear schedule with 10% warmup, label smoothing 0.1, horizontal flips; a new head " +
    "(normal(0, 0.02)) trained in every method; learning rates not tuned (one a kind).",
    `- Runs a cell: ${options.samplingSeeds} sampling seeds x ${options.initSeeds} init seeds; ` +
    `${runs} runs finished. Adapter bytes: the saved adapter file (head included); full ` +
    "fine-tuning: the model's f32 weights.",
    "",
    ...table,
    "",
    ...claims.map((c) => `- ${c}`),
    "",
    "![accuracy against trainable parameters](accuracy.svg)",
    "",
  ].join("\n");
}

/**
 * Writes `results.json`, `results.md` and `accuracy.svg` under `out`.
 *
 * @param out The experiment's folder.
 * @param data The options, the command and the finished runs.
 * @returns Resolves once the files are in place.
 */
export async function writeFewShotResults(
  out: string,
  data: { options: FewShotOptions; command: string; runs: readonly FewShotRun[] },
): Promise<void> {
  const rows = fewShotRows(data.runs, data.options);
  await writeTextFileAtomic(
    join(out, "results.json"),
    JSON.stringify({ command: data.command, rows, runs: data.runs }, null, 2) + "\n",
  );
  await writeTextFileAtomic(
    join(out, "results.md"),
    markdown(data.options, data.command, rows, data.runs.length),
  );
  await writeTextFileAtomic(join(out, "accuracy.svg"), fewShotChart(rows, data.options.steps));
}
