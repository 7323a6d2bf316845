import assert from "node:assert/strict";
import { type ImageData, loadImageData, matchLabels } from "../../data/images/dataset.ts";
import { vitDefaults } from "../../data/images/preprocess.ts";
import { listImages, sortClassNames } from "../../data/images/sources.ts";
import { DataError } from "../../data/readers.ts";
import { freshSeed, withTempDir } from "../_util.ts";
import { assertRefusal } from "../fuzz/_fuzz.ts";
import { idxBytes, jpegBytes, randomBytes, smoothRgb, writeFolder } from "./_images.ts";

const SIZE = 5;
const base = (train: string) => ({
  train,
  samplingSeed: 0,
  preprocess: vitDefaults(4, 4, "test"),
  augmentSeed: 0,
});

/** The pixels of each chosen example, to tell which images were drawn. */
function drawn(data: ImageData): string[] {
  return data.splits.train.examples.map((e) => `${e.label}:${e.image.data.join(",")}`);
}

Deno.test("a class folder is listed in class-name order, skipping hidden and other files", async () => {
  await withTempDir("images-folder", async (dir) => {
    const written = await writeFolder(dir, ["10", "2", "7"], [2, 3, 1], { size: SIZE, seed: 1 });
    await Deno.writeTextFile(`${dir}/README.txt`, "not a class");
    await Deno.writeTextFile(`${dir}/2/notes.txt`, "not an image");
    await Deno.writeTextFile(`${dir}/2/.hidden.png`, "skipped");
    const listing = await listImages(dir);
    assert.equal(listing.kind, "folder");
    assert.deepEqual(listing.classes, ["2", "7", "10"]); // numeric names sort as numbers
    assert.deepEqual(listing.entries.map((e) => e.label), [0, 0, 0, 1, 2, 2]);
    assert.equal(listing.ignored, 2);
    const data = await loadImageData(base(dir));
    assert.deepEqual(data.id2label, ["2", "7", "10"]);
    // Without shots every image is taken, in source order, and decoded as written.
    assert.deepEqual(
      data.splits.train.examples.map((e) => [...e.image.data]),
      [...written[1], ...written[2], ...written[0]].map((d) => [...d]),
    );
  });
  assert.deepEqual(sortClassNames(["b", "B", "a"]), ["B", "a", "b"]);
});

Deno.test("a CSV of path,label reads paths relative to it, PNG and JPEG alike", async () => {
  await withTempDir("images-csv", async (dir) => {
    await writeFolder(`${dir}/img`, ["x"], [2], { size: SIZE, seed: 2 });
    await Deno.writeFile(
      `${dir}/img/c.jpg`,
      jpegBytes({ width: 6, height: 4, rgb: smoothRgb(6, 4, 3) }),
    );
    await Deno.writeTextFile(
      `${dir}/list.csv`,
      "path,label,note\nimg/x/000.png,dog,a\nimg/c.jpg,cat,b\nimg/x/001.png,dog,\n",
    );
    const data = await loadImageData(base(`${dir}/list.csv`));
    assert.deepEqual(data.id2label, ["cat", "dog"]);
    assert.deepEqual(data.splits.train.examples.map((e) => e.label), [0, 1, 1]);
    assert.equal(data.splits.train.examples[0].image.channels, 3);
    assert.equal(data.splits.train.examples[0].input.length, 3 * 4 * 4);
  });
});

Deno.test("k-shot: exactly k of each class, the same draw per seed, other draws for other seeds", async () => {
  const seed = freshSeed() % 1000;
  await withTempDir("images-kshot", async (dir) => {
    const counts = [9, 12, 7];
    await writeFolder(dir, ["a", "b", "c"], counts, { size: SIZE, seed });
    const draw = (samplingSeed: number) => loadImageData({ ...base(dir), shots: 5, samplingSeed });
    const first = await draw(seed);
    assert.deepEqual(first.splits.train.perClass, [5, 5, 5]);
    const byLabel = [0, 1, 2].map((c) =>
      first.splits.train.examples.filter((e) => e.label === c).length
    );
    assert.deepEqual(byLabel, [5, 5, 5]);
    // No image twice.
    assert.equal(new Set(first.splits.train.examples.map((e) => e.where)).size, 15);
    assert.deepEqual(drawn(await draw(seed)), drawn(first));
    const others = await Promise.all([1, 2, 3].map((s) => draw(seed + s)));
    for (const other of others) {
      assert.notDeepEqual(drawn(other), drawn(first), `seed ${seed}`);
      assert.deepEqual(other.splits.train.perClass, [5, 5, 5]);
    }
    // A class's draw does not depend on the filter.
    const only = await loadImageData({
      ...base(dir),
      shots: 5,
      samplingSeed: seed,
      classes: ["b"],
    });
    assert.deepEqual(
      only.splits.train.examples.map((e) => e.where),
      first.splits.train.examples.filter((e) => e.label === 1).map((e) => e.where),
    );
  });
});

Deno.test("k larger than a class's count is an error naming the class and the counts", async () => {
  await withTempDir("images-kshot-bad", async (dir) => {
    await writeFolder(dir, ["a", "b"], [4, 2], { size: SIZE, seed: 3 });
    await assert.rejects(loadImageData({ ...base(dir), shots: 3 }), (e) => {
      assertRefusal(e, [DataError], dir);
      return /Cannot draw 3 images of class "b" from ".*": it has 2 \(counts by class: a 4, b 2\); lower shots to at most 2/
        .test((e as Error).message);
    });
  });
});

Deno.test("a class filter keeps and relabels classes in its order, on IDX with label names", async () => {
  const seed = freshSeed();
  await withTempDir("images-filter", async (dir) => {
    const n = 40;
    const labels = Uint8Array.from({ length: n }, (_, i) => i % 10);
    const pixels = randomBytes(n * 4, seed);
    await Deno.writeFile(`${dir}/train-images-idx3-ubyte`, idxBytes([n, 2, 2], pixels));
    await Deno.writeFile(`${dir}/train-labels-idx1-ubyte`, idxBytes([n], labels));
    const testLabels = Uint8Array.from({ length: 20 }, (_, i) => (i * 3) % 10);
    await Deno.writeFile(
      `${dir}/t10k-images-idx3-ubyte`,
      idxBytes([20, 2, 2], randomBytes(80, seed + 1)),
    );
    await Deno.writeFile(`${dir}/t10k-labels-idx1-ubyte`, idxBytes([20], testLabels));
    const names = [
      "T-shirt/top",
      "Trouser",
      "Pullover",
      "Dress",
      "Coat",
      "Sandal",
      "Shirt",
      "Sneaker",
      "Bag",
      "Ankle boot",
    ];
    const data = await loadImageData({
      ...base(`${dir}/train-images-idx3-ubyte`),
      test: `${dir}/t10k-images-idx3-ubyte`,
      labelNames: names,
      classIds: [9, 5, 7],
      shots: 2,
      samplingSeed: seed,
    });
    assert.deepEqual(data.id2label, ["Ankle boot", "Sandal", "Sneaker"]);
    for (const e of data.splits.train.examples) {
      const index = Number(/image (\d+)$/.exec(e.where)![1]);
      assert.equal([9, 5, 7][e.label], labels[index]);
      assert.deepEqual(e.image.data, pixels.subarray(index * 4, index * 4 + 4));
    }
    // The test split keeps the same classes, all of their images (2 of each here).
    assert.deepEqual(data.splits.test.perClass, [2, 2, 2]);
    for (const e of data.splits.test.examples) {
      const index = Number(/image (\d+)$/.exec(e.where)![1]);
      assert.equal([9, 5, 7][e.label], testLabels[index]);
    }
    const capped = await loadImageData({
      ...base(`${dir}/train-images-idx3-ubyte`),
      test: `${dir}/t10k-images-idx3-ubyte`,
      classes: ["3", "4"],
      evalPerClass: 1,
    });
    assert.deepEqual(capped.id2label, ["3", "4"]);
    assert.deepEqual(capped.splits.test.perClass, [1, 1]);
    await assert.rejects(
      loadImageData({ ...base(`${dir}/train-images-idx3-ubyte`), classes: ["Bag"] }),
      (e) => {
        assertRefusal(e, [DataError], `${dir}/train-images-idx3-ubyte`);
        return /Class "Bag" is not in/.test((e as Error).message);
      },
    );
    await assert.rejects(
      loadImageData({ ...base(`${dir}/train-images-idx3-ubyte`), labelNames: ["a", "b"] }),
      (e) => {
        assertRefusal(e, [DataError], `${dir}/train-labels-idx1-ubyte`);
        return /go up to 9 and label_names has 2 names/.test((e as Error).message);
      },
    );
  });
});

Deno.test("bad sources: an empty class folder, an unreadable image, an unknown class in a test split", async () => {
  await withTempDir("images-bad", async (dir) => {
    await writeFolder(`${dir}/train`, ["a", "b"], [2, 2], { size: SIZE, seed: 4 });
    await Deno.mkdir(`${dir}/train/c`);
    await assert.rejects(loadImageData(base(`${dir}/train`)), (e) => {
      assertRefusal(e, [DataError], `${dir}/train/c`);
      return /has no images/.test((e as Error).message);
    });
    await Deno.remove(`${dir}/train/c`);
    const cut = `${dir}/train/b/001.png`;
    const bytes = await Deno.readFile(cut);
    await Deno.writeFile(cut, bytes.subarray(0, bytes.length - 15));
    await assert.rejects(loadImageData(base(`${dir}/train`)), (e) => {
      assertRefusal(e, [DataError], cut);
      return /truncated or corrupt/.test((e as Error).message);
    });
    await writeFolder(`${dir}/train`, ["b"], [2], { size: SIZE, seed: 5 });
    await writeFolder(`${dir}/test`, ["a", "zebra"], [1, 1], { size: SIZE, seed: 6 });
    await assert.rejects(loadImageData({ ...base(`${dir}/train`), test: `${dir}/test` }), (e) => {
      assertRefusal(e, [DataError], `${dir}/test/zebra/000.png`);
      return /Class "zebra" of .* is not a class of the train split \("a", "b"\)/
        .test((e as Error).message);
    });
    // Cropped to the input without resizing, a 5x5 image is too small for 6x6.
    const cropOnly = { ...vitDefaults(6, 6, "test"), mode: "none" as const };
    await assert.rejects(
      loadImageData({ ...base(`${dir}/train`), preprocess: cropOnly }),
      (e) => {
        assertRefusal(e, [DataError], `${dir}/train/a/000.png`);
        return /is 5x5, smaller than the 6x6 input/.test((e as Error).message);
      },
    );
    await Deno.writeTextFile(`${dir}/bad.csv`, "file,class\nx.png,a\n");
    await assert.rejects(loadImageData(base(`${dir}/bad.csv`)), (e) => {
      assertRefusal(e, [DataError], `${dir}/bad.csv`);
      return /must name the columns "path" and "label"/.test((e as Error).message);
    });
    await Deno.writeTextFile(`${dir}/gone.csv`, "path,label\nmissing.png,a\n");
    await assert.rejects(loadImageData(base(`${dir}/gone.csv`)), (e) => {
      assertRefusal(e, [DataError], `${dir}/missing.png`);
      return /listed at ".*gone.csv" line 2/.test((e as Error).message);
    });
  });
});

Deno.test("matchLabels maps the data onto an adapter's id2label, and names a file with an unknown label", async () => {
  await withTempDir("images-labels", async (dir) => {
    await Deno.mkdir(`${dir}/img`);
    await writeFolder(`${dir}/img`, ["a"], [1], { size: SIZE, seed: 7 });
    await Deno.writeTextFile(
      `${dir}/labels.csv`,
      "path,label\nimg/a/000.png,cat\nimg/a/000.png,dog\nimg/a/000.png,emu\n",
    );
    const data = await loadImageData(base(`${dir}/labels.csv`));
    const mapped = matchLabels(data, { "0": "dog", "1": "emu", "2": "cat" }, { what: "x" });
    assert.deepEqual(mapped.id2label, ["dog", "emu", "cat"]);
    assert.deepEqual(mapped.splits.train.examples.map((e) => e.label), [2, 0, 1]);
    assert.deepEqual(mapped.splits.train.perClass, [1, 1, 1]);
    assert.throws(
      () => matchLabels(data, ["cat", "dog"], { what: 'the adapter "a.safetensors"' }),
      (e) => {
        assertRefusal(e, [DataError], `${dir}/labels.csv`);
        return /Label "emu" of ".*labels.csv" line 4 .* is unknown to the adapter "a.safetensors", whose labels are "cat", "dog"/
          .test((e as Error).message);
      },
    );
  });
});
