/**
 * What the stages of one pipeline run share: the device, the run folder and log, and what each
 * stage has produced so far (model, tokenizer, data, adapters, figures).
 *
 * @module
 */

import { isAbsolute, join } from "node:path";
import type { AdapterSet } from "../adapters/attach.ts";
import type { QuantOptions } from "../formats/quantize.ts";
import type { Row } from "../data/examples.ts";
import type { ImageData } from "../data/images/dataset.ts";
import type { GenerationExample } from "../eval/evaluate.ts";
import type { Gpu } from "../kernels/gpu.ts";
import type { Model } from "../models/model.ts";
import type { Tokenizer } from "../models/tokenizer.ts";
import type { ResumePoint } from "../train/checkpoint.ts";
import type { RunLog } from "../train/run_log.ts";
import type { ReportSection } from "../train/report.ts";
import { pipelineError } from "./parse.ts";
import type { Pipeline, SplitName, Stage } from "./schema.ts";

/** One split of the data stage: training rows and, for generation, prompts with references. */
export interface SplitData {
  rows: Row[];
  examples: GenerationExample[];
}

/** A row of the before/after table. */
export interface EvaluationRow {
  /** The `evaluate` stage's id. */
  stage: string;
  /** The split it evaluated, or `choices` for the multiple-choice items of the stage. */
  split: SplitName | "choices";
  /** Each computed metric by name (`loss`, `perplexity`, `bleu`, ...). */
  figures: Record<string, number>;
}

/** The run's shared state; stages read what earlier stages left and add their own. */
export interface RunState {
  pipeline: Pipeline;
  gpu: Gpu;
  /** The run folder (`out`). */
  dir: string;
  log: RunLog;
  /** Continue the train stage from its newest checkpoint. */
  resume: boolean;
  /** With `resume`: the checkpoint it continues from, chosen and verified before the run. */
  resumeFrom?: ResumePoint;
  /** Raised by Ctrl-C: the train stage stops at the next step with a checkpoint. */
  signal: AbortSignal;
  /** Where in `pipeline.stages` the run is. */
  index: number;
  /** Optimizer steps trained so far (metrics are logged against it). */
  step: number;
  /** Prints a line for a person (stderr). */
  say: (line: string) => void;
  model?: Model;
  modelName?: string;
  modelFolder?: string;
  tokenizer?: Tokenizer;
  /** Token rows of `T` positions; with `format: images`, `images` (and no rows). */
  data?: { T: number; splits: Record<SplitName, SplitData>; images?: ImageData };
  adapters?: AdapterSet;
  /** Quantization the coefficients are on (from QAT or a quantize stage), for saving. */
  quant?: QuantOptions;
  evaluations: EvaluationRow[];
  /** Sections stages add to `report.md` (the evaluate stage's confusion matrices). */
  reportSections?: ReportSection[];
  /** Set when the train stage was interrupted: the remaining stages are skipped. */
  interrupted?: { step: number; checkpoint?: string };
  /**
   * A budget for the run's GPU memory, in bytes (`--max-memory`): the load stage refuses a
   * training estimate over it.
   */
  maxMemory?: number;
}

/** A stage's implementation: reads and extends the state. */
export type StageRunner<S extends Stage = Stage> = (stage: S, state: RunState) => Promise<void>;

/** The piece of state a stage needs, or a pipeline error pointing at the stage. */
export function need<K extends "model" | "tokenizer" | "data" | "adapters">(
  state: RunState,
  key: K,
): NonNullable<RunState[K]> {
  const value = state[key];
  if (value === undefined || value === null) {
    const stage = state.pipeline.stages[state.index];
    const from = { model: "load", tokenizer: "load", data: "data", adapters: "attach" }[key];
    throw stageError(
      state,
      undefined,
      `Stage "${stage.id}" needs the ${key} of an earlier "${from}" stage`,
    );
  }
  return value as NonNullable<RunState[K]>;
}

/**
 * An error about the current stage (or one of its keys), in the parser's format: the file, the
 * YAML path, the message and the position.
 */
export function stageError(
  state: RunState,
  key: string | undefined,
  text: string,
  hint?: string,
): Error {
  const path = `stages[${state.index}]${key ? `.${key}` : ""}`;
  return pipelineError(state.pipeline, path, `${path}: ${text}`, hint);
}

/** A path given in the pipeline, resolved against the pipeline file's folder. */
export function inputPath(state: RunState, path: string): string {
  return isAbsolute(path) ? path : join(state.pipeline.baseDir, path);
}

/** An output path of a stage, inside the run folder. */
export function outputPath(state: RunState, path: string): string {
  return isAbsolute(path) ? path : join(state.dir, path);
}
