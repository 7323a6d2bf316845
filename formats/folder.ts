// Writing a whole output folder at once: built beside its final place, then renamed into it.

import { basename, dirname, join } from "node:path";

/**
 * Creates a temporary folder next to `target`, lets `fill` write into it, and renames it over
 * `target`. An existing target is moved aside first and removed after, so at every moment
 * `target` is the old folder, absent, or the complete new one; on failure the old one is kept.
 */
export async function writeFolderAtomic(
  target: string,
  fill: (folder: string) => Promise<void>,
): Promise<void> {
  const parent = dirname(target);
  const name = basename(target);
  const out = join(parent, name);
  await Deno.mkdir(parent, { recursive: true });
  const tmp = await Deno.makeTempDir({ dir: parent, prefix: `.${name}.tmp-` });
  try {
    await fill(tmp);
    let old: string | undefined;
    try {
      await Deno.lstat(out);
      old = `${tmp}-old`;
      await Deno.rename(out, old);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    try {
      await Deno.rename(tmp, out);
    } catch (e) {
      if (old) await Deno.rename(old, out).catch(() => {});
      throw e;
    }
    if (old) await Deno.remove(old, { recursive: true });
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
}

/** Whether two paths name the same existing file or folder. */
export async function sameFile(a: string, b: string): Promise<boolean> {
  try {
    return await Deno.realPath(a) === await Deno.realPath(b);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}
