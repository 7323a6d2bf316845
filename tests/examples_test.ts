/** The examples run as a user runs them, in a subprocess, with the documented permissions. */

import assert from "node:assert/strict";

const PERMISSIONS = [
  "--allow-read=.",
  "--allow-write=out",
  "--allow-env=XDG_RUNTIME_DIR,NOLA_TEST_SEED,LOG_TOKENS,LOG_STREAM",
];

async function runExample(path: string): Promise<{ code: number; stdout: string }> {
  const { code, stdout, stderr } = await new Deno.Command("deno", {
    args: ["run", ...PERMISSIONS, path],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const out = new TextDecoder().decode(stdout);
  if (code !== 0) console.error(out, new TextDecoder().decode(stderr));
  return { code, stdout: out };
}

Deno.test("examples/finetune_nola.ts trains, quantizes, saves, reloads and generates", async () => {
  const { code, stdout } = await runExample("examples/finetune_nola.ts");
  assert.deepEqual(code, 0);
  const losses = [...stdout.matchAll(/^step (\d+) loss (\S+)$/gm)];
  assert.deepEqual(losses.map((m) => Number(m[1])), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  for (const [, , loss] of losses) assert.ok(Number.isFinite(Number(loss)), `loss ${loss}`);
  assert.match(stdout, /^trained 10 steps \(done\)$/m);
  assert.match(stdout, /^quantized to 4 bits, largest change \S+$/m);
  assert.match(stdout, /^validation loss \d+\.\d+ \(perplexity \S+\) over \d+ tokens$/m);
  const size = stdout.match(/^saved out\/examples\/finetune_nola\.safetensors \((\d+) bytes\)$/m);
  assert.ok(size, "no saved line");
  assert.deepEqual(
    Number(size[1]),
    (await Deno.stat("out/examples/finetune_nola.safetensors")).size,
  );
  assert.match(stdout, /^sample: ".+"$/m);
});
