/**
 * Benchmark entry point: acquires the GPU, runs the benchmarks, prints a table and writes
 * `out/bench/matmul.json`. Run with `deno task bench` (through `main.ts bench`) or directly:
 * `deno run --allow-read=. --allow-write=out --allow-env bench/main.ts [filter]`.
 *
 * @module
 */

import { Gpu } from "../kernels/gpu.ts";
import { Matmul } from "../kernels/matmul.ts";
import { benchMatmul, type BenchRow } from "./matmul.ts";

/** Options of {@link runBench}. */
export interface RunBenchOptions {
  /** Keeps only rows whose variant, op or shape contains this text. */
  filter?: string;
  /** Where the JSON goes (default `out/bench/matmul.json`). */
  output?: string;
}

/** What {@link runBench} writes. */
export interface BenchReport {
  adapter: string;
  date: string;
  /** `gpu` when timestamp queries timed the kernels, `wall` otherwise. */
  timing: "gpu" | "wall";
  /** The variant `Matmul.load(gpu, { variant: "auto" })` chose on this adapter. */
  auto: string;
  rows: BenchRow[];
}

/**
 * Runs the matmul benchmark, prints an aligned table and writes the report atomically.
 *
 * @param options row filter and output path
 * @returns the report written
 *
 * @example Benchmark the square shape only
 * ```ts
 * import { runBench } from "./bench/main.ts";
 * await runBench({ filter: "square" });
 * ```
 */
export async function runBench(options: RunBenchOptions = {}): Promise<BenchReport> {
  const output = options.output ?? "out/bench/matmul.json";
  using gpu = await Gpu.acquire();
  const timing = gpu.hasTimestamps ? "gpu" : "wall";
  console.log(`adapter: ${gpu.adapterName}`);
  console.log(`timing:  ${timing === "gpu" ? "GPU timestamp queries" : "wall clock per submit"}`);
  const auto = (await Matmul.load(gpu, { variant: "auto" })).variant;
  console.log(`auto:    ${auto}\n`);
  const rows = await benchMatmul(gpu, { filter: options.filter });
  console.log(formatTable(rows));
  const report: BenchReport = {
    adapter: gpu.adapterName,
    date: new Date().toISOString(),
    timing,
    auto,
    rows,
  };
  await writeAtomic(output, JSON.stringify(report, null, 2) + "\n");
  console.log(`\nwrote ${output}`);
  return report;
}

/** The rows as an aligned text table, one line per measurement. */
export function formatTable(rows: readonly BenchRow[]): string {
  const header = ["variant", "op", "shape", "M x N x K", "reps", "ms", "GFLOP/s"];
  const lines = rows.map((r) => [
    r.variant,
    r.op,
    r.shape,
    `${r.m} x ${r.n} x ${r.k}`,
    String(r.reps),
    r.ms.toFixed(2),
    r.gflops.toFixed(2),
  ]);
  const widths = header.map((h, c) => Math.max(h.length, ...lines.map((l) => l[c].length)));
  const numeric = new Set([4, 5, 6]);
  const format = (cells: string[]) =>
    cells.map((cell, c) => numeric.has(c) ? cell.padStart(widths[c]) : cell.padEnd(widths[c]))
      .join("  ").trimEnd();
  return [format(header), widths.map((w) => "-".repeat(w)).join("  "), ...lines.map(format)]
    .join("\n");
}

/** Writes a temporary file beside `path`, then renames it over `path`. */
async function writeAtomic(path: string, text: string): Promise<void> {
  const dir = path.includes("/") ? path.slice(0, path.lastIndexOf("/")) : ".";
  await Deno.mkdir(dir, { recursive: true });
  const temp = `${path}.${Deno.pid}.tmp`;
  await Deno.writeTextFile(temp, text);
  await Deno.rename(temp, path);
}

if (import.meta.main) {
  await runBench({ filter: Deno.args[0] });
}
