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
import { initModel, loadModel, parseModelConfig } from "../models/registry.ts";
import { formatTable } from "./table.ts";

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
export interface VitBenchCase {
  /** Name in the table; `--filter` matches it. */
  name: string;
  /** A model folder (its checkpoint), or a `config.json` object (random weights). */
  model: string | Readonly<Record<string, unknown>>;
  /** Images a batch. */
  B: number;
  /** Timed repetitions of each measure (the median is reported). */
  reps: number;
  /** Forwards or training steps in one repetition. */
  inner: number;
}

/** NOLA-MLP's settings in the training measure. */
export interface VitBenchNola {
  /** Rank. */
  r: number;
  /** A bases a module. */
  k: number;
  /** B bases a module. */
  l: number;
  /** Output scale numerator (`lora_alpha / r`). */
  loraAlpha: number;
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
export interface VitTorchResult extends VitMeasures {
  /** `torch.__version__`. */
  version: string;
  /** `torch.get_num_threads()`. */
  threads: number;
  /** The BLAS library torch's matrix products went through. */
  blas: string;
  /** Every repetition's images/s. */
  samples: Record<keyof VitMeasures, number[]>;
  /** Each image's predicted class (the forward's argmax). */
  classes: number[];
}

/** One model's figures. */
export interface VitBenchRow {
  model: string;
  /** `checkpoint` (a folder's weights) or `random`. */
  weights: "checkpoint" | "random";
  B: number;
  /** Input side in pixels. */
  imageSize: number;
  nola: VitBenchNola & { modules: number; trainable: number };
  ours: VitMeasures;
  samples: Record<keyof VitMeasures, number[]>;
  classes: number[];
  torch: VitTorchResult | { error: string };
  /** nola-gpu images/s over PyTorch's, per measure. */
  ratio?: VitMeasures;
  /** With a checkpoint on both sides: whether both picked the same class for every image. */
  sameClasses?: boolean;
}

/** Options of {@link benchVit}. */
export interface VitBenchOptions {
  /** Keeps the cases whose name contains this text (any case); none matching keeps them all. */
  filter?: string;
  /** The models (default {@link VIT_BENCH_CASES}). */
  cases?: readonly VitBenchCase[];
  /** NOLA settings (default {@link VIT_BENCH_NOLA}). */
  nola?: VitBenchNola;
  /** Run the PyTorch side (default true). */
  torch?: boolean;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

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

async function samples(reps: number, units: number, run: () => Promise<void>): Promise<number[]> {
  await run();
  const out: number[] = [];
  for (let i = 0; i < reps; i++) {
    const start = performance.now();
    await run();
    out.push(units / ((performance.now() - start) / 1000));
  }
  return out;
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
  const forward = await samples(c.reps, inner * B, async () => {
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
  const train = await samples(c.reps, inner * B, async () => {
    for (let i = 0; i < inner; i++) {
      set.zeroGrads();
      set.prepareStep();
      model.forward(batch);
      model.loss({ targets }, { backward: true });
      model.backward();
      set.finishBackward();
    }
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

/** The first Python that imports torch, or why none does. */
async function torchPython(): Promise<{ python: string } | { error: string }> {
  let why = "";
  // Debian's torch lives with Debian's python, which another python on PATH may shadow.
  for (const python of ["python3", "/usr/bin/python3"]) {
    try {
      const out = await new Deno.Command(python, {
        args: ["-c", "import torch"],
        stdout: "null",
        stderr: "piped",
      }).output();
      if (out.success) return { python };
      why = new TextDecoder().decode(out.stderr).trim().split("\n").at(-1) ?? "";
    } catch (e) {
      why = (e as Error).message;
    }
  }
  return { error: `PyTorch side not run (apt-get install python3-torch): ${why}` };
}

async function measureTorch(
  python: string,
  c: VitBenchCase,
  nola: VitBenchNola,
): Promise<VitTorchResult | { error: string }> {
  const model = typeof c.model === "string"
    ? [c.model]
    : ["--config-json", JSON.stringify(c.model)];
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
  const args = [
    "bench/torch_vit.py",
    ...model,
    ...Object.entries(sizes).flatMap(([key, value]) => [`--${key}`, String(value)]),
  ];
  const out = await new Deno.Command(python, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    const last = new TextDecoder().decode(out.stderr).trim().split("\n").at(-1);
    return { error: `bench/torch_vit.py failed on ${c.name}: ${last}` };
  }
  const r = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!);
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
  const all = options.cases ?? VIT_BENCH_CASES;
  const nola = options.nola ?? VIT_BENCH_NOLA;
  const filter = options.filter?.toLowerCase() ?? "";
  const matching = all.filter((c) => c.name.toLowerCase().includes(filter));
  // One --filter serves every suite run: text meant for another suite leaves this one whole.
  const cases = matching.length > 0 ? matching : all;
  if (matching.length === 0) {
    console.log(`(--filter "${options.filter}" matches no vit model: all are run)`);
  }
  const python = options.torch === false
    ? { error: "PyTorch side not run (disabled)" }
    : await torchPython();
  const rows: VitBenchRow[] = [];
  for (const c of cases) {
    const side = (await configOf(c)).image_size as number;
    let start = performance.now();
    const seconds = () => ((performance.now() - start) / 1000).toFixed(0);
    let measured;
    {
      using model = typeof c.model === "string"
        ? await loadModel(gpu, c.model)
        : await initModel(gpu, parseModelConfig(c.model, c.name), { seed: 1 });
      measured = await measureOurs(gpu, model, { ...c, side }, nola);
    }
    console.log(`${c.name}: nola-gpu side ${seconds()} s`);
    start = performance.now();
    const torch = "python" in python
      ? await measureTorch(python.python, c, nola)
      : { error: python.error };
    if ("python" in python) console.log(`${c.name}: PyTorch side ${seconds()} s`);
    const weights = typeof c.model === "string" ? "checkpoint" : "random";
    const row: VitBenchRow = {
      model: c.name,
      weights,
      B: c.B,
      imageSize: side,
      ...measured,
      torch,
    };
    if (!("error" in torch)) {
      row.ratio = {
        forward: measured.ours.forward / torch.forward,
        train: measured.ours.train / torch.train,
      };
      // Only the same weights on both sides can pick the same classes.
      if (weights === "checkpoint") {
        row.sameClasses = torch.classes.join(",") === measured.classes.join(",");
      }
    }
    rows.push(row);
  }
  return rows;
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
  const speed = formatTable(
    ["model", "measure", "batch", "nola-gpu img/s", "PyTorch img/s", "ratio"],
    rows.flatMap((r) =>
      MEASURES.map(([key, label]) => {
        const torch = "error" in r.torch ? undefined : r.torch;
        return [
          r.model,
          label,
          `${r.B} x ${r.imageSize}²`,
          r.ours[key].toFixed(2),
          torch ? torch[key].toFixed(2) : "-",
          r.ratio ? r.ratio[key].toFixed(2) : "-",
        ];
      })
    ),
  );
  const notes = rows.map((r) => {
    const n = r.nola;
    const adapters = `NOLA on ${n.modules} MLP linears (r ${n.r}, k = l = ${n.k}) and a new ` +
      `${n.classes}-class head: ${n.trainable.toLocaleString("en-US")} trainable numbers`;
    if ("error" in r.torch) return `${r.model}: ${adapters}; ${r.torch.error}`;
    const t = r.torch;
    const same = r.sameClasses === undefined
      ? ""
      : `; predicted classes ${
        r.sameClasses ? "identical on both sides" : "DIFFER between the sides"
      }`;
    return `${r.model}: ${adapters}; PyTorch ${t.version} CPU, ${t.threads} threads, BLAS ` +
      `${t.blas}${same}`;
  });
  return [speed, "", ...notes].join("\n");
}
