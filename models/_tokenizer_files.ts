// The files around a tokenizer.json, read and checked for models/tokenizer.ts.

import { join } from "node:path";
import { TokenizerError } from "./tokenizer_error.ts";

export async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

export async function readText(
  path: string,
  options: { optional: boolean },
): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    if (options.optional && e instanceof Deno.errors.NotFound) return undefined;
    throw new TokenizerError(`Cannot read tokenizer file "${path}": ${messageOf(e)}`, {
      file: path,
      cause: e,
    });
  }
}

export async function readJson(path: string, options: { optional: boolean }): Promise<unknown> {
  const text = await readText(path, options);
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new TokenizerError(`Invalid tokenizer file "${path}": not JSON (${messageOf(e)})`, {
      file: path,
      cause: e,
    });
  }
}

/** The largest id accepted is one less: 65 times the largest vocabularies in use. */
export const MAX_VOCAB = 2 ** 24;

// The library takes ids as the file gives them and lays the vocabulary out as an array indexed by
// id, so an id is checked before it is believed: an integer id 2^31 made an array of 2^31 slots
// that listing the vocabulary walked, a string id came back from encode.
export function checkIds(json: Record<string, unknown>, path: string): void {
  const check = (where: string, token: unknown, id: unknown) => {
    if (typeof id === "number" && Number.isInteger(id) && id >= 0 && id < MAX_VOCAB) return;
    throw new TokenizerError(
      `Invalid tokenizer "${path}": ${where} ${JSON.stringify(token) ?? "?"} has id ${
        JSON.stringify(id) ?? String(id)
      }, expected an integer from 0 to ${MAX_VOCAB - 1}`,
      { file: path },
    );
  };
  const model = json.model;
  if (isObject(model) && isObject(model.vocab)) {
    for (const [token, id] of Object.entries(model.vocab)) check("token", token, id);
  }
  if (Array.isArray(json.added_tokens)) {
    for (const added of json.added_tokens) {
      if (isObject(added)) check("added token", added.content, added.id);
    }
  }
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * The special tokens that the post-processor's template for one text puts first and last
 * (`TemplateProcessing`, alone or in a `Sequence` as Llama 3 has it), by their text.
 */
export function templateEnds(postProcessor: unknown): { first?: string; last?: string } {
  const processors = isObject(postProcessor) && postProcessor.type === "Sequence" &&
      Array.isArray(postProcessor.processors)
    ? postProcessor.processors
    : [postProcessor];
  const special = (piece: unknown) =>
    isObject(piece) && isObject(piece.SpecialToken) && typeof piece.SpecialToken.id === "string"
      ? piece.SpecialToken.id
      : undefined;
  for (const p of processors) {
    if (isObject(p) && p.type === "TemplateProcessing" && Array.isArray(p.single)) {
      return { first: special(p.single[0]), last: special(p.single.at(-1)) };
    }
  }
  return {};
}

/** `eosId`, then the ids of `eos_token_id` in config.json beside the tokenizer (those in range). */
export async function modelEosIds(
  folder: string,
  eosId: number,
  vocabSize: number,
): Promise<number[]> {
  let config: unknown;
  try {
    config = JSON.parse(await Deno.readTextFile(join(folder, "config.json")));
  } catch {
    // Missing, unreadable or not JSON: the model's config reader says so when the model loads.
    return [eosId];
  }
  const value = isObject(config) ? config.eos_token_id : undefined;
  const ids = [eosId];
  for (const id of Array.isArray(value) ? value : [value]) {
    if (Number.isInteger(id) && id >= 0 && id < vocabSize && !ids.includes(id)) ids.push(id);
  }
  return ids;
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
