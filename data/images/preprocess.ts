/**
 * Image preprocessing: resize, centre crop, grey to three channels, rescale and normalise, to the
 * `[3, H, W]` float input of an image classifier, and the settings read from a model folder.
 *
 * The two conventions of pretrained ViTs are both covered:
 *
 * - **`squash`** (Hugging Face's `ViTImageProcessor`): resize to exactly `H x W`, aspect ratio not
 *   kept, then `x / 255`, then `(x - mean) / std` per channel.
 * - **`shorter`** (timm's evaluation transform, torchvision's `Resize(int)` + `CenterCrop`):
 *   resize so the shorter side is `resize` pixels (the longer side `floor(resize * long / short)`),
 *   then take the centre `H x W` (offsets `round((size - H) / 2)`, halves to even as Python's
 *   `round`), then rescale and normalise. timm's `crop_pct` gives `resize = floor(H / crop_pct)`.
 *
 * Resampling is {@linkcode resampleImage}'s: Pillow's filters, antialiased when shrinking. A grey
 * image is copied to three channels before normalising; the output is planar (`CHW`).
 *
 * Settings come from the model folder when it has them: `preprocessor_config.json` (Hugging Face:
 * `size` as `{height, width}`, `{shortest_edge}` or a number, `resample` 0/2/3 (nearest, bilinear,
 * bicubic), `do_resize`, `do_center_crop` with `crop_size`, `do_rescale` with `rescale_factor`,
 * `do_normalize` with `image_mean` and `image_std`; absent keys take `ViTImageProcessor`'s
 * defaults), else timm's `pretrained_cfg` in `config.json` (`input_size`, `interpolation`,
 * `crop_pct`, `crop_mode` `center` or `squash`, `mean`, `std`), else `config.json`'s
 * `image_size` (Hugging Face `ViTConfig`) with `ViTImageProcessor`'s defaults.
 *
 * @module
 */

import { join } from "node:path";
import { messageOf } from "../../formats/one_line.ts";
import { DataError } from "../readers.ts";
import type { Image } from "./image.ts";
import { type Box, type FloatImage, type Resample, resampleImage } from "./resample.ts";

/** How an image becomes a model input. */
export interface PreprocessSettings {
  /** The input's height (rows). */
  height: number;
  /** The input's width (columns). */
  width: number;
  /**
   * `squash`: resize to `height x width`; `shorter`: resize the shorter side to `resize`, then
   * centre-crop; `none`: centre-crop only (an image smaller than the input is refused).
   */
  mode: "squash" | "shorter" | "none";
  /** With `shorter`: the shorter side after resizing. */
  resize?: number;
  /** The resampling filter. */
  resample: Resample;
  /** Multiplies the 0..255 samples before normalising (Hugging Face `rescale_factor`). */
  rescale: number;
  /** Per channel (RGB), subtracted after rescaling. */
  mean: [number, number, number];
  /** Per channel, divides after subtracting the mean. */
  std: [number, number, number];
  /** Where the settings came from, for messages and reports. */
  from: string;
}

/**
 * `ViTImageProcessor`'s defaults at a given size: `squash`, bilinear, `x / 255`, mean and std 0.5
 * (ImageNet "standard" normalisation, which maps 0..255 to -1..1).
 *
 * @param height Input rows.
 * @param width Input columns.
 * @param from Where the size came from, for messages.
 * @returns The settings.
 */
export function vitDefaults(height: number, width: number, from: string): PreprocessSettings {
  return {
    height,
    width,
    mode: "squash",
    resample: "bilinear",
    rescale: 1 / 255,
    mean: [0.5, 0.5, 0.5],
    std: [0.5, 0.5, 0.5],
    from,
  };
}

/**
 * The size an image has after the resize step.
 *
 * @param width The image's width.
 * @param height The image's height.
 * @param settings The settings.
 * @returns Its width and height after resizing (the crop follows).
 */
export function resizedSize(
  width: number,
  height: number,
  settings: PreprocessSettings,
): { width: number; height: number } {
  if (settings.mode === "squash") return { width: settings.width, height: settings.height };
  if (settings.mode === "none") return { width, height };
  const edge = settings.resize!;
  return width <= height
    ? { width: edge, height: Math.floor((edge * height) / width) }
    : { width: Math.floor((edge * width) / height), height: edge };
}

/** Python's `round`: halves go to the even neighbour. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * The centre `height x width` box of an image (torchvision's `center_crop` offsets).
 *
 * @param size The image's width and height.
 * @param crop The box's width and height, at most the image's.
 * @returns The box.
 * @throws {RangeError} If the crop is larger than the image.
 */
export function centreBox(
  size: { width: number; height: number },
  crop: { width: number; height: number },
): Box {
  if (crop.width > size.width || crop.height > size.height) {
    throw new RangeError(
      `Cannot crop ${crop.width}x${crop.height} from a ${size.width}x${size.height} image`,
    );
  }
  return {
    left: roundHalfEven((size.width - crop.width) / 2),
    top: roundHalfEven((size.height - crop.height) / 2),
    width: crop.width,
    height: crop.height,
  };
}

/**
 * Rescales and normalises an image already at the input size, grey copied to three channels.
 *
 * @param image `height x width` pixels, 8-bit or floating point, one or three channels.
 * @param settings `rescale`, `mean` and `std`.
 * @returns The `[3, height, width]` input, planar.
 */
export function normalise(
  image: Image | FloatImage,
  settings: Pick<PreprocessSettings, "rescale" | "mean" | "std">,
): Float32Array {
  const { width, height, channels, data } = image;
  const n = width * height;
  const out = new Float32Array(3 * n);
  for (let c = 0; c < 3; c++) {
    const from = channels === 1 ? 0 : c;
    const scale = settings.rescale / settings.std[c];
    const shift = settings.mean[c] / settings.std[c];
    for (let p = 0; p < n; p++) out[c * n + p] = data[p * channels + from] * scale - shift;
  }
  return out;
}

/**
 * The evaluation transform: resize, centre crop, rescale and normalise.
 *
 * @param image The decoded image.
 * @param settings The settings.
 * @returns The model input `[3, height, width]`, planar.
 * @throws {RangeError} With `mode: none`, if the image is smaller than the input.
 *
 * @example Fashion-MNIST's 28x28 grey to a 32x32 RGB input
 * ```ts
 * import { preprocessImage, vitDefaults } from "./preprocess.ts";
 * const image = { width: 28, height: 28, channels: 1 as const, data: new Uint8Array(784) };
 * const input = preprocessImage(image, vitDefaults(32, 32, "example"));
 * input.length; // 3 * 32 * 32, every value -1 (black)
 * ```
 */
export function preprocessImage(image: Image, settings: PreprocessSettings): Float32Array {
  const out = { width: settings.width, height: settings.height };
  if (settings.mode === "squash") {
    return normalise(resampleImage(image, { ...out, resample: settings.resample }), settings);
  }
  const size = resizedSize(image.width, image.height, settings);
  const box = centreBox(size, out);
  if (settings.mode === "none") {
    return normalise(resampleImage(image, { box, ...out, resample: "nearest" }), settings);
  }
  const resized = size.width === image.width && size.height === image.height
    ? image
    : resampleImage(image, { ...size, resample: settings.resample });
  return normalise(resampleImage(resized, { box, ...out, resample: "nearest" }), settings);
}

/** What the stage or user gives over the folder's settings. */
export interface PreprocessOverrides {
  /** Square input side. */
  imageSize?: number;
  /** The resize mode. */
  mode?: PreprocessSettings["mode"];
  /** With `shorter`: `resize = floor(imageSize / cropPct)`. */
  cropPct?: number;
  /** The resampling filter. */
  resample?: Resample;
  /** Per-channel mean (3 values). */
  mean?: number[];
  /** Per-channel standard deviation (3 values). */
  std?: number[];
}

type Json = Record<string, unknown>;

const PIL_FILTERS: Record<number, Resample | undefined> = {
  0: "nearest",
  2: "bilinear",
  3: "bicubic",
};
const PIL_NAMES: Record<number, string> = { 1: "LANCZOS", 4: "BOX", 5: "HAMMING" };

async function readJson(path: string): Promise<Json | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw new DataError(`Cannot read "${path}": ${messageOf(e)}`, { file: path, cause: e });
  }
  try {
    const value = JSON.parse(text);
    if (typeof value === "object" && value !== null && !Array.isArray(value)) return value;
    throw new SyntaxError("expected a JSON object");
  } catch (e) {
    throw new DataError(`Invalid JSON in "${path}": ${messageOf(e)}`, { file: path, cause: e });
  }
}

function keyError(file: string, key: string, why: string): DataError {
  return new DataError(`Invalid preprocessing setting in "${file}": key "${key}" ${why}`, { file });
}

function triple(value: unknown, file: string, key: string): [number, number, number] {
  const list = typeof value === "number" ? [value, value, value] : value;
  if (
    !Array.isArray(list) || list.length !== 3 || !list.every((v) => typeof v === "number")
  ) {
    throw keyError(
      file,
      key,
      `must be a number or a list of 3 numbers, got ${JSON.stringify(value)}`,
    );
  }
  return list as [number, number, number];
}

function positiveInt(value: unknown, file: string, key: string): number {
  if (!Number.isInteger(value) || (value as number) < 1) {
    throw keyError(file, key, `must be a positive integer, got ${JSON.stringify(value)}`);
  }
  return value as number;
}

function hwOf(value: unknown, file: string, key: string): { height: number; width: number } {
  if (typeof value === "number") {
    const side = positiveInt(value, file, key);
    return { height: side, width: side };
  }
  const v = value as Json;
  if (typeof v === "object" && v !== null && "height" in v && "width" in v) {
    return {
      height: positiveInt(v.height, file, `${key}.height`),
      width: positiveInt(v.width, file, `${key}.width`),
    };
  }
  throw keyError(
    file,
    key,
    `must be a number or {"height", "width"}, got ${JSON.stringify(value)}`,
  );
}

/** Hugging Face `preprocessor_config.json`. */
function fromHf(json: Json, file: string): PreprocessSettings {
  const resampleCode = json.resample ?? 2;
  const resample = PIL_FILTERS[resampleCode as number];
  if (resample === undefined) {
    throw keyError(
      file,
      "resample",
      `is ${JSON.stringify(resampleCode)}${
        PIL_NAMES[resampleCode as number] ? ` (${PIL_NAMES[resampleCode as number]})` : ""
      }; supported: 0 (nearest), 2 (bilinear), 3 (bicubic)`,
    );
  }
  const doResize = json.do_resize ?? true;
  const doCrop = json.do_center_crop ?? false;
  const size = json.size ?? { height: 224, width: 224 };
  const crop = doCrop
    ? hwOf(json.crop_size ?? { height: 224, width: 224 }, file, "crop_size")
    : undefined;
  const rescale = json.do_rescale === false ? 1 : (json.rescale_factor ?? 1 / 255);
  if (typeof rescale !== "number") throw keyError(file, "rescale_factor", "must be a number");
  const normalize = json.do_normalize ?? true;
  const mean = normalize ? triple(json.image_mean ?? 0.5, file, "image_mean") : [0, 0, 0];
  const std = normalize ? triple(json.image_std ?? 0.5, file, "image_std") : [1, 1, 1];
  const base = { resample, rescale, mean, std, from: file } as const;
  const shortest = (size as Json)?.shortest_edge;
  if (!doResize) {
    if (!crop) {
      throw keyError(file, "do_resize", "is false and there is no crop_size to fix the input size");
    }
    return { ...base, ...crop, mode: "none" } as PreprocessSettings;
  }
  if (shortest !== undefined) {
    const edge = positiveInt(shortest, file, "size.shortest_edge");
    const out = crop ?? { height: edge, width: edge };
    return { ...base, ...out, mode: "shorter", resize: edge } as PreprocessSettings;
  }
  const hw = hwOf(size, file, "size");
  if (crop) {
    throw keyError(
      file,
      "do_center_crop",
      "with a fixed {height, width} size is not supported; use size.shortest_edge",
    );
  }
  return { ...base, ...hw, mode: "squash" } as PreprocessSettings;
}

/** timm's `pretrained_cfg` (in the `config.json` of a timm folder). */
function fromTimm(cfg: Json, file: string): PreprocessSettings {
  const key = (k: string) => `pretrained_cfg.${k}`;
  const input = cfg.input_size;
  if (!Array.isArray(input) || input.length !== 3) {
    throw keyError(
      file,
      key("input_size"),
      `must be [channels, height, width], got ${JSON.stringify(input)}`,
    );
  }
  const height = positiveInt(input[1], file, key("input_size"));
  const width = positiveInt(input[2], file, key("input_size"));
  const interpolation = cfg.interpolation ?? "bicubic";
  if (interpolation !== "bilinear" && interpolation !== "bicubic" && interpolation !== "nearest") {
    throw keyError(
      file,
      key("interpolation"),
      `is ${JSON.stringify(interpolation)}; supported: bilinear, bicubic, nearest`,
    );
  }
  const cropPct = cfg.crop_pct ?? 0.875;
  if (typeof cropPct !== "number" || !(cropPct > 0 && cropPct <= 1)) {
    throw keyError(
      file,
      key("crop_pct"),
      `must be a number in (0, 1], got ${JSON.stringify(cropPct)}`,
    );
  }
  const cropMode = cfg.crop_mode ?? "center";
  const base = {
    height,
    width,
    resample: interpolation as Resample,
    rescale: 1 / 255,
    mean: triple(cfg.mean ?? [0.485, 0.456, 0.406], file, key("mean")),
    std: triple(cfg.std ?? [0.229, 0.224, 0.225], file, key("std")),
    from: `${file} (pretrained_cfg)`,
  };
  if (cropMode === "center") {
    if (height !== width) {
      throw keyError(
        file,
        key("input_size"),
        `is not square; crop_mode "center" needs a square input`,
      );
    }
    return { ...base, mode: "shorter", resize: Math.floor(height / cropPct) };
  }
  if (cropMode === "squash" && cropPct === 1) return { ...base, mode: "squash" };
  throw keyError(
    file,
    key("crop_mode"),
    `is ${
      JSON.stringify(cropMode)
    } with crop_pct ${cropPct}; supported: "center", or "squash" with crop_pct 1`,
  );
}

/**
 * The preprocessing a model folder asks for, with the stage's overrides applied.
 *
 * @param folder The model folder, or undefined when there is none (the overrides must then give
 * `imageSize`).
 * @param overrides Settings that win over the folder's.
 * @returns The settings, `from` naming where they came from.
 * @throws {DataError} If a file in the folder cannot be read or holds a setting this code does not
 * implement (named by file and key), or no input size is known.
 * @throws {RangeError} If the overrides contradict each other (`shorter` with a non-square input
 * or a crop larger than the resized image).
 */
export async function preprocessSettings(
  folder: string | undefined,
  overrides: PreprocessOverrides = {},
): Promise<PreprocessSettings> {
  let found: PreprocessSettings | undefined;
  if (folder !== undefined) {
    const hfFile = join(folder, "preprocessor_config.json");
    const configFile = join(folder, "config.json");
    const hf = await readJson(hfFile);
    const config = hf ? undefined : await readJson(configFile);
    if (hf) {
      found = fromHf(hf, hfFile);
    } else if (config && typeof config.pretrained_cfg === "object" && config.pretrained_cfg) {
      found = fromTimm(config.pretrained_cfg as Json, configFile);
    } else if (config && config.image_size !== undefined) {
      const side = positiveInt(config.image_size, configFile, "image_size");
      found = vitDefaults(side, side, `${configFile} (image_size, ViTImageProcessor defaults)`);
    }
  }
  const o = overrides;
  if (!found && o.imageSize === undefined) {
    throw new DataError(
      folder === undefined
        ? "Cannot tell the image input size: no model is loaded; give the data stage preprocess.image_size"
        : `Cannot tell the image input size: "${folder}" has no preprocessor_config.json, no timm pretrained_cfg and no image_size in config.json; give the data stage preprocess.image_size`,
      { file: folder ?? "" },
    );
  }
  const s = found ?? vitDefaults(o.imageSize!, o.imageSize!, "the data stage");
  const given = Object.entries(o).filter(([, v]) => v !== undefined)
    .map(([k]) => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`));
  if (given.length === 0) return s;
  const out: PreprocessSettings = {
    ...s,
    from: found ? `${s.from}, with ${given.join(", ")} from the data stage` : s.from,
  };
  if (o.imageSize !== undefined) {
    out.height = out.width = o.imageSize;
    if (out.mode === "shorter" && o.cropPct === undefined && s.resize !== undefined) {
      // Keep the folder's crop ratio at the new size.
      out.resize = Math.floor(o.imageSize * (s.resize / s.height));
    }
  }
  if (o.mode !== undefined) out.mode = o.mode;
  if (o.resample !== undefined) out.resample = o.resample;
  if (o.mean !== undefined) out.mean = o.mean as [number, number, number];
  if (o.std !== undefined) out.std = o.std as [number, number, number];
  if (out.mode === "shorter") {
    if (out.height !== out.width) {
      throw new RangeError(`mode "shorter" needs a square input, got ${out.height}x${out.width}`);
    }
    if (o.cropPct !== undefined) out.resize = Math.floor(out.height / o.cropPct);
    out.resize ??= out.height;
    if (out.resize < out.height) {
      throw new RangeError(
        `resizing the shorter side to ${out.resize} leaves too little for a ${out.height}-pixel ` +
          `crop: crop_pct must be at most 1`,
      );
    }
  } else {
    delete out.resize;
  }
  return out;
}
