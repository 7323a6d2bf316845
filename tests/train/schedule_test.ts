import assert from "node:assert/strict";
import { lrAt, lrFactor, type Schedule, warmupSteps } from "../../train/schedule.ts";

function close(got: number, want: number, what: string): void {
  assert(Math.abs(got - want) <= 1e-15 + 1e-12 * Math.abs(want), `${what}: ${got} vs ${want}`);
}

// Values below are HF's lr_lambda worked by hand: warmup step / W, then
// linear (N - step) / (N - W) or cosine 0.5 * (1 + cos(pi * (step - W) / (N - W))).
Deno.test("linear schedule matches get_linear_schedule_with_warmup", () => {
  const s: Schedule = { kind: "linear", lr: 1e-2, totalSteps: 110, warmupSteps: 10 };
  const want: [number, number][] = [
    [0, 0], // HF's first update runs at lr 0
    [1, 1e-3],
    [5, 5e-3],
    [10, 1e-2],
    [11, 1e-2 * 99 / 100],
    [60, 5e-3],
    [109, 1e-4],
    [110, 0],
    [500, 0],
  ];
  for (const [step, lr] of want) close(lrAt(step, s), lr, `step ${step}`);
});

Deno.test("cosine schedule matches get_cosine_schedule_with_warmup", () => {
  const s: Schedule = { kind: "cosine", lr: 1e-2, totalSteps: 110, warmupSteps: 10 };
  close(lrAt(4, s), 4e-3, "warmup");
  close(lrAt(10, s), 1e-2, "peak");
  close(lrAt(35, s), 1e-2 * 0.8535533905932737, "quarter"); // 0.5 * (1 + cos(pi / 4))
  close(lrAt(60, s), 5e-3, "half");
  close(lrAt(85, s), 1e-2 * 0.14644660940672627, "three quarters"); // 0.5 * (1 - cos(pi / 4))
  close(lrAt(110, s), 0, "end");
  close(lrAt(300, s), 0, "past the end stays at the floor (HF would rise again)");
});

Deno.test("minLr is HF's min_lr_rate floor and scales with each group's peak", () => {
  const s: Schedule = { kind: "cosine", lr: 1e-2, totalSteps: 110, warmupSteps: 10, minLr: 1e-3 };
  // get_cosine_with_min_lr_schedule_with_warmup: factor * (1 - rate) + rate, rate = 0.1
  close(lrAt(35, s), 1e-2 * (0.8535533905932737 * 0.9 + 0.1), "quarter");
  close(lrAt(110, s), 1e-3, "end");
  close(lrAt(5, s), 5e-3, "warmup starts from 0, not from minLr");
  const lin: Schedule = { kind: "linear", lr: 2e-2, totalSteps: 100, minLr: 2e-3 };
  close(lrAt(50, lin), 2e-2 * (0.5 * 0.9 + 0.1), "linear half");
  close(lrAt(100, lin), 2e-3, "linear end");
  close(lrFactor(100, lin), 0.1, "factor");
});

Deno.test("constant schedule with a warmup ratio rounds the warmup up as HF does", () => {
  const s: Schedule = { kind: "constant", lr: 1e-3, totalSteps: 200, warmupRatio: 0.03 };
  assert.equal(warmupSteps(s), 6);
  close(lrAt(3, s), 5e-4, "warmup");
  close(lrAt(6, s), 1e-3, "after warmup");
  close(lrAt(199, s), 1e-3, "last step");
  // 0.07 * 100 is 7.000000000000001 in binary floating point: ceil gives 8 in Python too.
  assert.equal(warmupSteps({ kind: "constant", lr: 1, totalSteps: 100, warmupRatio: 0.07 }), 8);
});

Deno.test("no warmup starts at the peak; warmup over the whole run never decays", () => {
  close(lrAt(0, { kind: "linear", lr: 1, totalSteps: 4 }), 1, "no warmup");
  close(lrAt(3, { kind: "linear", lr: 1, totalSteps: 4 }), 0.25, "no warmup decay");
  const all: Schedule = { kind: "cosine", lr: 1, totalSteps: 4, warmupSteps: 4 };
  assert.deepEqual([0, 1, 2, 3, 4].map((t) => lrAt(t, all)), [0, 0.25, 0.5, 0.75, 1]);
});

Deno.test("invalid schedules are rejected with the field named", () => {
  const base: Schedule = { kind: "linear", lr: 1e-3, totalSteps: 10 };
  const cases: [unknown, RegExp][] = [
    [{ ...base, kind: "step" }, /"kind"/],
    [{ ...base, lr: -1 }, /"lr"/],
    [{ ...base, lr: NaN }, /"lr"/],
    [{ ...base, totalSteps: 0 }, /"totalSteps"/],
    [{ ...base, totalSteps: 2.5 }, /"totalSteps"/],
    [{ ...base, warmupSteps: 11 }, /"warmupSteps"/],
    [{ ...base, warmupSteps: -1 }, /"warmupSteps"/],
    [{ ...base, warmupRatio: 1.5 }, /"warmupRatio"/],
    [{ ...base, warmupSteps: 1, warmupRatio: 0.1 }, /"warmupRatio"/],
    [{ ...base, minLr: 1 }, /"minLr"/],
    [{ ...base, kind: "constant", minLr: 0 }, /"minLr"/],
    [{ ...base, warmup: 3 }, /"warmup" is not a schedule field/],
  ];
  for (const [schedule, message] of cases) {
    assert.throws(() => lrAt(0, schedule as Schedule), message, JSON.stringify(schedule));
  }
  assert.throws(() => lrAt(-1, base), /step/);
  assert.throws(() => lrAt(1.5, base), /step/);
});
