/**
 * Reading the keys of a Llama-family `config.json`: typed readers whose failures name the key
 * (with its parent, as `rope_scaling.factor`), and the size limits the family accepts.
 *
 * @module
 */

/** The deepest model accepted (`num_hidden_layers`): sites are listed per layer from the config. */
export const LLAMA_MAX_LAYERS = 4096;
/** The largest width, vocabulary or position count accepted (2^24). */
export const LLAMA_MAX_DIM = 2 ** 24;

/** Throws the config error for a message and the key it is about. */
export type Fail = (message: string, key?: string) => never;

/** Readers of one object's keys; `path` prefixes the names in messages (`rope_scaling.`). */
export function reader(obj: Record<string, unknown>, path: string, fail: Fail) {
  const top = path === "" ? undefined : path.slice(0, -1);
  return {
    positiveInt(key: string, max = Number.MAX_SAFE_INTEGER, what?: string): number {
      const v = obj[key];
      if (v === undefined) return fail(`missing key "${path}${key}"`, top ?? key);
      if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 1) {
        return fail(`"${path}${key}" is ${describe(v)}, expected a positive integer`, top ?? key);
      }
      if (v > max) {
        fail(
          `"${path}${key}" is ${v}, more than the ${max}${what ? ` ${what}` : ""} this project ` +
            `supports`,
          top ?? key,
        );
      }
      return v;
    },
    positiveNumber(key: string, min = 0): number {
      const v = obj[key];
      if (v === undefined) return fail(`missing key "${path}${key}"`, top ?? key);
      const inRange = min > 0 ? v as number >= min : v as number > 0;
      if (typeof v !== "number" || !Number.isFinite(v) || !inRange) {
        return fail(
          `"${path}${key}" is ${describe(v)}, expected ${
            min > 0 ? `a number at least ${min}` : "a positive number"
          }`,
          top ?? key,
        );
      }
      return v;
    },
    flag(key: string, absent: boolean): boolean {
      const v = obj[key];
      if (v === undefined || v === null) return absent;
      if (typeof v !== "boolean") {
        return fail(`"${path}${key}" is ${describe(v)}, expected true or false`, top ?? key);
      }
      return v;
    },
  };
}

/** Whether a value can be a token id. */
export function isTokenId(v: unknown): boolean {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

/** A value as a message names it. */
export function describe(value: unknown): string {
  if (value === undefined) return "missing";
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) return "an array";
  if (value === null) return "null";
  if (typeof value === "object") return "an object";
  return String(value);
}
