/**
 * Llama-family throughput side by side with PyTorch: forward, forward + backward with NOLA on
 * every linear (`all-linear`), and cached greedy decoding, in tokens/s, for the tiny fixture and
 * for a TinyLlama-1.1B-shaped model with random weights; the same network and adapter math run
 * by Debian's python3-torch on the CPU (`bench/torch_llama.py`), and the GPU bytes by kind.
 *
 * Every figure is the median of several timed repetitions after one warm-up; each repetition ends
 * by reading a result back, so the GPU work it timed has finished.
 *
 * @module
 */

import { AdapterSet, ALL_LINEAR } from "../adapters/attach.ts";
import type { Gpu } from "../kernels/gpu.ts";
import { generateTokens } from "../models/generate.ts";
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
import { formatTable } from "./table.ts";

/** TinyLlama-1.1B's architecture (`config.json` keys), for a model with random weights. */
export const TINYLLAMA_1B_SHAPE: Readonly<Record<string, unknown>> = {
  architectures: ["LlamaForCausalLM"],
  model_type: "llama",
  num_hidden_layers: 22,
  hidden_size: 2048,
  intermediate_size: 5632,
  num_attention_heads: 32,
  num_key_value_heads: 4,
  vocab_size: 32000,
  max_position_embeddings: 2048,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  hidden_act: "silu",
  tie_word_embeddings: false,
  initializer_range: 0.02,
  bos_token_id: 1,
  eos_token_id: 2,
};

/** One model of the suite and the sizes it is measured at. */
export interface LlamaBenchCase extends SideBySideCase {
  /** Batch rows of the forward and training measures. */
  B: number;
  /** Positions a row. */
  T: number;
  /** Prompt length of the decoding measure. */
  promptTokens: number;
  /** New tokens each decoding repetition makes. */
  newTokens: number;
  /** Timed decoding repetitions. */
  decodeReps: number;
}

/** NOLA's settings in the training measure: every linear of every layer, never the head. */
export type LlamaBenchNola = BenchNola;

/** The paper's LLaMA placement (every linear but the head); k = l scaled to fit 1.1B here. */
export const LLAMA_BENCH_NOLA: LlamaBenchNola = { r: 16, k: 64, l: 64, loraAlpha: 4 };

/** The suite's models, at sizes that keep the 1.1B shape to minutes on a CPU rasterizer. */
export const LLAMA_BENCH_CASES: readonly LlamaBenchCase[] = [
  {
    name: "tiny-llama (fixture)",
    model: "fixtures/tiny-llama",
    B: 4,
    T: 64,
    reps: 5,
    inner: 5,
    promptTokens: 16,
    newTokens: 32,
    decodeReps: 3,
  },
  {
    name: "TinyLlama-1.1B shape (random)",
    model: TINYLLAMA_1B_SHAPE,
    // Kept small: on a shared 2-core CPU rasterizer (and PyTorch on Debian's reference BLAS) one
    // training step of this model takes about a minute a side.
    B: 1,
    T: 32,
    reps: 2,
    inner: 1,
    promptTokens: 16,
    newTokens: 16,
    decodeReps: 1,
  },
];

/** Tokens/s of the three measures. */
export interface LlamaMeasures {
  /** Forward of a B x T batch, no adapters. */
  forward: number;
  /** Forward, loss and backward with NOLA on all linears (coefficient gradients included). */
  train: number;
  /** Cached greedy decoding, new tokens over the whole time (prompt included). */
  decode: number;
}

/** The PyTorch side of one model. */
export interface LlamaTorchResult extends LlamaMeasures, TorchBuild {
  /** Peak resident memory of the Python process, MiB. */
  peakRssMiB: number;
  /** Every repetition's tokens/s. */
  samples: Record<keyof LlamaMeasures, number[]>;
  /** The decoded tokens. */
  generated: number[];
}

/** GPU bytes by kind, nola-gpu side. */
export interface LlamaBenchMemory {
  /** The model's weights. */
  weights: number;
  /** Weight gradients (0: the base is frozen under NOLA). */
  gradients: number;
  /** The B x T activation arena (`Model.memory()`). */
  activations: number;
  /** The adapter set: A, B, their gradients, saved `x Aᵀ`, coefficients and their gradients. */
  adapters: number;
  /** Of `adapters`: the coefficients and their gradients. */
  coefficients: number;
  /** AdamW's two moments a coefficient (computed; the suite takes no optimizer step). */
  optimizer: number;
  /** Pooled temporaries one training step adds at its peak. */
  trainTemporaries: number;
  /** Pooled buffers decoding adds at its peak: the key-value cache and scratch. */
  decodeTemporaries: number;
}

/** One model's figures. */
export interface LlamaBenchRow extends SideBySideRow<LlamaMeasures, LlamaTorchResult> {
  /** Batch rows of the forward and training measures. */
  B: number;
  /** Positions a row. */
  T: number;
  /** Prompt length of the decoding measure. */
  promptTokens: number;
  /** New tokens each decoding repetition made. */
  newTokens: number;
  /** The adapter: its settings, modules and coefficients. */
  nola: LlamaBenchNola & { modules: number; coefficients: number };
  /** The tokens nola-gpu decoded. */
  generated: number[];
  /** GPU bytes by kind. */
  memory: LlamaBenchMemory;
  /** With a checkpoint on both sides: whether both decoded the same greedy tokens. */
  sameTokens?: boolean;
}

/**
 * Options of {@link benchLlama}: the cases default to {@link LLAMA_BENCH_CASES}, NOLA to
 * {@link LLAMA_BENCH_NOLA}.
 */
export type LlamaBenchOptions = SideBySideOptions<LlamaBenchCase, LlamaBenchNola>;

/** Deterministic ids below `V`, different for each `salt`. */
function ids(n: number, V: number, salt: number): Uint32Array {
  return Uint32Array.from({ length: n }, (_, i) => (i * 7919 + salt * 104729 + 1) % V);
}

async function measureOurs(gpu: Gpu, model: Model, c: LlamaBenchCase, nola: LlamaBenchNola) {
  const { B, T, inner } = c;
  const V = model.outputs;
  const batch = { B, T, tokens: ids(B * T, V, 0) };
  const targets = ids(B * T, V, 1);
  const forward = await timeSamples(c.reps, inner * B * T, async () => {
    let acts;
    for (let i = 0; i < inner; i++) acts = model.forward(batch);
    await gpu.read(acts!.logits.buffer, { byteLength: 4 });
  });

  let memory: LlamaBenchMemory;
  let train: number[];
  let adapted: LlamaBenchRow["nola"];
  {
    using set = await AdapterSet.attach(model, {
      method: "nola",
      targets: [ALL_LINEAR],
      ...nola,
      seed: 0,
    }, { maxRows: B * T });
    const params = set.parameters();
    const run = async () => {
      adapterSteps(model, set, batch, targets, inner);
      await gpu.read(params[0].grad.buffer, { byteLength: 4 });
    };
    let base = 0;
    train = await timeSamples(c.reps, inner * B * T, run, async () => {
      await run();
      gpu.pool.resetPeak();
      base = gpu.pool.stats().inUse;
    });
    const coefficients = params.reduce((s, p) => s + p.param.size, 0);
    adapted = { ...nola, modules: set.modules.length, coefficients };
    memory = {
      ...model.memory(),
      adapters: set.bytes,
      coefficients: params.reduce((s, p) => s + p.param.byteLength + p.grad.byteLength, 0),
      optimizer: 2 * 4 * coefficients,
      trainTemporaries: gpu.pool.stats().peak - base,
      decodeTemporaries: 0,
    };
  }

  // Last, so the activations above are the B x T arena's alone (decoding adds arenas of its own).
  const prompt = Array.from(batch.tokens.subarray(0, c.promptTokens));
  let generated: number[] = [];
  gpu.pool.resetPeak();
  const base = gpu.pool.stats().inUse;
  const decode = await timeSamples(c.decodeReps, c.newTokens, async () => {
    generated = await generateTokens(model, prompt, { maxNewTokens: c.newTokens });
    if (generated.length !== c.newTokens) {
      throw new RangeError(`${c.name}: decoded ${generated.length} of ${c.newTokens} tokens`);
    }
  }, async () => void await generateTokens(model, prompt, { maxNewTokens: 2 }));
  memory.decodeTemporaries = gpu.pool.stats().peak - base;
  return {
    prompt,
    ours: { forward: median(forward), train: median(train), decode: median(decode) },
    samples: { forward, train, decode },
    generated,
    memory,
    nola: adapted,
  };
}

/** The JSON line `bench/torch_llama.py` prints (the fields read here). */
interface TorchLlamaLine {
  forward_tokens_per_s: number;
  train_tokens_per_s: number;
  decode_tokens_per_s: number;
  torch: string;
  threads: number;
  blas: string;
  peak_rss_mib: number;
  samples: Record<keyof LlamaMeasures, number[]>;
  generated: number[];
}

async function measureTorch(
  python: string,
  c: LlamaBenchCase,
  nola: LlamaBenchNola,
  prompt: number[],
): Promise<LlamaTorchResult | TorchError> {
  const sizes = {
    batch: c.B,
    seq: c.T,
    r: nola.r,
    k: nola.k,
    l: nola.l,
    "lora-alpha": nola.loraAlpha,
    reps: c.reps,
    inner: c.inner,
    "new-tokens": c.newTokens,
    "decode-reps": c.decodeReps,
    threads: navigator.hardwareConcurrency,
  };
  const r = await runTorchScript<TorchLlamaLine>(python, "bench/torch_llama.py", c, sizes, [
    "--prompt",
    prompt.join(","),
  ]);
  if ("error" in r) return r;
  return {
    forward: r.forward_tokens_per_s,
    train: r.train_tokens_per_s,
    decode: r.decode_tokens_per_s,
    version: r.torch,
    threads: r.threads,
    blas: r.blas,
    peakRssMiB: r.peak_rss_mib,
    samples: r.samples,
    generated: r.generated,
  };
}

/**
 * Runs the suite: each case on this GPU, then (the model freed) on PyTorch.
 *
 * @param gpu The device.
 * @param options A name filter, the cases, the NOLA settings, whether to run PyTorch.
 * @returns One row a case.
 */
export async function benchLlama(
  gpu: Gpu,
  options: LlamaBenchOptions = {},
): Promise<LlamaBenchRow[]> {
  const nola = options.nola ?? LLAMA_BENCH_NOLA;
  const cases = selectCases(options.cases ?? LLAMA_BENCH_CASES, options.filter, "llama");
  const results = await sideBySide(
    gpu,
    cases,
    options.torch !== false,
    (model, c) => measureOurs(gpu, model, c, nola),
    (python, c, measured) => measureTorch(python, c, nola, measured.prompt),
  );
  return results.map(({ c, ours: { prompt: _, ...side }, torch }) => {
    const weights = weightsOf(c);
    const row: LlamaBenchRow = {
      model: c.name,
      weights,
      B: c.B,
      T: c.T,
      promptTokens: c.promptTokens,
      newTokens: c.newTokens,
      ...side,
      torch,
    };
    if (!("error" in torch)) {
      row.ratio = ratios(side.ours, torch, ["forward", "train", "decode"]);
      // Only the same weights on both sides can decode the same tokens.
      if (weights === "checkpoint") {
        row.sameTokens = torch.generated.join(",") === side.generated.join(",");
      }
    }
    return row;
  });
}

const MEASURES: [keyof LlamaMeasures, string][] = [
  ["forward", "forward"],
  ["train", "fwd+bwd, NOLA all-linear"],
  ["decode", "greedy decode, cached"],
];

/**
 * The suite's tables: tokens/s side by side with their ratio, then GPU MiB by kind, then one line
 * a model about the PyTorch side.
 *
 * @param rows From {@link benchLlama}.
 * @returns Text for the console.
 */
export function formatLlamaBench(rows: readonly LlamaBenchRow[]): string {
  // Three decimals below 1 MiB so the tiny model's adapters do not read as nothing.
  const mib = (b: number) => (b / 2 ** 20).toFixed(b < 2 ** 20 ? 3 : 1);
  const speed = formatSpeedTable(rows, MEASURES, {
    size: "tokens",
    sizeOf: (r, key) => key === "decode" ? `${r.promptTokens} + ${r.newTokens}` : `${r.B} x ${r.T}`,
    unit: "tok/s",
    digits: 1,
  });
  const memory = formatTable(
    [
      "model (MiB)",
      "weights",
      "weight grads",
      "activations",
      "adapters",
      "coefficients",
      "AdamW state",
      "step temps",
      "decode temps",
    ],
    rows.map(({ model, memory: m }) => [
      model,
      mib(m.weights),
      mib(m.gradients),
      mib(m.activations),
      mib(m.adapters),
      mib(m.coefficients),
      mib(m.optimizer),
      mib(m.trainTemporaries),
      mib(m.decodeTemporaries),
    ]),
  );
  const notes = rows.map((r) => {
    const n = r.nola;
    const adapters = `NOLA on ${n.modules} modules (r ${n.r}, k = l = ${n.k}, lora_alpha ` +
      `${n.loraAlpha}: ${n.coefficients.toLocaleString("en-US")} coefficients)`;
    if ("error" in r.torch) return `${r.model}: ${adapters}; ${r.torch.error}`;
    return `${r.model}: ${adapters}; ${torchNote(r.torch)}, peak RSS ` +
      `${r.torch.peakRssMiB.toFixed(0)} MiB${agreementNote(r.sameTokens, "greedy tokens")}`;
  });
  return [speed, "", memory, "", ...notes].join("\n");
}
