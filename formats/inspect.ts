/**
 * A readable listing of a safetensors file (a model, an adapter): its tensors and metadata.
 *
 * @module
 */

import { CHECKSUM_KEY, verifyChecksum } from "./checksum.ts";
import { dtypeBytes, SafetensorsFile } from "./safetensors.ts";

/**
 * Lists every tensor of a safetensors file (name, dtype, shape, bytes), the totals, and the
 * metadata, as aligned text. A file with a checksum (`formats/checksum.ts`) is checked, and a
 * damaged one is still listed, with the mismatch on the checksum's line.
 *
 * @param path The `.safetensors` file.
 * @returns The listing.
 * @throws {SafetensorsError} If the file is not a valid safetensors file.
 *
 * @example
 * ```ts
 * import { inspectFile } from "./formats/inspect.ts";
 * console.log(await inspectFile("fixtures/tiny-gpt2/model.safetensors"));
 * ```
 */
export async function inspectFile(path: string): Promise<string> {
  using file = await SafetensorsFile.open(path);
  const rows = [...file.tensors.values()].map((t) => [
    t.name,
    t.dtype,
    `[${t.shape.join(", ")}]`,
    String(t.end - t.begin),
  ]);
  const header = ["tensor", "dtype", "shape", "bytes"];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => i === 3 ? c.padStart(widths[i]) : c.padEnd(widths[i])).join("  ")
      .trimEnd();
  const elements = [...file.tensors.values()].reduce(
    (sum, t) => sum + (t.end - t.begin) / dtypeBytes(t.dtype),
    0,
  );
  const bytes = [...file.tensors.values()].reduce((sum, t) => sum + t.end - t.begin, 0);
  const out = [
    `${path}: ${file.tensors.size} tensors, ${elements} elements, ${bytes} bytes of data`,
    "",
    line(header),
    ...rows.map(line),
  ];
  const metadata = Object.entries(file.metadata);
  if (metadata.length > 0) {
    out.push("", "metadata:");
    const { problem } = await verifyChecksum(file);
    for (const [key, value] of metadata) {
      const note = key !== CHECKSUM_KEY ? "" : problem ? ` (DAMAGED: ${problem})` : " (verified)";
      out.push(`  ${key}: ${value}${note}`);
    }
  }
  return out.join("\n");
}
