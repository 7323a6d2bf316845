/**
 * Rotary-embedding settings of a Llama-family `config.json`: `rope_theta` and `rope_scaling`
 * (transformers 4) or `rope_parameters` (transformers 5), read strictly, and written back in
 * Hugging Face's keys.
 *
 * @module
 */

import { describe, type Fail, LLAMA_MAX_DIM, reader } from "./llama_config_keys.ts";

/**
 * A `rope_scaling` this project implements; the same shape as `RopeScaling` in `kernels/rope.ts`,
 * so a config's scaling is handed to the RoPE frequencies as it is.
 */
export type LlamaRopeScaling =
  | { type: "linear"; factor: number }
  | {
    type: "llama3";
    factor: number;
    lowFreqFactor: number;
    highFreqFactor: number;
    originalMaxPositionEmbeddings: number;
  };

const ROPE_KEYS = {
  default: [],
  linear: ["factor"],
  llama3: ["factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"],
} as const;

/**
 * `rope_theta` and `rope_scaling` (transformers 4), or `rope_parameters` (transformers 5), which
 * holds both; a config with both forms must not disagree.
 *
 * @param obj The config.
 * @param fail Throws the config error.
 * @returns The base and the scaling.
 */
export function readRope(
  obj: Record<string, unknown>,
  fail: Fail,
): { ropeTheta: number; ropeScaling?: LlamaRopeScaling } {
  const theta = obj.rope_theta === undefined
    ? 10000
    : reader(obj, "", fail).positiveNumber("rope_theta");
  const legacy = ropeScalingOf(obj.rope_scaling, "rope_scaling", fail);
  if (obj.rope_parameters === undefined || obj.rope_parameters === null) {
    return { ropeTheta: theta, ...legacy };
  }
  const params = obj.rope_parameters;
  const parsed = ropeScalingOf(params, "rope_parameters", fail, ["rope_theta"]);
  const inner = params as Record<string, unknown>;
  const ropeTheta = inner.rope_theta === undefined
    ? theta
    : reader(inner, "rope_parameters.", fail).positiveNumber("rope_theta");
  const scalingText = (s: { ropeScaling?: LlamaRopeScaling }) => JSON.stringify(s.ropeScaling);
  if (obj.rope_scaling != null && scalingText(parsed) !== scalingText(legacy)) {
    fail(`"rope_parameters" disagrees with "rope_scaling"`, "rope_parameters");
  }
  if (obj.rope_theta !== undefined && ropeTheta !== theta) {
    fail(`"rope_parameters" disagrees with "rope_theta"`, "rope_parameters");
  }
  return { ropeTheta, ...parsed };
}

function ropeScalingOf(
  value: unknown,
  key: string,
  fail: Fail,
  alsoAllowed: readonly string[] = [],
): { ropeScaling?: LlamaRopeScaling } {
  if (value === undefined || value === null) return {};
  if (typeof value !== "object" || Array.isArray(value)) {
    return fail(`"${key}" is ${describe(value)}, expected null or an object`, key);
  }
  const obj = value as Record<string, unknown>;
  const { rope_type: ropeType, type } = obj;
  if (ropeType !== undefined && type !== undefined && ropeType !== type) {
    fail(`"${key}" has "rope_type" ${describe(ropeType)} and "type" ${describe(type)}`, key);
  }
  const kind = ropeType ?? type;
  if (kind === undefined) return fail(`"${key}" has no "rope_type" or "type"`, key);
  if (kind !== "default" && kind !== "linear" && kind !== "llama3") {
    return fail(
      `"${key}" type ${describe(kind)} is not supported (supported are "default", "linear" and ` +
        `"llama3")`,
      key,
    );
  }
  const known = ["rope_type", "type", ...ROPE_KEYS[kind], ...alsoAllowed];
  const extra = Object.keys(obj).find((k) => !known.includes(k));
  if (extra !== undefined) {
    fail(`"${key}" has key ${describe(extra)}, which "${kind}" scaling does not use`, key);
  }
  if (kind === "default") return {};
  const read = reader(obj, `${key}.`, fail);
  const factor = read.positiveNumber("factor", 1);
  if (kind === "linear") return { ropeScaling: { type: "linear", factor } };
  const lowFreqFactor = read.positiveNumber("low_freq_factor");
  const highFreqFactor = read.positiveNumber("high_freq_factor");
  if (!(highFreqFactor > lowFreqFactor)) {
    fail(
      `"${key}.high_freq_factor" (${highFreqFactor}) is not greater than ` +
        `"${key}.low_freq_factor" (${lowFreqFactor})`,
      key,
    );
  }
  const originalMaxPositionEmbeddings = read.positiveInt(
    "original_max_position_embeddings",
    LLAMA_MAX_DIM,
  );
  return {
    ropeScaling: {
      type: "llama3",
      factor,
      lowFreqFactor,
      highFreqFactor,
      originalMaxPositionEmbeddings,
    },
  };
}

/**
 * `rope_scaling` as Hugging Face writes it (`rope_type` key), or null for none.
 *
 * @param s The parsed scaling.
 * @returns The JSON value.
 */
export function ropeScalingJson(s: LlamaRopeScaling | undefined): Record<string, unknown> | null {
  if (s === undefined) return null;
  if (s.type === "linear") return { rope_type: "linear", factor: s.factor };
  return {
    rope_type: "llama3",
    factor: s.factor,
    low_freq_factor: s.lowFreqFactor,
    high_freq_factor: s.highFreqFactor,
    original_max_position_embeddings: s.originalMaxPositionEmbeddings,
  };
}
