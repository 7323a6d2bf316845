/**
 * The outputs of a pipeline, checked before anything is written: the run folder and every path a
 * stage writes (`save.path`, `merge.out`, `export_peft.out`) must not be, lie inside or contain
 * an input (the model folder, the data files; the pipeline file may sit in the run folder), and
 * must be of the kind the stage writes (a file, a folder).
 *
 * @module
 */

import { isAbsolute, join } from "node:path";
import { SHARD_INDEX } from "../adapters/merge.ts";
import {
  checkOutputFile,
  checkOutputFolder,
  checkOutputPath,
  type InputPath,
  OutputPathError,
} from "../formats/folder.ts";
import { pipelineError } from "./parse.ts";
import { camelCase, type Pipeline, stageSchema } from "./schema.ts";

interface Output {
  /** YAML path of the key (`out`, `stages[7].out`). */
  key: string;
  /** The value as written. */
  value: string;
  /** The path it resolves to. */
  path: string;
  /** Files the output folder must not hold. */
  shadowedBy?: string[];
  folder: boolean;
}

/** Every path the pipeline reads, resolved against `baseDir`. */
export function pipelineInputs(pipeline: Pipeline, baseDir = pipeline.baseDir): InputPath[] {
  const inputs: InputPath[] = [];
  if (pipeline.file !== "<pipeline>") {
    inputs.push({ path: pipeline.file, what: "pipeline file", mayBeInsideOutput: true });
  }
  for (const stage of pipeline.stages) {
    for (const field of stageSchema(stage.kind)!.fields) {
      const value = (stage as unknown as Record<string, unknown>)[camelCase(field.key)];
      // A mapping's paths (`choices.test`, `choices.dev`: multiple-choice items) are inputs too.
      if (field.type.type === "mapping" && value && typeof value === "object") {
        for (const inner of field.type.fields) {
          const path = (value as Record<string, unknown>)[camelCase(inner.key)];
          if (inner.type.type !== "path" || inner.type.is === "output") continue;
          if (typeof path !== "string") continue;
          const what = `${field.key}.${inner.key} items`;
          inputs.push({ path: isAbsolute(path) ? path : join(baseDir, path), what });
        }
        continue;
      }
      if (field.type.type !== "path" || field.type.is === "output") continue;
      if (typeof value !== "string") continue;
      const what = field.type.is === "folder"
        ? `${field.key} folder`
        : stage.kind === "data"
        ? "data file"
        : `${field.key} file`;
      inputs.push({ path: isAbsolute(value) ? value : join(baseDir, value), what });
    }
  }
  return inputs;
}

function pipelineOutputs(pipeline: Pipeline): Output[] {
  const outputs: Output[] = [
    { key: "out", value: pipeline.out, path: pipeline.out, folder: true },
  ];
  for (const [i, stage] of pipeline.stages.entries()) {
    for (const field of stageSchema(stage.kind)!.fields) {
      if (field.type.type !== "path" || field.type.is !== "output") continue;
      const value = (stage as unknown as Record<string, unknown>)[camelCase(field.key)];
      if (typeof value !== "string") continue;
      outputs.push({
        key: `stages[${i}].${field.key}`,
        value,
        path: isAbsolute(value) ? value : join(pipeline.out, value),
        // `save` writes one file; `merge` and `export_peft` write folders.
        folder: stage.kind !== "save",
        shadowedBy: stage.kind === "merge" ? [SHARD_INDEX] : undefined,
      });
    }
  }
  return outputs;
}

/**
 * Refuses, before a run writes anything, an output that is, lies inside or contains an input, a
 * folder output that exists as a file (or, for `merge`, holds a sharded checkpoint's index), or a
 * file output that exists as a folder.
 *
 * @param pipeline A parsed pipeline.
 * @param baseDir The folder relative input paths resolve against.
 * @throws {PipelineError} For the first refused output, with its YAML path and position.
 */
export async function checkOutputs(pipeline: Pipeline, baseDir = pipeline.baseDir): Promise<void> {
  const inputs = pipelineInputs(pipeline, baseDir);
  for (const output of pipelineOutputs(pipeline)) {
    try {
      await checkOutputPath(output.path, inputs);
      if (output.folder) await checkOutputFolder(output.path, { shadowedBy: output.shadowedBy });
      else await checkOutputFile(output.path);
    } catch (e) {
      if (!(e instanceof OutputPathError)) throw e;
      const shown = output.path === output.value ? undefined : `resolved to "${output.path}"`;
      throw pipelineError(
        pipeline,
        output.key,
        `${output.key}: cannot write ${JSON.stringify(output.value)}: ${e.reason}`,
        shown,
      );
    }
  }
}
