import assert from "node:assert/strict";
import { lossChart, summaryTable, writeReport } from "../../train/report.ts";
import { RunLog } from "../../train/run_log.ts";
import { lineChart } from "../../train/svg.ts";
import { withTempDir } from "../_util.ts";

async function listDir(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) names.push(entry.name);
  return names.sort();
}

async function logRun(dir: string): Promise<RunLog> {
  const log = await RunLog.open(dir);
  for (let step = 1; step <= 40; step++) {
    await log.append({ step, split: "train", loss: 4 - Math.log(step) / 3, lr: 1e-3 });
    if (step % 10 === 0) await log.append({ step, split: "validation", loss: 4.1 - step / 40 });
  }
  await log.append({ step: 40, split: "test", loss: 3.3 });
  await log.recordStage("finetune", { final_train_loss: 2.7704, steps: 40, trainable: 24576 });
  await log.recordStage("eval", { test_loss: 3.3, note: "greedy | beam=1" });
  return log;
}

Deno.test("writeReport writes report.md with the summary table and loss.svg linked beside it", async () => {
  await withTempDir("report", async (dir) => {
    using log = await logRun(dir);
    const written = await writeReport(dir, {
      title: "GPT-2 + NOLA",
      summary: log.summary,
      metricsPath: log.metricsPath,
    });
    assert.deepEqual(written, [`${dir}/loss.svg`, `${dir}/report.md`]);
    assert.deepEqual(await listDir(dir), [
      "loss.svg",
      "metrics.jsonl",
      "report.md",
      "summary.json",
    ]);
    const md = await Deno.readTextFile(`${dir}/report.md`);
    assert.equal(
      md,
      [
        "# GPT-2 + NOLA",
        "",
        "## Summary",
        "",
        "| stage | figure | value |",
        "| --- | --- | ---: |",
        "| finetune | final_train_loss | 2.7704 |",
        "|  | steps | 40 |",
        "|  | trainable | 24,576 |",
        "| eval | test_loss | 3.3 |",
        "|  | note | greedy \\| beam=1 |",
        "",
        "## Loss",
        "",
        "![Loss against step for each split](loss.svg)",
        "",
      ].join("\n"),
    );
    const svg = await Deno.readTextFile(`${dir}/loss.svg`);
    assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    for (const name of ["train loss", "validation loss", "test loss", "GPT-2 + NOLA: loss"]) {
      assert.ok(svg.includes(`>${name}<`), name);
    }
  });
});

Deno.test("lossChart draws one series per split, train first, and names stages when several", () => {
  const svg = lossChart([
    { step: 1, split: "validation", loss: 3, stage: "sft" },
    { step: 1, split: "train", loss: 3.2, stage: "sft" },
    { step: 2, split: "train", loss: 3.1, stage: "sft" },
    { step: 1, split: "train", loss: 2.9, stage: "dpo" },
    { step: 2, split: "train", loss: 2.8, stage: "dpo" },
  ])!;
  const names = [...svg.matchAll(/<text [^>]*fill="#222222">([^<]+)<\/text>/g)].map((m) => m[1]);
  assert.deepEqual(names, ["sft train loss", "dpo train loss", "sft validation loss"]);
  assert.equal(lossChart([]), undefined);
  assert.ok(!lossChart([{ step: 1, split: "train", loss: 1 }])!.includes("train train"));
});

Deno.test("sections add markdown and their own charts next to the report", async () => {
  await withTempDir("report", async (dir) => {
    const chart = lineChart([{
      name: "NOLA",
      style: "scatter",
      points: [{ x: 24576, y: 2.4, label: "k=1024" }, { x: 98304, y: 2.36, label: "k=4096" }],
    }], { xLog: true, xLabel: "trainable parameters (log scale)", yLabel: "val loss" });
    await writeReport(dir, {
      title: "Sweep",
      summary: {},
      sections: [
        { title: "Notes", markdown: "Seeds 0-2.\n\n" },
        {
          title: "Parameters",
          chart: { file: "params.svg", svg: chart, alt: "val loss vs params" },
        },
      ],
    });
    assert.deepEqual(await listDir(dir), ["params.svg", "report.md"]);
    assert.equal(await Deno.readTextFile(`${dir}/params.svg`), chart);
    const md = await Deno.readTextFile(`${dir}/report.md`);
    assert.ok(md.includes("_No figures recorded._"));
    assert.ok(md.includes("_No losses recorded._"), "a missing metrics file is no curves");
    assert.ok(
      md.endsWith("## Notes\n\nSeeds 0-2.\n\n## Parameters\n\n![val loss vs params](params.svg)\n"),
    );
  });
});

Deno.test("a report without losses removes a stale loss.svg instead of linking it", async () => {
  await withTempDir("report", async (dir) => {
    await Deno.writeTextFile(`${dir}/loss.svg`, "<svg/>");
    await Deno.writeTextFile(`${dir}/metrics.jsonl`, "");
    await writeReport(dir, { title: "t", summary: {}, metricsPath: `${dir}/metrics.jsonl` });
    assert.deepEqual(await listDir(dir), ["metrics.jsonl", "report.md"]);
  });
});

Deno.test("writeReport rejects a chart file that is not a plain .svg name, writing nothing", async () => {
  await withTempDir("report", async (dir) => {
    for (const file of ["../x.svg", "x.png", "loss.svg", "a/b.svg"]) {
      await assert.rejects(
        writeReport(dir, {
          title: "t",
          summary: {},
          sections: [{ title: "s", chart: { file, svg: "" } }],
        }),
        (e: Error) => e instanceof TypeError && e.message.includes(`"${file}"`),
      );
    }
    assert.deepEqual(await listDir(dir), []);
  });
});

Deno.test("summaryTable formats numbers for reading and keeps one line per figure", () => {
  const table = summaryTable({
    s: { a: 1234567, b: 0.000123456789, c: NaN, d: null, e: [1, 2], f: "two\nlines" },
  });
  assert.deepEqual(table.split("\n").slice(2), [
    "| s | a | 1,234,567 |",
    "|  | b | 0.00012346 |",
    "|  | c | NaN |",
    "|  | d | — |",
    "|  | e | `[1,2]` |",
    "|  | f | two lines |",
  ]);
});
