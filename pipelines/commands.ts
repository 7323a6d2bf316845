/**
 * The one-shot CLI commands outside pipelines: generate, classify, merge, export-peft.
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
import { join } from "node:path";
import { labelledBatch } from "../data/batches.ts";
import { readImage } from "../data/images/image.ts";
import { preprocessImage, preprocessSettings } from "../data/images/preprocess.ts";
import { type ClassProbability, topClasses } from "../eval/classify.ts";
import { type Model, ModelConfigError } from "../models/model.ts";

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

/** Options of {@link classifyCommand}. */
export interface ClassifyCommandOptions {
  /** The classifier's folder (its preprocessing is read from it). */
  model: string;
  /** An adapter file (with its head, when it carries one). */
  adapter?: string;
  /** Image files (PNG, JPEG). */
  images: string[];
  /** Classes printed an image; default 5 (fewer when the model has fewer). */
  top?: number;
}

/** One image's most probable classes. */
export interface ImageClassification {
  /** The image file. */
  image: string;
  /** Most probable first. */
  classes: ClassProbability[];
}

/**
 * The top classes of image files by an image classifier: each image decoded and preprocessed as
 * the model folder says (`preprocessor_config.json`, or timm's `pretrained_cfg`), classified in
 * batches of 8.
 *
 * @param model A classifier (with its adapters and head in place).
 * @param images Image files.
 * @param options `folder`, the model's folder (its preprocessing), and `top`, classes an image
 * (default 5).
 * @returns One entry an image, in order.
 * @throws {ModelConfigError} If the model is not a classifier.
 * @throws {DataError} If an image cannot be read or decoded, naming the file.
 */
export async function classifyImages(
  model: Model,
  images: readonly string[],
  options: { folder: string; top?: number },
): Promise<ImageClassification[]> {
  const { folder } = options;
  const head = model.classifierHead;
  if (model.task !== "classification" || !head) {
    throw new ModelConfigError(
      `"${folder}" holds a ${model.modelType} model, which predicts tokens: classify needs an ` +
        `image classifier (a ViT)`,
      { file: join(folder, "config.json") },
    );
  }
  const settings = await preprocessSettings(folder);
  const inputShape = [3, settings.height, settings.width];
  const out: ImageClassification[] = [];
  const B = Math.min(8, images.length);
  for (let i = 0; i < images.length; i += B) {
    const files = images.slice(i, i + B);
    const examples = [];
    for (const file of files) {
      examples.push({ input: preprocessImage(await readImage(file), settings), label: 0 });
    }
    const acts = model.forward(labelledBatch(examples, { B, inputShape }));
    const stride = acts.logitsStride;
    const logits = new Float32Array(
      await model.gpu.read(acts.logits.buffer, { byteLength: files.length * stride * 4 }),
    );
    files.forEach((image, b) => {
      const row = logits.subarray(b * stride, b * stride + model.outputs);
      out.push({ image, classes: topClasses(row, { labels: head.labels, k: options.top ?? 5 }) });
    });
  }
  return out;
}

/**
 * Prints the most probable classes of each image: the file, then one line a class with its
 * probability. Every path is checked before the GPU is touched.
 */
export async function classifyCommand(options: ClassifyCommandOptions): Promise<void> {
  if (options.images.length === 0) throw new RangeError("classify needs at least one IMAGE");
  await checkInputs([
    { flag: "--model", path: options.model, folder: true },
    ...(options.adapter ? [{ flag: "--adapter", path: options.adapter, folder: false }] : []),
    ...options.images.map((path) => ({ flag: "IMAGE", path, folder: false })),
  ]);
  using gpu = await Gpu.acquire();
  using model = await loadModel(gpu, options.model);
  const B = Math.min(8, options.images.length);
  using _set = options.adapter
    ? await loadAdapter(model, options.adapter, { maxRows: B * model.maxPositions })
    : undefined;
  const results = await classifyImages(model, options.images, {
    folder: options.model,
    top: options.top,
  });
  for (const { image, classes } of results) {
    console.log(image);
    for (const c of classes) console.log(`  ${c.probability.toFixed(4)}  ${c.label}`);
  }
}
