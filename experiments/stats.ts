/**
 * The statistics of an experiment's table: mean, sample standard deviation and the pooled
 * standard deviation of two groups, all in float64.
 *
 * @module
 */

/** A figure over repeated runs (seeds). */
export interface Stat {
  /** The runs' values, in run order. */
  values: number[];
  /** Their mean; NaN when there are none. */
  mean: number;
  /** Their sample standard deviation (divisor n - 1); NaN with fewer than two values. */
  std: number;
  /** How many values. */
  n: number;
}

/**
 * Mean and sample standard deviation of `values`.
 *
 * @param values The figure of each run.
 * @returns The statistic; mean NaN for no values, std NaN for fewer than two.
 *
 * @example
 * ```ts
 * import { stat } from "./stats.ts";
 * stat([1, 2, 3]); // { values: [1, 2, 3], mean: 2, std: 1, n: 3 }
 * ```
 */
export function stat(values: readonly number[]): Stat {
  const n = values.length;
  let sum = 0;
  for (const v of values) sum += v;
  const mean = n > 0 ? sum / n : NaN;
  // Two passes: the squares of deviations, not of values, so large means lose no digits.
  let squares = 0;
  for (const v of values) squares += (v - mean) ** 2;
  const std = n > 1 ? Math.sqrt(squares / (n - 1)) : NaN;
  return { values: [...values], mean, std, n };
}

/**
 * The pooled standard deviation of two groups,
 * `sqrt(((n1 - 1) s1^2 + (n2 - 1) s2^2) / (n1 + n2 - 2))`: one spread for both, each group
 * weighted by its degrees of freedom.
 *
 * @param a One group's statistic.
 * @param b The other's.
 * @returns The pooled deviation; 0 when neither group has two values (no spread measured).
 *
 * @example
 * ```ts
 * import { pooledStd, stat } from "./stats.ts";
 * pooledStd(stat([1, 3]), stat([2, 4, 6])); // sqrt((2 + 8) / 3)
 * ```
 */
export function pooledStd(a: Stat, b: Stat): number {
  const dof = Math.max(0, a.n - 1) + Math.max(0, b.n - 1);
  if (dof === 0) return 0;
  const part = (s: Stat) => (s.n > 1 ? (s.n - 1) * s.std ** 2 : 0);
  return Math.sqrt((part(a) + part(b)) / dof);
}

/**
 * `mean ± std` with `digits` decimals; `mean` alone for one value, `-` for none.
 *
 * @param s The statistic.
 * @param digits Decimals.
 * @returns The text for a table cell.
 *
 * @example
 * ```ts
 * import { formatStat, stat } from "./stats.ts";
 * formatStat(stat([45.1, 46.3, 44.8]), 2); // "45.40 ± 0.79"
 * ```
 */
export function formatStat(s: Stat, digits: number): string {
  if (s.n === 0 || !Number.isFinite(s.mean)) return "-";
  if (s.n === 1 || !Number.isFinite(s.std)) return s.mean.toFixed(digits);
  return `${s.mean.toFixed(digits)} ± ${s.std.toFixed(digits)}`;
}
