/**
 * Fine-tunes the fixture GPT-2 with NOLA adapters, end to end, through the public API only:
 * attach, train, quantize, evaluate, save, load into a fresh model, generate.
 *
 * ```sh
 * deno run --allow-read=. --allow-write=out \
 *   --allow-env=XDG_RUNTIME_DIR,NOLA_TEST_SEED,LOG_TOKENS,LOG_STREAM examples/finetune_nola.ts
 * ```
 *
 * The model is the tiny GPT-2 under `fixtures/` (2 layers, 48 wide, 64 positions), so a run takes
 * seconds even on a software WebGPU adapter; the figures it prints mean little beyond that the
 * pieces fit together.
 *
 * @module
 */

import {
  AdapterSet,
  type AttachConfig,
  buildRows,
  evalBatches,
  evaluateLoss,
  generateText,
  Gpu,
  loadAdapter,
  loadModel,
  loadSplits,
  quantizeInPlace,
  RunLog,
  saveAdapter,
  Tokenizer,
  train,
  TrainBatches,
} from "../mod.ts";

const MODEL = "fixtures/tiny-gpt2-pretrained";
const OUT = "out/examples";
const ADAPTER = `${OUT}/finetune_nola.safetensors`;
/** Positions per row: the fixture model's whole context. */
const T = 128;
/** Rows per micro-batch. */
const B = 4;
const STEPS = 10;

// One GPU device for everything; `using` releases it (and everything below) at the end of scope.
using gpu = await Gpu.acquire();
using model = await loadModel(gpu, MODEL);
const tokenizer = await Tokenizer.load(MODEL);

// NOLA on the query and value parts of every attention's fused c_attn projection. Each adapter is
// LoRA's A (in x r) and B (r x out) written as combinations of k and l random bases regenerated
// from `seed`: only the k + l coefficients per module are trained and saved.
const attach: AttachConfig = {
  method: "nola",
  targets: ["h.*.attn.c_attn.q", "h.*.attn.c_attn.v"],
  r: 4,
  k: 32,
  l: 32,
  loraAlpha: 4,
  seed: 7,
};
// `maxRows` sizes the adapters' buffers: the most rows (batch x positions) one forward covers.
using set = await AdapterSet.attach(model, attach, { maxRows: B * T });
console.log(`attached NOLA to ${set.modules.length} modules`);

// Data: the e2e-style data-to-text fixture, a meaning representation (`mr`) and a reference
// sentence (`ref`) per record. Templates turn a record into a prompt (not trained on) and a
// completion (trained on); rows are truncated to T tokens. A few dozen rows are plenty here.
const splits = await loadSplits({
  train: "fixtures/data-to-text/train.csv",
  validation: "fixtures/data-to-text/validation.csv",
  format: "e2e",
});
const templates = { prompt: "{{ mr }}\n", completion: " {{ ref }}" };
const built = buildRows(splits.train.slice(0, 48), { templates, encoder: tokenizer, T });
const trainRows = built.rows;
const validationRows = buildRows(splits.validation.slice(0, 16), {
  templates,
  encoder: tokenizer,
  T,
}).rows;
// Truncation keeps the prompt and cuts the completion; a record whose prompt alone fills T is
// dropped, since it would leave nothing to learn.
console.log(
  `${trainRows.length} training rows (${built.truncation.removed} records dropped by ` +
    `truncation), ${validationRows.length} validation rows`,
);

// Training: AdamW over the adapters' coefficients. The set is also the step hooks: it combines
// A and B from the coefficients before each forward and turns dA, dB into coefficient gradients
// after each backward. The run log writes metrics.jsonl and summary.json into its folder.
using log = await RunLog.open(`${OUT}/finetune_nola-run`);
const lr = 3e-2;
const result = await train({
  model,
  groups: [{ kind: "adamw", lr, params: set.parameters() }],
  hooks: set,
  batches: new TrainBatches(trainRows, { B, T, eosId: tokenizer.eosId, seed: 1, steps: STEPS }),
  schedule: { kind: "linear", lr, totalSteps: STEPS, warmupSteps: 2 },
  maxGradNorm: 1,
  log,
  // Losses stay on the GPU until read back; reading every step lets onLog see every step.
  logEvery: 1,
  checkpointEvery: 0,
  onLog: (records) => {
    for (const r of records) console.log(`step ${r.step} loss ${r.loss.toFixed(4)}`);
  },
});
console.log(`trained ${result.steps} steps (${result.stoppedBy})`);

// Post-training quantization: every coefficient becomes one of 16 levels, written back to the
// GPU, so the model now computes exactly what a 4-bit adapter file will load.
const quant = { bits: 4, scheme: "symmetric" } as const;
const stats = await quantizeInPlace(set, quant);
const worst = Math.max(...stats.map((s) => Math.max(s.alphaMaxError, s.betaMaxError)));
console.log(`quantized to ${quant.bits} bits, largest change ${worst.toExponential(2)}`);

// Validation loss (nats per completion token) of the quantized adapters.
const validation = await evaluateLoss(
  model,
  evalBatches(validationRows, { B, T, eosId: tokenizer.eosId }),
);
console.log(
  `validation loss ${validation.loss.toFixed(4)} (perplexity ${
    validation.perplexity.toFixed(2)
  }) over ${validation.tokens} tokens`,
);

// Save: a seed, the config and 4-bit codes with their scales, in one safetensors file.
const saved = await saveAdapter(set, ADAPTER, { baseModel: MODEL, quant });
console.log(`saved ${ADAPTER} (${saved.size} bytes)`);

// Load into a fresh copy of the base model: the bases are regenerated from the seed and the
// coefficients dequantized, then greedy generation continues a prompt from the validation set.
using fresh = await loadModel(gpu, MODEL);
using _loaded = await loadAdapter(fresh, ADAPTER, { maxRows: B * T });
const prompt = `${splits.validation[0].mr}\n`;
const sample = await generateText(fresh, tokenizer, prompt, { maxNewTokens: 24 });
console.log(`sample: ${JSON.stringify(sample)}`);
