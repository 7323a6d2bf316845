import assert from "node:assert/strict";
import { canonicalJson, Eta, formatDuration, RunStore } from "../../experiments/run_store.ts";
import { withTempDir } from "../_util.ts";

Deno.test("canonicalJson sorts keys at every depth and keeps arrays in order", () => {
  assert.equal(canonicalJson({ b: 1, a: [2, { d: 3, c: 4 }] }), '{"a":[2,{"c":4,"d":3}],"b":1}');
  assert.equal(canonicalJson({ x: null, y: "z" }), canonicalJson({ y: "z", x: null }));
});

Deno.test("RunStore finds a run only under exactly the settings it ran with", async () => {
  await withTempDir("run-store", async (dir) => {
    const store = new RunStore(dir);
    const settings = { lr: 0.01, seed: 1, base: { path: "m", sha256: "ab" } };
    const folder = await store.folder("final-x", settings);
    assert.equal(
      folder,
      await store.folder("final-x", { seed: 1, base: { sha256: "ab", path: "m" }, lr: 0.01 }),
    );
    assert.notEqual(folder, await store.folder("final-x", { ...settings, lr: 0.02 }));
    assert.equal(await store.done(folder, settings), undefined, "not run yet");
    const record = {
      settings,
      figures: { bleu: 40 },
      seconds: 3,
      finished: "2026-12-02T00:00:00Z",
    };
    await store.save(folder, record);
    assert.deepEqual(await store.done(folder, { ...settings }), record);
    assert.equal(await store.done(folder, { ...settings, seed: 2 }), undefined);
    await Deno.writeTextFile(`${folder}/result.json`, "{ torn");
    assert.equal(await store.done(folder, settings), undefined, "an unreadable result runs again");
  });
});

Deno.test("Eta scales by the seconds per step of the same kind, else of all runs", () => {
  const eta = new Eta();
  assert.equal(eta.estimate([{ kind: "sweep", units: 10 }]), undefined, "nothing timed yet");
  eta.record("sweep", 100, 50); // 0.5 s a step
  assert.equal(eta.estimate([{ kind: "sweep", units: 100 }, { kind: "final", units: 300 }]), 200);
  eta.record("final", 300, 300); // 1 s a step
  assert.equal(eta.estimate([{ kind: "sweep", units: 10 }, { kind: "final", units: 10 }]), 15);
  assert.equal(eta.estimate([]), 0);
});

Deno.test("formatDuration reads as seconds, minutes or hours", () => {
  assert.equal(formatDuration(45.4), "45 s");
  assert.equal(formatDuration(200), "3 min 20 s");
  assert.equal(formatDuration(7500), "2 h 05 min");
});

Deno.test("the first Ctrl-C asks the experiment to stop after its run, the second quits", async () => {
  const child = new Deno.Command("deno", {
    args: ["run", "tests/experiments/_stop_child.ts"],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  const readUntil = async (want: RegExp) => {
    while (!want.test(out)) {
      const { value, done } = await reader.read();
      if (done) break;
      out += value;
    }
  };
  await readUntil(/ready\n/);
  child.kill("SIGINT");
  await readUntil(/stop requested\n/);
  assert.match(out, /Stopping after this run \(Ctrl-C again to quit now; finished runs are kept\)/);
  child.kill("SIGINT");
  for (let r = await reader.read(); !r.done; r = await reader.read()) out += r.value;
  const status = await child.status;
  await child.stderr.cancel();
  assert.equal(status.code, 130, out);
});
