import assert from "node:assert/strict";
import { crc32 } from "node:zlib";
import {
  CHECKSUM_KEY,
  CHECKSUM_PLACEHOLDER,
  sealChecksum,
  verifyChecksum,
} from "../../formats/checksum.ts";
import { inspectFile } from "../../formats/inspect.ts";
import { encodeSafetensors, SafetensorsError, SafetensorsFile } from "../../formats/safetensors.ts";
import { freshSeed, randomArray, rng, withTempDir } from "../_util.ts";

function sealed(seed: number): Uint8Array {
  return sealChecksum(encodeSafetensors([
    { name: "a", dtype: "F32", shape: [5], data: randomArray(5, seed) },
    { name: "b", dtype: "U8", shape: [3], data: new Uint8Array([1, 2, 3]) },
  ], { step: "12", [CHECKSUM_KEY]: CHECKSUM_PLACEHOLDER }));
}

async function check(path: string) {
  using file = await SafetensorsFile.open(path);
  return await verifyChecksum(file);
}

Deno.test("the checksum is zlib's CRC-32 of the whole file with its own digits as zeros", async () => {
  const bytes = sealed(freshSeed());
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header = new TextDecoder().decode(bytes.subarray(8, 8 + n));
  const at = header.indexOf(`"checksum":"crc32:`) + 18;
  const value = header.slice(at - 6, at + 8);
  const zeroed = bytes.slice();
  zeroed.fill(0x30, 8 + at, 8 + at + 8);
  assert.equal(value, `crc32:${crc32(zeroed).toString(16).padStart(8, "0")}`);
  await withTempDir("checksum", async (dir) => {
    await Deno.writeFile(`${dir}/a.safetensors`, bytes);
    assert.deepEqual(await check(`${dir}/a.safetensors`), { stored: value });
    // A file written before checksums passes unchecked.
    await Deno.writeFile(`${dir}/old.safetensors`, encodeSafetensors([], { step: "1" }));
    assert.deepEqual(await check(`${dir}/old.safetensors`), {});
  });
  assert.throws(() => sealChecksum(encodeSafetensors([], {})), /holds "crc32:00000000" nowhere/);
});

Deno.test("a flipped bit is refused, or leaves the file's content intact", async () => {
  const seed = freshSeed();
  const bytes = sealed(seed);
  const dataStart = 8 + Number(new DataView(bytes.buffer).getBigUint64(0, true));
  // Every bit of the data and of the first 8 bytes, one random bit of each header byte.
  const next = rng(seed);
  const bits: number[] = [];
  for (let byte = 0; byte < bytes.length; byte++) {
    if (byte >= 8 && byte < dataStart) bits.push(8 * byte + Math.floor(next() * 8));
    else for (let b = 0; b < 8; b++) bits.push(8 * byte + b);
  }
  await withTempDir("checksum-flips", async (dir) => {
    const path = `${dir}/a.safetensors`;
    const content = async () => {
      using file = await SafetensorsFile.open(path);
      const tensors = await Promise.all(file.names().map((n) => file.readBytes(n)));
      // The metadata but the sum, under whatever key it ended up.
      const metadata = Object.entries(file.metadata).filter(([, v]) => !v.startsWith("crc32:"));
      return { metadata, names: file.names(), tensors };
    };
    await Deno.writeFile(path, bytes);
    const original = await content();
    const outcomes = { structure: 0, checksum: 0, intact: 0 };
    for (const bit of bits) {
      const flipped = bytes.slice();
      flipped[bit >> 3] ^= 1 << (bit & 7);
      await Deno.writeFile(path, flipped);
      let result;
      try {
        result = await check(path);
      } catch (e) {
        assert(e instanceof SafetensorsError, `bit ${bit}, seed ${seed}: ${e}`);
        outcomes.structure++;
        continue;
      }
      if (result.problem) {
        outcomes.checksum++;
        continue;
      }
      assert(bit < 8 * dataStart, `data bit ${bit} passed, seed ${seed}`);
      // Only a flip in the key's own name ("checksum" -> "chdcksum") hides the sum; then the
      // file reads unchecked, and everything it says is still what was written.
      assert.equal(result.stored, undefined, `bit ${bit} passed the check, seed ${seed}`);
      assert.deepEqual(await content(), original, `bit ${bit} changed the content, seed ${seed}`);
      outcomes.intact++;
    }
    assert(outcomes.intact <= 8 * CHECKSUM_KEY.length, JSON.stringify(outcomes));
    assert(outcomes.checksum >= 8 * (bytes.length - dataStart), JSON.stringify(outcomes));
  });
});

Deno.test("inspect lists a damaged file and marks its checksum", async () => {
  const bytes = sealed(7);
  bytes[bytes.length - 1] ^= 0x10;
  await withTempDir("checksum-inspect", async (dir) => {
    await Deno.writeFile(`${dir}/a.safetensors`, bytes);
    const text = await inspectFile(`${dir}/a.safetensors`);
    assert.match(text, /2 tensors, 8 elements, 23 bytes of data/);
    assert.match(
      text,
      /checksum: crc32:[0-9a-f]{8} \(DAMAGED: its bytes give checksum crc32:[0-9a-f]{8}, not/,
    );
    bytes[bytes.length - 1] ^= 0x10;
    await Deno.writeFile(`${dir}/a.safetensors`, bytes);
    assert.match(await inspectFile(`${dir}/a.safetensors`), /checksum: crc32:\w+ \(verified\)/);
  });
});
