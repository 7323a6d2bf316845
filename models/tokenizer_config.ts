/**
 * The keys of `tokenizer_config.json` that change what a tokenizer does: its special tokens,
 * whether encoding adds the beginning- and end-of-text tokens, the longest input the model takes,
 * and its chat templates. Every other key is left alone (the file holds many that only Python's
 * `transformers` reads); a key read here with a value of the wrong kind is refused in one line.
 *
 * @module
 */

import { TokenizerError } from "./tokenizer_error.ts";

/** The special-token keys whose text chat templates see as variables of the same name. */
export const SPECIAL_TOKEN_KEYS = [
  "bos_token",
  "eos_token",
  "unk_token",
  "sep_token",
  "pad_token",
  "cls_token",
  "mask_token",
] as const;

/** A key of {@linkcode SPECIAL_TOKEN_KEYS}. */
export type SpecialTokenKey = typeof SPECIAL_TOKEN_KEYS[number];

/** What `tokenizer_config.json` says, checked. */
export interface TokenizerConfig {
  /** The text of each special token the file names (strings or AddedToken objects there). */
  specialTokens: Partial<Record<SpecialTokenKey, string>>;
  /** `add_bos_token`, when the file gives it. */
  addBosToken?: boolean;
  /** `add_eos_token`, when the file gives it. */
  addEosToken?: boolean;
  /**
   * `model_max_length`; absent when the file has none or writes Python's "no limit"
   * (`int(1e30)`, any value past `Number.MAX_SAFE_INTEGER`).
   */
  modelMaxLength?: number;
  /**
   * `chat_template` by name: one template is named `default`; a list of `{name, template}`
   * objects keeps its names. Empty when the file has none.
   */
  chatTemplates: Map<string, string>;
}

/**
 * Checks the keys of a parsed `tokenizer_config.json` that the tokenizer uses.
 *
 * @param config The parsed file.
 * @param path The file, named in errors.
 * @returns The checked values.
 * @throws {TokenizerError} For a key whose value is of the wrong kind, naming the file and key.
 *
 * @example Llama 2's special tokens
 * ```ts
 * import { parseTokenizerConfig } from "./tokenizer_config.ts";
 * const config = parseTokenizerConfig(
 *   { add_bos_token: true, bos_token: { content: "<s>" }, eos_token: "</s>" },
 *   "tokenizer_config.json",
 * );
 * console.log(config.specialTokens.bos_token, config.addBosToken); // "<s>" true
 * ```
 */
export function parseTokenizerConfig(
  config: Record<string, unknown>,
  path: string,
): TokenizerConfig {
  const refuse = (key: string, expected: string): never => {
    throw new TokenizerError(
      `Invalid tokenizer config "${path}": "${key}" is ${
        describe(config[key])
      }, expected ${expected}`,
      { file: path },
    );
  };
  const specialTokens: TokenizerConfig["specialTokens"] = {};
  for (const key of SPECIAL_TOKEN_KEYS) {
    const value = config[key];
    if (value === undefined || value === null) continue;
    if (typeof value === "string") specialTokens[key] = value;
    else if (isObject(value) && typeof value.content === "string") {
      specialTokens[key] = value.content;
    } else refuse(key, 'a string, null or an AddedToken object with a "content" string');
  }
  const result: TokenizerConfig = { specialTokens, chatTemplates: new Map() };
  for (
    const [key, field] of [["add_bos_token", "addBosToken"], [
      "add_eos_token",
      "addEosToken",
    ]] as const
  ) {
    const value = config[key];
    if (value === undefined || value === null) continue;
    if (typeof value !== "boolean") refuse(key, "true, false or null");
    result[field] = value as boolean;
  }
  const maxLength = config.model_max_length;
  if (maxLength !== undefined && maxLength !== null) {
    if (typeof maxLength !== "number" || !Number.isInteger(maxLength) || maxLength < 1) {
      refuse("model_max_length", "a positive integer or null");
    }
    if (Number.isSafeInteger(maxLength)) result.modelMaxLength = maxLength as number;
  }
  const template = config.chat_template;
  if (typeof template === "string") result.chatTemplates.set("default", template);
  else if (Array.isArray(template)) {
    for (const entry of template) {
      if (
        !isObject(entry) || typeof entry.name !== "string" || typeof entry.template !== "string"
      ) {
        refuse("chat_template", 'a string, or a list of {"name", "template"} strings');
      }
      const { name, template: source } = entry as { name: string; template: string };
      if (result.chatTemplates.has(name)) {
        throw new TokenizerError(
          `Invalid tokenizer config "${path}": "chat_template" names the template ` +
            `${JSON.stringify(name)} twice`,
          { file: path },
        );
      }
      result.chatTemplates.set(name, source);
    }
  } else if (template !== undefined && template !== null) {
    refuse("chat_template", 'a string, or a list of {"name", "template"} strings');
  }
  return result;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A value quoted for a message: JSON, cut to 60 characters. */
function describe(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}
