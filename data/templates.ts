/**
 * Prompt and completion templates in Jinja (through `@huggingface/jinja`).
 *
 * A record's fields are the template's variables: `"{{ mr }}\n"` for the prompt,
 * `" {{ ref }}"` for the completion. Values render as `@huggingface/jinja` renders them (null as
 * the empty text, booleans as `true`/`false`); like Python Jinja, one trailing newline of the
 * template is dropped.
 *
 * Undefined variables are strict: using a field the record does not have is an error naming the
 * template, the field and the record's index, rather than a silently empty prompt. The usual
 * ways to make a field optional still work: `{% if x is defined %}`, `x | default("...")`.
 *
 * @module
 */

import { Environment, Interpreter, Template } from "@huggingface/jinja";
import type { DataRecord } from "./readers.ts";

/** The prompt and completion templates of one task. */
export interface Templates {
  /** Jinja source of the prompt (the part the loss ignores). */
  prompt: string;
  /** Jinja source of the completion (the part the model learns to write). */
  completion: string;
}

/** A rendered training example. */
export interface RenderedExample {
  /** The prompt text. */
  prompt: string;
  /** The completion text. */
  completion: string;
}

/** A template that does not compile or does not render for a record. */
export class TemplateError extends Error {
  /** Which template: `prompt`, `completion` or a name given by the caller. */
  readonly template: string;
  /** The missing field, when that is the error. */
  readonly field?: string;
  /** The index of the record being rendered, when known. */
  readonly index?: number;

  /**
   * @param message The whole message, already naming the template.
   * @param where The template, field and record.
   */
  constructor(
    message: string,
    where: { template: string; field?: string; index?: number; cause?: unknown },
  ) {
    super(message, where.cause === undefined ? undefined : { cause: where.cause });
    this.name = "TemplateError";
    this.template = where.template;
    this.field = where.field;
    this.index = where.index;
  }
}

class MissingField extends Error {
  constructor(readonly field: string) {
    super(`Undefined variable "${field}"`);
  }
}

// Node shapes of @huggingface/jinja's AST (pinned version) that the strict interpreter reads.
interface JinjaNode {
  type: string;
  value?: unknown;
  callee?: JinjaNode;
  operand?: JinjaNode;
  filter?: JinjaNode;
  test?: JinjaNode;
}

/** The names under which an undefined variable is allowed (`x is defined`, `x | default(..)`). */
const LENIENT_TESTS = new Set(["defined", "undefined", "none"]);
const LENIENT_FILTERS = new Set(["default", "d"]);

/**
 * `@huggingface/jinja` renders an undefined variable as the empty text. This interpreter throws
 * instead, except where the template asks about definedness. It overrides three evaluation
 * methods of the pinned library version; tests/data/templates_test.ts checks the behaviour.
 */
class StrictInterpreter extends Interpreter {
  #lenient = 0;

  constructor(env: Environment) {
    super(env);
    // deno-lint-ignore no-explicit-any
    const self = this as any;
    const evaluateIdentifier = self.evaluateIdentifier.bind(this);
    const evaluateTest = self.evaluateTestExpression.bind(this);
    const evaluateFilter = self.evaluateFilterExpression.bind(this);
    self.evaluateIdentifier = (node: JinjaNode, scope: Environment) => {
      const value = evaluateIdentifier(node, scope);
      if (value.type === "UndefinedValue" && this.#lenient === 0) {
        throw new MissingField(String(node.value));
      }
      return value;
    };
    self.evaluateTestExpression = (node: JinjaNode, scope: Environment) =>
      this.#around(LENIENT_TESTS.has(String(node.test?.value)), () => evaluateTest(node, scope));
    self.evaluateFilterExpression = (node: JinjaNode, scope: Environment) => {
      const filter = node.filter?.type === "CallExpression" ? node.filter.callee : node.filter;
      return this.#around(
        LENIENT_FILTERS.has(String(filter?.value)),
        () => evaluateFilter(node, scope),
      );
    };
  }

  #around<T>(lenient: boolean, run: () => T): T {
    if (!lenient) return run();
    this.#lenient++;
    try {
      return run();
    } finally {
      this.#lenient--;
    }
  }
}

/** A compiled template: render it many times. */
export class CompiledTemplate {
  /** The name used in error messages. */
  readonly name: string;
  /** The Jinja source. */
  readonly source: string;
  readonly #template: Template;

  /**
   * Compiles a template.
   *
   * @param source Jinja source.
   * @param options `name`: the name used in error messages (default `template`).
   * @throws {TemplateError} If the source is not valid Jinja.
   */
  constructor(source: string, options: { name?: string } = {}) {
    this.name = options.name ?? "template";
    this.source = source;
    try {
      this.#template = new Template(source);
    } catch (e) {
      throw new TemplateError(`Invalid template "${this.name}": ${messageOf(e)}`, {
        template: this.name,
        cause: e,
      });
    }
  }

  /**
   * Renders the template with a record's fields as variables.
   *
   * @param record The record.
   * @param options `index`: the record's index, for error messages.
   * @returns The text.
   * @throws {TemplateError} If the template uses a field the record lacks, or fails otherwise.
   */
  render(record: DataRecord, options: { index?: number } = {}): string {
    const env = new Environment();
    setGlobals(env);
    for (const [key, value] of Object.entries(record)) env.set(key, value);
    const where = options.index === undefined ? "" : ` of record ${options.index}`;
    try {
      const result = new StrictInterpreter(env).run(this.#template.parsed);
      return String(result.value);
    } catch (e) {
      if (e instanceof MissingField) {
        throw new TemplateError(
          `Template "${this.name}" uses field "${e.field}" missing from record${
            options.index === undefined ? "" : ` ${options.index}`
          } (it has ${fieldList(record)})`,
          { template: this.name, field: e.field, index: options.index, cause: e },
        );
      }
      throw new TemplateError(
        `Template "${this.name}" failed on the fields${where}: ${messageOf(e)}`,
        { template: this.name, index: options.index, cause: e },
      );
    }
  }
}

/**
 * The globals `Template.render` sets (the library does not export its set-up), less
 * `strftime_now`: a rendered dataset must not depend on the clock.
 */
function setGlobals(env: Environment): void {
  for (const [name, value] of [["true", true], ["false", false], ["none", null]] as const) {
    env.set(name, value);
    env.set(name[0].toUpperCase() + name.slice(1), value);
  }
  env.set("raise_exception", (message: unknown) => {
    throw new Error(String(message));
  });
  env.set("range", (start: number, stop?: number, step = 1) => {
    if (stop === undefined) [start, stop] = [0, start];
    const out: number[] = [];
    if (step > 0) { for (let i = start; i < stop; i += step) out.push(i); }
    else if (step < 0) { for (let i = start; i > stop; i += step) out.push(i); }
    return out;
  });
}

function fieldList(record: DataRecord): string {
  const keys = Object.keys(record);
  return keys.length === 0 ? "no fields" : keys.map((k) => `"${k}"`).join(", ");
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

const cache = new Map<string, CompiledTemplate>();

function compiled(source: string, name: string): CompiledTemplate {
  const key = `${name}\u0000${source}`;
  let template = cache.get(key);
  if (!template) {
    template = new CompiledTemplate(source, { name });
    cache.set(key, template);
  }
  return template;
}

/**
 * Renders one record into a prompt and a completion.
 *
 * @param record The record; its fields are the templates' variables.
 * @param templates The prompt and completion templates.
 * @param options `index`: the record's index, named in errors.
 * @returns The rendered prompt and completion.
 * @throws {TemplateError} Naming the template (`prompt` or `completion`), the field and the record
 * index when a field is missing; naming the template when it is not valid Jinja.
 *
 * @example An E2E record
 * ```ts
 * import { renderExample } from "./templates.ts";
 * renderExample({ mr: "name[The Mill]", ref: "The Mill." }, {
 *   prompt: "{{ mr }} =>",
 *   completion: " {{ ref }}",
 * }); // { prompt: "name[The Mill] =>", completion: " The Mill." }
 * ```
 */
export function renderExample(
  record: DataRecord,
  templates: Templates,
  options: { index?: number } = {},
): RenderedExample {
  return {
    prompt: compiled(templates.prompt, "prompt").render(record, options),
    completion: compiled(templates.completion, "completion").render(record, options),
  };
}

/**
 * Renders every record, naming the failing record's index in errors.
 *
 * @param records The records.
 * @param templates The prompt and completion templates.
 * @returns One rendered example per record, in order.
 * @throws {TemplateError} As {@linkcode renderExample}.
 */
export function renderExamples(
  records: readonly DataRecord[],
  templates: Templates,
): RenderedExample[] {
  return records.map((record, index) => renderExample(record, templates, { index }));
}
