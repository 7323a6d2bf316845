import assert from "node:assert/strict";
import { idxLabelsPath, parseIdx, readIdxPair } from "../../data/images/idx.ts";
import { DataError } from "../../data/readers.ts";
import { freshSeed, withTempDir } from "../_util.ts";
import { applyEdits, assertRefusal, byteEdits, fuzz } from "../fuzz/_fuzz.ts";
import { gzip, idxBytes, randomBytes } from "./_images.ts";

const FASHION = "/usr/share/datasets/fashion-mnist";

Deno.test("readIdxPair reads hand-written IDX files, plain and gzip, with the labels beside them", async () => {
  const seed = freshSeed();
  await withTempDir("images-idx", async (dir) => {
    for (const zipped of [false, true]) {
      const [n, h, w] = [7, 5, 3];
      const pixels = randomBytes(n * h * w, seed);
      const labels = randomBytes(n, seed + 1).map((v) => v % 4);
      const suffix = zipped ? ".gz" : "";
      const images = `${dir}/train-images-idx3-ubyte${suffix}`;
      const write = async (path: string, bytes: Uint8Array) =>
        await Deno.writeFile(path, zipped ? await gzip(bytes) : bytes);
      await write(images, idxBytes([n, h, w], pixels));
      await write(`${dir}/train-labels-idx1-ubyte${suffix}`, idxBytes([n], labels));
      const pair = await readIdxPair(images);
      assert.deepEqual([pair.count, pair.height, pair.width], [n, h, w]);
      assert.deepEqual(pair.pixels, pixels, `seed ${seed}`);
      assert.deepEqual(pair.labels, labels);
      assert.equal(pair.labelsFile, `${dir}/train-labels-idx1-ubyte${suffix}`);
    }
  });
});

Deno.test("idxLabelsPath follows the MNIST names", () => {
  assert.equal(idxLabelsPath("/d/t10k-images-idx3-ubyte.gz"), "/d/t10k-labels-idx1-ubyte.gz");
  assert.equal(idxLabelsPath("train-images.idx3-ubyte"), "train-labels.idx1-ubyte");
  assert.equal(idxLabelsPath("/d/pictures.bin"), undefined);
});

Deno.test("parseIdx refuses a bad magic, element type, dimension count or length, naming the file", () => {
  const good = idxBytes([2, 2, 2], new Uint8Array(8));
  const edit = (f: (b: Uint8Array) => void) => {
    const b = good.slice();
    f(b);
    return b;
  };
  const cases: [Uint8Array, number, RegExp][] = [
    [edit((b) => (b[0] = 1)), 3, /does not start with an IDX magic number.*01 00 08 03/],
    [edit((b) => (b[2] = 0x0d)), 3, /32-bit floats; images and labels are unsigned bytes/],
    [good, 1, /has 3 dimensions; labels \[count\] have 1/],
    [good.subarray(0, 10), 3, /header is truncated/],
    [good.subarray(0, good.length - 1), 3, /need 24 bytes and it holds 23 \(truncated\)/],
    [new Uint8Array([...good, 0]), 3, /need 24 bytes and it holds 25$/],
  ];
  for (const [bytes, dims, pattern] of cases) {
    assert.throws(() => parseIdx(bytes, { file: "x-idx3", dims }), (e) => {
      assertRefusal(e, [DataError], "x-idx3");
      return pattern.test((e as Error).message);
    }, String(pattern));
  }
});

Deno.test("readIdxPair refuses mismatched counts, missing labels and truncated gzip", async () => {
  await withTempDir("images-idx-bad", async (dir) => {
    const images = `${dir}/a-images-idx3-ubyte`;
    await Deno.writeFile(images, idxBytes([3, 2, 2], new Uint8Array(12)));
    await assert.rejects(readIdxPair(images), (e) => {
      assertRefusal(e, [DataError], images);
      return /expected them in ".*a-labels-idx1-ubyte"/.test((e as Error).message);
    });
    await Deno.writeFile(`${dir}/a-labels-idx1-ubyte`, idxBytes([4], new Uint8Array(4)));
    await assert.rejects(readIdxPair(images), (e) => {
      assertRefusal(e, [DataError], images);
      return /holds 3 images and .* 4 labels/.test((e as Error).message);
    });
    const zipped = await gzip(idxBytes([3, 2, 2], new Uint8Array(12)));
    const cut = `${dir}/b-images-idx3-ubyte.gz`;
    await Deno.writeFile(cut, zipped.subarray(0, zipped.length - 6));
    await assert.rejects(readIdxPair(cut), (e) => {
      assertRefusal(e, [DataError], cut);
      return /gzip data is truncated or corrupt/.test((e as Error).message);
    });
    const odd = `${dir}/pictures.bin`;
    await Deno.writeFile(odd, idxBytes([1, 1, 1], new Uint8Array(1)));
    await assert.rejects(readIdxPair(odd), (e) => {
      assertRefusal(e, [DataError], odd);
      return true;
    });
  });
});

Deno.test({
  name: "readIdxPair reads Debian's Fashion-MNIST: 10,000 test images of 28x28, 1,000 a class",
  ignore: !(() => {
    try {
      return Deno.statSync(`${FASHION}/t10k-images-idx3-ubyte.gz`).isFile;
    } catch {
      return false;
    }
  })(),
  fn: async () => {
    const pair = await readIdxPair(`${FASHION}/t10k-images-idx3-ubyte.gz`);
    assert.deepEqual([pair.count, pair.height, pair.width], [10000, 28, 28]);
    const counts = new Array(10).fill(0);
    for (const l of pair.labels) counts[l]++;
    assert.deepEqual(counts, new Array(10).fill(1000));
  },
});

Deno.test("parseIdx on damaged bytes returns elements matching its dimensions or a one-line refusal", async () => {
  const good = idxBytes([3, 4, 5], randomBytes(60, 1));
  await fuzz("parseIdx", byteEdits, (edits) => {
    const bytes = applyEdits(good, edits);
    try {
      const { shape, data } = parseIdx(bytes, { file: "fuzzed-idx", dims: 3 });
      assert.equal(data.length, shape.reduce((a, b) => a * b, 1));
    } catch (e) {
      assertRefusal(e, [DataError], "fuzzed-idx");
    }
  }, { runs: 1000, ms: 5_000 });
});
