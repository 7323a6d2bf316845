import assert from "node:assert/strict";
import { inspectFile } from "../../formats/inspect.ts";
import { writeSafetensors } from "../../formats/safetensors.ts";
import { tempDir } from "../_util.ts";

Deno.test("inspect lists tensors with dtype, shape and bytes, and the metadata", async () => {
  const dir = await tempDir("inspect");
  const path = `${dir}/a.safetensors`;
  await writeSafetensors(path, [
    { name: "h.0.alpha", dtype: "F32", shape: [3], data: new Float32Array([1, 2, 3]) },
    { name: "packed", dtype: "U8", shape: [2, 5], data: new Uint8Array(10) },
  ], { method: "nola", r: "8" });
  const text = await inspectFile(path);
  await Deno.remove(dir, { recursive: true });
  assert.match(text, /2 tensors, 13 elements, 22 bytes/);
  assert.match(text, /h\.0\.alpha\s+F32\s+\[3\]\s+12/);
  assert.match(text, /packed\s+U8\s+\[2, 5\]\s+10/);
  assert.match(text, /method: nola/);
});
