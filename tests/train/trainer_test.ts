import assert from "node:assert/strict";
import { readMetrics, RunLog } from "../../train/run_log.ts";
import { NonFiniteLossError, train } from "../../train/trainer.ts";
import { listCheckpoints } from "../../train/checkpoint.ts";
import { GPU_TEST, tempDir, testGpu } from "../_util.ts";
import { nolaSetup } from "./_train_fixture.ts";

Deno.test("a resumed run's losses equal the uninterrupted run's exactly", GPU_TEST, async () => {
  const gpu = await testGpu();
  const steps = 8;
  const dirA = await tempDir("full");
  let full: Map<number, number>;
  {
    using s = await nolaSetup(gpu, { steps });
    using log = await RunLog.open(dirA);
    const result = await train({
      ...s.base,
      batches: s.batches(),
      log,
      logEvery: 2,
      checkpointEvery: 4,
    });
    assert.equal(result.stoppedBy, "done");
    full = result.losses;
  }
  assert.equal(full.size, steps);
  assert(full.get(steps)! < full.get(1)!, `loss should fall: ${[...full.values()]}`);

  const dirB = await tempDir("resumed");
  {
    using s = await nolaSetup(gpu, { steps });
    using log = await RunLog.open(dirB);
    const stop = new AbortController();
    const first = await train({
      ...s.base,
      batches: s.batches(),
      log,
      logEvery: 2,
      checkpointEvery: 0,
      signal: stop.signal,
      onLog: (records) => records.at(-1)!.step >= 3 && stop.abort(),
    });
    assert.equal(first.stoppedBy, "interrupted");
    assert.equal(first.steps, 4);
    assert.equal((await listCheckpoints(dirB)).length, 1);
  }
  {
    // A fresh process would start like this: new model, new adapters, same pipeline.
    using s = await nolaSetup(gpu, { steps });
    using log = await RunLog.open(dirB, { resumeStep: 4 });
    const rest = await train({
      ...s.base,
      batches: s.batches(),
      log,
      logEvery: 2,
      checkpointEvery: 4,
      resume: true,
    });
    assert.equal(rest.steps, steps);
    for (let step = 5; step <= steps; step++) {
      assert.equal(rest.losses.get(step), full.get(step), `step ${step}`);
    }
  }
  const a = (await readMetrics(`${dirA}/metrics.jsonl`)).map((r) => [r.step, r.loss]);
  const b = (await readMetrics(`${dirB}/metrics.jsonl`)).map((r) => [r.step, r.loss]);
  assert.deepEqual(b, a);
  await Deno.remove(dirA, { recursive: true });
  await Deno.remove(dirB, { recursive: true });
});

Deno.test(
  "a NaN loss stops the run naming the step and keeps the last good checkpoint",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const dir = await tempDir("nan");
    using s = await nolaSetup(gpu, { steps: 8 });
    using log = await RunLog.open(dir);
    const alpha = s.set.parameters()[0].param;
    let step = 0;
    const hooks = {
      zeroGrads: () => s.set.zeroGrads(),
      prepareStep: () => {
        // Poison a coefficient before the 6th step's forward.
        if (++step === 6) gpu.write(alpha.buffer, new Float32Array(alpha.size).fill(NaN));
        s.set.prepareStep();
      },
      finishBackward: () => s.set.finishBackward(),
    };
    const error = await train({
      ...s.base,
      hooks,
      batches: s.batches(),
      log,
      logEvery: 4,
      checkpointEvery: 2,
    })
      .then(() => null, (e) => e);
    assert(error instanceof NonFiniteLossError, String(error));
    assert.equal(error.step, 6);
    assert.match(error.message, /at step 6; the last good checkpoint is .*step-00000004/);
    assert.deepEqual((await readMetrics(`${dir}/metrics.jsonl`)).map((r) => r.step), [
      1,
      2,
      3,
      4,
      5,
    ]);
    await Deno.remove(dir, { recursive: true });
  },
);

Deno.test(
  "early stopping ends the run after `patience` evaluations without improvement",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const dir = await tempDir("early");
    using s = await nolaSetup(gpu, { steps: 8 });
    using log = await RunLog.open(dir);
    const figures = [3, 2, 2.5, 2.6, 1];
    const best: number[] = [];
    const result = await train({
      ...s.base,
      batches: s.batches(),
      log,
      evalEvery: 1,
      patience: 2,
      checkpointEvery: 0,
      evaluate: () => Promise.resolve({ loss: figures.shift()! }),
      onBest: (step) => Promise.resolve(void best.push(step)),
    });
    assert.equal(result.stoppedBy, "early-stop");
    assert.equal(result.steps, 4);
    assert.deepEqual(best, [1, 2]);
    assert.equal(result.bestValidationLoss, 2);
    await Deno.remove(dir, { recursive: true });
  },
);

Deno.test("`evalEvery: 0` evaluates once, after the last step", GPU_TEST, async () => {
  const gpu = await testGpu();
  const dir = await tempDir("eval-end");
  using s = await nolaSetup(gpu, { steps: 3 });
  using log = await RunLog.open(dir);
  const evaluatedAt: number[] = [];
  const result = await train({
    ...s.base,
    batches: s.batches(),
    log,
    evalEvery: 0,
    checkpointEvery: 0,
    evaluate: () => Promise.resolve({ loss: 1.5 }),
    onBest: (step) => Promise.resolve(void evaluatedAt.push(step)),
  });
  assert.equal(result.stoppedBy, "done");
  assert.deepEqual(evaluatedAt, [3]);
  assert.equal(result.bestValidationLoss, 1.5);
  const validation = (await readMetrics(`${dir}/metrics.jsonl`)).filter((r) =>
    r.split === "validation"
  );
  assert.deepEqual(validation.map((r) => [r.step, r.loss]), [[3, 1.5]]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test(
  "a training step is one queue submit: its micro-batches record writes without submitting",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const dir = await tempDir("submits");
    using s = await nolaSetup(gpu, { steps: 4 });
    using log = await RunLog.open(dir);
    const atPrepare: number[] = [];
    const atFinish: number[] = [];
    const result = await train({
      ...s.base,
      hooks: {
        zeroGrads: () => s.set.zeroGrads(),
        prepareStep: () => {
          atPrepare.push(gpu.submits);
          s.set.prepareStep();
        },
        finishBackward: () => {
          s.set.finishBackward();
          atFinish.push(gpu.submits);
        },
      },
      batches: s.batches(),
      log,
      logEvery: 4,
      checkpointEvery: 0,
    });
    assert.equal(result.steps, 4);
    // Forward, loss and backward of both micro-batches of a step (tokens, targets and weights
    // written for each) are recorded without a submit...
    assert.deepEqual(atFinish, atPrepare);
    // ...and the step's own flush is its only one.
    assert.deepEqual(atPrepare.slice(1).map((n, i) => n - atPrepare[i]), [1, 1, 1]);
    assert(result.losses.get(4)! < result.losses.get(1)!, `${[...result.losses.values()]}`);
    await Deno.remove(dir, { recursive: true });
  },
);
