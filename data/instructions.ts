/**
 * Instruction-tuning data: Alpaca JSON Lines and chat JSON Lines, as {@linkcode Segment}s with
 * the loss on the responses only (data/examples.ts tokenizes them, the whole text at once).
 *
 * - **Alpaca** (`format: alpaca`): one object a line with `instruction`, optional `input` and
 *   `output`, all strings. The prompt is the Alpaca prompt ({@linkcode alpacaPrompt}: the variant
 *   with `### Input:` when `input` is a non-empty string, the other when it is absent or empty);
 *   the response is `output`, followed by the end-of-text token.
 * - **Chat** (`format: chat`): one object a line with `messages`, a list of `{ role, content }`
 *   objects with string values (further keys of a message are passed to the template), at least
 *   one with role `assistant`. The conversation is written by the model's chat template, and the
 *   loss is on every assistant turn: its content and whatever the template writes to end the turn
 *   (`<|eot_id|>`, `<|im_end|>\n`, `</s>`). Turn `i` starts where the rendering of the messages
 *   before it with the generation prompt ends and stops where the rendering of the messages up
 *   to it ends, so a template must render a conversation's prefixes as prefixes of the whole;
 *   one that does not (it rewrites earlier turns once later ones exist) is refused.
 *
 * Other keys of a line are kept (a split's `key` may name them) and otherwise ignored. Every
 * refusal is a {@linkcode DataError} naming the file and line.
 *
 * @module
 */

import type { Segment } from "./examples.ts";
import {
  DataError,
  type JsonlObject,
  kindOf,
  parseJsonlObjects,
  place,
  readDatasetText,
} from "./readers.ts";

/** The instruction formats. */
export type InstructionFormat = "alpaca" | "chat";

/** The instruction formats, as listed to users. */
export const INSTRUCTION_FORMATS: readonly InstructionFormat[] = ["alpaca", "chat"];

/** Where a record comes from, and all its keys. */
export interface RecordSource {
  /** The file. */
  file: string;
  /** Its 1-based line. */
  line: number;
  /** The line's object as parsed, every key (for split keys). */
  fields: Readonly<Record<string, unknown>>;
}

/** One line of an Alpaca file. */
export interface AlpacaRecord extends RecordSource {
  /** Always `alpaca`. */
  format: "alpaca";
  /** The task. */
  instruction: string;
  /** Its context; empty when the line has none. */
  input: string;
  /** The response, the part the model learns to write. */
  output: string;
}

/** One turn of a conversation. */
export interface ChatTurn {
  /** `system`, `user`, `assistant` or another role the template knows. */
  role: string;
  /** The text of the turn. */
  content: string;
  /** Further keys of the turn, passed to the template. */
  [field: string]: unknown;
}

/** One line of a chat file. */
export interface ChatRecord extends RecordSource {
  /** Always `chat`. */
  format: "chat";
  /** The turns, in order; at least one is the assistant's. */
  messages: ChatTurn[];
}

/** A record of either instruction format. */
export type InstructionRecord = AlpacaRecord | ChatRecord;

/**
 * What writes a conversation as text: models/chat_template.ts's `ChatTemplate` (the tokenizer's
 * `chatTemplates.get("default")`).
 */
export interface ChatRenderer {
  /**
   * The conversation as text.
   *
   * @param messages The turns.
   * @param options `addGenerationPrompt`: end with the header of an assistant turn.
   * @returns The text.
   */
  render(messages: readonly ChatTurn[], options?: { addGenerationPrompt?: boolean }): string;
}

/** A prompt to generate from and the reference of its answer, for the evaluation. */
export interface InstructionExample {
  /** The text the model continues. */
  prompt: string;
  /** The expected answer, trimmed. */
  ref: string;
}

const ALPACA_HEAD = "Below is an instruction that describes a task";
const ALPACA_WITH_INPUT = ", paired with an input that provides further context";
const ALPACA_TAIL = ". Write a response that appropriately completes the request.\n\n";

/**
 * The Alpaca prompt of an instruction and its optional input, ending with `### Response:\n`.
 *
 * @param instruction The task.
 * @param input Its context; empty for the variant without `### Input:`.
 * @returns The prompt text.
 *
 * @example The variant without input
 * ```ts
 * import { alpacaPrompt } from "./instructions.ts";
 * alpacaPrompt("Name a colour.");
 * // "Below is an instruction that describes a task. Write a response that appropriately
 * // completes the request.\n\n### Instruction:\nName a colour.\n\n### Response:\n"
 * ```
 */
export function alpacaPrompt(instruction: string, input = ""): string {
  const head = ALPACA_HEAD + (input === "" ? "" : ALPACA_WITH_INPUT) + ALPACA_TAIL;
  const context = input === "" ? "" : `### Input:\n${input}\n\n`;
  return `${head}### Instruction:\n${instruction}\n\n${context}### Response:\n`;
}

function stringField(
  object: JsonlObject,
  key: string,
  what: string,
  file: string,
  optional = false,
): string | undefined {
  const where = place(file, object.line);
  if (!(key in object.value)) {
    if (optional) return undefined;
    const keys = Object.keys(object.value).map((k) => JSON.stringify(k));
    throw new DataError(
      `Invalid ${what} in ${where}: no "${key}" field (it has ${
        keys.length === 0 ? "no fields" : keys.join(", ")
      })`,
      { file, line: object.line },
    );
  }
  const value = object.value[key];
  if (typeof value !== "string") {
    throw new DataError(
      `Invalid ${what} in ${where}: field "${key}" is ${kindOf(value)}; expected a string` +
        (optional ? ' (leave the field out, or give "", for none)' : ""),
      { file, line: object.line },
    );
  }
  return value;
}

/**
 * Parses an Alpaca JSON Lines file.
 *
 * @param text The file's text.
 * @param options `file`: the name used in error messages.
 * @returns One record per non-blank line.
 * @throws {DataError} Naming the file, line and field, if a line is not a JSON object, lacks
 * `instruction` or `output`, or one of `instruction`, `input`, `output` is not a string.
 *
 * @example
 * ```ts
 * import { parseAlpaca } from "./instructions.ts";
 * const [r] = parseAlpaca('{"instruction": "Add.", "input": "2 + 2", "output": "4"}', {
 *   file: "a.jsonl",
 * });
 * // r.instruction === "Add.", r.input === "2 + 2", r.output === "4", r.line === 1
 * ```
 */
export function parseAlpaca(text: string, options: { file?: string } = {}): AlpacaRecord[] {
  const file = options.file ?? "<text>";
  const what = "Alpaca record";
  return parseJsonlObjects(text, { file }).map((object) => ({
    format: "alpaca",
    file,
    line: object.line,
    fields: object.value,
    instruction: stringField(object, "instruction", what, file)!,
    input: stringField(object, "input", what, file, true) ?? "",
    output: stringField(object, "output", what, file)!,
  }));
}

/**
 * Parses a chat JSON Lines file.
 *
 * @param text The file's text.
 * @param options `file`: the name used in error messages.
 * @returns One record per non-blank line.
 * @throws {DataError} Naming the file and line, if a line is not a JSON object, has no
 * `messages` list, a message is not an object with string `role` and `content` (naming it as
 * `messages[i]`), or no message has role `assistant`.
 *
 * @example
 * ```ts
 * import { parseChat } from "./instructions.ts";
 * const line = '{"messages": [{"role": "user", "content": "Hi"}, ' +
 *   '{"role": "assistant", "content": "Hello."}]}';
 * parseChat(line, { file: "c.jsonl" })[0].messages.length; // 2
 * ```
 */
export function parseChat(text: string, options: { file?: string } = {}): ChatRecord[] {
  const file = options.file ?? "<text>";
  return parseJsonlObjects(text, { file }).map((object) => {
    const where = place(file, object.line);
    const at = { file, line: object.line };
    const refuse = (message: string) =>
      new DataError(`Invalid chat record in ${where}: ${message}`, at);
    const shape = 'a list of {"role": ..., "content": ...} objects with string values';
    if (!("messages" in object.value)) {
      const keys = Object.keys(object.value).map((k) => JSON.stringify(k));
      throw refuse(
        `no "messages" field (it has ${keys.length === 0 ? "no fields" : keys.join(", ")}); ` +
          `expected ${shape}`,
      );
    }
    const messages = object.value.messages;
    if (!Array.isArray(messages) || messages.length === 0) {
      throw refuse(
        `field "messages" is ${
          Array.isArray(messages) ? "an empty list" : kindOf(messages)
        }; expected ${shape}`,
      );
    }
    messages.forEach((message: unknown, i) => {
      if (typeof message !== "object" || message === null || Array.isArray(message)) {
        throw refuse(
          `messages[${i}] is ${
            kindOf(message)
          }; expected an object with string "role" and "content"`,
        );
      }
      for (const key of ["role", "content"]) {
        const value = (message as Record<string, unknown>)[key];
        if (!(key in message)) throw refuse(`messages[${i}] has no "${key}"`);
        if (typeof value !== "string") {
          throw refuse(`messages[${i}].${key} is ${kindOf(value)}; expected a string`);
        }
      }
    });
    if (!messages.some((m) => m.role === "assistant")) {
      throw refuse('the conversation has no "assistant" turn, so there is nothing to learn');
    }
    return { format: "chat", file, line: object.line, fields: object.value, messages };
  });
}

/**
 * Reads an instruction file.
 *
 * @param path The file.
 * @param format `alpaca` or `chat`.
 * @returns Its records.
 * @throws {DataError} If the file cannot be read or a line is refused (as {@linkcode parseAlpaca}
 * and {@linkcode parseChat} say).
 */
export async function readInstructions(
  path: string,
  format: InstructionFormat,
): Promise<InstructionRecord[]> {
  const text = await readDatasetText(path);
  return format === "alpaca" ? parseAlpaca(text, { file: path }) : parseChat(text, { file: path });
}

/**
 * An Alpaca record's segments: the prompt (untrained) and `output` (trained; the end-of-text
 * token is appended by the tokenization's `eos`).
 *
 * @param record The record.
 * @returns Two segments.
 */
export function alpacaSegments(record: AlpacaRecord): Segment[] {
  return [
    { text: alpacaPrompt(record.instruction, record.input), train: false },
    { text: record.output, train: true },
  ];
}

function render(
  template: ChatRenderer,
  record: ChatRecord,
  messages: readonly ChatTurn[],
  addGenerationPrompt: boolean,
): string {
  try {
    return template.render(messages, { addGenerationPrompt });
  } catch (e) {
    throw new DataError(
      `Invalid conversation in ${place(record.file, record.line)}: ${
        e instanceof Error ? e.message : String(e)
      }`,
      { file: record.file, line: record.line, cause: e },
    );
  }
}

/**
 * A conversation's segments through a chat template: the text between assistant turns untrained,
 * each assistant turn (from the end of the generation prompt before it to the end of the turn's
 * rendering) trained.
 *
 * @param record The record.
 * @param template The chat template.
 * @returns Alternating untrained and trained segments whose texts join to the rendering of the
 * whole conversation.
 * @throws {DataError} Naming the file and line, if the template fails (its `raise_exception`
 * included, with its message) or does not render the conversation's prefixes as prefixes of
 * the whole.
 */
export function chatSegments(record: ChatRecord, template: ChatRenderer): Segment[] {
  const { messages } = record;
  const whole = render(template, record, messages, false);
  const segments: Segment[] = [];
  let done = 0;
  messages.forEach((message, i) => {
    if (message.role !== "assistant") return;
    const before = render(template, record, messages.slice(0, i), true);
    const through = render(template, record, messages.slice(0, i + 1), false);
    if (!through.startsWith(before) || !whole.startsWith(through) || before.length < done) {
      const first = (n: number) =>
        n === 0 ? "no messages" : n === 1 ? "the first message" : `the first ${n} messages`;
      const why = !through.startsWith(before)
        ? `the rendering of ${first(i)} with the generation prompt is not the start of ` +
          `the rendering of ${first(i + 1)}`
        : !whole.startsWith(through)
        ? `the rendering of ${first(i + 1)} is not the start of the whole conversation's`
        : `assistant turn messages[${i}] would start before the previous one ends`;
      throw new DataError(
        `Invalid conversation in ${place(record.file, record.line)}: the chat template does ` +
          `not render conversation prefixes consistently (${why}), so the assistant turns ` +
          `cannot be located; use a template that writes each turn regardless of later turns`,
        { file: record.file, line: record.line },
      );
    }
    segments.push({ text: whole.slice(done, before.length), train: false });
    segments.push({ text: whole.slice(before.length, through.length), train: true });
    done = through.length;
  });
  segments.push({ text: whole.slice(done), train: false });
  return segments;
}

/**
 * A record's segments, whatever its format.
 *
 * @param record The record.
 * @param options `template`: the chat template (needed for chat records).
 * @returns Its segments.
 * @throws {DataError} As {@linkcode chatSegments}.
 * @throws {TypeError} If a chat record comes without a template.
 */
export function instructionSegments(
  record: InstructionRecord,
  options: { template?: ChatRenderer } = {},
): Segment[] {
  if (record.format === "alpaca") return alpacaSegments(record);
  return chatSegments(record, needTemplate(options.template));
}

function needTemplate(template: ChatRenderer | undefined): ChatRenderer {
  if (template === undefined) throw new TypeError("Cannot render a chat record without a template");
  return template;
}

/**
 * A record as a prompt to generate from and the reference answer: for Alpaca the prompt and
 * `output`; for chat the conversation up to its last assistant turn, rendered with the
 * generation prompt, and that turn's content.
 *
 * @param record The record.
 * @param options `template`: the chat template (needed for chat records).
 * @returns The prompt and the trimmed reference.
 * @throws {DataError} If the template fails on the conversation.
 */
export function instructionExample(
  record: InstructionRecord,
  options: { template?: ChatRenderer } = {},
): InstructionExample {
  if (record.format === "alpaca") {
    return { prompt: alpacaPrompt(record.instruction, record.input), ref: record.output.trim() };
  }
  const template = needTemplate(options.template);
  const last = record.messages.findLastIndex((m) => m.role === "assistant");
  return {
    prompt: render(template, record, record.messages.slice(0, last), true),
    ref: record.messages[last].content.trim(),
  };
}
