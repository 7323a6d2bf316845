/**
 * A model's chat template: the Jinja program, shipped with the tokenizer, that writes a
 * conversation as the text the model was trained on. Rendered with `@huggingface/jinja` as
 * Hugging Face's `apply_chat_template` renders it: variables `messages`, `add_generation_prompt`
 * and the special tokens (`bos_token`, `eos_token`, ...), `raise_exception(message)` to refuse a
 * conversation, blocks trimmed (`trim_blocks`, `lstrip_blocks`) and undefined variables lenient,
 * as templates expect (`{% if tools %}` with no tools).
 *
 * One difference: `strftime_now` is not defined, so a rendered conversation never depends on the
 * clock; templates that print a date fall back to their own default (Llama 3.1:
 * `26 Jul 2024`) or take `date_string` from the caller's variables.
 *
 * @module
 */

import { Environment, Interpreter, Template } from "@huggingface/jinja";
import { messageOf } from "../formats/one_line.ts";
import { TokenizerError } from "./tokenizer_error.ts";

/** One turn of a conversation, as chat templates read it. */
export interface ChatMessage {
  /** `system`, `user`, `assistant`, `tool` or what else the template knows. */
  role: string;
  /** The text of the turn (some templates also take a list of parts). */
  content?: unknown;
  /** Further fields some templates read (`tool_calls`, `reasoning_content`, ...). */
  [field: string]: unknown;
}

/** How to render a conversation. */
export interface ChatTemplateOptions {
  /**
   * End with the header of an assistant turn, so the model writes the reply (the template's
   * `add_generation_prompt`; default false).
   */
  addGenerationPrompt?: boolean;
  /**
   * Further template variables (`tools`, `documents`, `date_string`, `enable_thinking`, ...);
   * they take precedence over the special tokens, as keyword arguments do in Python.
   */
  variables?: Record<string, unknown>;
}

/**
 * A chat template, compiled on first use.
 *
 * @example A ChatML conversation
 * ```ts
 * import { ChatTemplate } from "./chat_template.ts";
 * const template = new ChatTemplate(
 *   "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}" +
 *     "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
 *   { file: "chat_template.jinja" },
 * );
 * template.render([{ role: "user", content: "Hi" }], { addGenerationPrompt: true });
 * // "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
 * ```
 */
export class ChatTemplate {
  /** The Jinja source. */
  readonly source: string;
  /** The file it comes from (`tokenizer_config.json` or `chat_template.jinja`), named in errors. */
  readonly file: string;
  /** Its name: `default`, or the name a list of templates gives it. */
  readonly name: string;
  readonly #specialTokens: Readonly<Record<string, string>>;
  #template?: Template;

  /**
   * Keeps a template's source; it is compiled on first use.
   *
   * @param source Jinja source.
   * @param options `file`: where it comes from; `name` (default `default`); `specialTokens`:
   * the text of `bos_token`, `eos_token` and the others, set as variables of those names.
   */
  constructor(
    source: string,
    options: { file: string; name?: string; specialTokens?: Readonly<Record<string, string>> },
  ) {
    this.source = source;
    this.file = options.file;
    this.name = options.name ?? "default";
    this.#specialTokens = { ...options.specialTokens };
  }

  /**
   * Renders a conversation.
   *
   * @param messages The turns, in order.
   * @param options The generation prompt and further variables.
   * @returns The text, special tokens written out (`<|im_start|>`); encode it with the
   * tokenizer's `encode` (which adds nothing: the template writes `bos_token` itself when the
   * model wants it).
   * @throws {TokenizerError} One line naming the file, when the source is not Jinja that
   * `@huggingface/jinja` compiles, or when rendering fails (the template's `raise_exception`
   * included).
   */
  render(messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): string {
    const template = this.#compile();
    const variables: Record<string, unknown> = {
      ...GLOBALS,
      ...this.#specialTokens,
      ...options.variables,
      messages,
      add_generation_prompt: options.addGenerationPrompt ?? false,
    };
    try {
      // `Template.render` would also define strftime_now, and refuses to redefine it.
      const env = new Environment();
      for (const [name, value] of Object.entries(variables)) env.set(name, value);
      return String(new Interpreter(env).run(template.parsed).value);
    } catch (e) {
      throw new TokenizerError(
        `Cannot render ${this.#what()} of "${this.file}": ${messageOf(e)}`,
        { file: this.file, cause: e },
      );
    }
  }

  #compile(): Template {
    if (this.#template === undefined) {
      try {
        this.#template = new Template(this.source);
      } catch (e) {
        throw new TokenizerError(
          `Invalid ${this.#what()} in "${this.file}": ${messageOf(e)}`,
          { file: this.file, cause: e },
        );
      }
    }
    return this.#template;
  }

  #what(): string {
    return this.name === "default" ? "chat template" : `chat template "${this.name}"`;
  }
}

/**
 * The globals of `@huggingface/jinja`'s `Template.render` (which it does not export) less
 * `strftime_now`; the caller's variables may replace any of them.
 */
const GLOBALS: Readonly<Record<string, unknown>> = {
  true: true,
  false: false,
  none: null,
  True: true,
  False: false,
  None: null,
  raise_exception: (message: unknown) => {
    throw new Error(String(message));
  },
  range: (start: number, stop?: number, step = 1) => {
    if (stop === undefined) [start, stop] = [0, start];
    if (step === 0) throw new Error("range() step must not be zero");
    const out: number[] = [];
    for (let i = start; step > 0 ? i < stop : i > stop; i += step) out.push(i);
    return out;
  },
};
