/**
 * Atomic file writes: readers see either the old file or the whole new one, never a torn write.
 *
 * @module
 */

import { dirname } from "node:path";

/**
 * Writes `data` to `path` atomically: the bytes go to a temporary file in the same folder (so the
 * rename cannot cross file systems), are flushed to disk, and the temporary file is renamed over
 * `path`. On failure the temporary file is removed and `path` is left as it was.
 *
 * @param path The file to create or replace.
 * @param data The whole new content.
 * @returns Resolves once the rename is done.
 *
 * @example Replacing a checkpoint
 * ```ts
 * import { writeFileAtomic } from "./atomic.ts";
 * await writeFileAtomic("out/run/adapter.safetensors", new Uint8Array([1, 2, 3]));
 * ```
 */
export async function writeFileAtomic(path: string, data: Uint8Array): Promise<void> {
  const tmp = `${path}.tmp-${randomSuffix()}`;
  try {
    // createNew: never follow or clobber something that happens to have the temporary name. No
    // mode: the file gets 0o666 less the umask, as any file the user creates.
    const file = await Deno.open(tmp, { write: true, createNew: true }).catch((e) => {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
      throw new Deno.errors.NotFound(`Cannot write "${path}": no folder "${dirname(path)}"`);
    });
    try {
      let written = 0;
      while (written < data.length) written += await file.write(data.subarray(written));
      // Without the flush a crash after the rename can leave an empty file under the final name.
      await file.syncData();
    } finally {
      file.close();
    }
    await Deno.rename(tmp, path).catch((e) => {
      if (!(e instanceof Deno.errors.IsADirectory)) throw e;
      throw new Deno.errors.IsADirectory(`Cannot write file "${path}": it is a folder`);
    });
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

/**
 * Copies the file `from` to `to` atomically, as {@linkcode writeFileAtomic} writes it: the copy
 * takes the default mode (less the umask), not the source's.
 *
 * @param from The file to copy (read whole: meant for configs and tokenizer files).
 * @param to The file to create or replace.
 * @returns Resolves once the rename is done.
 *
 * @example Copying a tokenizer into an output folder
 * ```ts
 * import { copyFileAtomic } from "./atomic.ts";
 * await copyFileAtomic("fixtures/tiny-gpt2/tokenizer.json", "out/tokenizer.json");
 * ```
 */
export async function copyFileAtomic(from: string, to: string): Promise<void> {
  await writeFileAtomic(to, await Deno.readFile(from));
}

/**
 * Writes `text` as UTF-8 to `path` atomically, as {@linkcode writeFileAtomic} does.
 *
 * @param path The file to create or replace.
 * @param text The whole new content.
 * @returns Resolves once the rename is done.
 *
 * @example Saving a run's config
 * ```ts
 * import { writeTextFileAtomic } from "./atomic.ts";
 * await writeTextFileAtomic("out/run/config.json", JSON.stringify({ r: 8 }) + "\n");
 * ```
 */
export function writeTextFileAtomic(path: string, text: string): Promise<void> {
  return writeFileAtomic(path, new TextEncoder().encode(text));
}

function randomSuffix(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(6));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
