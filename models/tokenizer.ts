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
import { oneLine } from "../formats/one_line.ts";

/** A tokenizer file that cannot be read or used. */
export class TokenizerError extends Error {
  /** The file the error is about. */
  readonly file: string;

  /**
   * @param message The whole message, already naming the file; control characters (from the
   * file) are escaped so that it stays one line.
   * @param options Where the error happened.
   */
  constructor(message: string, options: { file: string; cause?: unknown }) {
    super(oneLine(message), options.cause === undefined ? undefined : { cause: options.cause });
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

  private constructor(
    hf: HfTokenizer,
    options: { path: string; eosId: number; vocabSize: number },
  ) {
    this.#hf = hf;
    this.path = options.path;
    this.eosId = options.eosId;
    this.vocabSize = options.vocabSize;
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
    checkIds(json, path);
    let hf: HfTokenizer;
    let vocabSize: number;
    try {
      hf = new HfTokenizer(json, config);
      vocabSize = Math.max(-1, ...hf.get_vocab(true).values()) + 1;
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
    return new Tokenizer(hf, { path, eosId, vocabSize });
  }

  /**
   * Encodes text; special tokens written in it become their ids, nothing is added around it.
   *
   * @param text Any string.
   * @returns Token ids, each in `[0, vocabSize)`.
   * @throws {TokenizerError} If the tokenizer file's components fail on the text, or a piece of
   * it has no token and the file names no `unk_token`.
   */
  encode(text: string): number[] {
    const ids = this.#library("encode", () => this.#hf.encode(text, { add_special_tokens: false }))
      .ids;
    // The library gives `undefined` for a piece with no token when the model has no unk_token.
    const bad = ids.findIndex((id) => !Number.isInteger(id) || id < 0 || id >= this.vocabSize);
    if (bad >= 0) {
      throw new TokenizerError(
        `Cannot encode with tokenizer "${this.path}": token ${bad} of the text has no id (not ` +
          `in the vocabulary, and the model has no unk_token)`,
        { file: this.path },
      );
    }
    return ids;
  }

  /**
   * Decodes ids back to text exactly, special tokens included.
   *
   * @param ids Token ids, each in `[0, vocabSize)`.
   * @returns The text.
   * @throws {RangeError} If an id is not an integer in range.
   * @throws {TokenizerError} If the tokenizer file's decoder fails on the ids.
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
    return this.#library("decode", () =>
      this.#hf.decode([...ids], {
        skip_special_tokens: false,
        clean_up_tokenization_spaces: false,
      }));
  }

  // The library runs the components a file describes, and fails inside them (a TypeError) when
  // the file gives a field of the wrong kind: that is a bad file, said in one line.
  #library<T>(what: "encode" | "decode", fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      throw new TokenizerError(
        `Cannot ${what} with tokenizer "${this.path}": ${messageOf(e)}`,
        { file: this.path, cause: e },
      );
    }
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

/** The largest id accepted is one less: 65 times the largest vocabularies in use. */
export const MAX_VOCAB = 2 ** 24;

// The library takes ids as the file gives them and lays the vocabulary out as an array indexed by
// id, so an id is checked before it is believed: an integer id 2^31 made an array of 2^31 slots
// that listing the vocabulary walked, a string id came back from encode.
function checkIds(json: Record<string, unknown>, path: string): void {
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
