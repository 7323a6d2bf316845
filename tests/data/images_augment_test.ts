import assert from "node:assert/strict";
import fc from "fast-check";
import {
  AUGMENT_DEFAULTS,
  augmentImage,
  augmentRandom,
  randomCropBox,
} from "../../data/images/augment.ts";
import { imageEvalBatches, imageTrainBatches, loadImageData } from "../../data/images/dataset.ts";
import type { Image } from "../../data/images/image.ts";
import { normalise, preprocessImage, vitDefaults } from "../../data/images/preprocess.ts";
import { freshSeed, relativeError, withTempDir } from "../_util.ts";
import { fuzz } from "../fuzz/_fuzz.ts";
import { randomBytes, referenceResize, writeFolder } from "./_images.ts";

const PRE = vitDefaults(6, 6, "test");

function image(width: number, height: number, seed: number): Image {
  return { width, height, channels: 3, data: randomBytes(width * height * 3, seed) };
}

Deno.test("augmentImage depends on (seed, epoch, index) only", () => {
  const seed = freshSeed();
  const src = image(11, 9, seed);
  const at = { preprocess: PRE, augment: AUGMENT_DEFAULTS, seed };
  const a = augmentImage(src, { ...at, epoch: 2, index: 5 });
  assert.deepEqual(augmentImage(src, { ...at, epoch: 2, index: 5 }), a);
  const others = [
    augmentImage(src, { ...at, epoch: 3, index: 5 }),
    augmentImage(src, { ...at, epoch: 2, index: 6 }),
    augmentImage(src, { ...at, seed: seed + 1, epoch: 2, index: 5 }),
  ];
  for (const o of others) assert.notDeepEqual(o, a, `seed ${seed}`);
});

Deno.test("random resized crop boxes lie inside the image with area and ratio in range", async () => {
  const input = fc.record({
    width: fc.integer({ min: 1, max: 300 }),
    height: fc.integer({ min: 1, max: 300 }),
    seed: fc.nat(),
    low: fc.double({ min: 0.01, max: 1, noNaN: true }),
  });
  await fuzz("randomCropBox", input, ({ width, height, seed, low }) => {
    const scale: [number, number] = [low, 1];
    const ratio: [number, number] = [3 / 4, 4 / 3];
    const box = randomCropBox({ width, height }, {
      scale,
      ratio,
      random: augmentRandom(seed, 0, 0),
    });
    assert.ok(box.left >= 0 && box.top >= 0 && box.width >= 1 && box.height >= 1);
    assert.ok(box.left + box.width <= width && box.top + box.height <= height);
    // A box from the tries has area and ratio in range up to rounding to whole pixels; the
    // fallback is the whole image clamped to the ratio range.
    const area = box.width * box.height;
    const fallback = box.width === width || box.height === height;
    if (!fallback) {
      const slack = (box.width + box.height + 1) / (width * height);
      assert.ok(area / (width * height) >= low - slack, `${JSON.stringify(box)}`);
      const r = box.width / box.height;
      assert.ok(
        r >= (3 / 4) * (1 - 1 / box.height) - 1e-9 && r <= (4 / 3) * (1 + 1 / box.height) + 1e-9,
      );
    }
  }, { runs: 500, ms: 5_000 });
});

Deno.test("the crop falls back to torchvision's centre box when no try fits", () => {
  const random = augmentRandom(1, 0, 0);
  // Ratio 2 to 3 never fits a 10x10 image at full area: the fallback clamps 10x10 to ratio 2.
  assert.deepEqual(
    randomCropBox({ width: 10, height: 10 }, { scale: [1, 1], ratio: [2, 3], random }),
    {
      left: 0,
      top: 2, // (10 - 5) // 2
      width: 10,
      height: 5, // round(10 / 2)
    },
  );
  assert.deepEqual(
    randomCropBox({ width: 4, height: 20 }, { scale: [1, 1], ratio: [0.5, 1], random }),
    {
      left: 0,
      top: 6,
      width: 4,
      height: 8,
    },
  );
});

Deno.test("an augmented input is the float64 resize of its box, maybe mirrored, and stays in range", () => {
  const seed = freshSeed();
  const src = image(13, 10, seed);
  let flips = 0;
  for (let index = 0; index < 24; index++) {
    const out = augmentImage(src, {
      preprocess: PRE,
      augment: AUGMENT_DEFAULTS,
      seed,
      epoch: 0,
      index,
    });
    // Replay the draws: the box, then the coin.
    const random = augmentRandom(seed, 0, index);
    const box = randomCropBox(src, {
      scale: AUGMENT_DEFAULTS.scale,
      ratio: AUGMENT_DEFAULTS.ratio,
      random,
    });
    const flip = random.below(2) === 1;
    const ref = referenceResize(src, { width: 6, height: 6 }, "bilinear", box);
    const mirrored = new Float64Array(ref.length);
    for (let y = 0; y < 6; y++) {
      for (let x = 0; x < 6; x++) {
        for (let c = 0; c < 3; c++) {
          mirrored[(y * 6 + x) * 3 + c] = ref[(y * 6 + (flip ? 5 - x : x)) * 3 + c];
        }
      }
    }
    const expected = normalise({ width: 6, height: 6, channels: 3, data: mirrored }, PRE);
    assert.ok(relativeError(out, expected) < 1e-6, `index ${index} (seed ${seed})`);
    for (const v of out) assert.ok(v >= -1 - 1e-6 && v <= 1 + 1e-6);
    flips += flip ? 1 : 0;
  }
  assert.ok(flips > 0 && flips < 24, `${flips} flips of 24 (seed ${seed})`);
});

Deno.test("flip only: the evaluation input or its mirror", () => {
  const src = image(6, 6, 9);
  const plain = preprocessImage(src, PRE);
  const augment = { ...AUGMENT_DEFAULTS, crop: false };
  let flipped = 0;
  for (let index = 0; index < 8; index++) {
    const out = augmentImage(src, { preprocess: PRE, augment, seed: 4, epoch: 1, index });
    const mirror = plain.map((_, i) => {
      const x = i % 6;
      return plain[i - x + 5 - x];
    });
    assert.ok(relativeError(out, plain) === 0 || relativeError(out, mirror) === 0);
    flipped += relativeError(out, plain) === 0 ? 0 : 1;
  }
  assert.ok(flipped > 0 && flipped < 8, `${flipped} of 8 flipped`);
});

Deno.test("imageTrainBatches resumed from a saved state gives the same augmented batches", async () => {
  await withTempDir("images-resume", async (dir) => {
    await writeFolder(dir, ["a", "b", "c"], [3, 4, 3], { size: 7, seed: 11 });
    const data = await loadImageData({
      train: dir,
      test: dir,
      samplingSeed: 0,
      preprocess: PRE,
      augment: AUGMENT_DEFAULTS,
      augmentSeed: 3,
    });
    const options = { B: 3, seed: 5, steps: 7 };
    const whole = [];
    const stream = imageTrainBatches(data, options);
    for (let s = stream.nextStep(); s; s = stream.nextStep()) whole.push(s);
    assert.equal(whole.length, 7);
    const cut = imageTrainBatches(data, options);
    const before = [cut.nextStep()!, cut.nextStep()!, cut.nextStep()!, cut.nextStep()!];
    const resumed = imageTrainBatches(data, { ...options, state: cut.state() });
    const after = [];
    for (let s = resumed.nextStep(); s; s = resumed.nextStep()) after.push(s);
    assert.deepEqual([...before, ...after], whole);
    // Epochs differ: the same example is augmented anew (3 batches of 3 an epoch, 10 examples).
    const firstInputs = whole[0][0].inputs;
    assert.ok(whole.slice(3).every((s) => relativeError(s[0].inputs, firstInputs) > 0));
    // Evaluation batches have no augmentation: the plain transform, the last batch padded.
    const evals = [...imageEvalBatches(data, "test", { B: 4 })];
    assert.equal(evals.length, 3);
    assert.deepEqual([...evals[2].mask], [1, 1, 0, 0]);
    const first = data.splits.test.examples[0];
    assert.deepEqual(evals[0].inputs.subarray(0, 108), preprocessImage(first.image, PRE));
  });
});
