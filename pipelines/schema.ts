/**
 * The pipeline file format: the typed pipeline the runner receives, and the one table of keys
 * (per stage kind: key, type, default, description) that both the validation in
 * `pipelines/parse.ts` and the generated `docs/pipelines.md` read.
 *
 * YAML keys are snake_case; the typed objects use the same names in camelCase (`lora_alpha` ->
 * `loraAlpha`, `max_new_tokens` -> `maxNewTokens`). Every optional key has its default filled in,
 * except those whose absence means something (documented as "absent: ...").
 *
 * The TypeScript interfaces below are written out by hand for readable types; the round-trip test
 * of `parsePipeline` compares a full pipeline field by field, so the table and the interfaces
 * cannot drift apart unnoticed.
 *
 * @module
 */

import type { ModuleOverride } from "../adapters/attach.ts";
import type { NolaInit } from "../adapters/nola_factors.ts";
import type { QuantOptions, QuantScheme } from "../formats/quantize.ts";
import type { DataFormat } from "../data/readers.ts";
import { INSTRUCTION_FORMATS, type InstructionFormat } from "../data/instructions.ts";
import type { ScheduleKind } from "../train/schedule.ts";

/** The names of the three dataset splits. */
export type SplitName = "train" | "validation" | "test";

/** The scores an `evaluate` stage can compute. */
export type MetricName =
  | "loss"
  | "bleu"
  | "rouge_l"
  | "exact_match"
  | "slot_error"
  | "accuracy"
  | "top5_accuracy"
  | "multiple_choice";

/** Keys every stage has. */
export interface StageBase {
  /** Unique in the pipeline; addresses the stage in overrides (`stages.<id>.<key>`). */
  id: string;
}

/** `load`: the base model. */
export interface LoadStage extends StageBase {
  /** The stage kind. */
  kind: "load";
  /** A Hugging Face folder, relative to the pipeline file's folder. */
  model: string;
  /** The frozen linear weights' precision: `as-stored` keeps f16/bf16 checkpoints 16-bit. */
  dtype: "f32" | "as-stored";
  /** Quantize the frozen linear weights at load; absent: not quantized. */
  quantizeBase?: "int8" | "nf4";
  /** Values a quantization block; absent: 64. */
  blockSize?: number;
  /** Store each block's absmax in a byte; absent: true for nf4, false for int8. */
  doubleQuant?: boolean;
  /** `pretrained`: the folder's weights; `random`: fresh weights for its config (pretraining). */
  init: "pretrained" | "random";
}

/** Shares and seed of a split by ratio. */
export interface SplitSpec {
  /** Training share. */
  train: number;
  /** Validation share. */
  validation: number;
  /** Test share. */
  test: number;
  /** Seed of the split. */
  seed: number;
  /** Records with the same value of this field stay in one split; absent: `mr` for e2e, none. */
  key?: string;
}

/** `data.preprocess`: how images become model inputs; absent keys come from the model folder. */
export interface ImagePreprocessKeys {
  /** Square input side. */
  imageSize?: number;
  /** `squash` (resize to the input) or `shorter` (shorter side, then centre crop). */
  mode?: "squash" | "shorter";
  /** With `shorter`: the crop's share of the resized shorter side. */
  cropPct?: number;
  /** The resampling filter. */
  resample?: "nearest" | "bilinear" | "bicubic";
  /** Per-channel mean after `x / 255`. */
  mean?: number[];
  /** Per-channel standard deviation. */
  std?: number[];
}

/** `data.augment`: training augmentation of images. */
export interface ImageAugmentKeys {
  /** Random resized crop. */
  crop: boolean;
  /** Random resized crop: area share range. */
  scale: [number, number];
  /** Random resized crop: aspect ratio range. */
  ratio: [number, number];
  /** Random horizontal flip. */
  flip: boolean;
  /** Seed of the draws. */
  seed: number;
}

/** `data`: the dataset, its templates and the row layout, or labelled images. */
export interface DataStage extends StageBase {
  /** The stage kind. */
  kind: "data";
  /**
   * Absent: from each file's extension. `alpaca` and `chat` are JSON Lines of instructions;
   * `images` are labelled images.
   */
  format?: DataFormat | InstructionFormat | "images";
  /** Split files (give `train`), or one `file` with a `split`; with `images`, image sources. */
  train?: string;
  /** Validation file. */
  validation?: string;
  /** Test file. */
  test?: string;
  /** One file to split by `split`. */
  file?: string;
  /** Shares of `file`, summing to 1. */
  split?: SplitSpec;
  /** Jinja template of the prompt (no loss); absent with `alpaca` and `chat`. */
  prompt?: string;
  /** Jinja template of the completion (the loss); absent with `alpaca` and `chat`. */
  completion?: string;
  /** Positions per row (T). */
  seqLen: number;
  /** Pack several examples per row. */
  pack: boolean;
  /** End each example with the end-of-text token (not with `chat`: the template ends turns). */
  eos: boolean;
  /** Cut examples to `seq_len` (false: split them into chunks). */
  truncate: boolean;
  /** Images: the kind of every source; absent: detected per path. */
  source?: "idx" | "folder" | "csv";
  /** Images, IDX: names of labels 0, 1, ...; absent: the digits. */
  labelNames?: string[];
  /** Images: keep these classes by name, relabelled in this order; absent: all. */
  classes?: string[];
  /** Images: keep these classes by the source's id, relabelled in this order; absent: all. */
  classIds?: number[];
  /** Images: training images per class (k-shot); absent: all. */
  shots?: number;
  /** Images: validation and test images per class at most; absent: all. */
  evalPerClass?: number;
  /** Images: seed of the k-shot draws. */
  samplingSeed?: number;
  /** Images: preprocessing over the model folder's. */
  preprocess?: ImagePreprocessKeys;
  /** Images: training augmentation; absent: none. */
  augment?: ImageAugmentKeys;
}

/** One `attach.overrides` entry. */
export type AttachOverride = ModuleOverride;

/** `attach`: NOLA or LoRA adapters. */
export interface AttachStage extends StageBase {
  /** The stage kind. */
  kind: "attach";
  /**
   * `nola` trains k + l coefficients per module; `lora` trains A and B; `none`: no adapter, only
   * the classifier head (a linear probe).
   */
  method: "nola" | "lora" | "none";
  /** Module patterns. */
  targets: string[];
  /** What happens to a classifier's head (`adapters/head.ts`). */
  head: "auto" | "new" | "train" | "frozen";
  /** Adapter rank r. */
  r: number;
  /** NOLA: number of A bases. */
  k: number;
  /** NOLA: number of B bases. */
  l: number;
  /** The output is scaled by `lora_alpha / r`. */
  loraAlpha: number;
  /** NOLA: basis seed; LoRA: seed of A's init. */
  seed: number;
  /** NOLA: `official` (A0 term, coefficients 0) or `uniform-coeffs` (1/k, 1/l, no A0). */
  init: NolaInit;
  /** NOLA: the same bases in every layer. */
  shareBasis: boolean;
  /** Per-module settings, later entries win. */
  overrides: AttachOverride[];
}

/** The schedule of a `train` stage (its peak `lr` and total steps come from the stage). */
export interface ScheduleSpec {
  /** The stage kind. */
  kind: ScheduleKind;
  /** Warmup steps. */
  warmupSteps?: number;
  /** Warmup as a share of the steps. */
  warmupRatio?: number;
  /** Rate at the end (linear, cosine). */
  minLr: number;
}

/** `train`: the training loop. Exactly one of `epochs` and `steps` is set. */
export interface TrainStage extends StageBase {
  /** The stage kind. */
  kind: "train";
  /** Epochs. */
  epochs?: number;
  /** Optimizer steps. */
  steps?: number;
  /** Rows per micro-batch. */
  batchSize: number;
  /** Micro-batches per optimizer step. */
  gradAccum: number;
  /** Peak learning rate. */
  lr: number;
  /** Optimizer (PyTorch's semantics). */
  optimizer: "adamw" | "sgd";
  /** AdamW betas. */
  betas: [number, number];
  /** AdamW epsilon. */
  eps: number;
  /** SGD momentum. */
  momentum: number;
  /** SGD dampening. */
  dampening: number;
  /** SGD Nesterov momentum. */
  nesterov: boolean;
  /** AdamW: decoupled; SGD: added to the gradient. */
  weightDecay: number;
  /** Learning-rate schedule. */
  schedule: ScheduleSpec;
  /** Clip the global gradient norm (0: off). */
  maxGradNorm: number;
  /** Label smoothing. */
  labelSmoothing: number;
  /** Validation loss every this many steps (0: only at the end). */
  evalEvery: number;
  /** Stop after this many evaluations without a better loss (0: never). */
  patience: number;
  /** Read the loss back every this many steps. */
  logEvery: number;
  /** Checkpoint every this many steps (0: off). */
  checkpointEvery: number;
  /** Absent: no quantization-aware training. */
  qat?: QuantOptions;
  /** Train every weight of the model. */
  full: boolean;
}

/** `quantize`: post-training quantization of the adapter coefficients. */
export interface QuantizeStage extends StageBase {
  /** The stage kind. */
  kind: "quantize";
  /** Bits per coefficient. */
  bits: number;
  /** Symmetric per tensor, or asymmetric min..max. */
  scheme: QuantScheme;
}

/** The multiple-choice items of an `evaluate` stage (MMLU's layout and scoring). */
export interface ChoiceSet {
  /** Items scored: a file or a folder of files, relative to the pipeline file's folder. */
  test: string;
  /** Items the shots come from; absent: no shots. */
  dev?: string;
  /** Shots before each question. */
  shots: number;
  /** Absent: every item of `test`. */
  maxItems?: number;
}

/** `evaluate`: loss and generation scores on one split, multiple-choice accuracy. */
export interface EvaluateStage extends StageBase {
  /** The stage kind. */
  kind: "evaluate";
  /** The split. */
  split: SplitName;
  /**
   * `loss` (and perplexity), `bleu`, `rouge_l`, `exact_match`, `slot_error` (generations),
   * `accuracy` (completion tokens), `multiple_choice` (the items of `choices`).
   */
  metrics: MetricName[];
  /** Absent: no multiple-choice items (needed by `multiple_choice`). */
  choices?: ChoiceSet;
  /** Decoding of generations. */
  decoding: "greedy" | "beam";
  /** Beam width. */
  beams: number;
  /** Beam length penalty. */
  lengthPenalty: number;
  /** Forbid repeating n-grams of this size (0: off). */
  noRepeatNgram: number;
  /** Most tokens per generation. */
  maxNewTokens: number;
  /** Strings that end a generation. */
  stop: string[];
  /** Absent: every example of the split. */
  maxExamples?: number;
}

/** `save`: the adapter file. */
export interface SaveStage extends StageBase {
  /** The stage kind. */
  kind: "save";
  /** Relative to the run folder `out`. */
  path: string;
  /** Absent: as trained (or as an earlier `quantize` left it). */
  quant?: QuantOptions;
}

/** `generate`: samples from prompts given here or taken from a split. */
export interface GenerateStage extends StageBase {
  /** The stage kind. */
  kind: "generate";
  /** Prompts as text. */
  prompts?: string[];
  /** Take rendered prompts from this split. */
  from?: SplitName;
  /** With `from`: how many prompts (the first). */
  n: number;
  /** Most tokens per sample. */
  maxNewTokens: number;
  /** Sampling temperature (0: greedy). */
  temperature: number;
  /** Keep the k most likely tokens (0: all). */
  topK: number;
  /** Nucleus: smallest set reaching p. */
  topP: number;
  /** Sampling seed. */
  seed: number;
  /** Strings that end a sample. */
  stop: string[];
  /** Never repeat an n-gram of the sample (0: no rule). */
  noRepeatNgram: number;
}

/** `merge`: a Hugging Face folder with the adapters merged into the weights. */
export interface MergeStage extends StageBase {
  /** The stage kind. */
  kind: "merge";
  /** Relative to the run folder `out`. */
  out: string;
}

/** `export_peft`: a PEFT LoRA folder. */
export interface ExportPeftStage extends StageBase {
  /** The stage kind. */
  kind: "export_peft";
  /** Relative to the run folder `out`. */
  out: string;
  /** Absent: the `load` stage's model folder name. */
  baseModelName?: string;
}

/** One stage: a discriminated union on `kind`. */
export type Stage =
  | LoadStage
  | DataStage
  | AttachStage
  | TrainStage
  | QuantizeStage
  | EvaluateStage
  | SaveStage
  | GenerateStage
  | MergeStage
  | ExportPeftStage;

/** The stage kinds. */
export type StageKind = Stage["kind"];

/** A validated pipeline, every default filled in. */
export interface Pipeline {
  /** Format version: 1. */
  version: 1;
  /** Run name; names the run folder. */
  name: string;
  /** Default seed of every stage that takes one. */
  seed: number;
  /** The run folder, relative to the working directory; default `out/<name>`. */
  out: string;
  /** The stages, run in order. */
  stages: Stage[];
  /** The pipeline file as given (for messages); `<pipeline>` for text without a file. */
  file: string;
  /** The folder relative input paths resolve against: the pipeline file's folder. */
  baseDir: string;
}

// ---------------------------------------------------------------------------------------------
// The table.

/** The type of a key's value. */
export type FieldType =
  | { type: "string"; pattern?: RegExp; patternDoc?: string }
  | { type: "path"; is: "file" | "folder" | "file-or-folder" | "output" }
  | {
    type: "number";
    integer?: boolean;
    min?: number;
    max?: number;
    /** Exclusive lower bound. */
    above?: number;
  }
  | { type: "boolean" }
  | { type: "enum"; values: readonly string[] }
  | { type: "list"; item: FieldType; minItems?: number; length?: number; unique?: boolean }
  | { type: "mapping"; fields: readonly Field[]; rules?: readonly Rule[] }
  | { type: "stages" };

/** What the derived default of a key sees: its mapping so far and the pipeline's top level. */
export interface DeriveContext {
  self: Record<string, unknown>;
  top: { name: string; seed: number };
}

/** One key of a mapping. */
export interface Field {
  /** The YAML key (snake_case). */
  key: string;
  type: FieldType;
  doc: string;
  required?: boolean;
  /** The value when the key is absent. */
  default?: unknown;
  /** A default computed from other values, with its description for the docs. */
  derive?: { doc: string; value: (ctx: DeriveContext) => unknown };
  /** When absent and without default: what absence means (for the docs). */
  absent?: string;
  /** Names people often use for this key (other tools' spellings), for suggestions. */
  aliases?: readonly string[];
}

/** A constraint across keys of one mapping. */
export interface Rule {
  doc: string;
  /**
   * Returns the message and the key to point at, or undefined when satisfied. `value` has the
   * camelCase keys with defaults filled in; `given` the YAML keys the file (or an override) gave.
   */
  check(
    value: Record<string, unknown>,
    given: ReadonlySet<string>,
  ): { key?: string; message: string } | undefined;
}

/** An earlier stage a stage needs. */
export interface Need {
  kind: StageKind;
  /** Needed only when this holds of the stage (camelCase values) and the stages before it. */
  when?: (stage: Record<string, unknown>, earlier: readonly Record<string, unknown>[]) => boolean;
  note?: string;
}

/** One stage kind: its keys, cross-key rules and the stages it needs before it. */
export interface StageSchema {
  kind: StageKind;
  doc: string;
  fields: readonly Field[];
  rules?: readonly Rule[];
  needs?: readonly Need[];
}

const int = (min?: number, max?: number): FieldType => ({
  type: "number",
  integer: true,
  min,
  max,
});
const num = (min?: number, max?: number): FieldType => ({ type: "number", min, max });
const positive: FieldType = { type: "number", above: 0 };
const bool: FieldType = { type: "boolean" };
const str: FieldType = { type: "string" };
const strings: FieldType = { type: "list", item: str };
const splitName: FieldType = { type: "enum", values: ["train", "validation", "test"] };
const quant = (doc: string): Field => ({
  key: "",
  doc,
  type: {
    type: "mapping",
    fields: [
      { key: "bits", type: int(1, 8), required: true, doc: "Bits per coefficient." },
      {
        key: "scheme",
        type: { type: "enum", values: ["symmetric", "asymmetric"] },
        default: "symmetric",
        doc: "Symmetric: `2^(bits-1) - 1` levels each side of 0; asymmetric: min..max.",
      },
    ],
  },
});
const seedField = (doc: string): Field => ({
  key: "seed",
  type: int(0),
  derive: { doc: "the pipeline `seed`", value: ({ top }) => top.seed },
  doc,
});

/** At most one (or, with `required`, exactly one) of `keys` is given. */
function oneOf(keys: readonly string[], required: boolean, fallback?: string): Rule {
  const list = keys.map((k) => `\`${k}\``).join(" and ");
  return {
    doc: `${required ? "Exactly" : "At most"} one of ${list}${
      fallback ? ` (neither: ${fallback})` : ""
    }.`,
    check(_, given) {
      const present = [...given].filter((k) => keys.includes(k)); // file order
      if (present.length > 1) {
        return { key: present[1], message: `cannot be given with "${present[0]}"` };
      }
      if (required && present.length === 0) {
        return { message: `needs one of ${keys.map((k) => `"${k}"`).join(", ")}` };
      }
    },
  };
}

/** `key` may only be given when `test` holds of the mapping. */
function onlyWith(key: string, test: (v: Record<string, unknown>) => boolean, doc: string): Rule {
  return {
    doc: `\`${key}\` only ${doc}.`,
    check: (value, given) =>
      given.has(key) && !test(value) ? { key, message: `only applies ${doc}` } : undefined,
  };
}

/** Keys every stage has, before the kind's own. */
export const COMMON_FIELDS: readonly Field[] = [
  { key: "kind", type: str, required: true, doc: "The stage kind (the sections below)." },
  {
    key: "id",
    type: {
      type: "string",
      pattern: /^[A-Za-z_][A-Za-z0-9_-]*$/,
      patternDoc: "a letter or _, then letters, digits, _ or -",
    },
    derive: { doc: "the kind", value: ({ self }) => self.kind },
    doc: "Unique name of the stage; overrides address it as `stages.<id>.<key>`.",
  },
];

/** The top-level keys. */
export const TOP_FIELDS: readonly Field[] = [
  { key: "version", type: int(1, 1), required: true, doc: "Format version: 1." },
  {
    key: "name",
    type: {
      type: "string",
      pattern: /^[A-Za-z0-9][A-Za-z0-9._-]*$/,
      patternDoc: "a letter or digit, then letters, digits, ., _ or -",
    },
    required: true,
    doc: "Run name; names the run folder.",
  },
  { key: "seed", type: int(0), default: 0, doc: "Default seed of every stage that takes one." },
  {
    key: "out",
    type: { type: "path", is: "output" },
    derive: { doc: "`out/<name>`", value: ({ top }) => `out/${top.name}` },
    doc: "Run folder, relative to the working directory.",
  },
  { key: "stages", type: { type: "stages" }, required: true, doc: "The stages, run in order." },
];

const needsAttach: Need = {
  kind: "attach",
  when: (_, earlier) => !earlier.some((s) => s.kind === "train" && s.full === true),
  note: "unless an earlier `train` has `full: true`",
};

// The data stage's keys for `format: images`, and the rules that keep them apart from the text
// keys.
const IMAGE_ONLY = [
  "source",
  "label_names",
  "classes",
  "class_ids",
  "shots",
  "eval_per_class",
  "sampling_seed",
  "preprocess",
  "augment",
];
const TEXT_ONLY = ["file", "split", "prompt", "completion", "seq_len", "pack", "eos", "truncate"];
const unitRange = (low: number, high: number): FieldType => ({
  type: "list",
  length: 2,
  item: { type: "number", above: low, max: high },
});
const IMAGE_FIELDS: readonly Field[] = [
  {
    key: "source",
    type: { type: "enum", values: ["idx", "folder", "csv"] },
    absent: "per path: a folder, a `.csv` file, else IDX",
    doc: "Images: the kind of every source.",
  },
  {
    key: "label_names",
    type: { type: "list", item: str, minItems: 1 },
    absent: "the labels' digits",
    doc: "Images, IDX: the names of labels 0, 1, ... (IDX files hold only numbers).",
  },
  {
    key: "classes",
    type: { type: "list", item: str, minItems: 1, unique: true },
    absent: "every class",
    doc: "Images: keep these classes (by name), relabelled 0..n-1 in this order.",
  },
  {
    key: "class_ids",
    type: { type: "list", item: int(0), minItems: 1, unique: true },
    absent: "every class",
    doc: "Images: keep these classes by the source's id (IDX: the label value; folder and " +
      "CSV: the place in the sorted class names), relabelled 0..n-1 in this order.",
  },
  {
    key: "shots",
    type: int(1),
    aliases: ["k_shot", "shot"],
    absent: "every training image",
    doc: "Images: training images per class (k-shot), drawn with `sampling_seed`; more than a " +
      "class has is an error.",
  },
  {
    key: "eval_per_class",
    type: int(1),
    absent: "every image",
    doc: "Images: validation and test images per class at most, drawn with `sampling_seed`.",
  },
  {
    key: "sampling_seed",
    type: int(0),
    derive: {
      doc: "the pipeline `seed` (with `images`)",
      value: ({ self, top }) => (self.format === "images" ? top.seed : undefined),
    },
    doc: "Images: seed of the k-shot draws (the paper's protocol: 4 sampling seeds x 3 " +
      "initialisation seeds).",
  },
  {
    key: "preprocess",
    absent: "the model folder's settings",
    doc: "Images: how an image becomes the model's input, over the model folder's " +
      "`preprocessor_config.json` or timm `pretrained_cfg`.",
    type: {
      type: "mapping",
      fields: [
        {
          key: "image_size",
          type: int(1),
          absent: "the model folder's",
          doc: "Square input side in pixels.",
        },
        {
          key: "mode",
          type: { type: "enum", values: ["squash", "shorter"] },
          absent: "the model folder's (`squash` without one)",
          doc: "`squash`: resize to the input, aspect not kept (Hugging Face ViT); `shorter`: " +
            "resize the shorter side to `floor(image_size / crop_pct)`, then centre crop (timm).",
        },
        {
          key: "crop_pct",
          type: { type: "number", above: 0, max: 1 },
          absent: "the model folder's (1 without one)",
          doc: "With `shorter`: the crop's share of the resized shorter side.",
        },
        {
          key: "resample",
          type: { type: "enum", values: ["nearest", "bilinear", "bicubic"] },
          absent: "the model folder's (`bilinear` without one)",
          doc: "Resampling filter, Pillow's, antialiased when shrinking.",
        },
        {
          key: "mean",
          type: { type: "list", length: 3, item: { type: "number" } },
          absent: "the model folder's (0.5 each without one)",
          doc: "Per-channel (RGB) mean subtracted after `x / 255`.",
        },
        {
          key: "std",
          type: { type: "list", length: 3, item: positive },
          absent: "the model folder's (0.5 each without one)",
          doc: "Per-channel standard deviation divided by.",
        },
      ],
    },
  },
  {
    key: "augment",
    absent: "no augmentation",
    doc: "Images: training augmentation (`augment: {}` for torchvision's defaults), drawn per " +
      "(seed, epoch, example) so a resumed run sees the same images; never on evaluation.",
    type: {
      type: "mapping",
      fields: [
        { key: "crop", type: bool, default: true, doc: "Random resized crop." },
        {
          key: "scale",
          type: unitRange(0, 1),
          default: [0.08, 1],
          doc: "Random resized crop: the share of the image's area, `[low, high]`.",
        },
        {
          key: "ratio",
          type: { type: "list", length: 2, item: positive },
          default: [3 / 4, 4 / 3],
          doc: "Random resized crop: the aspect ratio `width / height`, `[low, high]`.",
        },
        { key: "flip", type: bool, default: true, doc: "Random horizontal flip." },
        seedField("Seed of the draws."),
      ],
      rules: [{
        doc: "Each range's low end is at most its high end.",
        check: (v) => {
          for (const key of ["scale", "ratio"]) {
            const [low, high] = v[key] as number[];
            if (low > high) {
              return { key, message: `has its low end ${low} above its high end ${high}` };
            }
          }
        },
      }],
    },
  },
];
const IMAGE_RULES: readonly Rule[] = [
  oneOf(["classes", "class_ids"], false, "every class"),
  {
    doc: "The image keys (`source` to `augment`) go with `format: images`, which refuses " +
      "`file`, `split`, `prompt`, `completion`, `seq_len`, `pack`, `eos` and `truncate`.",
    check(value, given) {
      const images = value.format === "images";
      for (const key of images ? TEXT_ONLY : IMAGE_ONLY) {
        if (!given.has(key)) continue;
        return {
          key,
          message: images
            ? `is not used with format "images"` +
              (key === "file" || key === "split"
                ? ` (give "train" and, if any, "validation" and "test" image sources)`
                : "")
            : `only applies with "format: images"`,
        };
      }
    },
  },
];

/** Every stage kind, in the order the docs list them. */
export const STAGES: readonly StageSchema[] = [
  {
    kind: "load",
    doc: "Loads the base model (GPT-2) from a Hugging Face folder.",
    fields: [
      {
        key: "model",
        type: { type: "path", is: "folder" },
        required: true,
        doc: "Model folder (`config.json`, `model.safetensors`, and `tokenizer.json` for a " +
          "text model; an image classifier reads `preprocessor_config.json` instead, when there " +
          "is one).",
      },
      {
        key: "dtype",
        type: { type: "enum", values: ["f32", "as-stored"] },
        default: "as-stored",
        doc: "Precision of the frozen linear weights (those adapters can target) on the GPU: " +
          "`as-stored` keeps f16/bf16 checkpoints in 16 bits, widened inside the products (f32 " +
          "checkpoints stay f32; with a `train` stage with `full: true` every weight is widened " +
          "to f32); `f32` widens every weight on upload. Embeddings, norms, biases and the head " +
          "are always f32; computation is f32 either way.",
      },
      {
        key: "quantize_base",
        type: { type: "enum", values: ["int8", "nf4"] },
        absent: "not quantized",
        doc: "Quantize the frozen linear weights on the GPU at load, tensor by tensor: `int8` " +
          "(per-block absmax, 8 bits a weight) or `nf4` (QLoRA's 4-bit NormalFloat); adapters " +
          "still train in f32. Cannot go with a `train` stage with `full: true`. See " +
          "docs/base-quantization.md.",
      },
      {
        key: "block_size",
        type: int(32, 4096),
        absent: "64",
        doc: "With `quantize_base`: weights a block sharing one absmax, a power of two from 32 " +
          "to 4096.",
      },
      {
        key: "double_quant",
        type: bool,
        absent: "true for nf4, false for int8",
        doc: "With `quantize_base`: store each block's absmax in one byte (QLoRA's double " +
          "quantization).",
      },
      {
        key: "init",
        type: { type: "enum", values: ["pretrained", "random"] },
        default: "pretrained",
        doc: "`pretrained` loads the folder's weights; `random` draws fresh GPT-2 weights for " +
          "its `config.json` from the pipeline seed (to pretrain; no `model.safetensors` needed).",
      },
    ],
    rules: [
      onlyWith("block_size", (v) => v.quantizeBase !== undefined, "with `quantize_base`"),
      onlyWith("double_quant", (v) => v.quantizeBase !== undefined, "with `quantize_base`"),
      {
        doc: "`block_size` is a power of two.",
        check: (v) => {
          const b = v.blockSize as number | undefined;
          return b !== undefined && (b & (b - 1)) !== 0
            ? { key: "block_size", message: `must be a power of two from 32 to 4096, got ${b}` }
            : undefined;
        },
      },
    ],
  },
  {
    kind: "data",
    doc: "Reads the dataset, renders the templates and lays out rows of `seq_len` tokens. " +
      "The loss is taken on completion tokens only. Each example's text is tokenized whole, as " +
      "the model reads it (the beginning-of-text token first where the tokenizer adds one); " +
      "the prompt/completion boundary is the common prefix of the prompt's ids and the whole's. " +
      "Instruction data: `format: alpaca` (JSON Lines with `instruction`, optional `input`, " +
      "`output`; the standard Alpaca prompt with or without its `### Input:` part, the loss on " +
      "`output` and the end-of-text token) or `format: chat` (JSON Lines with `messages`, a list " +
      "of `{role, content}`, written by the tokenizer's chat template; the loss on every " +
      "assistant turn and the text the template ends it with). With either, `prompt` and " +
      "`completion` are not given, and the evaluation prompts are the Alpaca prompt (reference: " +
      "`output`) or the conversation before its last assistant turn with the generation prompt " +
      "(reference: that turn's content).",
    fields: [
      {
        key: "format",
        type: {
          type: "enum",
          values: ["jsonl", "csv", "e2e", "text", ...INSTRUCTION_FORMATS, "images"],
        },
        absent: "from each file's extension",
        doc: "`jsonl`, `csv`, `e2e` (the E2E NLG CSV: `mr`, `ref`), `text` (one document " +
          "a line, as the field `text`), `alpaca` or `chat` (JSON Lines of instructions, named " +
          "explicitly), `images` (labelled images for a classifier, named explicitly; see " +
          "[Image data](#image-data)).",
      },
      {
        key: "train",
        type: { type: "path", is: "file-or-folder" },
        doc: "Training file; with `images`, an image source (IDX images file, class folder or " +
          "CSV).",
      },
      {
        key: "validation",
        type: { type: "path", is: "file-or-folder" },
        absent: "empty",
        doc: "Validation file or image source.",
      },
      {
        key: "test",
        type: { type: "path", is: "file-or-folder" },
        absent: "empty",
        doc: "Test file or image source.",
      },
      { key: "file", type: { type: "path", is: "file" }, doc: "One file to split by `split`." },
      {
        key: "split",
        doc: "Shares of `file`, summing to 1.",
        type: {
          type: "mapping",
          fields: [
            { key: "train", type: num(0, 1), required: true, doc: "Training share." },
            { key: "validation", type: num(0, 1), default: 0, doc: "Validation share." },
            { key: "test", type: num(0, 1), default: 0, doc: "Test share." },
            seedField("Seed of the split."),
            {
              key: "key",
              type: str,
              absent: "`mr` for `e2e`, else each record alone",
              doc: "Records with equal values of this field stay in one split.",
            },
          ],
          rules: [{
            doc: "The shares sum to 1.",
            check: (v) => {
              const sum = (v.train as number) + (v.validation as number) + (v.test as number);
              return Math.abs(sum - 1) > 1e-9
                ? { message: `shares must sum to 1, got ${+sum.toFixed(12)}` }
                : undefined;
            },
          }],
        },
      },
      {
        key: "prompt",
        type: str,
        absent: "only with `alpaca` and `chat`",
        doc: "Jinja template of the prompt (no loss); a record's fields are its variables.",
      },
      {
        key: "completion",
        type: str,
        absent: "only with `alpaca` and `chat`",
        doc: "Jinja template of the completion (the loss).",
      },
      {
        key: "seq_len",
        type: int(2),
        default: 256,
        aliases: ["T", "max_length", "max_seq_length", "block_size", "context_length"],
        doc: "Tokens per row (T), at most the model's context.",
      },
      {
        key: "pack",
        type: bool,
        default: false,
        doc: "Pack several examples per row. A packed example attends to the earlier ones of its " +
          "row and starts at a later position (there is no per-example mask): fine for " +
          "pretraining text; for short prompt-to-completion tasks one example a row trains what " +
          "generation sees.",
      },
      {
        key: "eos",
        type: bool,
        default: true,
        doc: "End each example with the end-of-text token (trained). Not with `chat`, whose " +
          "template ends each turn.",
      },
      {
        key: "truncate",
        type: bool,
        default: true,
        doc: "Cut examples to `seq_len` (false: split them into chunks).",
      },
      ...IMAGE_FIELDS,
    ],
    rules: [
      oneOf(["train", "file"], true),
      ...IMAGE_RULES,
      {
        doc: "`validation` and `test` go with `train`; `split` goes with `file` (and is needed).",
        check(_, given) {
          for (const key of ["validation", "test"]) {
            if (given.has(key) && !given.has("train")) {
              return { key, message: `needs "train" (with "file", use "split")` };
            }
          }
          if (given.has("split") && !given.has("file")) {
            return { key: "split", message: `needs "file"` };
          }
          if (given.has("file") && !given.has("split")) return { message: `"file" needs "split"` };
        },
      },
      {
        doc: "`prompt` and `completion` are needed, except with `alpaca` and `chat`, which " +
          "refuse them (the format writes the prompt), and `images`.",
        check(value, given) {
          const format = value.format as string | undefined;
          if (format === "images") return undefined;
          const instructions = (INSTRUCTION_FORMATS as readonly unknown[]).includes(format);
          for (const key of ["prompt", "completion"]) {
            if (instructions && given.has(key)) {
              return {
                key,
                message: `is not used with format "${format}", which writes the prompt ` +
                  `itself; remove it`,
              };
            }
            if (!instructions && !given.has(key)) {
              return {
                message: `needs "${key}" (a Jinja template over the record's fields), or ` +
                  `"format: alpaca" or "format: chat" for instruction data`,
              };
            }
          }
        },
      },
      onlyWith(
        "eos",
        (v) => v.format !== "chat",
        "with a `format` other than `chat` (whose template ends each turn itself)",
      ),
    ],
  },
  {
    kind: "attach",
    doc: "Attaches NOLA or LoRA adapters to the modules the target patterns match " +
      "(`h.<i>.attn.c_attn[.q|.k|.v]`, `h.<i>.attn.c_proj`, `h.<i>.mlp.c_fc`, `h.<i>.mlp.c_proj`; " +
      "`*` matches within one dotted part).",
    needs: [{ kind: "load" }],
    fields: [
      {
        key: "method",
        type: { type: "enum", values: ["nola", "lora", "none"] },
        default: "nola",
        doc: "`nola` trains k + l coefficients per module; `lora` trains A and B; `none` " +
          "attaches no adapter and trains only the classifier head (a linear probe; needs " +
          "`head` `new` or `train`; `targets` are ignored).",
      },
      {
        key: "targets",
        type: { type: "list", item: str, minItems: 1 },
        default: ["h.*.attn.c_attn.q", "h.*.attn.c_attn.v"],
        aliases: ["target_modules"],
        doc: "Module patterns, or the presets `all-linear` (every whole linear layer) and `mlp` " +
          "(the MLP's linears: GPT-2 `h.*.mlp.*`, Llama `model.layers.*.mlp.*`, ViT " +
          "`encoder.layer.*.intermediate.dense` and `encoder.layer.*.output.dense`, timm " +
          "`blocks.*.mlp.fc1` and `fc2`: NOLA-MLP).",
      },
      {
        key: "head",
        type: { type: "enum", values: ["auto", "new", "train", "frozen"] },
        default: "auto",
        doc: "Classifiers (ViT): what happens to the head, as PEFT's `modules_to_save`: `new` " +
          "replaces it by a fresh head for the data's classes (weight normal(0, 0.02) drawn from " +
          "`seed`, bias 0), trained with the adapters; `train` trains the checkpoint's head; " +
          "`frozen` keeps it as it is; `auto` is `new` when the image data's classes differ from " +
          "the checkpoint's `id2label` (in number or names), else `frozen`. A new or trained head " +
          "is saved in the adapter file with its `id2label`, written by `merge`, and exported " +
          "under `modules_to_save`. Text models: `auto` or `frozen` only.",
      },
      { key: "r", type: int(1), default: 8, aliases: ["rank"], doc: "Rank." },
      { key: "k", type: int(1), default: 256, doc: "NOLA: number of A bases." },
      {
        key: "l",
        type: int(1),
        derive: { doc: "`k`", value: ({ self }) => self.k },
        doc: "NOLA: number of B bases.",
      },
      {
        key: "lora_alpha",
        type: { type: "number" },
        derive: { doc: "`r` (scale 1)", value: ({ self }) => self.r },
        aliases: ["alpha"],
        doc: "The output is scaled by `lora_alpha / r`.",
      },
      seedField("NOLA: basis seed; LoRA: seed of A's init."),
      {
        key: "init",
        type: { type: "enum", values: ["official", "uniform-coeffs"] },
        default: "official",
        doc: "NOLA: `official` (A0 term, coefficients 0) or `uniform-coeffs` (1/k, 1/l, no A0).",
      },
      {
        key: "share_basis",
        type: bool,
        default: false,
        doc: "NOLA: the same bases in every layer.",
      },
      {
        key: "overrides",
        default: [],
        doc: "Per-module settings, later entries win.",
        type: {
          type: "list",
          item: {
            type: "mapping",
            fields: [
              { key: "pattern", type: str, required: true, doc: "Pattern over the targets." },
              { key: "r", type: int(1), absent: "the stage's", doc: "Rank." },
              { key: "k", type: int(1), absent: "the stage's", doc: "NOLA: A bases." },
              { key: "l", type: int(1), absent: "the stage's", doc: "NOLA: B bases." },
              {
                key: "lora_alpha",
                type: { type: "number" },
                absent: "the stage's",
                doc: "Scale numerator.",
              },
              { key: "seed", type: int(0), absent: "the stage's", doc: "Seed." },
              {
                key: "init",
                type: { type: "enum", values: ["official", "uniform-coeffs"] },
                absent: "the stage's",
                doc: "NOLA init.",
              },
            ],
          },
        },
      },
    ],
  },
  {
    kind: "train",
    doc: "Trains the adapters (or, with `full`, every weight) on the `train` split.",
    needs: [
      { kind: "load" },
      { kind: "data" },
      { kind: "attach", when: (s) => s.full !== true, note: "unless `full: true`" },
    ],
    fields: [
      { key: "steps", type: int(1), aliases: ["max_steps"], doc: "Optimizer steps." },
      {
        key: "epochs",
        type: int(1),
        derive: {
          doc: "1 when `steps` is absent",
          value: ({ self }) => (self.steps === undefined ? 1 : undefined),
        },
        aliases: ["num_epochs", "num_train_epochs"],
        doc: "Epochs.",
      },
      {
        key: "batch_size",
        type: int(1),
        default: 8,
        aliases: ["micro_batch_size", "per_device_train_batch_size"],
        doc: "Rows per micro-batch.",
      },
      {
        key: "grad_accum",
        type: int(1),
        default: 1,
        aliases: ["gradient_accumulation_steps"],
        doc: "Micro-batches per optimizer step.",
      },
      {
        key: "lr",
        type: positive,
        required: true,
        aliases: ["learning_rate"],
        doc: "Peak learning rate.",
      },
      {
        key: "optimizer",
        type: { type: "enum", values: ["adamw", "sgd"] },
        default: "adamw",
        doc: "Optimizer (PyTorch's semantics).",
      },
      {
        key: "betas",
        type: { type: "list", item: num(0, 1), length: 2 },
        default: [0.9, 0.999],
        doc: "AdamW betas.",
      },
      { key: "eps", type: positive, default: 1e-8, doc: "AdamW epsilon." },
      { key: "momentum", type: num(0), default: 0, doc: "SGD momentum." },
      { key: "dampening", type: num(0), default: 0, doc: "SGD dampening." },
      { key: "nesterov", type: bool, default: false, doc: "SGD Nesterov momentum." },
      {
        key: "weight_decay",
        type: num(0),
        default: 0,
        doc: "AdamW: decoupled; SGD: added to the gradient.",
      },
      {
        key: "schedule",
        default: {},
        doc: "Learning-rate schedule.",
        type: {
          type: "mapping",
          fields: [
            {
              key: "kind",
              type: { type: "enum", values: ["constant", "linear", "cosine"] },
              default: "linear",
              doc: "Shape after the warmup (Hugging Face's).",
            },
            { key: "warmup_steps", type: int(0), absent: "no warmup", doc: "Warmup steps." },
            {
              key: "warmup_ratio",
              type: num(0, 1),
              absent: "no warmup",
              doc: "Warmup as a share of the steps.",
            },
            { key: "min_lr", type: num(0), default: 0, doc: "Rate at the end (linear, cosine)." },
          ],
          rules: [oneOf(["warmup_steps", "warmup_ratio"], false)],
        },
      },
      {
        key: "max_grad_norm",
        type: num(0),
        default: 1,
        aliases: ["clip_grad_norm", "grad_clip"],
        doc: "Clip the global gradient norm (0: off).",
      },
      {
        key: "label_smoothing",
        type: { type: "number", min: 0, max: 1 },
        default: 0,
        doc: "Label smoothing.",
      },
      {
        key: "eval_every",
        type: int(0),
        default: 0,
        doc: "Validation loss every this many steps (0: only at the end).",
      },
      {
        key: "patience",
        type: int(0),
        default: 0,
        doc: "Stop after this many evaluations without a better loss (0: never).",
      },
      {
        key: "log_every",
        type: int(1),
        default: 10,
        doc: "Read the loss back every this many steps.",
      },
      {
        key: "checkpoint_every",
        type: int(0),
        default: 100,
        doc: "Checkpoint every this many steps (0: off).",
      },
      { ...quant("Quantization-aware training (straight-through)."), key: "qat", absent: "off" },
      { key: "full", type: bool, default: false, doc: "Train every weight of the model." },
    ],
    rules: [
      oneOf(["steps", "epochs"], false, "`epochs: 1`"),
      onlyWith("betas", (v) => v.optimizer === "adamw", "with `optimizer: adamw`"),
      onlyWith("eps", (v) => v.optimizer === "adamw", "with `optimizer: adamw`"),
      onlyWith("momentum", (v) => v.optimizer === "sgd", "with `optimizer: sgd`"),
      onlyWith("dampening", (v) => v.optimizer === "sgd", "with `optimizer: sgd`"),
      onlyWith("nesterov", (v) => v.optimizer === "sgd", "with `optimizer: sgd`"),
      onlyWith("patience", (v) => (v.evalEvery as number) > 0, "with `eval_every` above 0"),
    ],
  },
  {
    kind: "quantize",
    doc: "Quantizes the adapter coefficients in place (post-training).",
    needs: [{ kind: "attach" }],
    fields: [
      { key: "bits", type: int(1, 8), default: 4, doc: "Bits per coefficient." },
      {
        key: "scheme",
        type: { type: "enum", values: ["symmetric", "asymmetric"] },
        default: "symmetric",
        doc: "Symmetric per tensor, or asymmetric min..max.",
      },
    ],
  },
  {
    kind: "evaluate",
    doc: "Scores the model as it stands: on one split of the data (`loss`, `bleu`, `rouge_l`, " +
      "`exact_match`, `slot_error`, `accuracy`), and on multiple-choice items scored as MMLU is " +
      "(`multiple_choice`: a k-shot prompt from the dev items of each subject, the answer letter " +
      "of highest log-likelihood; accuracy overall, per subject and the mean over subjects). " +
      "Multiple choice needs a text model.",
    needs: [{ kind: "load" }, {
      kind: "data",
      when: (s) => (s.metrics as string[]).some((m) => m !== "multiple_choice"),
      note: "unless `multiple_choice` is its only metric",
    }],
    fields: [
      { key: "split", type: splitName, default: "validation", doc: "The split." },
      {
        key: "metrics",
        type: {
          type: "list",
          item: {
            type: "enum",
            values: [
              "loss",
              "bleu",
              "rouge_l",
              "exact_match",
              "slot_error",
              "accuracy",
              "top5_accuracy",
              "multiple_choice",
            ],
          },
          minItems: 1,
          unique: true,
        },
        default: ["loss"],
        doc: "`loss` (and perplexity), `bleu`, `rouge_l`, `exact_match` (generations), " +
          "`slot_error` (generations against the E2E meaning representation " +
          "`slot[value], ...`, taken from each record's `mr` field, else from the prompt, so a " +
          "template may restate it as `name: The Mill, food: Italian`: its slots left out, " +
          "`slot_missing`, plus values " +
          "stated that it does not hold, `slot_hallucinated`, in percent of its slots), " +
          "`accuracy` (classifiers: the share of images whose top class is right, with a " +
          "confusion matrix drawn in `report.md`), `top5_accuracy` (classifiers of more than " +
          "five classes: the right class among the top five; an error with five or fewer), " +
          "`multiple_choice` (the items of `choices`).",
      },
      {
        key: "choices",
        absent: "none (`multiple_choice` needs them)",
        doc: "The items of `multiple_choice`. Item files: `.jsonl`, one item a line as the rows " +
          "of Hugging Face's `cais/mmlu` (`question`; `choices`, 2 to 26 distinct strings; " +
          "`answer`, the right choice's 0-based index, letter or text; `subject`, absent: the " +
          "file's name), or MMLU's `.csv` (no header: question, choices, answer letter; the " +
          "subject is the file's name). A subject named after a file drops a `_dev`, `_test` " +
          "or `_val` suffix, so `physics_dev.csv` gives shots to `physics_test.csv`.",
        type: {
          type: "mapping",
          fields: [
            {
              key: "test",
              type: { type: "path", is: "file-or-folder" },
              required: true,
              doc: "The items scored: a file, or a folder of item files (read in name order).",
            },
            {
              key: "dev",
              type: { type: "path", is: "file-or-folder" },
              absent: "no shots",
              doc: "The items the shots come from: the first `shots` of each subject.",
            },
            {
              key: "shots",
              type: int(0),
              derive: {
                doc: "5 with `dev`, else 0",
                value: ({ self }) => (self.dev === undefined ? 0 : 5),
              },
              doc: "Solved examples before each question. Where a prompt would not fit the " +
                "model, the fewest are dropped from the front (counted as `mc_lost_shots`).",
            },
            {
              key: "max_items",
              type: int(1),
              absent: "all",
              doc: "Score only the first items of `test`.",
            },
          ],
          rules: [{
            doc: "`shots` above 0 needs `dev`.",
            check: (v, given) =>
              given.has("shots") && (v.shots as number) > 0 && v.dev === undefined
                ? { key: "shots", message: `needs "dev" (the items the shots come from)` }
                : undefined,
          }],
        },
      },
      {
        key: "decoding",
        type: { type: "enum", values: ["greedy", "beam"] },
        default: "greedy",
        doc: "Decoding of generations.",
      },
      { key: "beams", type: int(1), default: 4, aliases: ["num_beams"], doc: "Beam width." },
      { key: "length_penalty", type: { type: "number" }, default: 1, doc: "Beam length penalty." },
      {
        key: "no_repeat_ngram",
        type: int(0),
        default: 0,
        aliases: ["no_repeat_ngram_size"],
        doc: "Forbid repeating n-grams of this size (0: off).",
      },
      { key: "max_new_tokens", type: int(1), default: 32, doc: "Most tokens per generation." },
      { key: "stop", type: strings, default: [], doc: "Strings that end a generation." },
      {
        key: "max_examples",
        type: int(1),
        absent: "all",
        doc: "Score only the first examples of the split.",
      },
    ],
    rules: [
      onlyWith("beams", (v) => v.decoding === "beam", "with `decoding: beam`"),
      onlyWith("length_penalty", (v) => v.decoding === "beam", "with `decoding: beam`"),
      {
        doc: "`choices` goes with the metric `multiple_choice`, which needs it.",
        check(v, given) {
          const mc = (v.metrics as string[]).includes("multiple_choice");
          if (mc && !given.has("choices")) {
            return { key: "metrics", message: `multiple_choice needs "choices" (its items)` };
          }
          if (!mc && given.has("choices")) {
            return { key: "choices", message: "only applies with the metric multiple_choice" };
          }
        },
      },
      ...["split", "max_examples"].map((key) =>
        onlyWith(
          key,
          (v) => (v.metrics as string[]).some((m) => m !== "multiple_choice"),
          "with a metric scored on the split (not `multiple_choice` alone)",
        )
      ),
    ],
  },
  {
    kind: "save",
    doc: "Writes the adapter file (safetensors with the settings in its metadata).",
    needs: [{ kind: "attach" }],
    fields: [
      {
        key: "path",
        type: { type: "path", is: "output" },
        default: "adapter.safetensors",
        doc: "File, relative to the run folder.",
      },
      { ...quant("Quantize the saved coefficients."), key: "quant", absent: "as they stand" },
    ],
  },
  {
    kind: "generate",
    doc: "Generates samples, printed and written to the run folder.",
    needs: [{ kind: "load" }, {
      kind: "data",
      when: (s) => s.from !== undefined,
      note: "with `from`",
    }],
    fields: [
      { key: "prompts", type: { type: "list", item: str, minItems: 1 }, doc: "Prompts as text." },
      { key: "from", type: splitName, doc: "Take rendered prompts from this split." },
      { key: "n", type: int(1), default: 3, doc: "With `from`: how many prompts (the first)." },
      { key: "max_new_tokens", type: int(1), default: 32, doc: "Most tokens per sample." },
      { key: "temperature", type: num(0), default: 0, doc: "0: greedy." },
      { key: "top_k", type: int(0), default: 0, doc: "Keep the k most likely tokens (0: all)." },
      {
        key: "top_p",
        type: { type: "number", above: 0, max: 1 },
        default: 1,
        doc: "Nucleus: smallest set reaching p.",
      },
      seedField("Sampling seed."),
      { key: "stop", type: strings, default: [], doc: "Strings that end a sample." },
      {
        key: "no_repeat_ngram",
        type: int(0),
        default: 0,
        doc: "Never repeat an n-gram of the sample (0: no rule).",
      },
    ],
    rules: [
      oneOf(["prompts", "from"], true),
      onlyWith("n", (v) => v.from !== undefined, "with `from`"),
    ],
  },
  {
    kind: "merge",
    doc: "Writes a Hugging Face folder with `W + dW` (or the fully trained weights).",
    needs: [needsAttach],
    fields: [
      {
        key: "out",
        type: { type: "path", is: "output" },
        default: "merged",
        doc: "Folder, relative to the run folder.",
      },
    ],
  },
  {
    kind: "export_peft",
    doc: "Writes a PEFT LoRA folder (`adapter_config.json`, `adapter_model.safetensors`).",
    needs: [{ kind: "attach" }],
    fields: [
      {
        key: "out",
        type: { type: "path", is: "output" },
        default: "peft",
        doc: "Folder, relative to the run folder.",
      },
      {
        key: "base_model_name",
        type: str,
        absent: "the `load` model folder's name",
        doc: "`base_model_name_or_path` in `adapter_config.json`.",
      },
    ],
  },
];

/** The schema of one kind. */
export function stageSchema(kind: string): StageSchema | undefined {
  return STAGES.find((s) => s.kind === kind);
}

/** `lora_alpha` -> `loraAlpha`. */
export function camelCase(key: string): string {
  return key.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
}
