import assert from "node:assert/strict";
import { join } from "node:path";
import { main } from "../../experiments/nola_vs_lora.ts";
import { ExperimentUsageError } from "../../experiments/nola_vs_lora_options.ts";
import { GPU_TEST, testGpu, withTempDir } from "../_util.ts";

/** The first `n` records of a split of the fixture task, header kept. */
async function head(split: string, n: number, dir: string): Promise<void> {
  const lines = (await Deno.readTextFile(`fixtures/data-to-text/${split}.csv`)).split("\n");
  await Deno.writeTextFile(join(dir, `${split}.csv`), lines.slice(0, n + 1).join("\n") + "\n");
}

interface Figures {
  valLoss: number;
  bleu: number;
  rougeL: number;
  slotError?: number;
  ptq?: Figures;
}

Deno.test({
  name:
    "the experiment sweeps, picks, runs the seeds, tables mean ± std and resumes where it stopped",
  ...GPU_TEST,
  fn: () =>
    withTempDir("nola-vs-lora", async (dir) => {
      const data = join(dir, "data");
      await Deno.mkdir(data);
      await head("train", 40, data);
      await head("validation", 8, data);
      await head("test", 12, data);
      const out = join(dir, "exp");
      const args = [
        ...["--base", "fixtures/tiny-gpt2-pretrained", "--data", data, "--out", out],
        ...["--methods", "lora-r1,nola-k16,nola-k16-ptq", "--seeds", "2"],
        ...[
          "--steps",
          "3",
          "--sweep-steps",
          "2",
          "--sweep-factors",
          "0.5,2",
          "--batch",
          "2",
          "--seq-len",
          "64",
        ],
        ...["--test-examples", "3", "--beams", "2", "--max-new-tokens", "6"],
      ];
      const lines: string[] = [];
      const io = { env: () => undefined, say: (l: string) => lines.push(l), gpu: await testGpu() };
      const first = await main(args, io);
      assert.deepEqual(first, { out, ran: 8, skipped: 0, interrupted: false });

      // One progress line per run when it ends, with its time, and the time left until the last.
      const done = lines.filter((l) => /^\[\d\/8\] .*: val loss/.test(l));
      assert.equal(done.length, 8, lines.join("\n"));
      assert.ok(done.slice(0, 7).every((l) => /\(\d+ s\); about \d+ (s|min \d+ s) left$/.test(l)));

      const json = JSON.parse(await Deno.readTextFile(join(out, "results.json")));
      assert.equal(json.sweep.length, 4, "2 methods x 2 rates");
      assert.equal(json.runs.length, 4, "2 methods x 2 seeds");
      // The pick: the swept rate of lowest validation loss; every final run trains at it.
      for (const method of ["lora-r1", "nola-k16"]) {
        const swept = json.sweep.filter((s: { method: string }) => s.method === method);
        const centre = method === "lora-r1" ? 5e-3 : 3e-2;
        assert.deepEqual(swept.map((s: { lr: number }) => s.lr), [centre * 0.5, centre * 2]);
        const best = swept.reduce((a: { figures: Figures }, b: { figures: Figures }) =>
          b.figures.valLoss < a.figures.valLoss ? b : a
        );
        assert.equal(json.picks[method].lr, best.lr);
        const runs = json.runs.filter((r: { method: string }) => r.method === method);
        assert.deepEqual(runs.map((r: { seed: number }) => r.seed), [0, 1]);
        assert.ok(
          runs.every((r: { lr: number; steps: number }) => r.lr === best.lr && r.steps === 3),
        );
      }

      // Mean and sample std by hand: for two values, (a + b) / 2 and |a - b| / sqrt(2).
      const md = await Deno.readTextFile(join(out, "results.md"));
      for (const row of json.rows) {
        const source = row.method === "nola-k16-ptq" ? "nola-k16" : row.method;
        const runs = json.runs.filter((r: { method: string }) => r.method === source);
        const figures: Figures[] = runs.map((r: { figures: Figures }) =>
          row.method === "nola-k16-ptq" ? r.figures.ptq! : r.figures
        );
        assert.equal(figures.length, 2);
        const cells: string[] = [];
        for (
          const [key, digits] of [["valLoss", 4], ["bleu", 2], ["rougeL", 2], [
            "slotError",
            2,
          ]] as const
        ) {
          const [a, b] = figures.map((f) => f[key]!);
          assert.ok(Number.isFinite(a) && Number.isFinite(b), `${row.method} ${key}`);
          const mean = (a + b) / 2;
          const std = Math.abs(a - b) / Math.SQRT2;
          assert.ok(Math.abs(row[key].mean - mean) <= 1e-12 * Math.max(1, mean), `${key} mean`);
          assert.ok(Math.abs(row[key].std - std) <= 1e-9 * Math.max(1, std), `${key} std`);
          cells.push(`${mean.toFixed(digits)} ± ${std.toFixed(digits)}`);
        }
        assert.ok(md.includes(`| ${cells.join(" | ")} |`), `${row.label} in the table:\n${md}`);
      }
      const lora = json.rows.find((r: { method: string }) => r.method === "lora-r1");
      const nola = json.rows.find((r: { method: string }) => r.method === "nola-k16");
      assert.equal(lora.params, 2048, "2 modules x 4 layers x (128 + 128)");
      assert.equal(nola.params, 256, "2 modules x 4 layers x (16 + 16)");
      const ptqRow = json.rows.find((r: { method: string }) => r.method === "nola-k16-ptq");
      assert.ok(ptqRow.bytes < nola.bytes, `4-bit ${ptqRow.bytes} < ${nola.bytes} bytes`);

      // The claim on validation loss, judged here from the rows: some NOLA row (both have 256
      // parameters, fewer than LoRA r=1's) within one pooled std of LoRA r=1 or better.
      const matches = [nola, ptqRow].some((r) =>
        r.valLoss.mean - lora.valLoss.mean <=
          Math.sqrt((r.valLoss.std ** 2 + lora.valLoss.std ** 2) / 2)
      );
      const lossClaim = json.claims.find((c: { metric: string }) => c.metric === "validation loss");
      assert.equal(lossClaim.verdict, matches ? "holds" : "does not hold");
      assert.ok(md.includes(`(validation loss): **${lossClaim.verdict}**`));
      assert.ok(
        md.includes("**4-bit coefficients cost under 1% of the metric** (BLEU, NOLA k=l=16"),
      );
      assert.ok(md.includes("**Every final run trains 3 steps**"));

      // Each final run is a pipeline with the paper's decoding settings as given.
      const folder = json.runs[0].folder;
      const yaml = await Deno.readTextFile(join(folder, "pipeline.yaml"));
      for (
        const want of ["decoding: beam", "beams: 2", "length_penalty: 0.8", "no_repeat_ngram: 4"]
      ) {
        assert.ok(yaml.includes(want), want);
      }
      assert.ok(yaml.includes(`metrics: ["bleu","rouge_l","slot_error"]`));
      // Error bars for every row whose seeds differ.
      const svg = await Deno.readTextFile(join(out, "loss.svg"));
      const spread = json.rows.filter((r: { valLoss: { std: number } }) => r.valLoss.std > 0);
      assert.equal(svg.match(/class="error-bar"/g)?.length ?? 0, spread.length);

      // A rerun skips every finished run and writes the same results.
      const again = await main(args, { ...io, say: () => {} });
      assert.deepEqual(again, { out, ran: 0, skipped: 8, interrupted: false });
      assert.deepEqual(JSON.parse(await Deno.readTextFile(join(out, "results.json"))), json);
      // A run whose result was never written (stopped mid-way) runs again, and only it.
      await Deno.remove(join(folder, "result.json"));
      const resumed = await main(args, { ...io, say: () => {} });
      assert.deepEqual(resumed, { out, ran: 1, skipped: 7, interrupted: false });

      // A data file edited while a run trains: the run is not kept, the experiment says why.
      const third = [...args, "--seeds", "3"];
      const refused = await main(third, {
        ...io,
        say: (line) => {
          if (/ seed 2, .*\.\.\.$/.test(line)) {
            Deno.writeTextFileSync(join(data, "test.csv"), "\n", { append: true });
          }
        },
      }).catch((e) => e);
      assert.ok(refused instanceof ExperimentUsageError, String(refused));
      assert.equal(
        refused.message,
        `The data folder "${data}" changed while the experiment ran: finished runs are kept; ` +
          "give the command again to go on with the files as they are now",
      );
      const kept = JSON.parse(await Deno.readTextFile(join(out, "results.json")));
      assert.equal(kept.runs.length, 4, "the seed-2 run was not recorded");
    }),
});
