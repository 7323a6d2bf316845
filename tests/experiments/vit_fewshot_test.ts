import assert from "node:assert/strict";
import { join } from "node:path";
import { main } from "../../experiments/vit_fewshot.ts";
import { ExperimentUsageError } from "../../experiments/nola_vs_lora_options.ts";
import { parseFewShotOptions } from "../../experiments/vit_fewshot_options.ts";
import {
  fewShotRows,
  type FewShotRun,
  orderingClaim,
} from "../../experiments/vit_fewshot_report.ts";
import { FEWSHOT_METHODS } from "../../experiments/vit_fewshot_options.ts";
import { freshSeed, GPU_TEST, rng, testGpu, withTempDir } from "../_util.ts";

Deno.test({
  name: "vit-fewshot --quick runs each method, tables its figures and resumes without rerunning",
  ...GPU_TEST,
  fn: () =>
    withTempDir("vit-fewshot", async (dir) => {
      const out = join(dir, "exp");
      // fixtures/tiny-vit (2 blocks, 24 wide, MLP 40) is the smallest ViT at hand.
      const args = [
        "--quick",
        ...["--base", "fixtures/tiny-vit", "--out", out, "--methods", "head,nola-k64,lora-r1"],
      ];
      const lines: string[] = [];
      const io = { say: (l: string) => lines.push(l), gpu: await testGpu() };
      assert.deepEqual(await main(args, io), { out, ran: 3, skipped: 0, interrupted: false });
      const json = JSON.parse(await Deno.readTextFile(join(out, "results.json")));
      assert.equal(json.runs.length, 3);
      // Counted by hand: head 5 x 24 + 5; NOLA 2 blocks x 2 linears x (64 + 64); LoRA r = 1 on
      // q and v: 2 blocks x 2 x (24 + 24).
      const head = 5 * 24 + 5;
      const want: Record<string, number> = {
        head,
        "nola-k64": 2 * 2 * 128 + head,
        "lora-r1": 2 * 2 * 48 + head,
      };
      for (const run of json.runs as FewShotRun[]) {
        assert.equal(run.figures.trainable, want[run.method], run.method);
        assert.equal(run.figures.headParameters, head);
        // 4 test images of each of 5 classes: every accuracy is a multiple of 5%.
        assert.ok(Number.isInteger(run.figures.accuracy / 5), String(run.figures.accuracy));
      }
      // The adapter bytes are the saved files' sizes.
      const sizes: number[] = [];
      for await (const e of Deno.readDir(join(out, "runs"))) {
        sizes.push((await Deno.stat(join(out, "runs", e.name, "adapter.safetensors"))).size);
      }
      assert.deepEqual(
        sizes.sort((a, b) => a - b),
        json.runs.map((r: FewShotRun) => r.figures.adapterBytes).sort((a: number, b: number) =>
          a - b
        ),
      );
      const md = await Deno.readTextFile(join(out, "results.md"));
      assert.ok(md.includes("| 5 | NOLA-MLP k=l=64 | 637 (125) |"), md);
      assert.ok((await Deno.readTextFile(join(out, "accuracy.svg"))).startsWith("<svg"));

      const again = await main(args, io);
      assert.deepEqual(again, { out, ran: 0, skipped: 3, interrupted: false });
    }),
});

Deno.test("the table's mean ± std and the ordering sentence match hand-made runs", () => {
  const seed = freshSeed();
  const next = rng(seed);
  const accuracies: Record<string, number[]> = {};
  const runs: FewShotRun[] = [];
  for (const m of FEWSHOT_METHODS) {
    accuracies[m.id] = Array.from({ length: 3 }, () => Math.round(next() * 1000) / 10);
    accuracies[m.id].forEach((accuracy, i) =>
      runs.push({
        method: m.id,
        shots: 10,
        samplingSeed: i,
        seed: 0,
        figures: {
          accuracy,
          trainable: 100,
          headParameters: 10,
          adapterBytes: 4,
          finalTrainLoss: 1,
        },
      })
    );
  }
  const rows = fewShotRows(runs, { shots: [10], methods: [...FEWSHOT_METHODS] });
  assert.equal(rows.length, FEWSHOT_METHODS.length);
  for (const row of rows) {
    const xs = accuracies[row.method];
    const mean = (xs[0] + xs[1] + xs[2]) / 3;
    const std = Math.sqrt(xs.reduce((s, x) => s + (x - mean) ** 2, 0) / 2);
    assert.ok(Math.abs(row.accuracy.mean - mean) < 1e-9, `seed ${seed}`);
    assert.ok(Math.abs(row.accuracy.std - std) < 1e-9, `seed ${seed}`);
  }

  const cell = (method: string, values: number[]) =>
    values.map((accuracy, i): FewShotRun => ({
      method,
      shots: 5,
      samplingSeed: i,
      seed: 0,
      figures: { accuracy, trainable: 100, headParameters: 10, adapterBytes: 4, finalTrainLoss: 1 },
    }));
  const claim = (nola: number[], lora: number[], full: number[]) =>
    orderingClaim(fewShotRows(
      [...cell("nola-k64", nola), ...cell("lora-r4", lora), ...cell("full", full)],
      { shots: [5], methods: [...FEWSHOT_METHODS] },
    ))!;
  // Pooled std of [60, 62] and [63, 65]: sqrt(2); 61 >= 64 - 1.41 fails, 63 passes.
  assert.match(claim([62, 64], [63, 65], [50, 52]), /ordering holds/);
  assert.match(claim([60, 62], [63, 65], [50, 52]), /ordering does not hold.*below/);
  assert.match(claim([70, 72], [63, 65], [75, 77]), /ordering does not hold.*not above full/);
  assert.equal(
    orderingClaim(fewShotRows(cell("head", [1]), { shots: [5], methods: [] })),
    undefined,
  );
});

Deno.test("vit-fewshot refuses a bad flag, an unknown method and a missing base in one line", async () => {
  assert.throws(
    () => parseFewShotOptions(["--methods", "nola-k7"]),
    (e: Error) =>
      e instanceof ExperimentUsageError &&
      /unknown method "nola-k7": choose from head,/.test(e.message),
  );
  assert.throws(() => parseFewShotOptions(["--steps", "0"]), ExperimentUsageError);
  assert.throws(() => parseFewShotOptions(["--bogus"]), ExperimentUsageError);
  await assert.rejects(
    () => main(["--quick", "--base", "fixtures/no-such-vit"], { say: () => {} }),
    (e: Error) =>
      e instanceof ExperimentUsageError &&
      e.message.startsWith("--base: fixtures/no-such-vit/config.json is missing") &&
      !e.message.includes("\n"),
  );
});
