/**
 * The error of a tokenizer's files (`tokenizer.json`, `tokenizer_config.json`, a chat template),
 * apart from the tokenizer so that the modules reading those files can throw it too.
 *
 * @module
 */

import { oneLine } from "../formats/one_line.ts";

/** A tokenizer file that cannot be read or used. */
export class TokenizerError extends Error {
  /** The file the error is about. */
  readonly file: string;

  /**
   * Makes the error.
   *
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
