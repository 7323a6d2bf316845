/**
 * Benchmarks this tree against another revision side by side: a worktree of the revision is made
 * under `out/`, then each suite runs in the revision and here in turn, several rounds, so both see
 * the same machine load; the table gives the median of each figure and the ratio here / there.
 *
 * ```sh
 * deno run --allow-read --allow-write=out --allow-env --allow-run=git,deno \
 *   bench/compare.ts --base main~3 --rounds 3 gpt2 adapters
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { join, resolve } from "node:path";
import { formatTable } from "./table.ts";

// The figures worth comparing in each suite's JSON, with whether higher is better.
const FIGURES: Record<string, (r: Record<string, unknown>) => [string, number, boolean][]> = {
  gpt2: (r) =>
    (r.rows as Record<string, number | string>[]).flatMap((row) => [
      [`${row.model} fwd tok/s`, row.forwardTokensPerS as number, true],
      [`${row.model} fwd+bwd tok/s`, row.trainTokensPerS as number, true],
      [`${row.model} gen tok/s`, row.generateTokensPerS as number, true],
    ]),
  adapters: (r) => [
    ["NOLA step ms", r.nolaStepMs as number, false],
    ["LoRA step ms", r.loraStepMs as number, false],
    ["NOLA / LoRA", r.ratio as number, false],
  ],
};

async function run(cmd: string, args: string[], cwd: string): Promise<string> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(
      `${cmd} ${args.join(" ")} failed in ${cwd}: ${new TextDecoder().decode(out.stderr)}`,
    );
  }
  return text;
}

const BENCH = [
  "run",
  "--allow-read=.",
  "--allow-write=out",
  "--allow-env",
  "--allow-run=python3,/usr/bin/python3",
  "main.ts",
  "bench",
];

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    options: { base: { type: "string" }, rounds: { type: "string", default: "3" } },
    allowPositionals: true,
  });
  if (!values.base || positionals.length === 0) {
    console.error("usage: bench/compare.ts --base REV [--rounds N] SUITE...");
    Deno.exit(2);
  }
  const suites = positionals;
  for (const s of suites) {
    if (!(s in FIGURES)) {
      console.error(`Cannot compare suite "${s}": expected one of ${Object.keys(FIGURES)}`);
      Deno.exit(2);
    }
  }
  const here = Deno.cwd();
  const sha = (await run("git", ["rev-parse", "--short", values.base], here)).trim();
  const there = resolve(here, "out", `bench-base-${sha}`);
  try {
    await Deno.stat(there);
  } catch {
    await run("git", ["worktree", "add", "--detach", there, sha], here);
  }
  const rounds = Number(values.rounds);
  const seen = new Map<string, { higher: boolean; base: number[]; head: number[] }>();
  for (let round = 0; round < rounds; round++) {
    for (const suite of suites) {
      for (const [side, cwd] of [["base", there], ["head", here]] as const) {
        await run("deno", [...BENCH, suite], cwd);
        const json = JSON.parse(
          await Deno.readTextFile(join(cwd, "out", "bench", `${suite}.json`)),
        );
        for (const [name, value, higher] of FIGURES[suite](json)) {
          const entry = seen.get(name) ?? { higher, base: [], head: [] };
          entry[side].push(value);
          seen.set(name, entry);
        }
        console.error(
          `round ${round + 1}/${rounds}: ${suite} at ${side === "base" ? sha : "HEAD"}`,
        );
      }
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  console.log(`medians of ${rounds} alternating rounds; ratio = HEAD / ${sha}`);
  console.log(formatTable(
    ["figure", sha, "HEAD", "ratio", "better is"],
    [...seen].map(([name, e]) => [
      name,
      median(e.base).toPrecision(4),
      median(e.head).toPrecision(4),
      (median(e.head) / median(e.base)).toFixed(3),
      e.higher ? "higher" : "lower",
    ]),
  ));
}
