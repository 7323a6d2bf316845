// Fuzzing pipeline files: the default pipeline with lines replaced by hostile YAML, mutated
// bytes, arbitrary text, `--set` overrides, alias bombs ("billion laughs") and deep nesting. Every
// case ends in a pipeline or in one line of PipelineError naming the file, at once.

import assert from "node:assert/strict";
import fc from "fast-check";
import { parsePipeline, PipelineError } from "../../pipelines/parse.ts";
import { applyEdits, assertRefusal, byteEdits, fuzz } from "./_fuzz.ts";

const FILE = "pipelines/fuzz.yaml";
const TEXT = await Deno.readTextFile("pipelines/default.yaml");
const LINES = TEXT.split("\n");

/** Parses; a refusal must be one line of PipelineError naming FILE. */
function parseOrRefuse(text: string, overrides: string[] = []): void {
  try {
    parsePipeline(text, { file: FILE, overrides });
  } catch (e) {
    assertRefusal(e, [PipelineError], FILE);
  }
}

/** A flow list whose items anchor `depth` levels, each a list of `fan` aliases of the one before. */
function aliasBomb(depth: number, fan: number): string {
  const items = ["&l0 lol"];
  for (let i = 1; i <= depth; i++) {
    items.push(`&l${i} [${Array(fan).fill(`*l${i - 1}`).join(", ")}]`);
  }
  return `[${items.join(", ")}, *l${depth}]`;
}

const SNIPPETS = [
  "*a",
  "&a x",
  "&a [*a]",
  "!!binary aGVsbG8=",
  "!!js/function x",
  "!!set {a, b}",
  "!!map []",
  "!local x",
  "!<tag:yaml.org,2002:str> x",
  "? [a]",
  "<<: *a",
  "{",
  "[",
  "]",
  "}",
  "|",
  ">-",
  "'",
  '"',
  '"\\u0000\\n"',
  "\t",
  "~",
  "null",
  ".inf",
  "-.inf",
  ".nan",
  "0x1F",
  "0o17",
  "1e400",
  "-0",
  "2147483648",
  "9007199254740993",
  "1_000",
  "2001-12-14",
  "yes",
  "%YAML 1.1",
  "%TAG ! tag:x,2000:",
  "---",
  "...",
  "#",
  "\u2028",
  "\ufeff",
  "\u0000",
  "\r",
  "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
  "{a: {a: {a: {a: 1}}}",
  "- - - - - x",
  "[h.*.attn.c_attn.q, *x]",
  "{kind: cosine, warmup_steps: -1}",
  "[loss, loss]",
  "h.*.attn.c_attn.q\u0000",
];

type LineEdit =
  | { op: "value"; line: number; snippet: string }
  | { op: "insert"; line: number; indent: number; text: string }
  | { op: "delete"; line: number };

const snippet = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...SNIPPETS) },
  { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 12 }) },
);

const lineEdits: fc.Arbitrary<LineEdit[]> = fc.array(
  fc.oneof(
    fc.record({ op: fc.constant("value" as const), line: fc.nat(), snippet }),
    fc.record({
      op: fc.constant("insert" as const),
      line: fc.nat(),
      indent: fc.constantFrom(0, 2, 3, 4, 6),
      text: fc.oneof(
        fc.constantFrom("x: 1", "- kind: save", "kind: train", "seed: 1", "out: out/x"),
        fc.tuple(fc.constantFrom("x", "seed", "kind", "r", "targets", "<<"), snippet)
          .map(([k, v]) => `${k}: ${v}`),
        snippet,
      ),
    }),
    fc.record({ op: fc.constant("delete" as const), line: fc.nat() }),
  ),
  { minLength: 1, maxLength: 4 },
);

/** The default pipeline after `edits`; a value edit keeps the line's key and indentation. */
function editLines(edits: LineEdit[]): string {
  const lines = LINES.slice();
  for (const e of edits) {
    const at = e.line % (lines.length + (e.op === "insert" ? 1 : 0));
    if (e.op === "delete") lines.splice(at, 1);
    else if (e.op === "insert") lines.splice(at, 0, " ".repeat(e.indent) + e.text);
    else {
      const colon = lines[at].indexOf(": ");
      lines[at] = colon < 0
        ? `${lines[at]} ${e.snippet}`
        : `${lines[at].slice(0, colon)}: ${e.snippet}`;
    }
  }
  return lines.join("\n");
}

const overrideArb = fc.oneof(
  fc.tuple(
    fc.constantFrom(
      "seed",
      "out",
      "name",
      "stages.train.lr",
      "stages.attach.targets",
      "stages.attach.targets.0",
      "stages.attach.targets.9",
      "stages.train.schedule.kind",
      "stages.load.model",
      "stages.nope.x",
      "stages.train",
      "stages..x",
      "seed.x",
      "",
    ),
    snippet,
  ).map(([k, v]) => `${k}=${v}`),
  fc.string({ unit: "binary", maxLength: 16 }),
);

// Under ~8 s in all for this file on the 2-core CI machine.
const EDITED = { runs: 3000, ms: 3_000 };
const BYTES = { runs: 2000, ms: 2_000 };
const ARBITRARY = { runs: 10000, ms: 1_000 };
const OVERRIDES = { runs: 2000, ms: 2_000 };

Deno.test("fuzz: parsePipeline on the default pipeline with hostile lines ends in one line", async () => {
  await fuzz("pipeline lines", lineEdits, (edits) => parseOrRefuse(editLines(edits)), EDITED);
});

Deno.test("fuzz: parsePipeline on mutated bytes of the default pipeline ends in one line", async () => {
  const bytes = new TextEncoder().encode(TEXT);
  await fuzz("pipeline bytes", byteEdits, (edits) => {
    parseOrRefuse(new TextDecoder().decode(applyEdits(bytes, edits)));
  }, BYTES);
});

Deno.test("fuzz: parsePipeline on arbitrary text ends in one line", async () => {
  const text = fc.oneof(
    fc.string({ unit: "binary", maxLength: 64 }),
    fc.array(fc.constantFrom(...SNIPPETS, "\n", "\n  ", ": ", "- ", "a"), { maxLength: 12 })
      .map((parts) => parts.join("")),
    fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
  );
  await fuzz("pipeline text", text, (t) => parseOrRefuse(t), ARBITRARY);
});

Deno.test("fuzz: --set overrides on the default pipeline end in a pipeline or one line", async () => {
  await fuzz(
    "pipeline overrides",
    fc.array(overrideArb, { minLength: 1, maxLength: 3 }),
    (overrides) => parseOrRefuse(TEXT, overrides),
    OVERRIDES,
  );
});

Deno.test("alias bombs and deep nesting are refused in one line, at once", () => {
  const head = "version: 1\nname: bomb\n";
  const load = "stages:\n  - kind: load\n    model: m\n";
  const attach = "  - kind: attach\n    method: nola\n    r: 8\n    k: 8\n    targets: ";
  const bomb = aliasBomb(9, 9); // 9^9 = 387,420,489 leaves if anything expanded it
  const cases: [string, string][] = [
    ["billion laughs as the targets", `${head}${load}${attach}${bomb}\n`],
    ["billion laughs as the seed", `${head}seed: ${bomb}\n${load}`],
    ["billion laughs under an unknown key", `${head}lol: ${bomb}\n${load}`],
    ["billion laughs as the stages", `${head}stages: ${bomb}\n`],
    ["a stage list that holds itself", `${head}stages: &s [*s]\n`],
    ["targets that hold themselves", `${head}${load}${attach}&t [*t]\n`],
    // Each alias was resolved by walking the whole document, and repeats were found by indexOf:
    // minutes, where a single walk takes milliseconds.
    [
      "20000 aliases of one anchor",
      TEXT.replace("metrics: [loss,", `metrics: [&m loss, ${Array(20_000).fill("*m").join(", ")},`),
    ],
    ["10000 nested flow lists", `${head}seed: ${"[".repeat(10_000)}${"]".repeat(10_000)}\n${load}`],
    [
      "10000 nested flow maps",
      `${head}seed: ${"{a: ".repeat(10_000)}1${"}".repeat(10_000)}\n${load}`,
    ],
    [
      "2000 nested block maps",
      `${head}seed:\n${
        Array.from({ length: 2000 }, (_, i) => `${" ".repeat(i + 1)}k${i}:`).join("\n")
      } 1\n${load}`,
    ],
    [
      "2000 nested block lists",
      `${head}seed:\n${
        Array.from({ length: 2000 }, (_, i) => `${" ".repeat(2 * i)}-`).join("\n")
      } 1\n${load}`,
    ],
  ];
  for (const [what, text] of cases) {
    const start = performance.now();
    assert.throws(() => parsePipeline(text, { file: FILE }), (e: Error) => {
      assertRefusal(e, [PipelineError], FILE);
      return true;
    }, what);
    const ms = performance.now() - start;
    assert.ok(ms < 2_000, `${what}: ${ms.toFixed(0)} ms`);
  }
  // 20000 aliases where they are allowed to repeat.
  const targets = Array(20_000).fill("*q").join(", ");
  const start = performance.now();
  const many = parsePipeline(
    TEXT.replace(/targets:\n( +- .*\n)+/, `targets: [&q h.*.attn.c_attn.q, ${targets}]\n`),
    { file: FILE },
  );
  const attached = many.stages.find((s) => s.kind === "attach") as unknown as { targets: string[] };
  assert.equal(attached.targets.length, 20_001);
  assert.ok(performance.now() - start < 2_000);
  // An override may not hold aliases at all.
  assert.throws(
    () => parsePipeline(TEXT, { file: FILE, overrides: [`seed=${aliasBomb(9, 9)}`] }),
    /aliases \(\*name\) cannot be used in overrides/,
  );
  // Aliases as YAML means them still work.
  const list = TEXT.match(/metrics: (\[.*\])/)![1];
  const shared = TEXT.replace(`metrics: ${list}`, `metrics: &m ${list}`)
    .replace(`metrics: ${list}`, "metrics: *m");
  assert.notEqual(shared, TEXT);
  const stages = parsePipeline(shared, { file: FILE }).stages as unknown as {
    metrics?: string[];
  }[];
  const metrics = list.slice(1, -1).split(", ");
  assert.deepEqual(stages.filter((s) => s.metrics).map((s) => s.metrics), [metrics, metrics]);
});
