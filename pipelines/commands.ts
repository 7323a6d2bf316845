/**
 * The one-shot CLI commands outside pipelines: generate, merge, export-peft.
 *
 * @module
 */

import { basename } from "node:path";
import { loadAdapter } from "../adapters/adapter_file.ts";
import { mergeAdapters, SHARD_INDEX, writeMergedFolder } from "../adapters/merge.ts";
import { checkOutputFolder, checkOutputPath } from "../formats/folder.ts";
import { exportPeft } from "../adapters/peft.ts";
import { Gpu } from "../kernels/gpu.ts";
import { generateText } from "../models/generate.ts";
import { loadModel } from "../models/registry.ts";
import { Tokenizer } from "../models/tokenizer.ts";

/** Options of {@link generateCommand}. */
export interface GenerateCommandOptions {
  model: string;
  adapter?: string;
  prompt: string;
  maxNewTokens?: number;
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
}

/**
 * Checks that a command's inputs exist and are of the right kind, before the GPU is touched, so a
 * mistyped path fails at once with one line naming the flag and the path.
 */
async function checkInputs(
  inputs: readonly { flag: string; path: string; folder: boolean }[],
): Promise<void> {
  for (const { flag, path, folder } of inputs) {
    let info: Deno.FileInfo;
    try {
      info = await Deno.stat(path);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory)) throw e;
      throw new Deno.errors.NotFound(`${flag} "${path}": no such ${folder ? "folder" : "file"}`);
    }
    if (info.isDirectory !== folder) {
      const [want, got] = folder ? ["folder", "file"] : ["file", "folder"];
      const Kind = folder ? Deno.errors.NotADirectory : Deno.errors.IsADirectory;
      throw new Kind(`${flag} "${path}" must be a ${want}, it is a ${got}`);
    }
    try {
      if (folder) await Deno.readDir(path)[Symbol.asyncIterator]().next();
      else (await Deno.open(path)).close();
    } catch (e) {
      if (!(e instanceof Deno.errors.PermissionDenied)) throw e;
      throw new Deno.errors.PermissionDenied(
        `${flag} "${path}": cannot read it, permission denied`,
      );
    }
  }
}

/** Streams a continuation of the prompt to stdout. */
export async function generateCommand(options: GenerateCommandOptions): Promise<void> {
  await checkInputs([
    { flag: "--model", path: options.model, folder: true },
    ...(options.adapter ? [{ flag: "--adapter", path: options.adapter, folder: false }] : []),
  ]);
  using gpu = await Gpu.acquire();
  using model = await loadModel(gpu, options.model);
  const tokenizer = await Tokenizer.load(options.model);
  using set = options.adapter
    ? await loadAdapter(model, options.adapter, { maxRows: model.maxPositions })
    : undefined;
  const encoder = new TextEncoder();
  await Deno.stdout.write(encoder.encode(options.prompt));
  await generateText(model, tokenizer, options.prompt, {
    maxNewTokens: options.maxNewTokens ?? 64,
    temperature: options.temperature,
    topK: options.topK,
    topP: options.topP,
    seed: options.seed,
    onText: (piece) => Deno.stdout.writeSync(encoder.encode(piece)),
  });
  await Deno.stdout.write(encoder.encode("\n"));
  void set;
}

/**
 * Merges an adapter into its base and writes an HF folder, or exports it for PEFT. Every check
 * on the paths (inputs present, `--out` neither an input nor inside or around one, not a file)
 * runs before the GPU is acquired and before anything is written; files in an existing `--out`
 * other than those the command writes are left as they are.
 */
export async function exportCommand(
  kind: "merge" | "export-peft",
  options: { model: string; adapter: string; out: string; baseModelName?: string },
): Promise<void> {
  await checkInputs([
    { flag: "--model", path: options.model, folder: true },
    { flag: "--adapter", path: options.adapter, folder: false },
  ]);
  await checkOutputPath(options.out, [
    { path: options.model, what: "model folder" },
    { path: options.adapter, what: "adapter file" },
  ], { label: "--out" });
  await checkOutputFolder(options.out, {
    label: "--out",
    shadowedBy: kind === "merge" ? [SHARD_INDEX] : [],
  });
  using gpu = await Gpu.acquire();
  using model = await loadModel(gpu, options.model);
  using set = await loadAdapter(model, options.adapter, { maxRows: 1 });
  if (kind === "merge") {
    mergeAdapters(model);
    await writeMergedFolder(model, options.model, options.out);
    console.error(`wrote merged model folder ${options.out}`);
  } else {
    const baseModelName = options.baseModelName ?? basename(options.model);
    const head = set.head?.name;
    await exportPeft(model, options.out, { baseModelName, ...(head ? { head } : {}) });
    console.error(`wrote PEFT LoRA folder ${options.out}`);
  }
}
