/**
 * Output folders and paths: where a command may write, and creating the folder it writes into.
 *
 * Outputs never replace a folder wholesale: a writer creates the folder when it is missing and
 * replaces only the files it owns, each atomically (`writeFileAtomic`), so whatever else a user
 * keeps there survives. Folders and files are created without explicit modes, so they take the
 * user's umask like any file a shell would create.
 *
 * @module
 */

import { dirname, isAbsolute, join, relative, resolve, sep } from "node:path";

/**
 * An output path that may not be written: it is, is inside, or contains an input, it is a file
 * where a folder is written, or it holds a file that would shadow the new output.
 */
export class OutputPathError extends Error {
  /** Always `"OutputPathError"`. */
  override name = "OutputPathError";

  /**
   * @param path The output path as given.
   * @param reason Why it is refused, without the path (`it is inside the model folder "m"`).
   * @param label How the output was named (`--out`, `stages[3].out`); default `output`.
   */
  constructor(readonly path: string, readonly reason: string, label = "output") {
    super(`Cannot write ${label} "${path}": ${reason}`);
  }
}

/** A path a command reads, for {@linkcode checkOutputPath}. */
export interface InputPath {
  /** The path as given. */
  path: string;
  /** What it is, for messages: `model folder`, `adapter file`, `data file`. */
  what: string;
  /**
   * An output folder may contain it (a pipeline file kept in its run folder): only an output
   * that is it or lies inside it is refused.
   */
  mayBeInsideOutput?: boolean;
}

/**
 * The real path of `path` when it exists; otherwise the real path of its nearest existing parent
 * with the rest appended, so a not-yet-created output compares correctly with existing inputs
 * (symbolic links in its existing part followed).
 *
 * @param path Any path.
 * @returns An absolute path without symbolic links in its existing part.
 */
export async function resolveReal(path: string): Promise<string> {
  let head = resolve(path);
  const rest: string[] = [];
  for (;;) {
    try {
      return join(await Deno.realPath(head), ...rest);
    } catch (e) {
      // NotADirectory: a file in the middle of the path; the file itself is the existing part.
      if (!(e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory)) throw e;
    }
    const parent = dirname(head);
    if (parent === head) return join(head, ...rest);
    rest.unshift(head.slice(parent.length).replace(/^[\\/]+/, ""));
    head = parent;
  }
}

function isInside(child: string, parent: string): boolean {
  const rel = relative(parent, child);
  return rel !== "" && rel !== ".." && !rel.startsWith(`..${sep}`) && !isAbsolute(rel);
}

/**
 * Refuses an output that is one of the inputs, lies inside one, or contains one, comparing real
 * paths (an output that does not exist yet is resolved through its nearest existing parent).
 *
 * @param out The output file or folder, as given.
 * @param inputs Everything the command reads.
 * @param options `label`: how the output is named in the message (`--out`); default `output`.
 * @throws {OutputPathError} Naming the output and the input it collides with.
 *
 * @example Refusing to merge into the base model's folder
 * ```ts ignore
 * await checkOutputPath("models/gpt2/merged", [{ path: "models/gpt2", what: "model folder" }]);
 * // OutputPathError: Cannot write output "models/gpt2/merged": it is inside the model folder
 * ```
 */
export async function checkOutputPath(
  out: string,
  inputs: readonly InputPath[],
  options: { label?: string } = {},
): Promise<void> {
  const real = await resolveReal(out);
  for (const input of inputs) {
    const other = await resolveReal(input.path);
    const relation = real === other
      ? "it is"
      : isInside(real, other)
      ? "it is inside"
      : isInside(other, real) && !input.mayBeInsideOutput
      ? "it contains"
      : undefined;
    if (relation) {
      throw new OutputPathError(
        out,
        `${relation} the ${input.what} "${input.path}"`,
        options.label,
      );
    }
  }
}

/**
 * Refuses an output folder that exists as a file, or that holds one of `shadowedBy` (a file a
 * loader would read instead of the new output, such as a sharded checkpoint's index beside a new
 * `model.safetensors`). Nothing is removed: the user decides what to do with such a file.
 *
 * @param folder The output folder, as given.
 * @param options `label` for the message; `shadowedBy`: file names the folder must not hold.
 * @throws {OutputPathError} Naming the folder and the reason.
 */
export async function checkOutputFolder(
  folder: string,
  options: { label?: string; shadowedBy?: readonly string[] } = {},
): Promise<void> {
  const info = await statOrUndefined(folder);
  if (info === undefined) return;
  if (!info.isDirectory) {
    throw new OutputPathError(folder, "it is a file, not a folder", options.label);
  }
  for (const name of options.shadowedBy ?? []) {
    if (await statOrUndefined(join(folder, name))) {
      throw new OutputPathError(
        folder,
        `it holds ${name}, which loaders would read instead of what is written here; ` +
          `choose another folder or move it away`,
        options.label,
      );
    }
  }
}

/**
 * Refuses an output file path that is an existing folder.
 *
 * @param path The output file, as given.
 * @param options `label` for the message.
 * @throws {OutputPathError} If `path` is a folder.
 */
export async function checkOutputFile(
  path: string,
  options: { label?: string } = {},
): Promise<void> {
  if ((await statOrUndefined(path))?.isDirectory) {
    throw new OutputPathError(path, "it is a folder, not a file", options.label);
  }
}

/**
 * Creates `folder` (and its parents) when missing, with the default mode, which the umask trims;
 * an existing folder is left as it is.
 *
 * @param folder The folder a writer is about to write files into.
 * @throws {OutputPathError} If `folder` exists as a file.
 */
export async function ensureFolder(folder: string): Promise<void> {
  await checkOutputFolder(folder);
  await Deno.mkdir(folder, { recursive: true });
}

async function statOrUndefined(path: string): Promise<Deno.FileInfo | undefined> {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) {
      return undefined;
    }
    throw e;
  }
}
