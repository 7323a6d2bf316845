import assert from "node:assert/strict";
import { listCheckpoints } from "../../train/checkpoint.ts";
import { readMetrics } from "../../train/run_log.ts";
import { tempDir } from "../_util.ts";

Deno.test("SIGINT writes a checkpoint and prints how to resume", async () => {
  const dir = await tempDir("sigint");
  const child = new Deno.Command("deno", {
    args: [
      "run",
      "--allow-read=.",
      "--allow-write=out",
      "--allow-env=XDG_RUNTIME_DIR,NOLA_TEST_SEED",
      "tests/train/_sigint_child.ts",
      dir,
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!/step 3\n/.test(out)) {
    const { value, done } = await reader.read();
    if (done) break;
    out += value;
  }
  child.kill("SIGINT");
  for (let r = await reader.read(); !r.done; r = await reader.read()) out += r.value;
  const status = await child.status;
  const stderr = await new Response(child.stderr).text();
  assert.equal(status.code, 130, `${out}\n${stderr}`);
  const match = /Stopped at step (\d+), checkpoint (\S+)\. Resume with: train --resume/.exec(out);
  assert(match, out);
  const checkpoints = await listCheckpoints(dir);
  assert.deepEqual(checkpoints.map((p) => p.split("/").at(-1)), [
    `step-${match[1].padStart(8, "0")}.safetensors`,
  ]);
  const steps = (await readMetrics(`${dir}/metrics.jsonl`)).map((r) => r.step);
  assert.equal(steps.at(-1), Number(match[1]));
  await Deno.remove(dir, { recursive: true });
});
