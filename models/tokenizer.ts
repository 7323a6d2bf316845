/**
 * A Hugging Face `tokenizer.json` through `@huggingface/tokenizers`: byte-level BPE (GPT-2,
 * Llama 3, Qwen2) and SentencePiece-style BPE with byte fallback (Llama 2, Mistral), with what
 * `tokenizer_config.json` beside it says: the special tokens, whether encoding adds the
 * beginning- and end-of-text tokens, `model_max_length`, and the chat template (or the
 * `chat_template.jinja` file beside it, which takes precedence as in `transformers`).
 *
 * Encoding adds nothing around the text unless asked ({@linkcode Tokenizer.encode}'s
 * `addSpecialTokens`), special tokens written in the text (`<|endoftext|>`, `<s>`) become their
 * ids, and decoding does no clean-up of spaces. For byte-level BPE `decode(encode(s)) === s` for
 * any string. SentencePiece-style files in the legacy layout (a `Prepend` normalizer: Llama 2,
 * Mistral v0.1) prepend `▁` (a space) to each stretch of ordinary text, and their decoder strips
 * one leading space of the whole text only, so there the round trip is exact for any string
 * without ordinary text after a special token (`"a</s>b"` comes back as `"a</s> b"`); in the
 * `Metaspace` layout (`prepend_scheme: "first"`) only the start of the text gets a `▁`, and a
 * single leading space is lost instead. Both as with the same files in Python.
 *
 * @module
 */

import { dirname, join } from "node:path";
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { type ChatMessage, ChatTemplate, type ChatTemplateOptions } from "./chat_template.ts";
import { parseTokenizerConfig } from "./tokenizer_config.ts";
import {
  checkIds,
  isDirectory,
  isObject,
  MAX_VOCAB,
  modelEosIds,
  readJson,
  readText,
  templateEnds,
} from "./_tokenizer_files.ts";
import { TokenizerError } from "./tokenizer_error.ts";

export { MAX_VOCAB, TokenizerError };
export type { ChatMessage, ChatTemplateOptions };

const DEFAULT_EOS = "<|endoftext|>";

/** What {@linkcode Tokenizer.load} works out, beyond the library's tokenizer. */
interface TokenizerParts {
  path: string;
  eosId: number;
  eosToken: string;
  eosIds: number[];
  bosId?: number;
  bosToken?: string;
  addBos: boolean;
  addEos: boolean;
  vocabSize: number;
  modelMaxLength?: number;
  chatTemplates: Map<string, ChatTemplate>;
}

/**
 * Text to token ids and back, and conversations to text through the model's chat template.
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
  /** The end-of-text token: `eos_token` of `tokenizer_config.json`, else `<|endoftext|>`. */
  readonly eosToken: string;
  /**
   * The ids that end a generated text: {@linkcode eosId} first, then those of `eos_token_id` (one
   * id or a list) in the model's `config.json` beside the tokenizer, where it has any (Llama 3.1
   * Instruct lists `<|end_of_text|>`, `<|eom_id|>` and `<|eot_id|>`). Reading that file is best
   * effort: the model's own config reader is the one that refuses a bad `config.json`.
   */
  readonly eosIds: readonly number[];
  /** The id of the beginning-of-text token, when there is one and it is in the vocabulary. */
  readonly bosId?: number;
  /** The beginning-of-text token (`bos_token` of `tokenizer_config.json`), when there is one. */
  readonly bosToken?: string;
  /**
   * Whether `encode(text, { addSpecialTokens: true })` starts with {@linkcode bosId}:
   * `add_bos_token` of `tokenizer_config.json`, else whether the `tokenizer.json`
   * post-processor's template for one text starts with the `bos_token` (Llama 3's does).
   */
  readonly addBos: boolean;
  /**
   * Whether `encode(text, { addSpecialTokens: true })` ends with {@linkcode eosId}:
   * `add_eos_token`, else whether that template ends with the end-of-text token.
   */
  readonly addEos: boolean;
  /** One more than the largest id, added tokens included: the rows an embedding needs. */
  readonly vocabSize: number;
  /** `model_max_length`, when the config gives a real limit. */
  readonly modelMaxLength?: number;
  /** The chat templates by name: `default`, and those a list of templates names; may be empty. */
  readonly chatTemplates: ReadonlyMap<string, ChatTemplate>;
  /** The `tokenizer.json` it was loaded from. */
  readonly path: string;
  readonly #hf: HfTokenizer;

  private constructor(hf: HfTokenizer, parts: TokenizerParts) {
    this.#hf = hf;
    this.path = parts.path;
    this.eosId = parts.eosId;
    this.eosToken = parts.eosToken;
    this.eosIds = parts.eosIds;
    this.bosId = parts.bosId;
    this.bosToken = parts.bosToken;
    this.addBos = parts.addBos;
    this.addEos = parts.addEos;
    this.vocabSize = parts.vocabSize;
    this.modelMaxLength = parts.modelMaxLength;
    this.chatTemplates = parts.chatTemplates;
  }

  /**
   * Loads `tokenizer.json`, with `tokenizer_config.json`, `chat_template.jinja` and the
   * `eos_token_id` of `config.json` beside it when they are there.
   *
   * @param folderOrFile A model folder holding `tokenizer.json`, or the file itself.
   * @returns The tokenizer.
   * @throws {TokenizerError} If a file cannot be read or is not JSON, `tokenizer.json` is not a
   * tokenizer the library understands or lacks the end-of-text token (or the beginning-of-text
   * token it is to add), or a key of `tokenizer_config.json` has a value of the wrong kind.
   */
  static async load(folderOrFile: string): Promise<Tokenizer> {
    let path = folderOrFile;
    if (await isDirectory(folderOrFile)) {
      path = join(folderOrFile, "tokenizer.json");
    }
    const folder = dirname(path);
    const json = await readJson(path, { optional: false });
    const configPath = join(folder, "tokenizer_config.json");
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
    const settings = parseTokenizerConfig(config, configPath);
    checkIds(json, path);
    let hf: HfTokenizer;
    let vocabSize: number;
    try {
      hf = new HfTokenizer(json, config);
      // A loop, not Math.max(...ids): spreading 128k ids as arguments overflows the stack.
      vocabSize = 0;
      for (const id of hf.get_vocab(true).values()) vocabSize = Math.max(vocabSize, id + 1);
    } catch (e) {
      throw new TokenizerError(`Invalid tokenizer "${path}": ${messageOf(e)}`, {
        file: path,
        cause: e,
      });
    }
    const eosToken = settings.specialTokens.eos_token ?? DEFAULT_EOS;
    const eosId = hf.token_to_id(eosToken);
    if (eosId === undefined) {
      throw new TokenizerError(
        `Invalid tokenizer "${path}": the end-of-text token "${eosToken}" is not in its vocabulary`,
        { file: path },
      );
    }
    const bosToken = settings.specialTokens.bos_token;
    const bosId = bosToken === undefined ? undefined : hf.token_to_id(bosToken);
    const ends = templateEnds(json.post_processor);
    const addBos = settings.addBosToken ?? (bosToken !== undefined && ends.first === bosToken);
    const addEos = settings.addEosToken ?? ends.last === eosToken;
    if (addBos && bosToken === undefined) {
      throw new TokenizerError(
        `Invalid tokenizer config "${configPath}": "add_bos_token" is true but there is no ` +
          `"bos_token"`,
        { file: configPath },
      );
    }
    if (addBos && bosId === undefined) {
      throw new TokenizerError(
        `Invalid tokenizer "${path}": the beginning-of-text token "${bosToken}" is not in its ` +
          `vocabulary`,
        { file: path },
      );
    }
    const specialTokens = { ...settings.specialTokens, eos_token: eosToken };
    const jinjaPath = join(folder, "chat_template.jinja");
    const jinja = await readText(jinjaPath, { optional: true });
    // As in `transformers`, a chat_template.jinja replaces the config's templates.
    const sources = jinja === undefined
      ? [...settings.chatTemplates].map(([name, source]) => ({ name, source, file: configPath }))
      : [{ name: "default", source: jinja, file: jinjaPath }];
    const chatTemplates = new Map(
      sources.map(({ name, source, file }) => [
        name,
        new ChatTemplate(source, { file, name, specialTokens }),
      ]),
    );
    return new Tokenizer(hf, {
      path,
      eosId,
      eosToken,
      eosIds: await modelEosIds(folder, eosId, vocabSize),
      bosId,
      bosToken,
      addBos,
      addEos,
      vocabSize,
      modelMaxLength: settings.modelMaxLength,
      chatTemplates,
    });
  }

  /**
   * Encodes text; special tokens written in it become their ids.
   *
   * @param text Any string.
   * @param options `addSpecialTokens`: put {@linkcode bosId} before the text where
   * {@linkcode addBos} says so and {@linkcode eosId} after it where {@linkcode addEos} does, as
   * `transformers` does by default (default false: nothing is added).
   * @returns Token ids, each in `[0, vocabSize)`.
   * @throws {TokenizerError} If the tokenizer file's components fail on the text, or a piece of
   * it has no token and the file names no `unk_token`.
   */
  encode(text: string, options: { addSpecialTokens?: boolean } = {}): number[] {
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
    if (!options.addSpecialTokens) return ids;
    return [
      ...(this.addBos ? [this.bosId as number] : []),
      ...ids,
      ...(this.addEos ? [this.eosId] : []),
    ];
  }
  /**
   * A prompt to ids as the model expects to read it before writing: the text's ids, after
   * {@linkcode bosId} when the tokenizer adds one ({@linkcode addBos}) and the text does not
   * already start with the beginning-of-text token (chat templates write it themselves). Never
   * the end-of-text token. Training rows, generation and scoring all start a text this way.
   *
   * @param text The prompt.
   * @returns Its ids.
   */
  encodePrompt(text: string): number[] {
    const ids = this.encode(text);
    if (!this.addBos || this.bosId === undefined || ids[0] === this.bosId) return ids;
    return [this.bosId, ...ids];
  }

  /**
   * Writes a conversation as text through the model's chat template (`apply_chat_template` of
   * `transformers`, untokenized): the template named `template`, else `tool_use` when
   * `variables.tools` is given and there is one, else `default`.
   *
   * @param messages The turns, in order.
   * @param options The generation prompt, further variables and the template's name.
   * @returns The text; {@linkcode encode} it without `addSpecialTokens`, since the template
   * writes the beginning-of-text token itself where the model wants one.
   * @throws {TokenizerError} If there is no such template, or it fails to compile or render
   * (naming its file).
   *
   * @example A prompt for the reply
   * ```ts
   * import { Tokenizer } from "./tokenizer.ts";
   * const tok = await Tokenizer.load("path/to/Qwen2.5-0.5B-Instruct");
   * const text = tok.applyChatTemplate([{ role: "user", content: "Hi" }], {
   *   addGenerationPrompt: true,
   * });
   * const ids = tok.encode(text); // ends with <|im_start|>assistant\n
   * ```
   */
  applyChatTemplate(
    messages: readonly ChatMessage[],
    options: ChatTemplateOptions & { template?: string } = {},
  ): string {
    const tools = options.variables?.tools;
    const name = options.template ??
      (tools !== undefined && tools !== null && this.chatTemplates.has("tool_use")
        ? "tool_use"
        : "default");
    const template = this.chatTemplates.get(name);
    if (template === undefined) {
      const names = [...this.chatTemplates.keys()].map((n) => JSON.stringify(n));
      throw new TokenizerError(
        names.length === 0
          ? `Tokenizer "${this.path}" has no chat template (no "chat_template" in ` +
            `tokenizer_config.json and no chat_template.jinja beside it)`
          : `Tokenizer "${this.path}" has no chat template named ${JSON.stringify(name)} ` +
            `(it has ${names.join(", ")})`,
        { file: this.path },
      );
    }
    return template.render(messages, options);
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

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
