import assert from "node:assert/strict";
import type { Image } from "../../data/images/image.ts";
import {
  centreBox,
  normalise,
  preprocessImage,
  type PreprocessSettings,
  preprocessSettings,
  resizedSize,
  vitDefaults,
} from "../../data/images/preprocess.ts";
import { resampleImage } from "../../data/images/resample.ts";
import { DataError } from "../../data/readers.ts";
import { freshSeed, relativeError, withTempDir } from "../_util.ts";
import { assertRefusal } from "../fuzz/_fuzz.ts";
import { randomBytes, referenceResize } from "./_images.ts";

const GRID: Image = {
  width: 3,
  height: 3,
  channels: 1,
  data: new Uint8Array([0, 10, 20, 30, 40, 50, 60, 70, 90]),
};

Deno.test("bilinear 3x3 -> 5x5 is the hand-checked literal (and Pillow's)", () => {
  // Output centres at input coordinates -0.2, 0.4, 1.0, 1.6, 2.2 (pixel centres at 0, 1, 2):
  // clamped, 0.6/0.4, exact, 0.4/0.6, clamped, on each axis.
  const expected = [
    [0, 4, 10, 16, 20],
    [12, 16, 22, 28, 32],
    [30, 34, 40, 46, 50],
    [48, 52, 58, 67.6, 74],
    [60, 64, 70, 82, 90],
  ].flat();
  const out = resampleImage(GRID, { width: 5, height: 5, resample: "bilinear" });
  out.data.forEach((v, i) => assert.ok(Math.abs(v - expected[i]) < 1e-12, `${i}: ${v}`));
});

Deno.test("bicubic and shrinking bilinear match Pillow 9.4's float-mode output", () => {
  // Printed by Pillow 9.4 (Image.fromarray(a, mode="F").resize(size, filter)); Pillow's float
  // mode does not clip, the corner's -3.019 is clipped to 0 as its 8-bit mode does.
  const bicubic = [
    [-3.0188679695, 0.7955505848, 7.7358489037, 14.6761474609, 18.4905662537],
    [8.4243879318, 12.2588548660, 19.1791038513, 25.8286933899, 29.4522666931],
    [29.2452831268, 33.0597000122, 40, 46.9402999878, 50.7547187805],
    [50.0661773682, 53.5898857117, 60.8208961487, 71.9765014648, 78.5581588745],
    [61.5094337463, 64.8422927856, 72.2641525269, 86.1869888306, 94.5852661133],
  ].flat().map((v) => Math.max(v, 0));
  const out = resampleImage(GRID, { width: 5, height: 5, resample: "bicubic" });
  out.data.forEach((v, i) => assert.ok(Math.abs(v - bicubic[i]) < 1e-4, `${i}: ${v}`));
  // 7x5 -> 3x2: the filter is stretched (antialiasing).
  const src: Image = {
    width: 7,
    height: 5,
    channels: 1,
    data: Uint8Array.from({ length: 35 }, (_, i) => ((i * 7) % 31) * 8),
  };
  const pillow = {
    bilinear: [
      100.2077941895,
      117.0481262207,
      129.2467498779,
      140.2077941895,
      105.9893035889,
      120.1298675537,
    ],
    bicubic: [
      95.1314086914,
      118.8086853027,
      130.2786865234,
      143.8873138428,
      102.2693786621,
      119.2393112183,
    ],
  };
  for (const resample of ["bilinear", "bicubic"] as const) {
    const got = resampleImage(src, { width: 3, height: 2, resample });
    got.data.forEach((v, i) =>
      assert.ok(Math.abs(v - pillow[resample][i]) < 1e-4, `${resample} ${i}: ${v}`)
    );
  }
});

Deno.test("resampleImage matches the direct float64 reference on odd sizes, boxes and channels", () => {
  const seed = freshSeed();
  const cases = [
    { w: 1, h: 1, ow: 3, oh: 1, c: 1 },
    { w: 3, h: 17, ow: 5, oh: 4, c: 3 },
    { w: 17, h: 3, ow: 1, oh: 7, c: 1 },
    { w: 31, h: 29, ow: 13, oh: 11, c: 3 },
    { w: 7, h: 9, ow: 25, oh: 23, c: 3 },
  ];
  cases.forEach(({ w, h, ow, oh, c }, n) => {
    const src: Image = {
      width: w,
      height: h,
      channels: c as 1 | 3,
      data: randomBytes(w * h * c, seed + n),
    };
    for (const filter of ["bilinear", "bicubic"] as const) {
      const got = resampleImage(src, { width: ow, height: oh, resample: filter });
      const ref = referenceResize(src, { width: ow, height: oh }, filter);
      const err = relativeError(got.data, ref);
      assert.ok(err < 1e-12, `${filter} ${w}x${h} -> ${ow}x${oh}: ${err} (seed ${seed})`);
      // A box: the right-bottom part of the image.
      if (w > 2 && h > 2) {
        const box = { left: 1, top: 2, width: w - 2, height: h - 2 };
        const boxed = resampleImage(src, { box, width: ow, height: oh, resample: filter });
        const boxRef = referenceResize(src, { width: ow, height: oh }, filter, box);
        assert.ok(relativeError(boxed.data, boxRef) < 1e-12, `${filter} box (seed ${seed})`);
      }
    }
  });
});

Deno.test("nearest takes the pixel under each output centre", () => {
  const out = resampleImage(GRID, { width: 2, height: 5, resample: "nearest" });
  // Columns: centres 0.75 and 2.25 -> pixels 0 and 2; rows: 0.3, 0.9, 1.5, 2.1, 2.7 -> 0 0 1 2 2.
  assert.deepEqual([...out.data], [0, 20, 0, 20, 30, 50, 60, 90, 60, 90]);
});

Deno.test("centreBox rounds offsets half to even as torchvision, and refuses a crop too large", () => {
  assert.deepEqual(centreBox({ width: 5, height: 4 }, { width: 2, height: 3 }), {
    left: 2, // (5 - 2) / 2 = 1.5 -> 2
    top: 0, // (4 - 3) / 2 = 0.5 -> 0
    width: 2,
    height: 3,
  });
  assert.deepEqual(centreBox({ width: 12, height: 9 }, { width: 7, height: 4 }).left, 2); // 2.5
  assert.deepEqual(centreBox({ width: 12, height: 9 }, { width: 7, height: 4 }).top, 2); // 2.5
  assert.throws(() => centreBox({ width: 3, height: 3 }, { width: 4, height: 1 }), RangeError);
});

Deno.test("normalise is (x * rescale - mean) / std per channel, grey copied to three", () => {
  const seed = freshSeed();
  const settings = {
    rescale: 1 / 255,
    mean: [0.485, 0.456, 0.406],
    std: [0.229, 0.224, 0.225],
  } as Pick<PreprocessSettings, "rescale" | "mean" | "std">;
  for (const channels of [1, 3] as const) {
    const [w, h] = [5, 3];
    const data = randomBytes(w * h * channels, seed + channels);
    const out = normalise({ width: w, height: h, channels, data }, settings);
    for (let c = 0; c < 3; c++) {
      for (let p = 0; p < w * h; p++) {
        const x = data[p * channels + (channels === 1 ? 0 : c)];
        const ref = (x / 255 - settings.mean[c]) / settings.std[c];
        assert.ok(Math.abs(out[c * w * h + p] - ref) < 1e-6, `seed ${seed}`);
      }
    }
  }
});

Deno.test("preprocessImage: squash resizes to the input; shorter resizes the short side then crops the centre", () => {
  const seed = freshSeed();
  const src: Image = { width: 13, height: 9, channels: 3, data: randomBytes(13 * 9 * 3, seed) };
  const squash = vitDefaults(7, 5, "test");
  const ref = referenceResize(src, { width: 5, height: 7 }, "bilinear");
  assert.ok(
    relativeError(
      preprocessImage(src, squash),
      normalise({ ...src, width: 5, height: 7, data: ref }, squash),
    ) < 1e-6,
  );
  const shorter: PreprocessSettings = {
    ...vitDefaults(6, 6, "test"),
    mode: "shorter",
    resize: 8,
    resample: "bicubic",
  };
  // The short side 9 -> 8, the long side floor(8 * 13 / 9) = 11; the centre 6x6 starts at
  // round(2.5) = 2 across and 1 down.
  assert.deepEqual(resizedSize(13, 9, shorter), { width: 11, height: 8 });
  const full = referenceResize(src, { width: 11, height: 8 }, "bicubic");
  const crop = new Float64Array(6 * 6 * 3);
  for (let y = 0; y < 6; y++) {
    for (let x = 0; x < 6; x++) {
      for (let c = 0; c < 3; c++) crop[(y * 6 + x) * 3 + c] = full[((y + 1) * 11 + x + 2) * 3 + c];
    }
  }
  const expected = normalise({ width: 6, height: 6, channels: 3, data: crop }, shorter);
  assert.ok(relativeError(preprocessImage(src, shorter), expected) < 1e-6, `seed ${seed}`);
});

Deno.test("preprocessSettings reads preprocessor_config.json, timm's pretrained_cfg and config image_size", async () => {
  await withTempDir("images-settings", async (dir) => {
    const write = (name: string, value: unknown) =>
      Deno.writeTextFile(`${dir}/${name}`, JSON.stringify(value));
    await write("config.json", { model_type: "vit", image_size: 48 });
    let s = await preprocessSettings(dir);
    assert.deepEqual([s.height, s.width, s.mode, s.resample, s.mean], [
      48,
      48,
      "squash",
      "bilinear",
      [0.5, 0.5, 0.5],
    ]);
    await write("config.json", {
      architecture: "vit_base_patch16_224",
      pretrained_cfg: {
        input_size: [3, 224, 224],
        interpolation: "bicubic",
        crop_pct: 0.9,
        mean: [0.5, 0.5, 0.5],
        std: [0.5, 0.5, 0.5],
      },
    });
    s = await preprocessSettings(dir);
    assert.deepEqual([s.height, s.mode, s.resize, s.resample], [224, "shorter", 248, "bicubic"]);
    // Overrides: a smaller input keeps the folder's crop ratio; crop_pct sets it.
    s = await preprocessSettings(dir, { imageSize: 32 });
    assert.deepEqual([s.height, s.resize], [32, 35]);
    s = await preprocessSettings(dir, { imageSize: 32, cropPct: 1, resample: "bilinear" });
    assert.deepEqual([s.height, s.resize, s.resample], [32, 32, "bilinear"]);
    assert.match(s.from, /pretrained_cfg.*image_size, crop_pct, resample from the data stage/);
    await write("preprocessor_config.json", {
      image_processor_type: "ViTImageProcessor",
      size: { height: 64, width: 64 },
      resample: 3,
      image_mean: [0.1, 0.2, 0.3],
      image_std: 0.5,
      rescale_factor: 0.00392156862745098,
    });
    s = await preprocessSettings(dir);
    assert.deepEqual([s.height, s.width, s.mode, s.resample, s.mean, s.std], [
      64,
      64,
      "squash",
      "bicubic",
      [0.1, 0.2, 0.3],
      [0.5, 0.5, 0.5],
    ]);
    await write("preprocessor_config.json", {
      do_resize: false,
      do_center_crop: true,
      crop_size: { height: 5, width: 7 },
    });
    s = await preprocessSettings(dir);
    assert.deepEqual([s.height, s.width, s.mode], [5, 7, "none"]);
    await assert.rejects(preprocessSettings(dir, { mode: "shorter" }), RangeError);
    await write("preprocessor_config.json", {
      size: { shortest_edge: 40 },
      do_center_crop: true,
      crop_size: 36,
    });
    s = await preprocessSettings(dir);
    assert.deepEqual([s.height, s.mode, s.resize], [36, "shorter", 40]);
    await assert.rejects(
      preprocessSettings(dir, { cropPct: 1.25 }),
      /resizing the shorter side to 28 leaves too little for a 36-pixel crop/,
    );
  });
});

Deno.test("preprocessSettings refuses what it does not implement, naming the file and key", async () => {
  await withTempDir("images-settings-bad", async (dir) => {
    const file = `${dir}/preprocessor_config.json`;
    const cases: [unknown, RegExp][] = [
      [
        { resample: 1 },
        /key "resample" is 1 \(LANCZOS\); supported: 0 \(nearest\), 2 \(bilinear\), 3 \(bicubic\)/,
      ],
      [{ image_mean: [0.5, 0.5] }, /key "image_mean" must be a number or a list of 3 numbers/],
      [{ size: { height: 0, width: 3 } }, /key "size.height" must be a positive integer/],
    ];
    for (const [json, pattern] of cases) {
      await Deno.writeTextFile(file, JSON.stringify(json));
      await assert.rejects(preprocessSettings(dir), (e) => {
        assertRefusal(e, [DataError], file);
        return pattern.test((e as Error).message);
      });
    }
    await Deno.writeTextFile(file, "{ not json");
    await assert.rejects(preprocessSettings(dir), (e) => {
      assertRefusal(e, [DataError], file);
      return true;
    });
    await Deno.remove(file);
    await assert.rejects(preprocessSettings(dir), (e) => {
      assertRefusal(e, [DataError], dir);
      return /give the data stage preprocess.image_size/.test((e as Error).message);
    });
  });
});
