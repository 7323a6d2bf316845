/**
 * Error messages on one line. A message quotes what a file holds (a tensor name, a key, the
 * snippet `JSON.parse` puts in its errors), and a file may hold line breaks and other control
 * characters there; the project's error classes pass their messages through {@linkcode oneLine}
 * so that every refusal prints as exactly one line.
 *
 * @module
 */

const ESCAPES: Record<string, string> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };
// deno-lint-ignore no-control-regex
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;

/**
 * `text` with every control character (C0, DEL, C1) and the Unicode line and paragraph
 * separators written as escapes (`\n`, `\u0000`), so it prints on one line.
 *
 * @param text Any text.
 * @returns The same text where it has no such characters.
 *
 * @example Escaping a quoted snippet
 * ```ts
 * import { oneLine } from "./one_line.ts";
 * console.log(oneLine('"a\nb" is not valid JSON')); // "a\nb" is not valid JSON, on one line
 * ```
 */
export function oneLine(text: string): string {
  return text.replace(
    UNPRINTABLE,
    (c) => ESCAPES[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/**
 * The message of anything thrown, on one line.
 *
 * @param error What was caught.
 * @returns Its message (or its text, for a non-Error), escaped by {@linkcode oneLine}.
 */
export function messageOf(error: unknown): string {
  return oneLine(error instanceof Error ? error.message : String(error));
}
