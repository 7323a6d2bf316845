/**
 * Aligned plain-text tables for benchmark output: text columns left, numbers right.
 *
 * @module
 */

/** Formats a header and rows of cells; a column whose cells all parse as numbers is right-aligned. */
export function formatTable(
  header: readonly string[],
  rows: readonly (readonly string[])[],
): string {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
  const numeric = header.map((_, c) =>
    rows.length > 0 && rows.every((r) => r[c] !== "" && Number.isFinite(Number(r[c])))
  );
  const line = (cells: readonly string[]) =>
    cells.map((cell, c) => numeric[c] ? cell.padStart(widths[c]) : cell.padEnd(widths[c]))
      .join("  ").trimEnd();
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}
