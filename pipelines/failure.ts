/**
 * The one line the CLI prints for a failure a user can cause (a missing or unreadable path, a
 * folder where a file belongs, a missing Deno permission, a bad file, the GPU refusing), and
 * nothing for an internal error, which keeps its stack.
 *
 * @module
 */

import { AdapterFileError } from "../adapters/adapter_file.ts";
import { DataError } from "../data/readers.ts";
import { TemplateError } from "../data/templates.ts";
import { OutputPathError } from "../formats/folder.ts";
import { SafetensorsError } from "../formats/safetensors.ts";
import { GpuError } from "../kernels/gpu.ts";
import { ModelConfigError, ModelWeightsError } from "../models/model.ts";
import { TokenizerError } from "../models/tokenizer.ts";
import { CheckpointError } from "../train/checkpoint.ts";
import { NonFiniteLossError } from "../train/trainer.ts";
import { PipelineError } from "./parse.ts";

/** Errors whose message is already the line to print. */
const USER_ERRORS = [
  PipelineError,
  DataError,
  TemplateError,
  AdapterFileError,
  SafetensorsError,
  GpuError,
  ModelConfigError,
  ModelWeightsError,
  TokenizerError,
  NonFiniteLossError,
  CheckpointError,
  OutputPathError,
];

/** What the file system or the permission system refused: a path, a kind, an access. */
const FILE_ERRORS = [
  Deno.errors.NotFound,
  Deno.errors.PermissionDenied,
  Deno.errors.IsADirectory,
  Deno.errors.NotADirectory,
  Deno.errors.AlreadyExists,
  Deno.errors.FilesystemLoop,
];

/** The tasks of deno.json that run a command with the permissions it needs. */
const TASKS: Record<string, string> = { finetune: "deno task finetune", bench: "deno task bench" };

const OPERATIONS: Record<string, string> = {
  readfile: "read",
  open: "open",
  readdir: "list",
  stat: "find",
  lstat: "find",
  realpath: "find",
  mkdir: "create folder",
  remove: "remove",
  writefile: "write",
  copy: "copy",
  rename: "rename",
  chmod: "change the mode of",
};

/**
 * Rewrites a message that ends in Deno's form of an OS error (`Permission denied (os error 13):
 * open 'a'`) as words: the description, and the path unless the message already names it.
 *
 * @param message An error message, possibly with context before the OS error.
 * @returns The message without the OS error number and operation.
 *
 * @example
 * ```ts
 * import { plainOsMessage } from "./pipelines/failure.ts";
 * plainOsMessage("No such file or directory (os error 2): stat 'm'");
 * // 'Cannot find "m": no such file or directory'
 * ```
 */
export function plainOsMessage(message: string): string {
  const m = /^(.*?)([^:]*?) \(os error \d+\)(?:: (\w+) '([^']*)'(?: -> '([^']*)')?)?$/s.exec(
    message,
  );
  if (!m) return message;
  const [, prefix, description, op, from, to] = m;
  if (from === undefined) return `${prefix}${description}`;
  if (prefix !== "") {
    return prefix.includes(from)
      ? `${prefix}${description}`
      : `${prefix}${description} ("${from}")`;
  }
  const verb = OPERATIONS[op] ?? op;
  const target = to === undefined ? `"${from}"` : `"${from}" to "${to}"`;
  return `Cannot ${verb} ${target}: ${description.toLowerCase()}`;
}

/**
 * Deno's message for a missing permission, with the exact flag to add and the task that grants
 * what the command needs.
 */
function permissionMessage(message: string, command: string | undefined): string {
  const task = command === undefined ? undefined : TASKS[command];
  const instead = task ? `, or run it through \`${task}\`` : ", or run it with -A";
  const m = /^Requires (\w+) access to "?([^",]*)"?, run again with the (--allow-[\w-]+) flag/
    .exec(message);
  if (!m) return `${message.replace(/\.$/, "")}${instead}`;
  const [, kind, name, flag] = m;
  return `Requires ${kind} access to "${name}": run again with ${flag}=${name}${instead}`;
}

/**
 * The line to print for a failure a user can cause, or `undefined` for an internal error (a bug),
 * which should be rethrown so that its stack is shown.
 *
 * @param error What was thrown.
 * @param options `command`: the CLI command that failed (for the permission hint).
 * @returns One line, without the `error: ` prefix.
 *
 * @example
 * ```ts
 * import { failureLine } from "./pipelines/failure.ts";
 * failureLine(new Deno.errors.NotFound("No such file or directory (os error 2): stat 'm'"));
 * // 'Cannot find "m": no such file or directory'
 * failureLine(new TypeError("x is undefined")); // undefined
 * ```
 */
export function failureLine(
  error: unknown,
  options: { command?: string } = {},
): string | undefined {
  if (!(error instanceof Error)) return undefined;
  let text: string;
  if (error instanceof Deno.errors.NotCapable) {
    text = permissionMessage(error.message, options.command);
  } else if (USER_ERRORS.some((E) => error instanceof E)) {
    text = plainOsMessage(error.message);
  } else if (FILE_ERRORS.some((E) => error instanceof E)) {
    text = plainOsMessage(error.message);
  } else {
    return undefined;
  }
  if (error instanceof GpuError && /out of memory|outofmemory/i.test(text)) {
    text += " (out of GPU memory: try a smaller batch_size or seq_len)";
  }
  return text.split(/\r?\n/).map((line) => line.trim()).filter((line) => line !== "").join(" ");
}
