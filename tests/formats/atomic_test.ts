import assert from "node:assert/strict";
import { writeFileAtomic, writeTextFileAtomic } from "../../formats/atomic.ts";
import { withTempDir } from "../_util.ts";

async function listDir(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) names.push(entry.name);
  return names.sort();
}

Deno.test("writeFileAtomic creates a file and leaves no temporary file behind", async () => {
  await withTempDir("atomic", async (dir) => {
    const data = new Uint8Array([0, 1, 2, 255]);
    await writeFileAtomic(`${dir}/a.bin`, data);
    assert.deepEqual(await Deno.readFile(`${dir}/a.bin`), data);
    assert.deepEqual(await listDir(dir), ["a.bin"]);
  });
});

Deno.test("writeFileAtomic replaces an existing file whole, including with a shorter one", async () => {
  await withTempDir("atomic", async (dir) => {
    await writeFileAtomic(`${dir}/a.bin`, new Uint8Array(1000).fill(7));
    await writeFileAtomic(`${dir}/a.bin`, new Uint8Array([9, 9]));
    assert.deepEqual(await Deno.readFile(`${dir}/a.bin`), new Uint8Array([9, 9]));
    assert.deepEqual(await listDir(dir), ["a.bin"]);
  });
});

Deno.test("writeFileAtomic writes an empty file", async () => {
  await withTempDir("atomic", async (dir) => {
    await writeFileAtomic(`${dir}/empty`, new Uint8Array());
    assert.equal((await Deno.stat(`${dir}/empty`)).size, 0);
  });
});

Deno.test("writeFileAtomic removes its temporary file when the rename fails", async () => {
  await withTempDir("atomic", async (dir) => {
    // A non-empty folder at the target path makes the rename fail after the data is written.
    await Deno.mkdir(`${dir}/target/inner`, { recursive: true });
    await assert.rejects(writeFileAtomic(`${dir}/target`, new Uint8Array([1, 2, 3])));
    assert.deepEqual(await listDir(dir), ["target"]);
    assert.ok((await Deno.stat(`${dir}/target`)).isDirectory);
  });
});

Deno.test("writeFileAtomic rejects when the folder does not exist and creates nothing", async () => {
  await withTempDir("atomic", async (dir) => {
    await assert.rejects(
      writeFileAtomic(`${dir}/missing/a.bin`, new Uint8Array([1])),
      Deno.errors.NotFound,
    );
    assert.deepEqual(await listDir(dir), []);
  });
});

Deno.test("concurrent writeFileAtomic calls leave one complete version", async () => {
  await withTempDir("atomic", async (dir) => {
    const versions = Array.from({ length: 8 }, (_, i) => new Uint8Array(4096 * (i + 1)).fill(i));
    await Promise.all(versions.map((v) => writeFileAtomic(`${dir}/a.bin`, v)));
    const final = await Deno.readFile(`${dir}/a.bin`);
    assert.ok(versions.some((v) => v.length === final.length && v.every((b, i) => b === final[i])));
    assert.deepEqual(await listDir(dir), ["a.bin"]);
  });
});

Deno.test("writeTextFileAtomic writes UTF-8 text", async () => {
  await withTempDir("atomic", async (dir) => {
    const text = "r: 8\nname: \u00e9t\u00e9 \u{1f680}\n";
    await writeTextFileAtomic(`${dir}/c.yaml`, text);
    assert.equal(await Deno.readTextFile(`${dir}/c.yaml`), text);
  });
});
