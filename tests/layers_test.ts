/**
 * The layering of DESIGN.md section 3, checked on the import graph of the working tree: no import
 * points up a rank, no files or folders import each other in a circle, and no production module
 * imports from tests/ or fixtures/.
 *
 * The graph is read from the sources themselves (static `import`/`export ... from`, `import type`,
 * side-effect and dynamic `import("...")` with a literal specifier), so the test needs no
 * subprocess; comments, strings and regular expressions are skipped so a JSDoc example that
 * shows an import is not taken for one.
 *
 * @module
 */

import assert from "node:assert/strict";
import { posix } from "node:path";
import { fileURLToPath } from "node:url";

/** Layer folders (and root modules) by rank, from the ground up. */
const RANKS: Record<string, number> = {
  kernels: 0,
  formats: 0,
  data: 0,
  models: 1,
  adapters: 2,
  train: 3,
  eval: 3,
  pipelines: 4,
  "main.ts": 5,
  "mod.ts": 5,
  bench: 5,
  experiments: 5,
  examples: 5,
};

/** Folders outside the ranking: they may import anything, and nothing ranked may import them. */
const UNRANKED = new Set(["tests", "fixtures"]);

/** Folders never scanned: build output, caches, tool state. */
const SKIPPED = new Set(["out", "node_modules", ".git", ".deno", ".gl"]);

/** A module graph: repository-relative POSIX path to the paths it imports. */
export type ImportGraph = Map<string, string[]>;

/** The layer a path belongs to: its top folder, or the file itself at the root. */
function layerOf(path: string): string {
  const slash = path.indexOf("/");
  return slash < 0 ? path : path.slice(0, slash);
}

/** The folder a path counts in for folder cycles; root modules share the root. */
function folderOf(path: string): string {
  const slash = path.indexOf("/");
  return slash < 0 ? "." : path.slice(0, slash);
}

/**
 * Every layering violation in `graph`, one line each, sorted.
 *
 * @param graph Each module's resolved imports (targets outside the graph count too).
 * @returns Lines naming an upward edge, a production import of tests/ or fixtures/, a module in
 * no layer, or a cycle between files or between folders; empty when the graph is clean.
 */
export function layerViolations(graph: ImportGraph): string[] {
  const out: string[] = [];
  const isProduction = (path: string) => !UNRANKED.has(layerOf(path));
  const folderEdges = new Map<string, Set<string>>();
  for (const [from, targets] of graph) {
    if (!isProduction(from)) continue;
    const fromRank = RANKS[layerOf(from)];
    if (fromRank === undefined) {
      out.push(`${from}: "${layerOf(from)}" is in no layer of DESIGN.md section 3`);
      continue;
    }
    for (const to of targets) {
      if (!isProduction(to)) {
        out.push(`${from} -> ${to}: production code imports ${layerOf(to)}/`);
        continue;
      }
      const toRank = RANKS[layerOf(to)];
      if (toRank !== undefined && toRank > fromRank) {
        out.push(
          `${from} -> ${to}: ${layerOf(from)} (rank ${fromRank}) imports ${layerOf(to)} ` +
            `(rank ${toRank})`,
        );
      }
      if (folderOf(from) !== folderOf(to)) {
        const set = folderEdges.get(folderOf(from)) ?? new Set();
        set.add(folderOf(to));
        folderEdges.set(folderOf(from), set);
      }
    }
  }
  const fileEdges = new Map([...graph].map(([from, to]) => [from, new Set(to)]));
  for (const cycle of cycles(fileEdges)) out.push(`import cycle between files: ${cycle}`);
  for (const cycle of cycles(folderEdges)) out.push(`import cycle between folders: ${cycle}`);
  return out.sort();
}

/**
 * The strongly connected components of more than one node (or a node importing itself), each
 * written as its members joined by " <-> " in sorted order (Tarjan's algorithm).
 */
function cycles(edges: Map<string, Set<string>>): string[] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[] = [];
  const visit = (node: string) => {
    index.set(node, index.size);
    low.set(node, index.get(node)!);
    stack.push(node);
    onStack.add(node);
    for (const next of edges.get(node) ?? []) {
      if (!index.has(next)) {
        visit(next);
        low.set(node, Math.min(low.get(node)!, low.get(next)!));
      } else if (onStack.has(next)) {
        low.set(node, Math.min(low.get(node)!, index.get(next)!));
      }
    }
    if (low.get(node) !== index.get(node)) return;
    const members: string[] = [];
    let member: string;
    do {
      member = stack.pop()!;
      onStack.delete(member);
      members.push(member);
    } while (member !== node);
    if (members.length > 1 || edges.get(node)?.has(node)) {
      found.push(members.sort().join(" <-> "));
    }
  };
  for (const node of [...edges.keys()].sort()) if (!index.has(node)) visit(node);
  return found;
}

/** Characters after which a `/` starts a regular expression rather than a division. */
const REGEX_AFTER = new Set([..."(,=:[!&|?{};+-*%<>~^"]);
const REGEX_AFTER_WORDS = /\b(return|typeof|case|do|else|in|of|void|yield|await|delete)$/;

/**
 * `source` with comments blanked and the contents of regular expressions and template
 * literals blanked, so only real import statements are left for the patterns below.
 * Quoted strings are kept: the specifiers live in them.
 */
export function codeOnly(source: string): string {
  let out = "";
  let i = 0;
  let last = ""; // last significant character emitted, for the regex-or-division guess
  const templateDepth: number[] = []; // brace depth at each open `${`
  let braces = 0;
  while (i < source.length) {
    const c = source[i];
    const next = source[i + 1];
    if (c === "/" && next === "/") {
      while (i < source.length && source[i] !== "\n") i++;
      continue;
    }
    if (c === "/" && next === "*") {
      const end = source.indexOf("*/", i + 2);
      const stop = end < 0 ? source.length : end + 2;
      out += source.slice(i, stop).replace(/[^\n]/g, " ");
      i = stop;
      continue;
    }
    if (c === '"' || c === "'") {
      let j = i + 1;
      while (j < source.length && source[j] !== c && source[j] !== "\n") {
        j += source[j] === "\\" ? 2 : 1;
      }
      out += source.slice(i, j + 1);
      i = j + 1;
      last = c;
      continue;
    }
    if (c === "`" || (c === "}" && templateDepth.at(-1) === braces)) {
      if (c === "}") templateDepth.pop();
      let j = i + 1;
      while (j < source.length && source[j] !== "`") {
        if (source[j] === "\\") j++;
        else if (source[j] === "$" && source[j + 1] === "{") break;
        j++;
      }
      if (source[j] === "$") {
        templateDepth.push(braces);
        j++;
      }
      out += "`";
      i = j + 1;
      last = "`";
      continue;
    }
    if (
      c === "/" && (last === "" || REGEX_AFTER.has(last) || REGEX_AFTER_WORDS.test(out.trimEnd()))
    ) {
      let j = i + 1;
      let inClass = false;
      while (j < source.length && source[j] !== "\n" && (inClass || source[j] !== "/")) {
        if (source[j] === "\\") j++;
        else if (source[j] === "[") inClass = true;
        else if (source[j] === "]") inClass = false;
        j++;
      }
      out += "/ /";
      i = j + 1;
      last = "/";
      continue;
    }
    if (c === "{") braces++;
    if (c === "}") braces--;
    out += c;
    if (!/\s/.test(c)) last = c;
    i++;
  }
  return out;
}

const IMPORT_PATTERNS = [
  // import x from "a"; import type { X } from "a"; export { x } from "a"; export * as n from "a"
  /(?:^|[;}\n])\s*(?:import|export)\b[^;"'`]*?\bfrom\s*(["'])([^"'\n]+)\1/g,
  // import "a";
  /(?:^|[;}\n])\s*import\s*(["'])([^"'\n]+)\1/g,
  // await import("a")
  /\bimport\s*\(\s*(["'])([^"'\n]+)\1\s*[,)]/g,
];

/** The specifiers `source` imports, static, type-only and dynamic alike. */
export function importSpecifiers(source: string): string[] {
  const code = codeOnly(source);
  return IMPORT_PATTERNS.flatMap((pattern) => [...code.matchAll(pattern)].map((m) => m[2]));
}

/** Every .ts file under `root`, as POSIX paths relative to it. */
async function tsFiles(root: string, dir = ""): Promise<string[]> {
  const files: string[] = [];
  for await (const entry of Deno.readDir(dir === "" ? root : posix.join(root, dir))) {
    const path = dir === "" ? entry.name : posix.join(dir, entry.name);
    if (entry.isDirectory && !SKIPPED.has(entry.name)) files.push(...await tsFiles(root, path));
    else if (entry.isFile && entry.name.endsWith(".ts")) files.push(path);
  }
  return files;
}

/** The import graph of every .ts file of the repository, relative imports only. */
async function repositoryGraph(root: string): Promise<ImportGraph> {
  const graph: ImportGraph = new Map();
  for (const file of (await tsFiles(root)).sort()) {
    const source = await Deno.readTextFile(posix.join(root, file));
    const targets = importSpecifiers(source)
      .filter((spec) => spec.startsWith("./") || spec.startsWith("../"))
      .map((spec) => posix.normalize(posix.join(posix.dirname(file), spec)));
    graph.set(file, [...new Set(targets)]);
  }
  return graph;
}

const ROOT = fileURLToPath(new URL("..", import.meta.url)).replaceAll("\\", "/");

Deno.test("no import points up a rank, goes round in a circle or reaches into tests/", async () => {
  const graph = await repositoryGraph(ROOT);
  assert(graph.size > 100, `Only ${graph.size} modules found under ${ROOT}`);
  assert(graph.get("main.ts")?.includes("pipelines/run.ts"), "main.ts's dynamic import missed");
  assert.deepEqual(layerViolations(graph), []);
});

Deno.test("layerViolations names upward edges, file and folder cycles and imports of tests/", () => {
  const graph: ImportGraph = new Map([
    ["kernels/a.ts", ["kernels/b.ts", "formats/c.ts"]],
    ["kernels/b.ts", ["kernels/a.ts"]],
    ["formats/c.ts", ["kernels/b.ts"]],
    ["models/gpt2.ts", ["adapters/linear_adapter.ts", "kernels/a.ts"]],
    ["adapters/linear_adapter.ts", ["models/gpt2.ts"]],
    ["pipelines/run.ts", ["tests/_util.ts", "train/trainer.ts"]],
    ["train/trainer.ts", ["models/gpt2.ts"]],
    ["tools/x.ts", []],
    ["tests/_util.ts", ["pipelines/run.ts", "kernels/a.ts"]],
  ]);
  assert.deepEqual(layerViolations(graph), [
    "import cycle between files: adapters/linear_adapter.ts <-> models/gpt2.ts",
    "import cycle between files: formats/c.ts <-> kernels/a.ts <-> kernels/b.ts",
    "import cycle between files: pipelines/run.ts <-> tests/_util.ts",
    "import cycle between folders: adapters <-> models",
    "import cycle between folders: formats <-> kernels",
    "models/gpt2.ts -> adapters/linear_adapter.ts: models (rank 1) imports adapters (rank 2)",
    "pipelines/run.ts -> tests/_util.ts: production code imports tests/",
    'tools/x.ts: "tools" is in no layer of DESIGN.md section 3',
  ]);
  assert.deepEqual(layerViolations(new Map([["train/t.ts", ["models/m.ts", "eval/e.ts"]]])), []);
});

Deno.test("importSpecifiers reads every import form and skips comments, strings and regexes", () => {
  const source = [
    "/**",
    ' * @example import { x } from "./in_doc_comment.ts";',
    " */",
    'import assert from "node:assert/strict";',
    "import type {",
    "  A,",
    "  B,",
    '} from "./types.ts";',
    'import "./side_effect.ts";',
    'import code from "./k.wgsl" with { type: "text" };',
    'export { c } from "./reexport.ts";',
    'export * as d from "./star.ts";',
    'export type { E } from "./type_reexport.ts";',
    'const re = /["\'`]/g; // import x from "./in_line_comment.ts";',
    'const t = `import y from "./in_template.ts" ${re.source} done`;',
    'const s = "import z from \\"./in_string.ts\\"";',
    'const { f } = await import("./dynamic.ts");',
    "export function g(from: string) { return from; }",
  ].join("\n");
  assert.deepEqual(importSpecifiers(source).sort(), [
    "./dynamic.ts",
    "./k.wgsl",
    "./reexport.ts",
    "./side_effect.ts",
    "./star.ts",
    "./type_reexport.ts",
    "./types.ts",
    "node:assert/strict",
  ]);
});
