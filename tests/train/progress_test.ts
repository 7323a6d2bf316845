import assert from "node:assert/strict";
import {
  estimateEta,
  formatDuration,
  formatSi,
  Progress,
  type ProgressOptions,
} from "../../train/progress.ts";

/** A Progress with a fake clock (advanced by hand) and its output collected in a string. */
function fake(options: Omit<ProgressOptions, "write" | "now">) {
  const clock = { t: 1000 };
  const out = { text: "" };
  const progress = new Progress({
    ...options,
    write: (s) => out.text += s,
    now: () => clock.t,
  });
  return { progress, clock, out };
}

Deno.test("terminal mode redraws one line in place with the bar and every figure", () => {
  const { progress, clock, out } = fake({ total: 10, terminal: true, columns: 120, unit: "tok" });
  for (let step = 1; step <= 10; step++) {
    clock.t += 500;
    progress.update(step, { loss: 3 - step * 0.1, lr: 6e-4, items: 2048 });
  }
  progress.finish();
  assert.ok(out.text.includes("\r\x1b[2K"), "redraws start with carriage return + clear line");
  const frames = out.text.split("\r\x1b[2K").filter((f) => f.length > 0);
  const last = frames[frames.length - 1];
  assert.match(last, /^step 10\/10 \[#+\] 100\.0% \| loss 2\.0000 \| lr 6\.00e-4 \| 4\.10k tok\/s/);
  assert.match(last, /\| elapsed 5s \| eta 0s\n$/);
  // Only the final frame ends its line: the bar never scrolls the terminal.
  assert.equal(out.text.split("\n").length - 1, 1);
  for (const frame of frames) assert.ok(frame.trimEnd().length <= 119, frame);
});

Deno.test("terminal mode redraws at most every 100 ms but always draws the last step", () => {
  const { progress, clock, out } = fake({ total: 1000, terminal: true, columns: 100 });
  for (let step = 1; step <= 1000; step++) {
    clock.t += 1; // 1 ms a step: 1 s in all
    progress.update(step, { loss: 1 });
  }
  const frames = out.text.split("\r\x1b[2K").filter((f) => f.length > 0);
  assert.ok(frames.length >= 10 && frames.length <= 12, `${frames.length} redraws`);
  assert.match(frames[frames.length - 1], /^step 1000\/1000 /);
});

Deno.test("terminal mode fits the bar to the columns and drops it when too narrow", () => {
  const wide = fake({ total: 50, terminal: true, columns: 160 });
  const narrow = fake({ total: 50, terminal: true, columns: 60 });
  for (const { progress, clock } of [wide, narrow]) {
    clock.t += 1000;
    progress.update(25, { loss: 2.5, lr: 1e-3, items: 100 });
  }
  assert.match(wide.out.text, /\[#{19}-{19}\]/, "a 40-column bar half full");
  assert.equal(
    narrow.out.text,
    "\r\x1b[2Kstep 25/50  50.0% | loss 2.5000 | 100 tok/s | eta 1s",
    "elapsed and lr give way to the loss, throughput and ETA",
  );
});

Deno.test("log prints above the bar and draws the bar again", () => {
  const { progress, clock, out } = fake({ total: 4, terminal: true, columns: 100 });
  clock.t += 200;
  progress.update(1, { loss: 2 });
  progress.log("validation loss 1.9");
  progress.stage("eval");
  assert.equal(
    out.text.replace(/step[^\r]*/g, "<bar>"),
    "\r\x1b[2K<bar>\r\x1b[2Kvalidation loss 1.9\n\r\x1b[2K<bar>\r\x1b[2K== eval ==\n\r\x1b[2K<bar>",
  );
});

Deno.test("plain mode prints whole lines, no carriage return, every N steps", () => {
  const { progress, clock, out } = fake({
    total: 100,
    terminal: false,
    everySteps: 25,
    unit: "img",
    label: "train",
  });
  for (let step = 1; step <= 100; step++) {
    clock.t += 10;
    progress.update(step, { loss: 1 / step, lr: 3e-4, items: 32 });
  }
  progress.log("done training");
  progress.finish();
  assert.ok(!out.text.includes("\r"));
  assert.ok(!out.text.includes("\x1b"));
  const lines = out.text.trimEnd().split("\n");
  assert.deepEqual(
    lines.map((l) => l.match(/^train step +(\d+)\/100/)?.[1] ?? l),
    ["25", "50", "75", "100", "done training"],
  );
  assert.equal(
    lines[0],
    "train step  25/100  25.0% | loss 0.0400 | lr 3.00e-4 | 3.20k img/s | elapsed 0s | eta 1s",
  );
});

Deno.test("plain mode is rate-limited by time when steps are slow and sparse when fast", () => {
  const slow = fake({ total: 1000, terminal: false, everySteps: 100, everyMs: 10_000 });
  for (let step = 1; step <= 30; step++) {
    slow.clock.t += 1000; // one step a second: a line every 10 steps
    slow.progress.update(step, { loss: 1 });
  }
  const slowSteps = slow.out.text.trimEnd().split("\n").map((l) => Number(l.split(/[ /]+/)[1]));
  assert.deepEqual(slowSteps, [10, 20, 30]);

  const fast = fake({ total: 10_000, terminal: false });
  for (let step = 1; step <= 10_000; step++) {
    fast.clock.t += 0.1;
    fast.progress.update(step, { loss: 1 });
  }
  assert.equal(fast.out.text.split("\n").length - 1, 20, "total / 20 steps between lines");
});

Deno.test("finish in plain mode prints the last step once, and only once", () => {
  const { progress, clock, out } = fake({ total: 100, terminal: false, everySteps: 50 });
  clock.t += 100;
  progress.update(60, { loss: 1 });
  progress.update(70, { loss: 1 });
  progress.finish();
  progress.finish();
  assert.deepEqual(out.text.trimEnd().split("\n").map((l) => l.slice(0, 12)), [
    "step  60/100",
    "step  70/100",
  ]);
});

Deno.test("ETA and throughput follow the recent rate, not the slow first step", () => {
  const { progress, clock } = fake({ total: 1000, terminal: false });
  clock.t += 60_000; // first step: a minute of compilation
  progress.update(1, { items: 100 });
  for (let step = 2; step <= 200; step++) {
    clock.t += 500;
    progress.update(step, { items: 100 });
  }
  // The window keeps the last 64 samples: 2 steps a second, 200 items a second.
  assert.ok(Math.abs(progress.throughput - 200) < 1e-9, `${progress.throughput}`);
  assert.ok(Math.abs(progress.etaSeconds - 800 / 2) < 1e-9, `${progress.etaSeconds}`);
});

Deno.test("resumed runs count ETA from the start step", () => {
  const { progress, clock } = fake({ total: 100, terminal: false, startStep: 50 });
  clock.t += 10_000;
  progress.update(60);
  assert.equal(progress.etaSeconds, 40);
});

Deno.test("estimateEta is remaining steps at the measured rate", () => {
  assert.equal(estimateEta({ doneSteps: 10, elapsedMs: 5000, remainingSteps: 90 }), 45);
  assert.equal(estimateEta({ doneSteps: 10, elapsedMs: 5000, remainingSteps: 0 }), 0);
  assert.ok(Number.isNaN(estimateEta({ doneSteps: 0, elapsedMs: 0, remainingSteps: 5 })));
});

Deno.test("durations and rates are short and readable", () => {
  assert.equal(formatDuration(0), "0s");
  assert.equal(formatDuration(59.4), "59s");
  assert.equal(formatDuration(187), "3:07");
  assert.equal(formatDuration(3723), "1:02:03");
  assert.equal(formatDuration(NaN), "?");
  assert.equal(formatSi(812), "812");
  assert.equal(formatSi(3.5), "3.50");
  assert.equal(formatSi(12_345), "12.3k");
  assert.equal(formatSi(999_999), "1.00M");
  assert.equal(formatSi(NaN), "-");
});

Deno.test("a NaN loss is shown, not hidden", () => {
  const { progress, clock, out } = fake({ total: 2, terminal: false, everySteps: 1 });
  clock.t += 10;
  progress.update(1, { loss: NaN });
  assert.match(out.text, /loss NaN/);
});

Deno.test("Progress rejects a total that is not a finite number", () => {
  assert.throws(() => new Progress({ total: NaN, write: () => {} }), RangeError);
});
