/**
 * Shared pieces of the fuzz tests: a bounded fast-check run, the check that a refusal is one line
 * of the project's own error classes naming the file, and byte-level mutations of a valid input.
 *
 * Every run is seeded from `NOLA_TEST_SEED` when it is set (fresh otherwise); fast-check's failure
 * report gives the seed and the shrunk counterexample, so a failure can be replayed and then kept
 * as an explicit regression case.
 *
 * @module
 */

import fc from "fast-check";
import { freshSeed } from "../_util.ts";

/** How much of one target to fuzz: at most `runs` cases, at most `ms` milliseconds. */
export interface FuzzBudget {
  runs: number;
  ms: number;
}

// A single case slower than this is a failure: it stands for a hang, or for work that follows a
// size the input merely claims.
const CASE_LIMIT_MS = 2_000;
const SHRINK_MS = 10_000;

/**
 * Checks `check` on values of `input` within a budget and fails with fast-check's report (seed,
 * shrunk counterexample). Past the time limit the remaining cases are generated but not run, so
 * no case is ever abandoned half-way (an abandoned one would leak its open files).
 *
 * @param name The target, for the summary line.
 * @param input The inputs.
 * @param check One case: returns when the input was handled as it should be, throws otherwise.
 * @param budget Cases and time.
 * @returns How many cases ran.
 */
export async function fuzz<T>(
  name: string,
  input: fc.Arbitrary<T>,
  check: (value: T) => unknown | Promise<unknown>,
  budget: FuzzBudget,
): Promise<number> {
  const seed = freshSeed();
  const start = performance.now();
  const deadline = start + budget.ms;
  let ran = 0;
  // After a failure, fast-check shrinks it: those cases run on, up to SHRINK_MS.
  let failedAt: number | undefined;
  const details = await fc.check(
    fc.asyncProperty(input, async (value) => {
      const caseStart = performance.now();
      if (failedAt === undefined ? caseStart > deadline : caseStart > failedAt + SHRINK_MS) return;
      ran++;
      try {
        await check(value);
        const ms = performance.now() - caseStart;
        if (ms > CASE_LIMIT_MS) throw new Error(`One case took ${ms.toFixed(0)} ms`);
      } catch (e) {
        failedAt ??= performance.now();
        throw e;
      }
    }),
    { seed, numRuns: budget.runs },
  );
  if (details.failed) {
    throw new Error(
      `${name}: ${fc.defaultReportMessage(details)}\n${details.errorInstance}\n` +
        `(replay with NOLA_TEST_SEED=${seed})`,
    );
  }
  const seconds = ((performance.now() - start) / 1000).toFixed(1);
  console.log(`fuzz ${name}: ${ran} cases in ${seconds} s (seed ${seed})`);
  return ran;
}

/** A constructor of an error class the project throws for inputs a user can get wrong. */
// deno-lint-ignore no-explicit-any
export type ErrorClass = abstract new (...args: any[]) => Error;

/**
 * Passes when `error` is a refusal a user can read: an instance of one of `classes`, a message of
 * one line that names `file`. Anything else (a TypeError from deep inside, a stack-only failure)
 * is rethrown with what was wrong.
 *
 * @param error What was thrown.
 * @param classes The error classes this input may end in.
 * @param file What the message must name (the file or folder as given).
 */
export function assertRefusal(error: unknown, classes: readonly ErrorClass[], file: string): void {
  const problem = !(error instanceof Error)
    ? `threw a non-Error ${String(error)}`
    : !classes.some((c) => error instanceof c)
    ? `threw ${error.name}, not one of ${classes.map((c) => c.name).join(", ")}`
    : error.message.includes("\n") || error.message.includes("\r")
    ? "the message has more than one line"
    : !error.message.includes(file)
    ? `the message does not name ${JSON.stringify(file)}`
    : undefined;
  if (problem === undefined) return;
  const detail = error instanceof Error ? (error.stack ?? error.message) : String(error);
  throw new Error(`Not a one-line refusal: ${problem}: ${JSON.stringify(detail)}`);
}

/**
 * Calls `fn` and checks that it either returns or refuses as {@link assertRefusal} says.
 *
 * @returns What `fn` returned, or `undefined` when it refused.
 */
export async function refusedOrOk<T>(
  fn: () => T | Promise<T>,
  classes: readonly ErrorClass[],
  file: string,
): Promise<T | undefined> {
  try {
    return await fn();
  } catch (e) {
    assertRefusal(e, classes, file);
    return undefined;
  }
}

/** One edit of a byte string. */
export type ByteEdit =
  | { op: "set"; at: number; value: number }
  | { op: "flip"; at: number; bit: number }
  | { op: "insert"; at: number; bytes: Uint8Array }
  | { op: "delete"; at: number; count: number }
  | { op: "truncate"; at: number };

/** Edits at positions given as fractions of the length, so they fit any input. */
export const byteEdits: fc.Arbitrary<ByteEdit[]> = fc.array(
  fc.oneof(
    fc.record({ op: fc.constant("set" as const), at: fc.nat(), value: fc.nat(255) }),
    fc.record({ op: fc.constant("flip" as const), at: fc.nat(), bit: fc.nat(7) }),
    fc.record({
      op: fc.constant("insert" as const),
      at: fc.nat(),
      bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }),
    }),
    fc.record({
      op: fc.constant("delete" as const),
      at: fc.nat(),
      count: fc.integer({ min: 1, max: 16 }),
    }),
    fc.record({ op: fc.constant("truncate" as const), at: fc.nat() }),
  ),
  { minLength: 1, maxLength: 4 },
);

/** `bytes` with `edits` applied in order; positions wrap around the current length. */
export function applyEdits(
  bytes: Uint8Array,
  edits: readonly ByteEdit[],
): Uint8Array<ArrayBuffer> {
  let out = bytes.slice();
  for (const edit of edits) {
    const at = out.length === 0 ? 0 : edit.at % (out.length + (edit.op === "insert" ? 1 : 0));
    if (edit.op === "set" && out.length > 0) out[at] = edit.value;
    else if (edit.op === "flip" && out.length > 0) out[at] ^= 1 << edit.bit;
    else if (edit.op === "insert") {
      out = concat(out.subarray(0, at), edit.bytes, out.subarray(at));
    } else if (edit.op === "delete") {
      out = concat(out.subarray(0, at), out.subarray(at + edit.count));
    } else if (edit.op === "truncate") out = out.slice(0, at);
  }
  return out;
}

function concat(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

/** JSON values that stress a validator: huge, negative, fractional, wrong-typed, nested. */
export const nastyJson: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(
    null,
    true,
    false,
    0,
    -1,
    0.5,
    -0,
    2 ** 31,
    2 ** 32,
    2 ** 40,
    2 ** 53,
    2 ** 53 + 2,
    2 ** 64,
    1e308,
    -1e308,
    "",
    "\n",
    "__proto__",
    "constructor",
    [],
    {},
    [0],
    [0, 0],
    [2 ** 40, 2 ** 40 + 1],
    [0, 2 ** 40],
  ),
  fc.integer(),
  fc.double(),
  fc.string(),
  fc.jsonValue({ maxDepth: 3 }),
);
