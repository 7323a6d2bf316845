/**
 * A Hugging Face `tokenizer.json` (byte-level BPE for GPT-2), through `@huggingface/tokenizers`.
 *
 * Encoding is exact and reversible: no special tokens are added around the text, special tokens
 * written in the text (`<|endoftext|>`) become their ids, and decoding does no clean-up of
 * spaces, so `decode(encode(s)) === s` for any string.
 *
 * @module
 */

import { dirname, join } from "node:path";
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";

/** A tokenizer file that cannot be read or used. */
export class TokenizerError extends Error {
  /** The file the error is about. */
  readonly file: string;

  /**
   * @param message The whole message, already naming the file.
   * @param options Where the error happened.
   */
  constructor(message: string, options: { file: string; cause?: unknown }) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "TokenizerError";
    this.file = options.file;
  }
}

const DEFAULT_EOS = "<|endoftext|>";

/**
 * Text to token ids and back.
 *
 * @example Encoding and decoding
 * ```ts
 * import { Tokenizer } from "./tokenizer.ts";
 * const tok = await Tokenizer.load("fixtures/tiny-gpt2");
 * const ids = tok.encode("The lamp is on the table.<|endoftext|>");
 * console.log(ids.at(-1) === tok.eosId, tok.decode(ids));
 * ```
 */
export class Tokenizer {
  /** The id of the end-of-text token (`<|endoftext|>` for GPT-2). */
  readonly eosId: number;
  /** One more than the largest id, added tokens included: the rows an embedding needs. */
  readonly vocabSize: number;
  /** The `tokenizer.json` it was loaded from. */
  readonly path: string;
  readonly #hf: HfTokenizer;

  private constructor(hf: HfTokenizer, options: { path: string; eosId: number }) {
    this.#hf = hf;
    this.path = options.path;
    this.eosId = options.eosId;
    let max = -1;
    for (const id of hf.get_vocab(true).values()) max = Math.max(max, id);
    this.vocabSize = max + 1;
  }

  /**
   * Loads `tokenizer.json`, with `tokenizer_config.json` beside it when there is one.
   *
   * @param folderOrFile A model folder holding `tokenizer.json`, or the file itself.
   * @returns The tokenizer.
   * @throws {TokenizerError} If the file cannot be read, is not JSON, is not a tokenizer the
   * library understands, or has no end-of-text token.
   */
  static async load(folderOrFile: string): Promise<Tokenizer> {
    let path = folderOrFile;
    if (await isDirectory(folderOrFile)) {
      path = join(folderOrFile, "tokenizer.json");
    }
    const json = await readJson(path, { optional: false });
    const configPath = join(dirname(path), "tokenizer_config.json");
    const config = (await readJson(configPath, { optional: true })) ?? {};
    if (!isObject(json)) {
      throw new TokenizerError(`Invalid tokenizer "${path}": expected a JSON object`, {
        file: path,
      });
    }
    if (!isObject(config)) {
      throw new TokenizerError(`Invalid tokenizer config "${configPath}": expected a JSON object`, {
        file: configPath,
      });
    }
    let hf: HfTokenizer;
    try {
      hf = new HfTokenizer(json, config);
    } catch (e) {
      throw new TokenizerError(`Invalid tokenizer "${path}": ${messageOf(e)}`, {
        file: path,
        cause: e,
      });
    }
    const eosToken = tokenText(config.eos_token) ?? DEFAULT_EOS;
    const eosId = hf.token_to_id(eosToken);
    if (eosId === undefined) {
      throw new TokenizerError(
        `Invalid tokenizer "${path}": the end-of-text token "${eosToken}" is not in its vocabulary`,
        { file: path },
      );
    }
    return new Tokenizer(hf, { path, eosId });
  }

  /**
   * Encodes text; special tokens written in it become their ids, nothing is added around it.
   *
   * @param text Any string.
   * @returns Token ids.
   */
  encode(text: string): number[] {
    return this.#hf.encode(text, { add_special_tokens: false }).ids;
  }

  /**
   * Decodes ids back to text exactly, special tokens included.
   *
   * @param ids Token ids, each in `[0, vocabSize)`.
   * @returns The text.
   * @throws {RangeError} If an id is not an integer in range.
   */
  decode(ids: readonly number[]): string {
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new RangeError(
          `Cannot decode token id ${id}: the tokenizer "${this.path}" has ids 0 to ${
            this.vocabSize - 1
          }`,
        );
      }
    }
    // The library rejects an empty list; the empty text is its decoding.
    if (ids.length === 0) return "";
    return this.#hf.decode([...ids], {
      skip_special_tokens: false,
      clean_up_tokenization_spaces: false,
    });
  }

  /**
   * The id of one token string, as it is written in the vocabulary (`"Ġthe"`, `"<|endoftext|>"`).
   *
   * @param token A vocabulary entry.
   * @returns Its id, or `undefined` when there is none.
   */
  tokenToId(token: string): number | undefined {
    return this.#hf.token_to_id(token);
  }
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

async function readJson(path: string, options: { optional: boolean }): Promise<unknown> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (options.optional && e instanceof Deno.errors.NotFound) return undefined;
    throw new TokenizerError(`Cannot read tokenizer file "${path}": ${messageOf(e)}`, {
      file: path,
      cause: e,
    });
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new TokenizerError(`Invalid tokenizer file "${path}": not JSON (${messageOf(e)})`, {
      file: path,
      cause: e,
    });
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

// tokenizer_config.json writes special tokens as strings or as AddedToken objects.
function tokenText(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (isObject(value) && typeof value.content === "string") return value.content;
  return undefined;
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
