/**
 * ViT throughput side by side with PyTorch, in images/s: the forward (no adapters) and a NOLA-MLP
 * training step (NOLA on both MLP linears of every block, r 1, k = l = 1024 as in the paper's ViT
 * runs, plus a new trainable head; forward, loss, backward, coefficient and head gradients, no
 * optimizer step), for the fixture ViT and for a ViT-B/16-shaped model with random weights at
 * 224 x 224. Debian's python3-torch runs the same network and adapter math on the CPU
 * (`bench/torch_vit.py`); on the fixture both sides classify the same images and the suite checks
 * they pick the same classes.
 *
 * Every figure is the median of several timed repetitions after one warm-up; each repetition ends
 * by reading a result back, so the GPU work it timed has finished.
 *
 * @module
 */

import { AdapterSet, MLP_TARGETS } from "../adapters/attach.ts";
import { newHead } from "../adapters/head.ts";
import type { Gpu } from "../kernels/gpu.ts";
import type { Model } from "../models/model.ts";
import {
  adapterSteps,
  agreementNote,
  type BenchNola,
  formatSpeedTable,
  median,
  ratios,
  runTorchScript,
  selectCases,
  sideBySide,
  type SideBySideCase,
  type SideBySideOptions,
  type SideBySideRow,
  timeSamples,
  type TorchBuild,
  type TorchError,
  torchNote,
  weightsOf,
} from "./_side_by_side.ts";

/** ViT-B/16's architecture (Hugging Face `config.json` keys), for a model with random weights. */
export const VIT_B16_SHAPE: Readonly<Record<string, unknown>> = {
  architectures: ["ViTForImageClassification"],
  model_type: "vit",
  hidden_size: 768,
  num_hidden_layers: 12,
  num_attention_heads: 12,
  intermediate_size: 3072,
  hidden_act: "gelu",
  layer_norm_eps: 1e-12,
  image_size: 224,
  patch_size: 16,
  num_channels: 3,
  qkv_bias: true,
  initializer_range: 0.02,
  id2label: Object.fromEntries(Array.from({ length: 1000 }, (_, i) => [String(i), `class ${i}`])),
};

/** One model of the suite and the sizes it is measured at. */
export interface VitBenchCase extends SideBySideCase {
  /** Images a batch. */
  B: number;
}

/** NOLA-MLP's settings in the training measure. */
export interface VitBenchNola extends BenchNola {
  /** Classes of the new head. */
  classes: number;
}

/** The paper's NOLA-MLP (r 1, k = l = 1024) with a new head of ten classes. */
export const VIT_BENCH_NOLA: VitBenchNola = { r: 1, k: 1024, l: 1024, loraAlpha: 1, classes: 10 };

/** The suite's models. */
export const VIT_BENCH_CASES: readonly VitBenchCase[] = [
  {
    name: "tiny-vit-fashion (fixture)",
    model: "fixtures/tiny-vit-fashion",
    B: 16,
    reps: 5,
    inner: 4,
  },
  // Batch 1 and two repetitions: a training step of this shape takes seconds a side here.
  { name: "ViT-B/16 shape (random)", model: VIT_B16_SHAPE, B: 1, reps: 2, inner: 1 },
];

/** Images/s of the two measures. */
export interface VitMeasures {
  /** Forward of a batch, no adapters. */
  forward: number;
  /** Forward, loss and backward with NOLA-MLP and a new head (their gradients). */
  train: number;
}

/** The PyTorch side of one model. */
export interface VitTorchResult extends VitMeasures, TorchBuild {
  /** Every repetition's images/s. */
  samples: Record<keyof VitMeasures, number[]>;
  /** Each image's predicted class (the forward's argmax). */
  classes: number[];
}

/** One model's figures. */
export interface VitBenchRow extends SideBySideRow<VitMeasures, VitTorchResult> {
  /** Images a batch. */
  B: number;
  /** Input side in pixels. */
  imageSize: number;
  /** The adapter and head: settings, adapted modules and trainable numbers. */
  nola: VitBenchNola & { modules: number; trainable: number };
  /** Each image's class as nola-gpu predicted it (the forward's argmax). */
  classes: number[];
  /** With a checkpoint on both sides: whether both picked the same class for every image. */
  sameClasses?: boolean;
}

/**
 * Options of {@link benchVit}: the cases default to {@link VIT_BENCH_CASES}, NOLA to
 * {@link VIT_BENCH_NOLA}.
 */
export type VitBenchOptions = SideBySideOptions<VitBenchCase, VitBenchNola>;

/**
 * The suite's input pixels, already normalised: the same formula on both sides (the Python side
 * computes it in float64 and rounds to float32 as this does), so both classify the same images.
 *
 * @param n Values.
 * @returns `((i * 7919) % 251) / 125 - 1` for each index `i`.
 */
export function benchPixels(n: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => ((i * 7919) % 251) / 125 - 1);
}

function argmaxRows(logits: Float32Array, rows: number, classes: number): number[] {
  const stride = logits.length / rows;
  return Array.from({ length: rows }, (_, r) => {
    let best = 0;
    for (let c = 1; c < classes; c++) {
      if (logits[r * stride + c] > logits[r * stride + best]) best = c;
    }
    return best;
  });
}

async function measureOurs(
  gpu: Gpu,
  model: Model,
  c: VitBenchCase & { side: number },
  nola: VitBenchNola,
) {
  const { B, inner, side } = c;
  const inputShape: [number, number, number] = [3, side, side];
  const batch = {
    kind: "labelled" as const,
    B,
    inputShape,
    inputs: benchPixels(B * 3 * side * side),
  };
  const classesBefore = model.classifierHead!.labels.length;
  let classes: number[] = [];
  const forward = await timeSamples(c.reps, inner * B, async () => {
    let acts;
    for (let i = 0; i < inner; i++) acts = model.forward(batch);
    const logits = new Float32Array(await gpu.read(acts!.logits.buffer));
    classes = argmaxRows(logits.subarray(0, logits.length - logits.length % B), B, classesBefore);
  });

  using set = await AdapterSet.attach(model, {
    method: "nola",
    targets: [MLP_TARGETS],
    r: nola.r,
    k: nola.k,
    l: nola.l,
    loraAlpha: nola.loraAlpha,
    seed: 0,
  }, { maxRows: B * model.maxPositions });
  const labels = Array.from({ length: nola.classes }, (_, i) => `class ${i}`);
  set.setHead(newHead(model, labels, { seed: 0 }));
  const params = set.parameters();
  const targets = Uint32Array.from({ length: B }, (_, i) => i % nola.classes);
  const train = await timeSamples(c.reps, inner * B, async () => {
    adapterSteps(model, set, batch, targets, inner);
    await gpu.read(params[0].grad.buffer, { byteLength: 4 });
  });
  return {
    ours: { forward: median(forward), train: median(train) },
    samples: { forward, train },
    classes,
    nola: {
      ...nola,
      modules: set.modules.length,
      trainable: params.reduce((s, p) => s + p.param.size, 0),
    },
  };
}

/** The JSON line `bench/torch_vit.py` prints (the fields read here). */
interface TorchVitLine {
  forward_images_per_s: number;
  train_images_per_s: number;
  torch: string;
  threads: number;
  blas: string;
  samples: Record<keyof VitMeasures, number[]>;
  classes: number[];
}

async function measureTorch(
  python: string,
  c: VitBenchCase,
  nola: VitBenchNola,
): Promise<VitTorchResult | TorchError> {
  const sizes = {
    batch: c.B,
    r: nola.r,
    k: nola.k,
    l: nola.l,
    "lora-alpha": nola.loraAlpha,
    classes: nola.classes,
    reps: c.reps,
    inner: c.inner,
    threads: navigator.hardwareConcurrency,
  };
  const r = await runTorchScript<TorchVitLine>(python, "bench/torch_vit.py", c, sizes);
  if ("error" in r) return r;
  return {
    forward: r.forward_images_per_s,
    train: r.train_images_per_s,
    version: r.torch,
    threads: r.threads,
    blas: r.blas,
    samples: r.samples,
    classes: r.classes,
  };
}

async function configOf(c: VitBenchCase): Promise<Record<string, unknown>> {
  return typeof c.model === "string"
    ? JSON.parse(await Deno.readTextFile(`${c.model}/config.json`))
    : { ...c.model };
}

/**
 * Runs the suite: each case on this GPU, then (the model freed) on PyTorch.
 *
 * @param gpu The device.
 * @param options A name filter, the cases, the NOLA settings, whether to run PyTorch.
 * @returns One row a case.
 *
 * @example The fixture alone, without PyTorch
 * ```ts
 * import { Gpu } from "../kernels/gpu.ts";
 * import { benchVit, formatVitBench } from "./vit.ts";
 * using gpu = await Gpu.acquire();
 * console.log(formatVitBench(await benchVit(gpu, { filter: "fixture", torch: false })));
 * ```
 */
export async function benchVit(
  gpu: Gpu,
  options: VitBenchOptions = {},
): Promise<VitBenchRow[]> {
  const nola = options.nola ?? VIT_BENCH_NOLA;
  const cases = selectCases(options.cases ?? VIT_BENCH_CASES, options.filter, "vit");
  const results = await sideBySide(
    gpu,
    cases,
    options.torch !== false,
    async (model, c) => {
      const side = (await configOf(c)).image_size as number;
      return { side, ...await measureOurs(gpu, model, { ...c, side }, nola) };
    },
    (python, c) => measureTorch(python, c, nola),
  );
  return results.map(({ c, ours: { side, ...measured }, torch }) => {
    const weights = weightsOf(c);
    const row: VitBenchRow = {
      model: c.name,
      weights,
      B: c.B,
      imageSize: side,
      ...measured,
      torch,
    };
    if (!("error" in torch)) {
      row.ratio = ratios(measured.ours, torch, ["forward", "train"]);
      // Only the same weights on both sides can pick the same classes.
      if (weights === "checkpoint") {
        row.sameClasses = torch.classes.join(",") === measured.classes.join(",");
      }
    }
    return row;
  });
}

const MEASURES: [keyof VitMeasures, string][] = [
  ["forward", "forward"],
  ["train", "fwd+bwd, NOLA-MLP + head"],
];

/**
 * The suite's table: images/s side by side with their ratio, then one line a model about the
 * adapter and the PyTorch side.
 *
 * @param rows From {@link benchVit}.
 * @returns Text for the console.
 */
export function formatVitBench(rows: readonly VitBenchRow[]): string {
  const speed = formatSpeedTable(rows, MEASURES, {
    size: "batch",
    sizeOf: (r) => `${r.B} x ${r.imageSize}²`,
    unit: "img/s",
    digits: 2,
  });
  const notes = rows.map((r) => {
    const n = r.nola;
    const adapters = `NOLA on ${n.modules} MLP linears (r ${n.r}, k = l = ${n.k}) and a new ` +
      `${n.classes}-class head: ${n.trainable.toLocaleString("en-US")} trainable numbers`;
    if ("error" in r.torch) return `${r.model}: ${adapters}; ${r.torch.error}`;
    return `${r.model}: ${adapters}; ${torchNote(r.torch)}` +
      agreementNote(r.sameClasses, "predicted classes");
  });
  return [speed, "", ...notes].join("\n");
}
