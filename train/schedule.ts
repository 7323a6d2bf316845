/**
 * Learning-rate schedules as pure functions of the optimizer step, with the semantics of Hugging
 * Face `transformers` (`get_constant_schedule_with_warmup`, `get_linear_schedule_with_warmup`,
 * `get_cosine_schedule_with_warmup`, `get_cosine_with_min_lr_schedule_with_warmup`).
 *
 * `step` counts the optimizer updates already applied (0 for the first update), which is what a
 * `LambdaLR` has seen when `optimizer.step()` runs before `scheduler.step()`. With `W` warmup steps
 * and `N` total steps the factor on the peak `lr` is:
 *
 *     warmup (step < W):   step / max(1, W)            (so the first update uses lr 0, as in HF)
 *     constant:            1
 *     linear:              r + (1 - r) * max(0, (N - step) / max(1, N - W))
 *     cosine:              r + (1 - r) * 0.5 * (1 + cos(pi * min(1, (step - W) / max(1, N - W))))
 *
 * where `r = minLr / lr` (HF's `min_lr_rate`; 0 by default, which gives HF's plain linear and
 * cosine schedules exactly). One deviation, past the end only: HF's cosine rises again after `N`
 * steps; here the progress is capped at 1 so the rate stays at `minLr`. `warmupRatio` resolves to
 * `ceil(ratio * N)` steps, as `TrainingArguments.get_warmup_steps` does.
 *
 * @module
 */

/** The shapes of a schedule after the warmup. */
export type ScheduleKind = "constant" | "linear" | "cosine";

/**
 * A learning-rate schedule. At most one of `warmupSteps` and `warmupRatio` may be given; neither
 * means no warmup.
 */
export interface Schedule {
  /** The shape after the warmup: constant, linear decay or cosine decay to `minLr`. */
  kind: ScheduleKind;
  /** Peak learning rate, reached at the end of the warmup. */
  lr: number;
  /** Optimizer steps of the whole run; linear and cosine reach `minLr` there. */
  totalSteps: number;
  /** Steps of linear warmup from 0 to `lr`, an integer in [0, totalSteps]. */
  warmupSteps?: number;
  /** Warmup as a fraction of `totalSteps` in [0, 1], rounded up to whole steps. */
  warmupRatio?: number;
  /** Rate at `totalSteps` for linear and cosine, in [0, lr]; default 0. */
  minLr?: number;
}

const FIELDS = new Set(["kind", "lr", "totalSteps", "warmupSteps", "warmupRatio", "minLr"]);

function fail(field: string, message: string): never {
  throw new RangeError(`Schedule "${field}" ${message}`);
}

/**
 * Checks a schedule and returns its warmup in steps.
 *
 * @param schedule The schedule to check.
 * @returns The number of warmup steps (`warmupRatio` resolved).
 * @throws {RangeError} Naming the field that is missing, unknown or out of range.
 *
 * @example Resolve a warmup ratio
 * ```ts
 * import { warmupSteps } from "./train/schedule.ts";
 * warmupSteps({ kind: "constant", lr: 1e-3, totalSteps: 200, warmupRatio: 0.03 }); // 6
 * ```
 */
export function warmupSteps(schedule: Schedule): number {
  if (typeof schedule !== "object" || schedule === null) {
    throw new TypeError("Schedule must be an object");
  }
  for (const key of Object.keys(schedule)) {
    if (!FIELDS.has(key)) fail(key, "is not a schedule field");
  }
  const { kind, lr, totalSteps, minLr } = schedule;
  if (kind !== "constant" && kind !== "linear" && kind !== "cosine") {
    fail("kind", `must be "constant", "linear" or "cosine", got ${JSON.stringify(kind)}`);
  }
  if (typeof lr !== "number" || !Number.isFinite(lr) || lr < 0) {
    fail("lr", `must be a finite number >= 0, got ${lr}`);
  }
  if (!Number.isSafeInteger(totalSteps) || totalSteps < 1) {
    fail("totalSteps", `must be an integer >= 1, got ${totalSteps}`);
  }
  if (minLr !== undefined) {
    if (kind === "constant") fail("minLr", "has no meaning for a constant schedule");
    if (typeof minLr !== "number" || !(minLr >= 0 && minLr <= lr)) {
      fail("minLr", `must be in [0, lr = ${lr}], got ${minLr}`);
    }
  }
  const { warmupSteps: steps, warmupRatio: ratio } = schedule;
  if (steps !== undefined && ratio !== undefined) {
    fail("warmupRatio", 'cannot be given together with "warmupSteps"');
  }
  if (steps !== undefined) {
    if (!Number.isSafeInteger(steps) || steps < 0 || steps > totalSteps) {
      fail("warmupSteps", `must be an integer in [0, totalSteps = ${totalSteps}], got ${steps}`);
    }
    return steps;
  }
  if (ratio !== undefined) {
    if (typeof ratio !== "number" || !(ratio >= 0 && ratio <= 1)) {
      fail("warmupRatio", `must be in [0, 1], got ${ratio}`);
    }
    return Math.ceil(ratio * totalSteps);
  }
  return 0;
}

/**
 * The multiplier on the peak rate at `step`, in [0, 1]: what `Optimizer.step` takes, so
 * groups with different peak rates follow one schedule (each group's floor is its own
 * `lr * minLr / schedule.lr`, HF's `min_lr_rate`).
 *
 * @param step Optimizer updates already applied (0 for the first update).
 * @param schedule The schedule (validated on every call; it is cheap).
 * @returns The factor; `lrAt(step, schedule) === schedule.lr * lrFactor(step, schedule)`.
 * @throws {RangeError} For an invalid schedule or a step that is not an integer >= 0.
 *
 * @example Halfway through a linear decay
 * ```ts
 * import { lrFactor } from "./train/schedule.ts";
 * lrFactor(60, { kind: "linear", lr: 1e-2, totalSteps: 110, warmupSteps: 10 }); // 0.5
 * ```
 */
export function lrFactor(step: number, schedule: Schedule): number {
  const warmup = warmupSteps(schedule);
  if (!Number.isSafeInteger(step) || step < 0) {
    throw new RangeError(`Schedule step must be an integer >= 0, got ${step}`);
  }
  if (step < warmup) return step / Math.max(1, warmup);
  if (schedule.kind === "constant") return 1;
  const floor = schedule.lr > 0 ? (schedule.minLr ?? 0) / schedule.lr : 0;
  const span = Math.max(1, schedule.totalSteps - warmup);
  const shape = schedule.kind === "linear"
    ? Math.max(0, (schedule.totalSteps - step) / span)
    : 0.5 * (1 + Math.cos(Math.PI * Math.min(1, (step - warmup) / span)));
  return shape * (1 - floor) + floor;
}

/**
 * The learning rate of the update after `step` updates.
 *
 * @param step Optimizer updates already applied (0 for the first update).
 * @param schedule The schedule.
 * @returns `schedule.lr * lrFactor(step, schedule)`.
 * @throws {RangeError} As {@link lrFactor}.
 *
 * @example The paper's GPT-2 setting: 500 warmup steps, then linear decay to 0
 * ```ts
 * import { lrAt } from "./train/schedule.ts";
 * const schedule = { kind: "linear", lr: 5e-3, totalSteps: 10_000, warmupSteps: 500 } as const;
 * lrAt(0, schedule); // 0
 * lrAt(250, schedule); // 0.0025
 * lrAt(500, schedule); // 0.005
 * ```
 */
export function lrAt(step: number, schedule: Schedule): number {
  return schedule.lr * lrFactor(step, schedule);
}
