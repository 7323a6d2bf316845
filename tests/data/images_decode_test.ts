import assert from "node:assert/strict";
import fc from "fast-check";
import { decodeImage, readImage } from "../../data/images/image.ts";
import { DataError } from "../../data/readers.ts";
import { freshSeed, withTempDir } from "../_util.ts";
import { applyEdits, assertRefusal, byteEdits, fuzz } from "../fuzz/_fuzz.ts";
import { jpegBytes, pngBytes, randomBytes, smoothRgb } from "./_images.ts";

Deno.test("PNG: grey, grey+alpha, RGB and RGBA decode to their samples, alpha dropped", () => {
  const seed = freshSeed();
  for (const [stored, kept] of [[1, 1], [2, 1], [3, 3], [4, 3]] as const) {
    const width = 5;
    const height = 3;
    const data = randomBytes(width * height * stored, seed + stored);
    const image = decodeImage(pngBytes({ width, height, channels: stored, data }), {
      file: "x.png",
    });
    assert.deepEqual([image.width, image.height, image.channels], [width, height, kept]);
    const expected = new Uint8Array(width * height * kept);
    for (let p = 0; p < width * height; p++) {
      for (let c = 0; c < kept; c++) expected[p * kept + c] = data[p * stored + c];
    }
    assert.deepEqual(image.data, expected, `channels ${stored} (seed ${seed})`);
  }
});

Deno.test("PNG: 1-, 2- and 4-bit grey scale to 0..255 and 16-bit rounds to 8 bits", () => {
  // 3 pixels a row: rows do not end on a byte boundary at depths 1 and 2.
  for (const depth of [1, 2, 4] as const) {
    const max = (1 << depth) - 1;
    const values = [[0, max, 1 % (max + 1)], [max, 0, max]];
    const perByte = 8 / depth;
    const rowBytes = Math.ceil(3 / perByte);
    const packed = new Uint8Array(rowBytes * 2);
    values.forEach((row, y) =>
      row.forEach((v, x) => {
        const bit = x * depth;
        packed[y * rowBytes + (bit >> 3)] |= v << (8 - depth - (bit & 7));
      })
    );
    const image = decodeImage(
      pngBytes({ width: 3, height: 2, channels: 1, depth, data: packed }),
      { file: "d.png" },
    );
    assert.deepEqual([...image.data], values.flat().map((v) => Math.round((v * 255) / max)));
  }
  const wide = new Uint16Array([65535, 0, 257 * 7 + 128, 300, 128, 65280]);
  const image = decodeImage(pngBytes({ width: 2, height: 1, channels: 3, depth: 16, data: wide }), {
    file: "w.png",
  });
  // round(v / 257): 255, 0, 7.498 -> 7, 1.167 -> 1, 0.498 -> 0, 254.01 -> 254
  assert.deepEqual([...image.data], [255, 0, 7, 1, 0, 254]);
});

Deno.test("PNG: a palette image is expanded to RGB", () => {
  const palette = [[255, 0, 0], [0, 128, 255], [9, 9, 9]];
  const image = decodeImage(
    pngBytes({ width: 4, height: 1, channels: 1, data: new Uint8Array([2, 0, 1, 0]), palette }),
    { file: "p.png" },
  );
  assert.equal(image.channels, 3);
  assert.deepEqual([...image.data], [9, 9, 9, 255, 0, 0, 0, 128, 255, 255, 0, 0]);
});

Deno.test("JPEG: a smooth RGB image decodes close to what was encoded", () => {
  const seed = freshSeed();
  const [width, height] = [17, 11];
  const rgb = smoothRgb(width, height, seed);
  const image = decodeImage(jpegBytes({ width, height, rgb }, 100), { file: "s.jpg" });
  assert.deepEqual([image.width, image.height, image.channels], [width, height, 3]);
  let err = 0;
  for (let i = 0; i < rgb.length; i++) err += Math.abs(image.data[i] - rgb[i]);
  assert.ok(err / rgb.length < 3, `mean error ${err / rgb.length} (seed ${seed})`);
});

Deno.test("decodeImage refuses other formats, and truncated or corrupt files, naming the file", async () => {
  const png = pngBytes({ width: 8, height: 8, channels: 3, data: randomBytes(192, 1) });
  const jpg = jpegBytes({ width: 16, height: 16, rgb: smoothRgb(16, 16, 2) });
  const cases: [string, Uint8Array, RegExp][] = [
    ["empty.png", new Uint8Array(0), /neither a PNG nor a JPEG/],
    ["gif.png", new TextEncoder().encode("GIF89a..."), /neither a PNG nor a JPEG.*47 49 46 38/],
    ["cut.png", png.subarray(0, png.length - 20), /PNG data is truncated or corrupt/],
    ["head.png", png.subarray(0, 12), /PNG data is truncated or corrupt/],
    ["cut.jpg", jpg.subarray(0, jpg.length >> 1), /JPEG data is truncated or corrupt/],
  ];
  for (const [file, bytes, pattern] of cases) {
    assert.throws(() => decodeImage(bytes, { file }), (e) => {
      assertRefusal(e, [DataError], file);
      return pattern.test((e as Error).message);
    });
  }
  await withTempDir("images-decode", async (dir) => {
    await assert.rejects(readImage(`${dir}/missing.png`), (e) => {
      assertRefusal(e, [DataError], `${dir}/missing.png`);
      return true;
    });
  });
});

Deno.test("decodeImage on damaged PNG and JPEG bytes returns a whole image or a one-line refusal", async () => {
  const png = pngBytes({ width: 6, height: 5, channels: 3, data: randomBytes(90, 3) });
  const jpg = jpegBytes({ width: 8, height: 8, rgb: smoothRgb(8, 8, 4) });
  const input = fc.record({ jpeg: fc.boolean(), edits: byteEdits });
  await fuzz("decodeImage", input, ({ jpeg, edits }) => {
    const bytes = applyEdits(jpeg ? jpg : png, edits);
    try {
      const image = decodeImage(bytes, { file: "fuzzed-image" });
      assert.equal(image.data.length, image.width * image.height * image.channels);
    } catch (e) {
      assertRefusal(e, [DataError], "fuzzed-image");
    }
  }, { runs: 1000, ms: 8_000 });
});
