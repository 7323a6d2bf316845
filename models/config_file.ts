/**
 * Reading a model folder's `config.json` as JSON, the one step every family's config shares.
 *
 * @module
 */

import { join } from "node:path";
import { ModelConfigError } from "./model.ts";

/**
 * Reads and parses `<folder>/config.json`.
 *
 * @param folder A Hugging Face model folder.
 * @returns The file's path and its parsed JSON (not yet validated).
 * @throws {ModelConfigError} If the file cannot be read or is not JSON.
 */
export async function readConfigJson(folder: string): Promise<{ path: string; json: unknown }> {
  const path = join(folder, "config.json");
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new ModelConfigError(`Cannot read model config "${path}": ${messageOf(e)}`, {
      file: path,
      cause: e,
    });
  }
  try {
    return { path, json: JSON.parse(text) };
  } catch (e) {
    throw new ModelConfigError(`Invalid model config "${path}": not JSON (${messageOf(e)})`, {
      file: path,
      cause: e,
    });
  }
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
