import assert from "node:assert/strict";
import { join, resolve } from "node:path";
import { copyFileAtomic, writeFileAtomic } from "../../formats/atomic.ts";
import {
  checkOutputFolder,
  checkOutputPath,
  ensureFolder,
  OutputPathError,
  resolveReal,
} from "../../formats/folder.ts";
import { withTempDir } from "../_util.ts";

/** The modes a folder and a file get when created without one (the umask's). */
async function defaultModes(dir: string): Promise<{ folder: number; file: number }> {
  await Deno.mkdir(join(dir, "probe"));
  await Deno.writeTextFile(join(dir, "probe", "f"), "");
  const folder = (await Deno.stat(join(dir, "probe"))).mode! & 0o777;
  const file = (await Deno.stat(join(dir, "probe", "f"))).mode! & 0o777;
  await Deno.remove(join(dir, "probe"), { recursive: true });
  return { folder, file };
}

async function refusal(out: string, inputs: Parameters<typeof checkOutputPath>[1]) {
  return await checkOutputPath(out, inputs, { label: "--out" }).then(
    () => undefined,
    (e) => {
      assert.ok(e instanceof OutputPathError, String(e));
      return e.message;
    },
  );
}

Deno.test("checkOutputPath refuses an output that is, lies inside or contains an input", async () => {
  await withTempDir("folder", async (dir) => {
    const model = join(dir, "model");
    await Deno.mkdir(model);
    await Deno.writeTextFile(join(dir, "a.safetensors"), "");
    const inputs = [
      { path: model, what: "model folder" },
      { path: join(dir, "a.safetensors"), what: "adapter file" },
    ];
    assert.equal(
      await refusal(model, inputs),
      `Cannot write --out "${model}": it is the model folder "${model}"`,
    );
    // Not yet there: resolved through the nearest existing parent.
    assert.match((await refusal(join(model, "x", "y"), inputs))!, /it is inside the model folder/);
    assert.match((await refusal(join(model, "..", "model"), inputs))!, /it is the model folder/);
    assert.match((await refusal(dir, inputs))!, /it contains the model folder/);
    assert.match(
      (await refusal(join(dir, "a.safetensors", "sub"), inputs))!,
      /it is inside the adapter file/,
    );
    // A sibling whose name starts like an input is unrelated.
    assert.equal(await refusal(join(dir, "model2"), inputs), undefined);
    assert.equal(await refusal(join(dir, "out", "merged"), inputs), undefined);
  });
});

Deno.test("checkOutputPath lets a run folder hold its pipeline file, not be it", async () => {
  await withTempDir("folder", async (dir) => {
    const pipeline = [{
      path: join(dir, "p.yaml"),
      what: "pipeline file",
      mayBeInsideOutput: true,
    }];
    assert.equal(await refusal(dir, pipeline), undefined);
    assert.match((await refusal(join(dir, "p.yaml"), pipeline))!, /it is the pipeline file/);
  });
});

// Deno.symlink needs unscoped read and write permissions, which the test task does not grant.
const SYMLINKS = (await Deno.permissions.query({ name: "write" })).state === "granted" &&
  (await Deno.permissions.query({ name: "read" })).state === "granted";

Deno.test({
  name: "checkOutputPath follows symbolic links to an input",
  ignore: !SYMLINKS,
  fn: async () => {
    await withTempDir("folder", async (dir) => {
      const model = join(dir, "model");
      await Deno.mkdir(model);
      await Deno.symlink(resolve(model), join(dir, "link"));
      const inputs = [{ path: model, what: "model folder" }];
      assert.match((await refusal(join(dir, "link"), inputs))!, /it is the model folder/);
      assert.match((await refusal(join(dir, "link", "new"), inputs))!, /it is inside/);
      assert.equal(
        await resolveReal(join(dir, "link", "a", "b")),
        await resolveReal(join(model, "a", "b")),
      );
    });
  },
});

Deno.test("ensureFolder creates folders with the umask's mode and keeps an existing one", async () => {
  await withTempDir("folder", async (dir) => {
    const modes = await defaultModes(dir);
    await ensureFolder(join(dir, "a", "b"));
    assert.equal((await Deno.stat(join(dir, "a")).then((s) => s.mode!)) & 0o777, modes.folder);
    assert.equal((await Deno.stat(join(dir, "a", "b")).then((s) => s.mode!)) & 0o777, modes.folder);
    await Deno.writeTextFile(join(dir, "a", "b", "notes.txt"), "mine");
    await ensureFolder(join(dir, "a", "b"));
    assert.equal(await Deno.readTextFile(join(dir, "a", "b", "notes.txt")), "mine");
    await Deno.writeTextFile(join(dir, "file"), "x");
    await assert.rejects(
      ensureFolder(join(dir, "file")),
      (e) => e instanceof OutputPathError && /it is a file, not a folder$/.test(e.message),
    );
  });
});

Deno.test("checkOutputFolder refuses a folder holding a file that would shadow the output", async () => {
  await withTempDir("folder", async (dir) => {
    await checkOutputFolder(join(dir, "missing"), { shadowedBy: ["index.json"] });
    await checkOutputFolder(dir, { shadowedBy: ["index.json"] });
    await Deno.writeTextFile(join(dir, "index.json"), "{}");
    await assert.rejects(
      checkOutputFolder(dir, { shadowedBy: ["index.json"], label: "--out" }),
      (e) => e instanceof OutputPathError && e.message.startsWith(`Cannot write --out "${dir}"`),
    );
    assert.equal(await Deno.readTextFile(join(dir, "index.json")), "{}");
  });
});

Deno.test("copyFileAtomic gives the copy the umask's mode, not the source's", async () => {
  await withTempDir("folder", async (dir) => {
    const modes = await defaultModes(dir);
    await Deno.writeTextFile(join(dir, "src"), "tokens");
    await Deno.chmod(join(dir, "src"), 0o600);
    await copyFileAtomic(join(dir, "src"), join(dir, "dst"));
    assert.equal(await Deno.readTextFile(join(dir, "dst")), "tokens");
    assert.equal((await Deno.stat(join(dir, "dst"))).mode! & 0o777, modes.file);
  });
});

Deno.test("writeFileAtomic names the path when its folder is missing or it is a folder", async () => {
  await withTempDir("folder", async (dir) => {
    await assert.rejects(
      writeFileAtomic(join(dir, "no", "f"), new Uint8Array(1)),
      (e) =>
        e instanceof Deno.errors.NotFound &&
        e.message === `Cannot write "${join(dir, "no", "f")}": no folder "${join(dir, "no")}"`,
    );
    await Deno.mkdir(join(dir, "d"));
    await assert.rejects(
      writeFileAtomic(join(dir, "d"), new Uint8Array(1)),
      (e) =>
        e instanceof Deno.errors.IsADirectory &&
        e.message === `Cannot write file "${join(dir, "d")}": it is a folder`,
    );
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["d"]);
  });
});
