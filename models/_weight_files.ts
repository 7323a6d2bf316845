// Small checks every family's weight loader makes on a checkpoint.

import { join } from "node:path";

/** Whether two shapes are equal. */
export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** A shape as messages print it, `[2, 3]`. */
export function formatShape(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

/** The file a missing tensor should have been in: the index when sharded, as Checkpoint reads it. */
export async function describeCheckpoint(folder: string): Promise<string> {
  const index = join(folder, "model.safetensors.index.json");
  try {
    if ((await Deno.stat(index)).isFile) return index;
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return join(folder, "model.safetensors");
}
