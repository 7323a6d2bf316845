/**
 * Faults survived, measured: training runs killed with SIGKILL at random moments and inside
 * checkpoint and adapter writes, damaged checkpoints and adapters, and a full disk. Every resumed
 * run must end with the adapter of the uninterrupted run, byte for byte.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { AdapterFileError, loadAdapter, saveAdapter } from "../../adapters/adapter_file.ts";
import { Gpt2 } from "../../models/gpt2.ts";
import {
  checkpointDir,
  CheckpointError,
  findResumeCheckpoint,
  listCheckpoints,
} from "../../train/checkpoint.ts";
import { readMetrics, RunLog } from "../../train/run_log.ts";
import { train } from "../../train/trainer.ts";
import { freshSeed, GPU_TEST, rng, tempDir, testGpu } from "../_util.ts";
import { adapterPath, runToEnd, STEPS } from "./_fault_run.ts";
import { FIXTURE, nolaSetup } from "./_train_fixture.ts";

const TEMP = /\.tmp-[0-9a-f]+$/;

/** The uninterrupted run, once per process: its adapter bytes and its metrics. */
let reference: Promise<{ adapter: Uint8Array; metrics: unknown[] }> | undefined;
function uninterrupted() {
  return reference ??= (async () => {
    const dir = await tempDir("fault-reference");
    await runToEnd(await testGpu(), dir);
    const result = { adapter: await Deno.readFile(adapterPath(dir)), metrics: await metrics(dir) };
    await Deno.remove(dir, { recursive: true });
    return result;
  })();
}

// What a resumed run must reproduce: every figure but the throughput, which is timing.
async function metrics(dir: string): Promise<unknown[]> {
  return (await readMetrics(join(dir, "metrics.jsonl")))
    .map((r) => [r.step, r.split, r.loss, r.lr, r.grad_norm]);
}

async function temps(dir: string): Promise<string[]> {
  const found: string[] = [];
  for (const d of [dir, checkpointDir(dir)]) {
    try {
      for await (const e of Deno.readDir(d)) if (TEMP.test(e.name)) found.push(e.name);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
  return found;
}

/** How a child is stopped: after a delay from its `ready` line, or at the n-th write marker. */
type Kill = { delayMs: number } | { marker: "partial" | "rename"; n: number } | "never";

/** Runs the child on `dir` and SIGKILLs it as `kill` says; the timings of a run it finishes. */
async function child(dir: string, kill: Kill) {
  const args = [
    "run",
    "--allow-read=.",
    "--allow-write=out",
    "--allow-env=XDG_RUNTIME_DIR,NOLA_TEST_SEED",
    "tests/train/_fault_child.ts",
    dir,
    ...(typeof kill === "object" && "marker" in kill ? [`--stop-at=${kill.marker}:${kill.n}`] : []),
  ];
  const proc = new Deno.Command("deno", { args, stdout: "piped", stderr: "piped" }).spawn();
  const stderr = new Response(proc.stderr).text();
  const started = performance.now();
  let ready = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const stop = () => {
    try {
      proc.kill("SIGKILL");
    } catch {
      // It ended on its own just before.
    }
  };
  let out = "";
  let seen = 0;
  const decoder = new TextDecoder();
  for await (const chunk of proc.stdout) {
    out += decoder.decode(chunk, { stream: true });
    if (!ready && out.includes("ready\n")) {
      ready = performance.now();
      if (typeof kill === "object" && "delayMs" in kill) {
        timer = setTimeout(stop, kill.delayMs);
      }
    }
    if (typeof kill === "object" && "marker" in kill) {
      const count = out.split("\n").filter((l) => l.startsWith(`${kill.marker} `)).length;
      if (count >= kill.n && seen < kill.n) stop();
      seen = count;
    }
  }
  clearTimeout(timer);
  const status = await proc.status;
  const killed = status.signal === "SIGKILL";
  if (!killed) assert.equal(status.code, 0, `child failed:\n${out}\n${await stderr}`);
  await stderr;
  return { killed, out, trainMs: performance.now() - ready, totalMs: performance.now() - started };
}

Deno.test("SIGKILL at random moments and inside writes: every resume ends bit-exact", {
  ...GPU_TEST,
}, async () => {
  const seed = freshSeed();
  const next = rng(seed);
  const ref = await uninterrupted();
  // A child's uninterrupted run: the same bytes from another process, and the time to aim at.
  const calibration = await tempDir("fault-calibration");
  const full = await child(calibration, "never");
  assert.deepEqual(await Deno.readFile(adapterPath(calibration)), ref.adapter, "child's run");
  await Deno.remove(calibration, { recursive: true });

  const start = performance.now();
  const rows: string[] = [];
  let trials = 0;
  let exact = 0;
  let kills = 0;
  let inWrites = 0;
  while (trials < 16 && (trials < 8 || performance.now() - start < 60_000)) {
    const dir = await tempDir("fault-trial");
    const notes: string[] = [];
    for (let k = 0; k < (next() < 0.3 ? 2 : 1); k++) {
      // Writes left: a checkpoint a step after the newest one, then the adapter.
      const done = (await listCheckpoints(dir)).length > 0
        ? Number(/step-(\d+)/.exec((await listCheckpoints(dir)).at(-1)!)![1])
        : 0;
      const kind = (trials + k) % 3;
      const kill: Kill = kind === 0 ? { delayMs: Math.floor(next() * full.trainMs) } : {
        marker: kind === 1 ? "partial" : "rename",
        n: 1 + Math.floor(next() * (STEPS - done + 1)),
      };
      const before = await temps(dir);
      const { killed } = await child(dir, kill);
      const left = (await temps(dir)).filter((t) => !before.includes(t));
      if (killed) kills++;
      if (killed && left.length > 0) inWrites++;
      if ("marker" in kill && killed) {
        assert(left.length > 0, `killed at ${kill.marker} ${kill.n} but no temporary file left`);
      }
      const how = "delayMs" in kill ? `${kill.delayMs} ms` : `${kill.marker} #${kill.n}`;
      const where = left.map((t) => t.replace(TEMP, "")).join(" ");
      notes.push(
        `${how}: ${killed ? left.length ? `killed writing ${where}` : "killed" : "finished"}`,
      );
    }
    const said: string[] = [];
    const { resumedFrom } = await runToEnd(await testGpu(), dir, { say: (l) => said.push(l) });
    const same = (await Deno.readFile(adapterPath(dir))).every((b, i) => b === ref.adapter[i]) &&
      (await Deno.stat(adapterPath(dir))).size === ref.adapter.length;
    assert.deepEqual(await metrics(dir), ref.metrics, `trial ${trials}, seed ${seed}: metrics`);
    assert.deepEqual(
      (await temps(dir)).filter((t) => t.startsWith("step-")),
      [],
      `trial ${trials}: partial checkpoints cleaned up`,
    );
    assert(said.every((l) => l.startsWith("removed ")), said.join("\n"));
    rows.push(
      `  trial ${trials}: ${notes.join(", ")}; resumed from step ${resumedFrom ?? "-"}: ` +
        (same ? "bit-exact" : "DIFFERENT"),
    );
    trials++;
    if (same) exact++;
    await Deno.remove(dir, { recursive: true });
  }
  console.log(
    `SIGKILL: ${trials} trials, ${kills} kills (${inWrites} inside a checkpoint or adapter write), ` +
      `${exact}/${trials} resumed to the uninterrupted adapter bit for bit; seed ${seed}, ` +
      `${((performance.now() - start) / 1000).toFixed(0)} s (an uninterrupted child: ` +
      `${(full.totalMs / 1000).toFixed(1)} s, ${
        (full.trainMs / 1000).toFixed(1)
      } s after ready)\n` +
      rows.join("\n"),
  );
  assert.equal(exact, trials, `seed ${seed}`);
  assert(inWrites > 0, "no kill landed inside a write");
});

/** Damages a file: flips one bit of its tensor data, or cuts its last bytes off. */
async function damage(path: string, how: "flip" | "truncate", seed: number): Promise<void> {
  const bytes = await Deno.readFile(path);
  if (how === "truncate") return await Deno.writeFile(path, bytes.subarray(0, bytes.length - 7));
  const next = rng(seed);
  const dataStart = 8 + Number(new DataView(bytes.buffer).getBigUint64(0, true));
  bytes[dataStart + Math.floor(next() * (bytes.length - dataStart))] ^= 1 << (seed % 8);
  await Deno.writeFile(path, bytes);
}

Deno.test(
  "a damaged checkpoint is skipped in one line and the run resumes bit-exact from the one before",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const ref = await uninterrupted();
    const dir = await tempDir("fault-damaged");
    await runToEnd(gpu, dir);
    const good = new Map<string, Uint8Array>();
    for (const path of await listCheckpoints(dir)) good.set(path, await Deno.readFile(path));
    const [older, newest] = [...good.keys()];
    const restore = async () => {
      for (const [path, bytes] of good) await Deno.writeFile(path, bytes);
      await Deno.remove(adapterPath(dir));
    };
    for (const how of ["flip", "truncate"] as const) {
      await restore();
      await damage(newest, how, seed);
      const said: string[] = [];
      const { resumedFrom } = await runToEnd(gpu, dir, { say: (l) => said.push(l) });
      assert.equal(resumedFrom, STEPS - 1, how);
      assert.equal(said.length, 1, said.join("\n"));
      assert.match(
        said[0],
        how === "flip"
          ? /^warning: Checkpoint ".*step-00000008\.safetensors" is unusable: its bytes give checksum crc32:[0-9a-f]{8}, not the stored/
          : /^warning: Invalid safetensors file ".*step-00000008\.safetensors": .*the file is truncated; skipping it$/,
        `${how}, seed ${seed}`,
      );
      assert.deepEqual(await Deno.readFile(adapterPath(dir)), ref.adapter, `${how}, seed ${seed}`);
      assert.deepEqual(await metrics(dir), ref.metrics, how);
    }
    // As the CLI resumes: the log opened for the newest checkpoint by name, the trainer choosing
    // (its warning goes to stderr) and cutting the log back to the checkpoint it took.
    await restore();
    await damage(newest, "flip", seed);
    {
      using s = await nolaSetup(gpu, { steps: STEPS });
      using log = await RunLog.open(dir, { resumeStep: STEPS });
      const result = await train({
        ...s.base,
        batches: s.batches(),
        log,
        logEvery: 1,
        checkpointEvery: 1,
        resume: true,
      });
      assert.equal(result.losses.size, 1, "one step trained, from the older checkpoint");
      await saveAdapter(s.set, adapterPath(dir), { baseModel: "tiny-gpt2" });
    }
    assert.deepEqual(await Deno.readFile(adapterPath(dir)), ref.adapter, `cli, seed ${seed}`);
    assert.deepEqual(await metrics(dir), ref.metrics, "cli: metrics");
    // Both damaged: each said in one line, then one line naming the folder.
    await restore();
    await damage(newest, "flip", seed);
    await damage(older, "truncate", seed);
    const said: string[] = [];
    await assert.rejects(() => findResumeCheckpoint(dir, { say: (l) => said.push(l) }), (e) => {
      assert(e instanceof CheckpointError);
      assert.match(
        e.message,
        /^Cannot resume: none of the 2 checkpoints in .* is usable \(see above\)$/,
      );
      assert.equal(said.length, 2, "each damaged checkpoint said in one line");
      assert(!e.message.includes("\n"));
      return true;
    });
    await Deno.remove(dir, { recursive: true });
  },
);

Deno.test(
  "a damaged adapter is refused in one line; resuming rewrites it bit-exact from the last checkpoint",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const ref = await uninterrupted();
    const dir = await tempDir("fault-adapter");
    await runToEnd(gpu, dir);
    for (const how of ["flip", "truncate"] as const) {
      await damage(adapterPath(dir), how, seed);
      using model = await Gpt2.load(gpu, FIXTURE);
      await assert.rejects(
        () => loadAdapter(model, adapterPath(dir), { maxRows: 4 }),
        (e: Error) => {
          assert.match(e.message, new RegExp(`"${adapterPath(dir)}"`), `${how}, seed ${seed}`);
          assert.match(e.message, how === "flip" ? /its bytes give checksum/ : /truncated/);
          assert(!e.message.includes("\n"));
          return true;
        },
      );
      const { resumedFrom } = await runToEnd(gpu, dir);
      assert.equal(resumedFrom, STEPS);
      assert.deepEqual(await Deno.readFile(adapterPath(dir)), ref.adapter, `${how}, seed ${seed}`);
    }
    await Deno.remove(dir, { recursive: true });
  },
);

/** Whether this process may mount a tmpfs: the reason it may not, or undefined. */
async function cannotMount(): Promise<string | undefined> {
  for (const command of ["mount", "umount"]) {
    if (Deno.permissions.querySync({ name: "run", command }).state !== "granted") {
      return `needs --allow-run=deno,mount,umount (to mount a small tmpfs)`;
    }
  }
  const probe = await tempDir("fault-mount-probe");
  try {
    const mounted = await new Deno.Command("mount", {
      args: ["-t", "tmpfs", "-o", "size=64k", "tmpfs", probe],
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!mounted.success) {
      return `mount -t tmpfs failed: ${new TextDecoder().decode(mounted.stderr).trim()}`;
    }
    await new Deno.Command("umount", { args: [probe] }).output();
  } catch (e) {
    return `cannot run mount: ${(e as Error).message}`;
  } finally {
    await Deno.remove(probe, { recursive: true }).catch(() => {});
  }
}

const noMount = await cannotMount();
if (noMount) console.log(`fault_test: the full-disk test is skipped: ${noMount}`);

Deno.test({
  name:
    "a full disk fails the checkpoint and adapter writes in one line and leaves the files before",
  ...GPU_TEST,
  ignore: noMount !== undefined,
  fn: async () => {
    const gpu = await testGpu();
    const ref = await uninterrupted();
    const mountPoint = await tempDir("fault-full-disk");
    const mount = await new Deno.Command("mount", {
      args: ["-t", "tmpfs", "-o", "size=256k", "tmpfs", mountPoint],
    }).output();
    assert(mount.success, new TextDecoder().decode(mount.stderr));
    try {
      const dir = join(mountPoint, "run");
      const filler = join(mountPoint, "filler");
      let before = new Map<string, Uint8Array>();
      const previous = ref.adapter;
      await Deno.mkdir(dir);
      await Deno.writeFile(adapterPath(dir), previous);
      await assert.rejects(
        () =>
          runToEnd(gpu, dir, {
            onStep: (step) => {
              if (step !== 3) return;
              // Checkpoints 1 and 2 are on disk; checkpoint 3 is written after this returns.
              before = new Map([...Deno.readDirSync(checkpointDir(dir))].map((e) => {
                const path = join(checkpointDir(dir), e.name);
                return [e.name, Deno.readFileSync(path)];
              }));
              fill(filler);
            },
          }),
        (e: Error) => {
          assert(e instanceof CheckpointError, String(e));
          assert.match(
            e.message,
            /^Cannot write checkpoint ".*step-00000003\.safetensors": No space left on device/,
          );
          assert(!e.message.includes("\n"));
          return true;
        },
      );
      assert.deepEqual([...before.keys()].sort(), [
        "step-00000001.safetensors",
        "step-00000002.safetensors",
      ]);
      const after = new Map<string, Uint8Array>();
      for await (const e of Deno.readDir(checkpointDir(dir))) {
        after.set(e.name, await Deno.readFile(join(checkpointDir(dir), e.name)));
      }
      assert.deepEqual(after, before, "the checkpoints before, as they were, and nothing else");
      // The adapter of an earlier run survives a save that cannot fit.
      {
        using s = await nolaSetup(gpu, { steps: STEPS });
        await assert.rejects(
          () => saveAdapter(s.set, adapterPath(dir), { baseModel: "tiny-gpt2" }),
          (e: Error) => {
            assert(e instanceof AdapterFileError, String(e));
            assert.match(e.message, /^Cannot save adapter ".*": No space left on device/);
            return true;
          },
        );
      }
      assert.deepEqual(await Deno.readFile(adapterPath(dir)), previous);
      assert.deepEqual(await temps(dir), []);
      // Room again: the run resumes from step 2 and ends as the uninterrupted one.
      await Deno.remove(filler);
      const { resumedFrom } = await runToEnd(gpu, dir);
      assert.equal(resumedFrom, 2);
      assert.deepEqual(await Deno.readFile(adapterPath(dir)), ref.adapter);
      assert.deepEqual(await metrics(dir), ref.metrics);
    } finally {
      await new Deno.Command("umount", { args: [mountPoint] }).output();
      await Deno.remove(mountPoint, { recursive: true });
    }
  },
});

/** Writes `path` until the file system has no space left. */
function fill(path: string): void {
  using file = Deno.openSync(path, { write: true, createNew: true });
  const block = new Uint8Array(4096);
  try {
    for (;;) file.writeSync(block);
  } catch (e) {
    if ((e as { code?: string }).code !== "ENOSPC") throw e;
  }
}
