/**
 * What the NOLA-vs-LoRA experiment concludes from its runs: the learning-rate picks of the sweep,
 * the table (mean ± sample standard deviation over seeds) and the paper's two claims judged from
 * the numbers.
 *
 * @module
 */

import { type Method, parseMethod, QUANT_BITS } from "./nola_vs_lora_options.ts";
import { formatStat, pooledStd, type Stat, stat } from "./stats.ts";

/** A run whose loss or gradient stopped being finite: its figures are not counted. */
export interface Diverged {
  /** The trainer's message. */
  diverged: string;
}

/** What a sweep run measured. */
export interface SweepFigures {
  /** Loss over the completion tokens of the whole validation split, after training. */
  valLoss: number;
  /** The last training loss read back. */
  finalTrainLoss: number;
  trainableParameters: number;
}

/** The scores of one adapter (as trained, or with its coefficients quantized). */
export interface EvalFigures {
  /** Validation loss (completion tokens, whole split). */
  valLoss: number;
  /** BLEU on the test split (0-100). */
  bleu: number;
  /** ROUGE-L F on the test split (0-100). */
  rougeL: number;
  /** Slot-error rate, percent, where the evaluate stage has it. */
  slotError?: number;
  /** Its missing part, percent. */
  slotMissing?: number;
  /** Its hallucinated part, percent. */
  slotHallucinated?: number;
  /** Size of the adapter file. */
  adapterBytes: number;
}

/** What a final run measured; `ptq` when its coefficients were also scored at 4 bits. */
export interface FinalFigures extends EvalFigures {
  trainableParameters: number;
  ptq?: EvalFigures;
}

/** One run of the sweep. */
export interface SweepRun {
  /** The method's id. */
  method: string;
  lr: number;
  seed: number;
  steps: number;
  figures: SweepFigures | Diverged;
  seconds: number;
  /** The run folder. */
  folder: string;
}

/** One final run (a method at its picked rate, one seed). */
export interface FinalRun {
  method: string;
  lr: number;
  seed: number;
  steps: number;
  figures: FinalFigures | Diverged;
  seconds: number;
  folder: string;
}

/** The rate a method's sweep picked. */
export interface Pick {
  lr: number;
  /** Its validation loss (NaN when every rate diverged). */
  valLoss: number;
  /** The pick is the lowest or highest rate tried (of three or more): the grid may be too narrow. */
  edge: boolean;
}

/** A row of the table. */
export interface Row {
  method: Method;
  /** The learning rate its runs trained at. */
  lr?: number;
  params?: number;
  bytes?: number;
  /** Runs counted (not diverged). */
  n: number;
  /** Runs that diverged. */
  diverged: number;
  valLoss: Stat;
  bleu: Stat;
  rougeL: Stat;
  slotError: Stat;
  slotMissing: Stat;
  slotHallucinated: Stat;
}

/** A claim of the paper, judged from the rows. */
export interface Claim {
  claim: string;
  /** The figure it was judged on. */
  metric: string;
  verdict: "holds" | "does not hold" | "cannot be judged";
  /** The numbers behind the verdict. */
  detail: string;
}

/** The first claim's words. */
export const FEWER_PARAMS = "NOLA matches LoRA r=1 with fewer parameters";
/** The second claim's words. */
export const QUANT_COST = `${QUANT_BITS}-bit coefficients cost under 1% of the metric`;

/**
 * Each method's pick: the rate of lowest validation loss in its sweep (the smaller rate on a
 * tie); diverged runs are never picked.
 *
 * @param sweep The sweep's runs.
 * @returns The pick by method id.
 */
export function pickLearningRates(sweep: readonly SweepRun[]): Map<string, Pick> {
  const picks = new Map<string, Pick>();
  for (const id of new Set(sweep.map((s) => s.method))) {
    const runs = sweep.filter((s) => s.method === id).sort((a, b) => a.lr - b.lr);
    let best = -1;
    runs.forEach((run, i) => {
      if (!finished(run.figures) || !Number.isFinite(run.figures.valLoss)) return;
      const current = runs[best]?.figures as SweepFigures | undefined;
      if (best < 0 || run.figures.valLoss < current!.valLoss) best = i;
    });
    picks.set(id, {
      // Every rate diverged: the smallest is the least bad guess, and the table says so.
      lr: runs[Math.max(best, 0)].lr,
      valLoss: best < 0 ? NaN : (runs[best].figures as SweepFigures).valLoss,
      edge: runs.length >= 3 && (best === 0 || best === runs.length - 1),
    });
  }
  return picks;
}

/**
 * The table's rows, one per method in the order given; a PTQ row takes the quantized scores of
 * the same-k NOLA runs.
 *
 * @param methods The rows wanted.
 * @param finals The final runs done so far.
 * @returns The rows, with mean and sample standard deviation over the runs that did not diverge.
 */
export function tableRows(methods: readonly Method[], finals: readonly FinalRun[]): Row[] {
  return methods.map((method) => {
    const source = method.quant === "ptq" ? parseMethod(`nola-k${method.k}`).id : method.id;
    const runs = finals.filter((f) => f.method === source);
    const scores: EvalFigures[] = [];
    let diverged = 0;
    let params: number | undefined;
    for (const run of runs) {
      if (!finished(run.figures)) {
        diverged++;
        continue;
      }
      params = run.figures.trainableParameters;
      const figures = method.quant === "ptq" ? run.figures.ptq : run.figures;
      if (figures) scores.push(figures);
    }
    const of = (key: keyof EvalFigures) =>
      stat(scores.map((s) => s[key]).filter((v): v is number => typeof v === "number"));
    return {
      method,
      lr: runs[0]?.lr,
      params,
      bytes: scores[0]?.adapterBytes,
      n: scores.length,
      diverged,
      valLoss: of("valLoss"),
      bleu: of("bleu"),
      rougeL: of("rougeL"),
      slotError: of("slotError"),
      slotMissing: of("slotMissing"),
      slotHallucinated: of("slotHallucinated"),
    };
  });
}

/**
 * The paper's claim that NOLA matches LoRA r = 1 with fewer parameters, judged on BLEU and on
 * validation loss: it holds when some NOLA row with fewer trainable parameters than LoRA r = 1 is
 * better, or worse by at most one pooled standard deviation of the two rows. The NOLA row cited
 * is the smallest that matches, else the closest.
 *
 * @param rows The table.
 * @returns One claim per metric.
 */
export function judgeFewerParams(rows: readonly Row[]): Claim[] {
  const lora = rows.find((r) => r.method.kind === "lora" && r.method.r === 1 && r.n > 0);
  const metrics = [
    { metric: "BLEU", key: "bleu", higherIsBetter: true, digits: 2 },
    { metric: "validation loss", key: "valLoss", higherIsBetter: false, digits: 4 },
  ] as const;
  return metrics.map(({ metric, key, higherIsBetter, digits }): Claim => {
    const claim = { claim: FEWER_PARAMS, metric };
    if (!lora || lora.params === undefined) {
      return { ...claim, verdict: "cannot be judged", detail: "no LoRA r=1 runs" };
    }
    if (higherIsBetter && !(lora[key].mean > 0)) {
      return {
        ...claim,
        verdict: "cannot be judged",
        detail: `LoRA r=1's ${metric} is ${lora[key].mean.toFixed(digits)}: nothing to match`,
      };
    }
    const smaller = rows.filter((r) =>
      r.method.kind === "nola" && r.n > 0 && r.params !== undefined && r.params < lora.params!
    );
    if (smaller.length === 0) {
      return {
        ...claim,
        verdict: "cannot be judged",
        detail: `no NOLA row has fewer trainable parameters than LoRA r=1's ` +
          `${count(lora.params)} (add e.g. nola-k64)`,
      };
    }
    const judged = smaller.map((row) => {
      // How much worse NOLA is, in the metric's units (negative: better).
      const gap = (higherIsBetter ? 1 : -1) * (lora[key].mean - row[key].mean);
      const pooled = pooledStd(row[key], lora[key]);
      return { row, gap, pooled, matches: gap <= pooled };
    });
    // The fewest parameters first, then full precision (the plain method), then the closest.
    const quantized = (j: { row: Row }) => (j.row.method.quant ? 1 : 0);
    const matching = judged.filter((j) => j.matches)
      .sort((a, b) =>
        a.row.params! - b.row.params! || quantized(a) - quantized(b) || a.gap - b.gap
      );
    const cited = matching[0] ?? judged.sort((a, b) => a.gap - b.gap)[0];
    const { row, gap, pooled } = cited;
    const direction = gap === 0
      ? "equal"
      : gap < 0
      ? `${Math.abs(gap).toFixed(digits)} ${higherIsBetter ? "higher" : "lower"} (better)`
      : `${gap.toFixed(digits)} ${higherIsBetter ? "lower" : "higher"} (worse)`;
    const spread = row[key].n > 1 || lora[key].n > 1
      ? `one pooled std is ${pooled.toFixed(digits)}`
      : "one seed each: no spread measured";
    return {
      ...claim,
      verdict: matching.length > 0 ? "holds" : "does not hold",
      detail: `${row.method.label} (${count(row.params!)} trainable parameters against ` +
        `${count(lora.params)}): ${metric} ${formatStat(row[key], digits)} against ` +
        `${formatStat(lora[key], digits)}, ${direction}; ${spread}`,
    };
  });
}

/**
 * The paper's claim that 4-bit coefficients cost under 1% of the metric: for each PTQ or QAT row,
 * the relative drop of mean BLEU from the full-precision NOLA row of the same k (negative: a
 * gain).
 *
 * @param rows The table.
 * @returns One claim per quantized row.
 */
export function judgeQuantCost(rows: readonly Row[]): Claim[] {
  const quantized = rows.filter((r) => r.method.quant !== undefined && r.n > 0);
  if (quantized.length === 0) {
    return [{
      claim: QUANT_COST,
      metric: "BLEU",
      verdict: "cannot be judged",
      detail: "no 4-bit rows (add e.g. nola-k1024-ptq or nola-k1024-qat)",
    }];
  }
  return quantized.map((q): Claim => {
    const claim = { claim: QUANT_COST, metric: `BLEU, ${q.method.label}` };
    const full = rows.find((r) => r.method.id === `nola-k${q.method.k}` && r.n > 0);
    if (!full) {
      return {
        ...claim,
        verdict: "cannot be judged",
        detail: `no full-precision NOLA k=l=${q.method.k} runs to compare with`,
      };
    }
    if (!(full.bleu.mean > 0)) {
      return {
        ...claim,
        verdict: "cannot be judged",
        detail: `full-precision BLEU is ${full.bleu.mean.toFixed(2)}: no relative change`,
      };
    }
    const drop = (full.bleu.mean - q.bleu.mean) / full.bleu.mean * 100;
    const loss = (q.valLoss.mean - full.valLoss.mean) / full.valLoss.mean * 100;
    return {
      ...claim,
      verdict: drop < 1 ? "holds" : "does not hold",
      detail: `BLEU ${formatStat(q.bleu, 2)} against ${formatStat(full.bleu, 2)} in full ` +
        `precision: ${drop >= 0 ? `${drop.toFixed(2)}% lower` : `${(-drop).toFixed(2)}% higher`}` +
        `; validation loss ${loss >= 0 ? "+" : ""}${loss.toFixed(2)}%; adapter ` +
        `${count(q.bytes ?? NaN)} bytes against ${count(full.bytes ?? NaN)}`,
    };
  });
}

/** A count with thousands separators; `-` when not finite. */
export function count(n: number): string {
  return Number.isFinite(n) ? n.toLocaleString("en-US") : "-";
}

/** Whether a run trained to the end (its figures count). */
export function finished<F extends object>(f: F | Diverged): f is F {
  return !("diverged" in f);
}
