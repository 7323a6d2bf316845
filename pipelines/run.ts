/**
 * Runs a pipeline file: its stages in order over one shared state, each from the one table
 * below, then a before/after table, `summary.json` and `report.md` in the run folder.
 *
 * @module
 */

import { Gpu } from "../kernels/gpu.ts";
import { checkpointDir, CheckpointError, findResumeCheckpoint } from "../train/checkpoint.ts";
import { Interrupt, resumeHint } from "../train/interrupt.ts";
import { writeReport } from "../train/report.ts";
import { RunLog } from "../train/run_log.ts";
import { checkOutputs } from "./outputs.ts";
import { checkFiles, loadPipeline } from "./parse.ts";
import type { Stage, StageKind } from "./schema.ts";
import { data } from "./stages_data.ts";
import { evaluate, generate } from "./stages_evaluate.ts";
import { attach, exportPeftStage, load, merge, save } from "./stages_model.ts";
import { quantize, trainStage } from "./stages_train.ts";
import type { EvaluationRow, RunState, StageRunner } from "./state.ts";

/** Every stage kind and what runs it. */
const STAGES: { [K in StageKind]: StageRunner<Extract<Stage, { kind: K }>> } = {
  load,
  data,
  attach,
  train: trainStage,
  quantize,
  evaluate,
  save,
  generate,
  merge,
  export_peft: exportPeftStage,
};

/** Options of {@link runPipeline}. */
export interface RunPipelineOptions {
  /** `--set` overrides (`stages.train.lr=1e-3`). */
  overrides?: string[];
  /** Continue the train stage from the run's newest checkpoint. */
  resume?: boolean;
  /** The command that ran this pipeline, for the resume hint. */
  command?: string;
  /** Prints progress lines; default stderr. */
  say?: (line: string) => void;
  /** Run on this device (left open) instead of acquiring one: runs in a row share compiled kernels. */
  gpu?: Gpu;
  /**
   * A budget for the run's GPU memory, in bytes: the load stage estimates the training run's
   * memory before allocating and refuses, in one line, an estimate over it.
   */
  maxMemory?: number;
}

/** How a run ended. */
export interface PipelineResult {
  /** The run folder. */
  dir: string;
  /** True when the train stage was interrupted (SIGINT) and the remaining stages were skipped. */
  interrupted: boolean;
  /** The figures of every `evaluate` stage, in order. */
  evaluations: EvaluationRow[];
}

/**
 * Runs the pipeline file at `path`.
 *
 * @example The default pipeline
 * ```ts
 * import { runPipeline } from "./pipelines/run.ts";
 * await runPipeline("pipelines/default.yaml");
 * ```
 */
export async function runPipeline(
  path: string,
  options: RunPipelineOptions = {},
): Promise<PipelineResult> {
  const say = options.say ?? ((line: string) => console.error(line));
  const pipeline = await loadPipeline(path, { overrides: options.overrides });
  await checkFiles(pipeline);
  await checkOutputs(pipeline);
  const dir = pipeline.out;
  const resume = options.resume ?? false;
  // Chosen once, before the log is cut back to it: the newest checkpoint that verifies.
  const resumeFrom = resume ? await findResumeCheckpoint(dir, { say }) : undefined;
  if (resume && !resumeFrom) {
    throw new CheckpointError(
      `Cannot resume "${pipeline.name}": no checkpoint in ${checkpointDir(dir)}`,
      { file: checkpointDir(dir) },
    );
  }
  const resumeStep = resumeFrom?.data.step;
  using acquired = options.gpu ? undefined : await Gpu.acquire();
  const gpu = options.gpu ?? acquired!;
  using log = await RunLog.open(dir, { resumeStep });
  using interrupt = new Interrupt();
  const state: RunState = {
    pipeline,
    gpu,
    dir,
    log,
    resume,
    resumeFrom,
    signal: interrupt.signal,
    index: 0,
    step: 0,
    say,
    evaluations: [],
    maxMemory: options.maxMemory,
  };
  say(
    `${pipeline.name}: ${pipeline.stages.length} stages, run folder ${dir}` +
      (resume ? ` (resuming from step ${resumeStep})` : "") + `\nadapter: ${gpu.adapterName}`,
  );
  try {
    for (const [index, stage] of pipeline.stages.entries()) {
      state.index = index;
      say(`\n== ${stage.id} (${stage.kind}) ==`);
      const start = performance.now();
      await (STAGES[stage.kind] as StageRunner)(stage, state);
      if (state.interrupted) break;
      say(`   ${((performance.now() - start) / 1000).toFixed(1)} s`);
    }
  } finally {
    state.adapters?.[Symbol.dispose]();
    state.model?.[Symbol.dispose]();
  }
  if (state.interrupted) {
    say(resumeHint({
      step: state.interrupted.step,
      checkpoint: state.interrupted.checkpoint,
      command: options.command ?? `deno task finetune ${path}`,
    }));
    return { dir, interrupted: true, evaluations: state.evaluations };
  }
  const table = evaluationTable(state.evaluations);
  if (table) say(`\n${table}`);
  for (const line of adapterLines(log.summary)) say(line);
  const written = await writeReport(dir, {
    title: pipeline.name,
    summary: log.summary,
    metricsPath: log.metricsPath,
    sections: state.reportSections,
  });
  say(`\nwrote ${[log.summaryPath, ...written].join(", ")}`);
  return { dir, interrupted: false, evaluations: state.evaluations };
}

/** What the adapter costs: trainable parameters against LoRA r = 1, and its file size. */
function adapterLines(summary: Record<string, Record<string, unknown>>): string[] {
  const lines: string[] = [];
  const n = (x: unknown) => Number(x).toLocaleString("en-US");
  for (const figures of Object.values(summary)) {
    if (figures.trainable_parameters !== undefined && figures.lora_r1_parameters !== undefined) {
      lines.push(
        `trainable parameters: ${n(figures.trainable_parameters)} ` +
          `(LoRA r=1 on the same modules: ${n(figures.lora_r1_parameters)})`,
      );
    }
    if (figures.bytes !== undefined && figures.path !== undefined) {
      lines.push(
        `adapter file: ${figures.path}, ${n(figures.bytes)} bytes` +
          (Number(figures.quant_bits) < 32 ? ` (${figures.quant_bits}-bit coefficients)` : ""),
      );
    }
  }
  return lines.length > 0 ? ["", ...lines] : [];
}

/** The evaluate stages side by side: one row each, one column per figure. */
export function evaluationTable(rows: readonly EvaluationRow[]): string {
  if (rows.length === 0) return "";
  const keys = [...new Set(rows.flatMap((r) => Object.keys(r.figures)))];
  const header = ["stage", "split", ...keys];
  const cells = rows.map((r) => [
    r.stage,
    r.split,
    ...keys.map((k) => r.figures[k] === undefined ? "-" : r.figures[k].toFixed(4)),
  ]);
  const widths = header.map((h, c) => Math.max(h.length, ...cells.map((row) => row[c].length)));
  const line = (row: string[]) =>
    row.map((cell, c) => c < 2 ? cell.padEnd(widths[c]) : cell.padStart(widths[c])).join("  ");
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...cells.map(line)].join("\n");
}
