/**
 * The model families this project runs, keyed by the `model_type` of a Hugging Face
 * `config.json` (and, where a config has none, by its `architectures`). Everything above
 * `models/` resolves a family here, once, and then speaks to the {@link Model} contract.
 *
 * @module
 */

import type { Gpu } from "../kernels/gpu.ts";
import { readConfigJson } from "./config_file.ts";
import { gpt2Family } from "./gpt2_family.ts";
import { llamaFamily } from "./llama_family.ts";
import { vitFamily } from "./vit_family.ts";
import {
  type Model,
  ModelConfigError,
  type ModelFamily,
  type ModelOptions,
  type ModelShape,
} from "./model.ts";

/**
 * A registered family; one that serves several `model_type`s (Llama, Mistral and Qwen2 are one
 * network) lists them all in `modelTypes`, its `modelType` being the first.
 */
export type RegisteredFamily = ModelFamily & {
  readonly modelTypes?: readonly string[];
  /** The `architecture` names of timm `config.json`s (which have no `model_type`) it loads. */
  readonly timmArchitecture?: RegExp;
};

/** Every family, in the order `supported` lists them. */
export const MODEL_FAMILIES: readonly RegisteredFamily[] = [
  gpt2Family as ModelFamily,
  llamaFamily as RegisteredFamily,
  vitFamily as RegisteredFamily,
];

/** The `model_type`s a family resolves. */
function typesOf(family: RegisteredFamily): readonly string[] {
  return family.modelTypes ?? [family.modelType];
}

/** A parsed config and the family it belongs to. */
export interface ModelConfig {
  /** The family. */
  family: ModelFamily;
  /** The family's parsed config (its own type). */
  config: unknown;
  /** Where the config came from, for messages. */
  source: string;
}

function supported(): string {
  return MODEL_FAMILIES.flatMap(typesOf).map((t) => `"${t}"`).join(", ");
}

/**
 * The family of a parsed `config.json`: by `model_type`, else by the first known entry of
 * `architectures`.
 *
 * @param json The parsed config.
 * @param source The file, for messages.
 * @returns The family.
 * @throws {ModelConfigError} On an unknown or missing `model_type`, listing the supported ones.
 */
export function familyOf(json: unknown, source: string): ModelFamily {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new ModelConfigError(`Invalid model config "${source}": expected a JSON object`, {
      file: source,
    });
  }
  const { model_type: type, architectures, architecture } = json as Record<string, unknown>;
  if (type !== undefined) {
    const family = MODEL_FAMILIES.find((f) => typesOf(f).includes(type as string));
    if (family) return family;
    throw new ModelConfigError(
      `Unsupported model_type ${JSON.stringify(type)} in "${source}": supported are ${supported()}`,
      { file: source, key: "model_type" },
    );
  }
  const names = Array.isArray(architectures) ? architectures : [];
  const family = MODEL_FAMILIES.find((f) => names.some((a) => f.architectures.includes(a)));
  if (family) return family;
  // A timm folder's config names one `architecture` (e.g. "vit_base_patch16_224").
  const timm = typeof architecture === "string"
    ? MODEL_FAMILIES.find((f) => f.timmArchitecture?.test(architecture))
    : undefined;
  if (timm) return timm;
  throw new ModelConfigError(
    `Invalid model config "${source}": no "model_type" (supported are ${supported()}) and no ` +
      `known "architectures"`,
    { file: source, key: "model_type" },
  );
}

/**
 * Parses a `config.json` object with its family's rules.
 *
 * @param json The parsed JSON.
 * @param source The file, for messages.
 * @returns The family and its config.
 * @throws {ModelConfigError} Naming the file and the key.
 */
export function parseModelConfig(json: unknown, source: string): ModelConfig {
  const family = familyOf(json, source);
  return { family, config: family.parseConfig(json, source), source };
}

/**
 * Reads and parses a model folder's `config.json`.
 *
 * @param folder A Hugging Face model folder.
 * @returns The family and its config.
 * @throws {ModelConfigError} If the file cannot be read, is not JSON, or does not fit its family.
 */
export async function readModelConfig(folder: string): Promise<ModelConfig> {
  const { path, json } = await readConfigJson(folder);
  return parseModelConfig(json, path);
}

/**
 * Loads a Hugging Face model folder of any registered family.
 *
 * @param gpu The device.
 * @param folder The folder (`config.json`, `model.safetensors` or shards).
 * @param options `trainAll` for full fine-tuning.
 * @returns The model on the GPU.
 * @throws {ModelConfigError} On a config that names no supported family or does not fit it.
 * @throws {ModelWeightsError} On weights that do not fit the config.
 *
 * @example
 * ```ts
 * import { Gpu } from "../kernels/gpu.ts";
 * import { loadModel } from "./registry.ts";
 * using gpu = await Gpu.acquire();
 * using model = await loadModel(gpu, "fixtures/tiny-gpt2");
 * console.log(model.summary().layers); // 2
 * ```
 */
export async function loadModel(
  gpu: Gpu,
  folder: string,
  options: ModelOptions = {},
): Promise<Model> {
  const { family, config } = await readModelConfig(folder);
  return family.load(gpu, folder, config, options);
}

/**
 * A model of a config with freshly initialised weights.
 *
 * @param gpu The device.
 * @param config A parsed config ({@link readModelConfig}, {@link parseModelConfig}).
 * @param options `seed` of the init, `trainAll`.
 * @returns The model on the GPU.
 */
export function initModel(
  gpu: Gpu,
  config: ModelConfig,
  options: ModelOptions & { seed?: number } = {},
): Promise<Model> {
  return config.family.init(gpu, config.config, options);
}

/**
 * The config hash and adaptable sites of a config, without a GPU (for accounting).
 *
 * @param config A parsed config.
 * @returns Its shape.
 */
export function modelShape(config: ModelConfig): ModelShape {
  return config.family.shape(config.config);
}
