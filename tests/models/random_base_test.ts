// A base drawn and packed on the GPU (models/random_base.ts): its weights against the host's own
// draw (Philox, bit for bit) and the host packer (formats/base_quant.ts, bit for bit), and one NOLA
// training step on an nf4 random base against an f32 model holding its dequantized weights.

import assert from "node:assert/strict";
import { AdapterSet, ALL_LINEAR } from "../../adapters/attach.ts";
import { benchQuantStep } from "../../bench/memory.ts";
import { packWeight } from "../../formats/base_quant.ts";
import type { Gpu } from "../../kernels/gpu.ts";
import { Tensor } from "../../kernels/tensor.ts";
import { Gpt2 } from "../../models/gpt2.ts";
import type { Gpt2Config } from "../../models/gpt2_config.ts";
import { Llama } from "../../models/llama.ts";
import type { LlamaConfig } from "../../models/llama_config.ts";
import type { Model } from "../../models/model.ts";
import {
  initRandomBase,
  pageRows,
  randomBaseValues,
  randomBaseWeights,
} from "../../models/random_base.ts";
import { type ModelConfig, parseModelConfig } from "../../models/registry.ts";
import { freshSeed, GPU_TEST, relativeError, testGpu } from "../_util.ts";

/** A Llama whose MLP weights span two generation pages, so they are drawn and packed in parts. */
const WIDE_LLAMA = {
  model_type: "llama",
  hidden_size: 32,
  intermediate_size: 33000,
  num_hidden_layers: 1,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 300,
  max_position_embeddings: 64,
  tie_word_embeddings: false,
  rms_norm_eps: 1e-5,
};

const SMALL_LLAMA = {
  ...WIDE_LLAMA,
  intermediate_size: 96,
  num_hidden_layers: 2,
  attention_bias: true,
};

const SMALL_GPT2 = {
  model_type: "gpt2",
  activation_function: "gelu_new",
  n_inner: null,
  n_ctx: 32,
  tie_word_embeddings: true,
  scale_attn_weights: true,
  n_layer: 2,
  n_embd: 64,
  n_head: 4,
  n_positions: 32,
  vocab_size: 300,
  layer_norm_epsilon: 1e-5,
};

Deno.test("randomBaseValues draws a weight in pages of whole rows", () => {
  assert.equal(pageRows(32), 32768);
  assert.equal(pageRows(33000), 31);
  assert.equal(pageRows(3_000_000), 1);
  const config = parseModelConfig(WIDE_LLAMA, "<wide>");
  const up = randomBaseWeights(config).find((w) => w.name === "layers.0.mlp.up_proj.weight")!;
  assert.deepEqual(up.shape, [33000, 32]);
  const values = randomBaseValues(7, up);
  // Uniform in [-std sqrt 3, std sqrt 3): mean 0, standard deviation std = 0.02.
  const mean = values.reduce((s, v) => s + v, 0) / values.length;
  const sd = Math.sqrt(values.reduce((s, v) => s + (v - mean) ** 2, 0) / values.length);
  assert(Math.abs(mean) < 1e-4, `mean ${mean}`);
  assert(Math.abs(sd - 0.02) < 2e-4, `sd ${sd}`);
  // The two pages are different draws, and another seed draws other values.
  assert.notDeepEqual(values.subarray(0, 32), values.subarray(32768 * 32, 32768 * 32 + 32));
  assert.notDeepEqual(values.subarray(0, 32), randomBaseValues(8, up).subarray(0, 32));
});

Deno.test(
  "a random nf4 base drawn on the GPU in chunks holds the host's values, packed bit for bit",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const config = parseModelConfig(WIDE_LLAMA, "<wide>");
    // Chunks of one page: the MLP weights are drawn and quantized in two parts each.
    using model = await initRandomBase(gpu, config, {
      baseFormat: "nf4",
      seed,
      chunkValues: 1 << 19,
    });
    for (const w of randomBaseWeights(config)) {
      const values = randomBaseValues(seed, w);
      const where = `${w.name} (seed ${seed})`;
      if (!w.linear) {
        assert.deepEqual(await model.params.get(w.name)!.read(), values, where);
        continue;
      }
      const linear = model.linearWeight(w.name.replace(/\.weight$/, ""))!;
      const got = await linear.packed!.read();
      const want = packWeight(values, [w.shape[0], w.shape[1]], { format: "nf4" });
      assert.deepEqual(got.codes, want.codes, where);
      assert.deepEqual(got.absmaxCodes, want.absmaxCodes, where);
      assert.deepEqual(got.absmax2, want.absmax2, where);
      assert.equal(got.offset, want.offset, where);
    }
  },
);

Deno.test(
  "a random int8 GPT-2 base packs its Conv1D weights transposed, as the host packer does",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const config = parseModelConfig(SMALL_GPT2, "<gpt2>");
    using model = await initRandomBase(gpu, config, { baseFormat: "int8", seed });
    let packed = 0;
    for (const w of randomBaseWeights(config)) {
      const values = randomBaseValues(seed, w);
      const where = `${w.name} (seed ${seed})`;
      if (!w.linear) {
        assert.deepEqual(await model.params.get(w.name)!.read(), values, where);
        continue;
      }
      const [inF, outF] = w.shape;
      const got = await model.linearWeight(w.name.replace(/\.weight$/, ""))!.packed!.read();
      const want = packWeight(values, [outF, inF], { format: "int8", transposed: true });
      assert.deepEqual(got.codes, want.codes, where);
      assert.deepEqual(got.absmax, want.absmax, where);
      packed++;
    }
    assert.equal(packed, 8);
  },
);

Deno.test("initRandomBase refuses full fine-tuning of a quantized base", GPU_TEST, async () => {
  const gpu = await testGpu();
  await assert.rejects(
    () =>
      initRandomBase(gpu, parseModelConfig(SMALL_GPT2, "<gpt2>"), {
        baseFormat: "nf4",
        trainAll: true,
      }),
    /Cannot train all weights of a nf4 base/,
  );
});

/** An f32 model of the same family holding `model`'s weights, packed ones dequantized. */
async function dequantizedTwin(gpu: Gpu, config: ModelConfig, model: Model): Promise<Model> {
  const params = new Map<string, Tensor>();
  for (const [name, t] of model.params) {
    const copy = Tensor.empty(gpu, t.shape, { persistent: true, label: name });
    gpu.copy(t.buffer, copy.buffer, { size: t.byteLength });
    params.set(name, copy);
  }
  for (const linear of new Set(model.sites.map((s) => s.linear))) {
    const w = model.linearWeight(linear)!;
    assert(w.packed && w.dequantize, `${linear} is packed`);
    const f32 = w.dequantize();
    // dequantize() gives a pooled tensor; the twin keeps a persistent copy.
    const kept = Tensor.empty(gpu, f32.shape, { persistent: true, label: linear });
    gpu.copy(f32.buffer, kept.buffer, { size: f32.byteLength });
    f32[Symbol.dispose]();
    params.set(`${linear}.weight`, kept);
  }
  const weights = { params, packed: null };
  return config.family.modelType === "gpt2"
    ? await Gpt2.fromGpuWeights(gpu, config.config as Gpt2Config, weights)
    : await Llama.fromGpuWeights(gpu, config.config as LlamaConfig, weights);
}

/** One NOLA step on every linear: the per-token losses and every coefficient gradient. */
async function nolaStep(
  model: Model,
  seed: number,
): Promise<{ losses: Float32Array; grads: Map<string, Float32Array> }> {
  const B = 2;
  const T = 7;
  using set = await AdapterSet.attach(model, {
    method: "nola",
    targets: [ALL_LINEAR],
    r: 4,
    k: 16,
    l: 16,
    loraAlpha: 4,
    seed,
    init: "uniform-coeffs",
  }, { maxRows: B * T });
  const V = model.outputs;
  const tokens = new Uint32Array(B * T).map((_, i) => (i * 37 + seed) % V);
  set.zeroGrads();
  set.prepareStep();
  model.forward({ B, T, tokens });
  const losses = await model.loss({ targets: tokens.map((t) => (t * 5 + 1) % V) }, {
    backward: true,
  }).read() as Float32Array;
  model.backward();
  set.finishBackward();
  const grads = new Map<string, Float32Array>();
  for (const p of set.parameters()) grads.set(p.name, await p.grad.read() as Float32Array);
  return { losses, grads };
}

for (const [name, json] of [["Llama", SMALL_LLAMA], ["GPT-2", SMALL_GPT2]] as const) {
  Deno.test(
    `a NOLA step on a random nf4 ${name} base matches f32 on its dequantized weights`,
    GPU_TEST,
    async () => {
      const gpu = await testGpu();
      const seed = freshSeed();
      const config = parseModelConfig(json, `<${name}>`);
      using model = await initRandomBase(gpu, config, { baseFormat: "nf4", seed });
      using twin = await dequantizedTwin(gpu, config, model);
      const got = await nolaStep(model, seed);
      const want = await nolaStep(twin, seed);
      const where = `seed ${seed}`;
      assert(got.losses.every(Number.isFinite), where);
      // A random base predicts nothing: about ln(vocab) a token.
      const mean = got.losses.reduce((s, v) => s + v, 0) / got.losses.length;
      assert(Math.abs(mean - Math.log(300)) < 0.5, `${where}: mean loss ${mean}`);
      assert(relativeError(got.losses, want.losses) < 1e-5, where);
      assert.equal(got.grads.size, want.grads.size);
      let nonzero = 0;
      for (const [param, g] of got.grads) {
        const err = relativeError(g, want.grads.get(param)!);
        // llvmpipe gives the same bits (both kernels sum in the same order); other devices may
        // order the f32 sums differently.
        assert(err < 1e-4, `${param}: gradient relative error ${err} (${where})`);
        if (g.some((v) => v !== 0)) nonzero++;
      }
      assert.equal(nonzero, got.grads.size, `every coefficient gradient moves (${where})`);
    },
  );
}

Deno.test(
  "the memory suite's training step on a small random nf4 Llama: its bytes, estimated beforehand",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const r = await benchQuantStep(gpu, { config: SMALL_LLAMA, name: "small", r: 2, k: 8, l: 8 });
    assert(Number.isFinite(r.loss) && Math.abs(r.loss - Math.log(300)) < 0.5, `${r.loss}`);
    assert.equal(r.nola.modules, 14);
    assert.equal(r.nola.coefficients, 14 * 16);
    const g = r.gpu;
    assert.equal(g.total, g.weights + g.adapters + g.optimizer + g.activations + g.temporaries);
    // The estimate counts everything but the pool's step temporaries, to the byte.
    assert.equal(r.estimateBytes, g.total - g.temporaries);
    assert(g.weightsByPrecision.nf4 > 0 && r.peakRssBytes >= r.startRssBytes);
  },
);
