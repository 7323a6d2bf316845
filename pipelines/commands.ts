/**
 * The one-shot CLI commands outside pipelines: generate, merge, export-peft.
 *
 * @module
 */

import { basename } from "node:path";
import { loadAdapter } from "../adapters/adapter_file.ts";
import { mergeAdapters, writeMergedFolder } from "../adapters/merge.ts";
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

/** Streams a continuation of the prompt to stdout. */
export async function generateCommand(options: GenerateCommandOptions): Promise<void> {
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

/** Merges an adapter into its base and writes an HF folder, or exports it for PEFT. */
export async function exportCommand(
  kind: "merge" | "export-peft",
  options: { model: string; adapter: string; out: string; baseModelName?: string },
): Promise<void> {
  using gpu = await Gpu.acquire();
  using model = await loadModel(gpu, options.model);
  using _set = await loadAdapter(model, options.adapter, { maxRows: 1 });
  if (kind === "merge") {
    mergeAdapters(model);
    await writeMergedFolder(model, options.model, options.out);
    console.error(`wrote merged model folder ${options.out}`);
  } else {
    const baseModelName = options.baseModelName ?? basename(options.model);
    await exportPeft(model, options.out, { baseModelName });
    console.error(`wrote PEFT LoRA folder ${options.out}`);
  }
}
