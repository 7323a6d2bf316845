/**
 * Writing a model held on the GPU as a Hugging Face folder, for every family: `model.safetensors`
 * (F32, the family's checkpoint names), the tokenizer files copied from the folder the model came
 * from, and `config.json` last. Each file is written atomically; other files of an existing folder
 * are left as they are.
 *
 * @module
 */

import { join } from "node:path";
import { copyFileAtomic, writeTextFileAtomic } from "../formats/atomic.ts";
import { checkOutputFolder, checkOutputPath, ensureFolder } from "../formats/folder.ts";
import { type TensorToWrite, writeSafetensors } from "../formats/safetensors.ts";
import type { Tensor } from "../kernels/tensor.ts";

/** Files of a model folder that belong to its tokenizer (and generation settings). */
const TOKENIZER_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "chat_template.jinja",
  "tokenizer.model",
  "vocab.json",
  "merges.txt",
  "generation_config.json",
];

/** What {@linkcode writeModelFolder} writes. */
export interface ModelFolderContents {
  /** The weights by the model's names. */
  params: Map<string, Tensor>;
  /** A weight's name in the checkpoint (e.g. with the family's `model.` prefix). */
  checkpointName: (name: string) => string;
  /** The text of `config.json`. */
  configJson: string;
  /** The folder to copy the tokenizer files from, those of them it has. */
  tokenizerFrom?: string;
  /** Extra `__metadata__` of the safetensors file. */
  metadata?: Record<string, string>;
}

/**
 * Writes a model folder: weights first, then the tokenizer files, `config.json` last, so a folder
 * with a `config.json` newer than its weights never exists. A folder that is, lies inside or
 * contains `tokenizerFrom`, or holds a sharded checkpoint's index (which loaders would read
 * instead), is refused with an `OutputPathError` before anything is written.
 *
 * @param outFolder The folder (created if missing).
 * @param contents The weights, their names, the config and where the tokenizer comes from.
 */
export async function writeModelFolder(
  outFolder: string,
  contents: ModelFolderContents,
): Promise<void> {
  const { tokenizerFrom } = contents;
  if (tokenizerFrom) {
    await checkOutputPath(outFolder, [{ path: tokenizerFrom, what: "model folder" }]);
  }
  await checkOutputFolder(outFolder, { shadowedBy: ["model.safetensors.index.json"] });
  const tensors: TensorToWrite[] = [];
  for (const [name, t] of contents.params) {
    tensors.push({
      name: contents.checkpointName(name),
      dtype: "F32" as const,
      shape: [...t.shape],
      data: await t.read() as Float32Array,
    });
  }
  await ensureFolder(outFolder);
  await writeSafetensors(join(outFolder, "model.safetensors"), tensors, {
    format: "pt",
    ...contents.metadata,
  });
  for (const file of tokenizerFrom ? TOKENIZER_FILES : []) {
    try {
      await copyFileAtomic(join(tokenizerFrom!, file), join(outFolder, file));
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
  await writeTextFileAtomic(join(outFolder, "config.json"), contents.configJson);
}
