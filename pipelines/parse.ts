/**
 * Reading pipeline files: YAML 1.2 (`npm:yaml`, positions kept), `--set` overrides applied to the
 * document, then validation against the table in `schema.ts` into a typed {@link Pipeline}.
 *
 * Every error is a {@link PipelineError}: one line naming the file, the YAML path
 * (`stages[2].lr`) and where it is (`line 14:5`, or the override that put the value there), and
 * for a misspelt key, kind or value the closest known one.
 *
 * @module
 */

import { dirname, isAbsolute, join, relative } from "node:path";
import {
  type Alias,
  type Document,
  isAlias,
  isMap,
  isScalar,
  isSeq,
  LineCounter,
  type Node,
  Pair,
  parseDocument,
  Scalar,
  visit,
  YAMLMap,
  type YAMLSeq,
} from "yaml";
import { oneLine } from "../formats/one_line.ts";
import {
  camelCase,
  COMMON_FIELDS,
  type Field,
  type FieldType,
  type Pipeline,
  type Rule,
  STAGES,
  stageSchema,
  TOP_FIELDS,
} from "./schema.ts";

export { schemaMarkdown } from "./schema_docs.ts";

/** Where a pipeline error is, and what. */
export interface PipelineErrorOptions {
  file: string;
  /** YAML path such as `stages[2].lr`; empty for the document itself. */
  path: string;
  line?: number;
  column?: number;
  /** The `--set` override that put the offending value there. */
  override?: string;
}

/** A mistake in a pipeline file or in an override, with where it is. */
export class PipelineError extends SyntaxError {
  /** The pipeline file as given. */
  readonly file: string;
  /** YAML path of the offending value (`stages[2].lr`); empty for the document. */
  readonly path: string;
  /** 1-based line, undefined when an override put the value there. */
  readonly line: number | undefined;
  /** 1-based column, undefined when an override put the value there. */
  readonly column: number | undefined;
  /** The override that put the offending value there. */
  readonly override: string | undefined;

  /**
   * Creates the error.
   *
   * @param message The whole message, naming the file and the YAML path.
   * @param options Where the mistake is: file, path, line and column, or the override.
   */
  constructor(message: string, options: PipelineErrorOptions) {
    // The YAML parser's messages may quote control characters of the file.
    super(oneLine(message));
    this.name = "PipelineError";
    this.file = options.file;
    this.path = options.path;
    this.line = options.line;
    this.column = options.column;
    this.override = options.override;
  }
}

/** A position in the file, or the override a value came from. */
export interface Location {
  line?: number;
  column?: number;
  override?: string;
}

/** Nodes put into a document by an override, with the override's text. */
const ORIGIN = new WeakMap<object, string>();
/** Every validated path of a pipeline and where it was (for the runner's and checkFiles' errors). */
const LOCATIONS = new WeakMap<Pipeline, Map<string, Location>>();

function whereText(loc: Location): string {
  return loc.override !== undefined
    ? `override ${JSON.stringify(loc.override)}`
    : `line ${loc.line}:${loc.column}`;
}

function makeError(file: string, path: string, loc: Location, text: string, hint?: string) {
  return new PipelineError(
    `${file}: ${text} (${whereText(loc)})${hint ? `: ${hint}` : ""}`,
    { file, path, ...loc },
  );
}

/** Levenshtein distance, case-insensitive. */
export function editDistance(a: string, b: string): number {
  a = a.toLowerCase();
  b = b.toLowerCase();
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}

/**
 * The candidate closest to `word` if it is close enough to be a likely misspelling.
 *
 * @param word What was written.
 * @param candidates `[spelling, suggestion]` pairs (aliases suggest the key they stand for).
 */
export function closest(
  word: string,
  candidates: readonly (readonly [string, string])[],
): string | undefined {
  let best: string | undefined;
  let bestD = Math.max(2, Math.floor(word.length / 3)) + 1;
  for (const [spelling, suggestion] of candidates) {
    const d = editDistance(word, spelling);
    if (d < bestD) [best, bestD] = [suggestion, d];
  }
  return best;
}

function suggestion(word: string, known: readonly string[], aliases: [string, string][] = []) {
  const hit = closest(word, [...known.map((k) => [k, k] as const), ...aliases]);
  return hit !== undefined
    ? `did you mean ${JSON.stringify(hit)}?`
    : `expected one of ${known.map((k) => JSON.stringify(k)).join(", ")}`;
}

function describe(node: unknown): string {
  if (isMap(node)) return "a mapping";
  if (isSeq(node)) return "a list";
  const v = isScalar(node) ? node.value : node;
  if (v === null || v === undefined) return "an empty value";
  return typeof v === "string" ? JSON.stringify(v) : String(v);
}

/** `an integer from 1 to 8`, `a number above 0`, ... */
export function rangeText(t: Extract<FieldType, { type: "number" }>): string {
  const what = t.integer ? "an integer" : "a number";
  if (t.min !== undefined && t.min === t.max) return String(t.min);
  const low = t.above !== undefined
    ? `above ${t.above}`
    : t.min !== undefined
    ? (t.max !== undefined ? `from ${t.min}` : `of at least ${t.min}`)
    : undefined;
  const high = t.max === undefined
    ? undefined
    : t.above !== undefined || t.min === undefined
    ? `at most ${t.max}`
    : `to ${t.max}`;
  return [what, low, high && low && t.above !== undefined ? "and" : undefined, high]
    .filter((s) => s !== undefined).join(" ");
}

const join_ = (path: string, key: string) => (path ? `${path}.${key}` : key);
const pathName = (path: string) => path || "top level";

/** One validation pass over a parsed document. */
class Validator {
  readonly locations = new Map<string, Location>();
  top: { name: string; seed: number } = { name: "", seed: 0 };

  constructor(readonly doc: Document, readonly lc: LineCounter, readonly file: string) {}

  loc(node: unknown, fallback?: Location): Location {
    const origin = node && typeof node === "object" ? ORIGIN.get(node) : undefined;
    if (origin !== undefined) return { override: origin };
    const range = (node as Node | null)?.range;
    if (!range) return fallback ?? { line: 1, column: 1 };
    const { line, col } = this.lc.linePos(range[0]);
    return { line, column: col };
  }

  fail(node: unknown, path: string, text: string, hint?: string): never {
    throw makeError(this.file, path, this.loc(node, this.locations.get(path)), text, hint);
  }

  #aliases: Map<Alias, Node | undefined> | undefined;

  // Alias.resolve walks the whole document for each alias: quadratic in a file of many aliases
  // (100,000 aliases took minutes). One walk finds every alias's anchor the same way.
  resolve(node: unknown): unknown {
    if (!isAlias(node)) return node;
    this.#aliases ??= aliasTargets(this.doc);
    return this.#aliases.get(node);
  }

  value(raw: unknown, type: FieldType, path: string): unknown {
    const node = this.resolve(raw);
    if (!this.locations.has(path)) this.locations.set(path, this.loc(node));
    const scalar = isScalar(node) ? node.value : isMap(node) || isSeq(node) ? undefined : node;
    const wrong = (what: string): never =>
      this.fail(node, path, `${path} must be ${what}, got ${describe(node)}`);
    switch (type.type) {
      case "string":
      case "path": {
        if (typeof scalar !== "string") return wrong("a string");
        if (type.type === "path" && scalar === "") return wrong("a non-empty path");
        if (type.type === "string" && type.pattern && !type.pattern.test(scalar)) {
          return wrong(type.patternDoc ?? `a string matching ${type.pattern}`);
        }
        return scalar;
      }
      case "number": {
        if (typeof scalar !== "number") return wrong(type.integer ? "an integer" : "a number");
        const ok = Number.isFinite(scalar) && (!type.integer || Number.isSafeInteger(scalar)) &&
          (type.min === undefined || scalar >= type.min) &&
          (type.max === undefined || scalar <= type.max) &&
          (type.above === undefined || scalar > type.above);
        return ok ? scalar : wrong(rangeText(type));
      }
      case "boolean":
        return typeof scalar === "boolean" ? scalar : wrong("true or false");
      case "enum": {
        if (typeof scalar === "string" && type.values.includes(scalar)) return scalar;
        const list = type.values.map((v) => JSON.stringify(v)).join(", ");
        const near = typeof scalar === "string"
          ? closest(scalar, type.values.map((v) => [v, v]))
          : undefined;
        this.fail(
          node,
          path,
          `${path} must be one of ${list}, got ${describe(node)}`,
          near !== undefined ? `did you mean ${JSON.stringify(near)}?` : undefined,
        );
        break;
      }
      case "list": {
        if (!isSeq(node)) return wrong("a list");
        const items = node.items.map((item, i) => this.value(item, type.item, `${path}[${i}]`));
        const count = (n: number) => `${n} item${n === 1 ? "" : "s"}`;
        const badLength = (what: string): never =>
          this.fail(node, path, `${path} must be a list of ${what}, got ${count(items.length)}`);
        if (type.length !== undefined && items.length !== type.length) {
          badLength(count(type.length));
        }
        if (type.minItems !== undefined && items.length < type.minItems) {
          badLength(`at least ${count(type.minItems)}`);
        }
        if (type.unique) {
          const seen = new Set<unknown>();
          const dup = items.findIndex((v) => seen.size === seen.add(v).size);
          if (dup >= 0) {
            this.fail(
              node.items[dup],
              `${path}[${dup}]`,
              `${path}[${dup}] repeats ${describe(items[dup])}`,
            );
          }
        }
        return items;
      }
      case "mapping":
        return this.mapping(node, type.fields, type.rules ?? [], path);
      case "stages":
        return this.stages(node, path);
    }
  }

  mapping(
    raw: unknown,
    fields: readonly Field[],
    rules: readonly Rule[],
    path: string,
  ): Record<string, unknown> {
    const node = this.resolve(raw);
    if (!isMap(node)) {
      const what = path ? `${path} must be` : "The pipeline must be";
      this.fail(node, path, `${what} a mapping, got ${describe(node)}`);
    }
    const byKey = new Map(fields.map((f) => [f.key, f]));
    const pairs = new Map<string, Pair>();
    for (const pair of node.items) {
      const key = isScalar(pair.key) ? pair.key.value : pair.key;
      if (typeof key !== "string") {
        this.fail(
          pair.key,
          path,
          `Keys at ${pathName(path)} must be strings, got ${describe(key)}`,
        );
      }
      if (!byKey.has(key)) {
        const aliases = fields.flatMap((f) =>
          (f.aliases ?? []).map((a) => [a, f.key] as [string, string])
        );
        this.fail(
          pair.key,
          join_(path, key),
          `Unknown key ${JSON.stringify(key)} at ${pathName(path)}`,
          suggestion(key, fields.map((f) => f.key), aliases),
        );
      }
      pairs.set(key, pair as Pair);
    }
    const out: Record<string, unknown> = {};
    if (path === "") this.top = out as typeof this.top;
    const here = this.loc(node, this.locations.get(path));
    for (const field of fields) {
      const name = camelCase(field.key);
      const fieldPath = join_(path, field.key);
      const pair = pairs.get(field.key);
      if (pair) {
        out[name] = this.value(pair.value, field.type, fieldPath);
      } else if (field.required) {
        this.fail(
          node,
          path,
          `Missing required key ${JSON.stringify(field.key)} at ${pathName(path)}`,
        );
      } else if (field.default !== undefined || field.derive) {
        this.locations.set(fieldPath, here);
        const value = field.default !== undefined
          ? this.value(this.doc.createNode(field.default), field.type, fieldPath)
          : field.derive!.value({ self: out, top: this.top });
        if (value !== undefined) out[name] = value;
      }
    }
    const given = new Set(pairs.keys());
    for (const rule of rules) {
      const broken = rule.check(out, given);
      if (!broken) continue;
      const at = broken.key !== undefined ? pairs.get(broken.key)?.key : node;
      const where = broken.key !== undefined ? join_(path, broken.key) : path;
      this.fail(at ?? node, where, `${pathName(where)} ${broken.message.replaceAll("`", "")}`);
    }
    return out;
  }

  stages(raw: unknown, path: string): Record<string, unknown>[] {
    const node = this.resolve(raw);
    if (!isSeq(node)) return this.fail(node, path, `${path} must be a list, got ${describe(node)}`);
    if (node.items.length === 0) this.fail(node, path, `${path} must list at least one stage`);
    const out: Record<string, unknown>[] = [];
    const ids = new Map<string, { path: string; loc: Location }>();
    for (const [i, rawItem] of node.items.entries()) {
      const item = this.resolve(rawItem);
      const at = `${path}[${i}]`;
      this.locations.set(at, this.loc(item));
      if (!isMap(item)) this.fail(item, at, `${at} must be a mapping, got ${describe(item)}`);
      const kindNode = this.resolve(item.get("kind", true));
      if (kindNode === undefined) this.fail(item, at, `Missing required key "kind" at ${at}`);
      const kind = isScalar(kindNode) ? kindNode.value : undefined;
      const schema = typeof kind === "string" ? stageSchema(kind) : undefined;
      if (!schema) {
        this.fail(
          kindNode,
          `${at}.kind`,
          `Unknown stage kind ${describe(kindNode)} at ${at}.kind`,
          suggestion(String(kind), STAGES.map((s) => s.kind)),
        );
      }
      const stage = this.mapping(
        item,
        [...COMMON_FIELDS, ...schema.fields],
        schema.rules ?? [],
        at,
      );
      const id = stage.id as string;
      const first = ids.get(id);
      if (first) {
        const idNode = item.get("id", true) ?? item;
        this.fail(
          idNode,
          `${at}.id`,
          `Duplicate stage id ${JSON.stringify(id)} at ${at}`,
          `first used at ${first.path} (${whereText(first.loc)})` +
            (item.has("id") ? "" : `; give each ${kind} stage its own id`),
        );
      }
      ids.set(id, { path: at, loc: this.loc(item) });
      for (const need of schema.needs ?? []) {
        if (need.when && !need.when(stage, out)) continue;
        if (out.some((s) => s.kind === need.kind)) continue;
        const later = node.items.findIndex((s, j) => {
          const n = this.resolve(s);
          return j > i && isMap(n) && (n.get("kind") as unknown) === need.kind;
        });
        this.fail(
          item,
          at,
          `Stage ${JSON.stringify(id)} at ${at} needs an earlier ${
            JSON.stringify(need.kind)
          } stage`,
          later >= 0 ? `the ${need.kind} stage is ${path}[${later}], after it` : undefined,
        );
      }
      out.push(stage);
    }
    return out;
  }
}

/**
 * `parseDocument`, with a clear message where `npm:yaml`'s reads of `LOG_TOKENS` and `LOG_STREAM`
 * (debug switches) are not permitted.
 */
function readYaml(
  text: string,
  options: { lineCounter?: LineCounter; refuse: (text: string) => PipelineError },
): Document {
  try {
    return parseDocument(text, { lineCounter: options.lineCounter, prettyErrors: false });
  } catch (error) {
    // npm:yaml's parser recurses once per level of block nesting (a few thousand levels suffice).
    if (error instanceof RangeError && /call stack/i.test(error.message)) {
      throw options.refuse("YAML nested too deeply to read");
    }
    if (!(error instanceof Deno.errors.NotCapable)) throw error;
    throw new Deno.errors.NotCapable(
      "Reading YAML needs the environment variables LOG_TOKENS and LOG_STREAM (npm:yaml reads " +
        "them): run with --allow-env=LOG_TOKENS,LOG_STREAM or --ignore-env=LOG_TOKENS,LOG_STREAM",
    );
  }
}

/** Each alias of `doc` and the node it stands for: the last node before it with its anchor. */
function aliasTargets(doc: Document): Map<Alias, Node | undefined> {
  const anchors = new Map<string, Node>();
  const targets = new Map<Alias, Node | undefined>();
  visit(doc, {
    Node: (_, node) => {
      if (isAlias(node)) targets.set(node, anchors.get(node.source));
      else if (node.anchor) anchors.set(node.anchor, node);
    },
  });
  return targets;
}

/** At most 80 characters of `line` around `column`, for a message. */
function excerpt(line: string, column: number): string {
  const text = line.trim();
  if (text.length <= 80) return text;
  const start = Math.max(0, Math.min(column - 40, text.length - 80));
  return `${start > 0 ? "..." : ""}${text.slice(start, start + 80)}${
    start + 80 < text.length ? "..." : ""
  }`;
}

function markOrigin(node: unknown, override: string): void {
  if (!node || typeof node !== "object") return;
  ORIGIN.set(node, override);
  visit(node as Node, (_, n) => {
    if (n && typeof n === "object") ORIGIN.set(n, override);
  });
}

/** The effective id of a stage node: its `id`, else its `kind`. */
function stageId(node: unknown): unknown {
  if (!isMap(node)) return undefined;
  return node.has("id") ? node.get("id") : node.get("kind");
}

/**
 * Applies `KEY=VALUE` overrides to a parsed pipeline document, before validation, so that the
 * values meet the same checks as the file's; a value an override put there is reported with the
 * override's text instead of a line.
 *
 * KEY is a dotted path: `seed`, `out`, or `stages.<id>.<key>[.<key>|.<index>]...` where `<id>` is
 * a stage's `id` (or its kind when it has none). VALUE is read as YAML: a scalar (`1e-3`, `true`,
 * `cosine`, `"quoted"`) or a flow collection (`[h.*.attn.c_attn.q, h.*.attn.c_attn.v]`,
 * `{kind: cosine, warmup_steps: 10}`). Missing mappings on the way are created.
 *
 * @param doc The document from `parseDocument` (changed in place).
 * @param overrides The overrides, applied in order.
 * @param options `file`: the pipeline file, for messages.
 * @throws {PipelineError} For a malformed override, an unreadable value or an unknown stage id.
 *
 * @example
 * ```ts
 * import { parseDocument } from "yaml";
 * import { applyOverrides } from "./pipelines/parse.ts";
 * const doc = parseDocument("version: 1\nname: x\nstages:\n  - {kind: load, model: m}\n");
 * applyOverrides(doc, ["seed=3", "stages.load.model=other"]);
 * ```
 */
export function applyOverrides(
  doc: Document,
  overrides: readonly string[],
  options: { file?: string } = {},
): void {
  const file = options.file ?? "<pipeline>";
  for (const override of overrides) {
    const error = (text: string, path = "", hint?: string) =>
      makeError(file, path, { override }, text, hint);
    const eq = override.indexOf("=");
    const parts = eq < 0 ? [] : override.slice(0, eq).trim().split(".");
    if (eq < 0 || parts.some((p) => p === "")) throw error("Invalid override, expected KEY=VALUE");
    const parsed = readYaml(override.slice(eq + 1), {
      refuse: (t) => error(`Invalid value: ${t}`),
    });
    if (parsed.errors.length > 0) {
      throw error(`Invalid value: ${parsed.errors[0].message.split("\n")[0]}`);
    }
    let hasAlias = false;
    visit(parsed, { Alias: () => void (hasAlias = true) });
    if (hasAlias) throw error("Invalid value: aliases (*name) cannot be used in overrides");
    const value = parsed.contents ?? new Scalar(null);
    markOrigin(value, override);

    let cur: unknown = doc.contents;
    if (!isMap(cur)) throw error("Cannot apply an override: the pipeline is not a mapping");
    let path = "";
    let rest = parts;
    if (parts[0] === "stages" && parts.length > 1) {
      const stages = doc.get("stages", true);
      if (!isSeq(stages)) throw error("Cannot address a stage: the pipeline has no list of stages");
      if (parts.length < 3) {
        throw error("Invalid override, expected stages.<id>.<key>=VALUE", "stages");
      }
      const index = stages.items.findIndex((s) => stageId(s) === parts[1]);
      if (index < 0) {
        const ids = stages.items.map(stageId).filter((s): s is string => typeof s === "string");
        throw error(
          `Unknown stage ${JSON.stringify(parts[1])}`,
          "stages",
          suggestion(parts[1], ids),
        );
      }
      cur = stages.items[index];
      path = `stages[${index}]`;
      rest = parts.slice(2);
    }
    for (const [i, part] of rest.entries()) {
      const last = i === rest.length - 1;
      if (isMap(cur)) {
        const pair = cur.items.find((p) => (isScalar(p.key) ? p.key.value : p.key) === part);
        if (last || !pair) {
          const node = last ? value : new YAMLMap();
          if (!last) markOrigin(node, override);
          if (pair) pair.value = node;
          else {
            const key = new Scalar(part);
            markOrigin(key, override);
            cur.items.push(new Pair(key, node));
          }
          cur = node;
        } else cur = pair.value;
        path = join_(path, part);
      } else if (isSeq(cur) && /^\d+$/.test(part)) {
        const seq = cur as YAMLSeq;
        const index = Number(part);
        if (index > seq.items.length || (!last && index === seq.items.length)) {
          throw error(
            `Index ${index} is past the end of ${path} (${seq.items.length} items)`,
            path,
          );
        }
        if (last) seq.items[index] = value;
        cur = seq.items[index];
        path = `${path}[${index}]`;
      } else {
        throw error(
          `Cannot set ${JSON.stringify(part)} inside ${pathName(path)}: not a mapping`,
          path,
        );
      }
    }
  }
}

/** Options of {@link parsePipeline}. */
export interface ParseOptions {
  /** The file name for messages; relative input paths resolve against its folder. */
  file?: string;
  /** `KEY=VALUE` overrides (see {@link applyOverrides}). */
  overrides?: readonly string[];
}

/**
 * Parses and validates a pipeline.
 *
 * @param text The YAML text.
 * @param options `file` (for messages and `baseDir`), `overrides`.
 * @returns The typed pipeline, every default filled in.
 * @throws {PipelineError} For the first mistake, with where it is.
 *
 * @example
 * ```ts
 * import { parsePipeline } from "./pipelines/parse.ts";
 * const p = parsePipeline("version: 1\nname: demo\nstages:\n  - {kind: load, model: m}\n", {
 *   file: "demo.yaml",
 *   overrides: ["seed=7"],
 * });
 * console.log(p.seed, p.out, p.stages[0]); // 7 out/demo { kind: "load", id: "load", model: "m", dtype: "as-stored" }
 * ```
 */
export function parsePipeline(text: string, options: ParseOptions = {}): Pipeline {
  const file = options.file ?? "<pipeline>";
  const lc = new LineCounter();
  const doc = readYaml(text, {
    lineCounter: lc,
    refuse: (t) => makeError(file, "", { line: 1, column: 1 }, t),
  });
  if (doc.errors.length > 0) {
    const error = doc.errors[0];
    const { line, col } = lc.linePos(error.pos[0]);
    const source = text.split(/\r?\n/)[line - 1] ?? "";
    throw makeError(
      file,
      "",
      { line, column: col },
      `YAML syntax error`,
      `${error.message.split("\n")[0].replace(/\.$/, "")}: ${JSON.stringify(excerpt(source, col))}`,
    );
  }
  applyOverrides(doc, options.overrides ?? [], { file });
  const v = new Validator(doc, lc, file);
  if (doc.contents === null) v.fail(null, "", "The pipeline is empty");
  const top = v.mapping(doc.contents, TOP_FIELDS, [], "");
  const pipeline = {
    ...top,
    file,
    baseDir: options.file === undefined ? "." : dirname(options.file),
  } as unknown as Pipeline;
  LOCATIONS.set(pipeline, v.locations);
  return pipeline;
}

/**
 * Reads, parses and validates a pipeline file.
 *
 * @param path The file.
 * @param options `overrides`: `KEY=VALUE` overrides.
 * @returns The typed pipeline.
 * @throws {PipelineError} For a mistake in the file or an override.
 * @throws {Deno.errors.NotFound} If the file does not exist.
 */
export async function loadPipeline(
  path: string,
  options: { overrides?: readonly string[] } = {},
): Promise<Pipeline> {
  return parsePipeline(await Deno.readTextFile(path), { file: path, ...options });
}

/**
 * Where a YAML path of a parsed pipeline was: the path's own position, else its closest ancestor's
 * (a default sits where its mapping is).
 */
export function locate(pipeline: Pipeline, path: string): Location {
  const locations = LOCATIONS.get(pipeline);
  for (let p = path; locations; p = p.replace(/(\.[^.[\]]*|\[\d+\])$/, "")) {
    const loc = locations.get(p);
    if (loc) return loc;
    if (p === "") break;
  }
  return { line: 1, column: 1 };
}

/**
 * An error about a value of a parsed pipeline, in the same format as validation errors, for checks
 * only the runner can make (a pattern that matches no module, a missing split).
 *
 * @example
 * ```ts
 * import { parsePipeline, pipelineError } from "./pipelines/parse.ts";
 * const p = parsePipeline("version: 1\nname: d\nstages:\n  - {kind: load, model: m}\n");
 * throw pipelineError(p, "stages[0].model", `stages[0].model has no config.json`);
 * ```
 */
export function pipelineError(
  pipeline: Pipeline,
  path: string,
  text: string,
  hint?: string,
): PipelineError {
  return makeError(pipeline.file, path, locate(pipeline, path), text, hint);
}

/**
 * Checks that every input file and folder a pipeline names exists and can be read (data files
 * are files, the model a folder, multiple-choice items either), in stage keys and in their
 * mappings (`choices.test`). Relative paths resolve against `baseDir`, by default the pipeline
 * file's folder.
 *
 * @param pipeline A parsed pipeline.
 * @param baseDir The folder relative paths resolve against.
 * @throws {PipelineError} For the first missing one, with its YAML path and position.
 */
export async function checkFiles(pipeline: Pipeline, baseDir = pipeline.baseDir): Promise<void> {
  for (const [i, stage] of pipeline.stages.entries()) {
    const fields = stageSchema(stage.kind)!.fields;
    await checkInputs(pipeline, baseDir, fields, stage, `stages[${i}]`);
  }
}

async function checkInputs(
  pipeline: Pipeline,
  baseDir: string,
  fields: readonly Field[],
  values: object,
  at: string,
): Promise<void> {
  for (const field of fields) {
    const value = (values as Record<string, unknown>)[camelCase(field.key)];
    const path = `${at}.${field.key}`;
    if (field.type.type === "mapping" && value && typeof value === "object") {
      await checkInputs(pipeline, baseDir, field.type.fields, value, path);
      continue;
    }
    if (field.type.type !== "path" || field.type.is === "output") continue;
    if (typeof value !== "string") continue;
    const is = field.type.is;
    const resolved = isAbsolute(value) ? value : join(baseDir, value);
    let info: Deno.FileInfo | undefined;
    try {
      info = await Deno.stat(resolved);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
    const what = is === "file-or-folder" ? "file or folder" : is;
    const shown = isAbsolute(value) ? value : relative(".", resolved) || ".";
    const hint = shown === value ? undefined : `looked for ${JSON.stringify(shown)}`;
    if (!info) {
      throw pipelineError(
        pipeline,
        path,
        `${path}: no such ${what} ${JSON.stringify(value)}`,
        hint,
      );
    }
    const folder = info.isDirectory;
    if (is !== "file-or-folder" && folder !== (is === "folder")) {
      throw pipelineError(
        pipeline,
        path,
        `${path} must be a ${is}, ${JSON.stringify(value)} is a ${folder ? "folder" : "file"}`,
        hint,
      );
    }
    try {
      if (folder) await Deno.readDir(resolved)[Symbol.asyncIterator]().next();
      else (await Deno.open(resolved)).close();
    } catch (error) {
      if (!(error instanceof Deno.errors.PermissionDenied)) throw error;
      throw pipelineError(
        pipeline,
        path,
        `${path}: cannot read ${folder ? "folder" : "file"} ${JSON.stringify(value)}: ` +
          `permission denied`,
        hint,
      );
    }
  }
}
