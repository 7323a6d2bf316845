import assert from "node:assert/strict";
import {
  readMetrics,
  readSummary,
  runDir,
  RunLog,
  truncateMetrics,
  writeSummary,
} from "../../train/run_log.ts";
import { withTempDir } from "../_util.ts";

async function listDir(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) names.push(entry.name);
  return names.sort();
}

const train = (step: number, extra: Record<string, unknown> = {}) => ({
  step,
  split: "train" as const,
  loss: 4 - step / 10,
  lr: 1e-3,
  tokens_per_s: 1000 + step,
  ...extra,
});

Deno.test("runDir is out/<name> unless a root or a folder is given", () => {
  assert.equal(runDir("e2e"), "out/e2e");
  assert.equal(runDir("e2e", { root: "runs/" }), "runs/e2e");
  assert.equal(runDir("e2e", { dir: "/tmp/x/" }), "/tmp/x");
  for (const bad of ["", "..", "a/b", "a\\b"]) {
    assert.throws(() => runDir(bad), TypeError, bad);
  }
});

Deno.test("append writes one JSON object a line with the fixed keys and extras", async () => {
  await withTempDir("run-log", async (root) => {
    const dir = `${root}/run`;
    const log = await RunLog.open(dir);
    await log.append(train(1, { grad_norm: 0.5 }));
    await log.append([train(2), { step: 2, split: "validation", loss: 3.5, stage: "ft" }]);
    log.close();
    const text = await Deno.readTextFile(`${dir}/metrics.jsonl`);
    assert.equal(
      text,
      '{"step":1,"split":"train","loss":3.9,"lr":0.001,"tokens_per_s":1001,"grad_norm":0.5}\n' +
        '{"step":2,"split":"train","loss":3.8,"lr":0.001,"tokens_per_s":1002}\n' +
        '{"step":2,"split":"validation","loss":3.5,"stage":"ft"}\n',
    );
    const rows = await readMetrics(`${dir}/metrics.jsonl`);
    assert.deepEqual(rows.map((r) => [r.step, r.split, r.loss]), [
      [1, "train", 3.9],
      [2, "train", 3.8],
      [2, "validation", 3.5],
    ]);
  });
});

Deno.test("append rejects a record without an integer step or a known split", async () => {
  await withTempDir("run-log", async (dir) => {
    using log = await RunLog.open(dir);
    await assert.rejects(log.append({ step: 1.5, split: "train", loss: 1 }), TypeError);
    // @ts-expect-error: the split is checked at run time too
    await assert.rejects(log.append({ step: 1, split: "dev", loss: 1 }), /split must be one of/);
    assert.equal(await Deno.readTextFile(log.metricsPath), "");
  });
});

Deno.test("a NaN loss is written as null and read back as NaN", async () => {
  await withTempDir("run-log", async (dir) => {
    using log = await RunLog.open(dir);
    await log.append({ step: 1, split: "train", loss: NaN, lr: 1e-3 });
    const [row] = await readMetrics(log.metricsPath);
    assert.ok(Number.isNaN(row.loss));
    assert.equal(row.lr, 1e-3);
  });
});

Deno.test("resume drops a partial last line and every step after the checkpoint, exactly", async () => {
  await withTempDir("run-log", async (dir) => {
    const log = await RunLog.open(dir);
    for (let step = 1; step <= 6; step++) {
      await log.append(train(step));
      if (step % 3 === 0) await log.append({ step, split: "validation", loss: 3 });
    }
    log.close();
    // What a run resumed from step 3 would have written by now, byte for byte.
    const expected = (await Deno.readTextFile(`${dir}/metrics.jsonl`))
      .split("\n").slice(0, 4).map((l) => `${l}\n`).join("");
    assert.equal(expected.split("\n").length - 1, 4);
    // A crash in the middle of an append leaves half a line.
    await Deno.writeTextFile(`${dir}/metrics.jsonl`, '{"step":7,"split":"tra', { append: true });
    assert.throws(() => JSON.parse(Deno.readTextFileSync(`${dir}/metrics.jsonl`)));
    assert.equal((await readMetrics(`${dir}/metrics.jsonl`)).length, 8, "readers skip it");

    const resumed = await RunLog.open(dir, { resumeStep: 3 });
    assert.equal(await Deno.readTextFile(resumed.metricsPath), expected);
    for (let step = 4; step <= 5; step++) await resumed.append(train(step));
    resumed.close();
    const rows = await readMetrics(`${dir}/metrics.jsonl`);
    assert.deepEqual(rows.map((r) => `${r.step}${r.split[0]}`), [
      "1t",
      "2t",
      "3t",
      "3v",
      "4t",
      "5t",
    ]);
    assert.deepEqual(await listDir(dir), ["metrics.jsonl"], "no temporary file left");
  });
});

Deno.test("truncateMetrics reports what it kept and dropped", async () => {
  await withTempDir("run-log", async (dir) => {
    const path = `${dir}/metrics.jsonl`;
    await Deno.writeTextFile(
      path,
      '{"step":1,"split":"train","loss":1}\n{"step":2,"split":"train","loss":1}\n{"step":3,',
    );
    assert.deepEqual(await truncateMetrics(path, 1), { kept: 1, dropped: 2 });
    assert.equal(await Deno.readTextFile(path), '{"step":1,"split":"train","loss":1}\n');
    assert.deepEqual(await truncateMetrics(`${dir}/missing.jsonl`, 5), { kept: 0, dropped: 0 });
    assert.equal(await Deno.readTextFile(`${dir}/missing.jsonl`), "");
  });
});

Deno.test("a broken line before the end is an error naming the file and line", async () => {
  await withTempDir("run-log", async (dir) => {
    const path = `${dir}/metrics.jsonl`;
    await Deno.writeTextFile(path, '{"step":1,"split":"train","loss":1}\n{"step":\n{"step":3}\n');
    await assert.rejects(readMetrics(path), (e: Error) => {
      assert.ok(e instanceof SyntaxError);
      assert.match(e.message, /metrics\.jsonl line 2/);
      return true;
    });
    await assert.rejects(RunLog.open(dir, { resumeStep: 5 }), SyntaxError);
  });
});

Deno.test("a fresh run empties the metrics and forgets the old summary", async () => {
  await withTempDir("run-log", async (dir) => {
    const first = await RunLog.open(dir);
    await first.append(train(1));
    await first.recordStage("finetune", { steps: 1 });
    first.close();
    using fresh = await RunLog.open(dir);
    assert.equal(await Deno.readTextFile(fresh.metricsPath), "");
    assert.deepEqual(fresh.summary, {});
    assert.deepEqual(await listDir(dir), ["metrics.jsonl"]);
  });
});

Deno.test("recordStage rewrites summary.json whole, keyed by stage, and resume keeps it", async () => {
  await withTempDir("run-log", async (dir) => {
    const log = await RunLog.open(dir);
    await log.recordStage("finetune", { final_train_loss: 2.5, steps: 100 });
    await log.recordStage("eval", { test_loss: 2.7, bleu: 41.2 });
    await log.recordStage("finetune", { final_train_loss: 2.4, steps: 200 });
    log.close();
    const expected = {
      finetune: { final_train_loss: 2.4, steps: 200 },
      eval: { test_loss: 2.7, bleu: 41.2 },
    };
    assert.deepEqual(await readSummary(`${dir}/summary.json`), expected);
    assert.deepEqual(await listDir(dir), ["metrics.jsonl", "summary.json"]);
    using resumed = await RunLog.open(dir, { resumeStep: 0 });
    assert.deepEqual(resumed.summary, expected);
  });
});

Deno.test("writeSummary is atomic: a failed write leaves the old summary whole", async () => {
  await withTempDir("run-log", async (dir) => {
    const path = `${dir}/summary.json`;
    await writeSummary(path, { a: { x: 1 } });
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    assert.throws(() => writeSummary(path, { a: cyclic }), TypeError);
    // A folder in the way of the rename fails the write after the bytes are out.
    await Deno.mkdir(`${dir}/blocked.json/inner`, { recursive: true });
    await assert.rejects(writeSummary(`${dir}/blocked.json`, { a: { x: 2 } }));
    assert.deepEqual(await readSummary(path), { a: { x: 1 } });
    assert.deepEqual(await listDir(dir), ["blocked.json", "summary.json"]);
  });
});

Deno.test("readSummary rejects a file that is not an object of stages", async () => {
  await withTempDir("run-log", async (dir) => {
    await Deno.writeTextFile(`${dir}/s.json`, '{"finetune": 3}');
    await assert.rejects(readSummary(`${dir}/s.json`), /object of objects keyed by stage id/);
    await Deno.writeTextFile(`${dir}/t.json`, "{");
    await assert.rejects(readSummary(`${dir}/t.json`), SyntaxError);
  });
});

Deno.test("a closed log refuses appends", async () => {
  await withTempDir("run-log", async (dir) => {
    const log = await RunLog.open(dir);
    log.close();
    await assert.rejects(log.append(train(1)), /log is closed/);
  });
});
