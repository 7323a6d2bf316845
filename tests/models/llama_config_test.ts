// The Llama family's config.json parser: the fixtures and published configs read to the expected
// architecture, and every refusal with its one-line message, key and file.

import assert from "node:assert/strict";
import {
  canonicalLlamaConfigJson,
  LLAMA_PEFT,
  type LlamaConfig,
  LlamaConfigError,
  llamaConfigHash,
  llamaFamilyShape,
  llamaSites,
  parseLlamaConfig,
  readLlamaConfig,
} from "../../models/llama_config.ts";
import { ModelConfigError } from "../../models/model.ts";

const TINY_LLAMA = JSON.parse(await Deno.readTextFile("fixtures/tiny-llama/config.json"));
const TINY_QWEN2 = JSON.parse(await Deno.readTextFile("fixtures/tiny-qwen2/config.json"));
// Mistral v0.2 and later: a Llama with no window (sliding_window null) and no biases.
const TINY_MISTRAL = {
  architectures: ["MistralForCausalLM"],
  model_type: "mistral",
  hidden_size: 32,
  intermediate_size: 40,
  num_attention_heads: 4,
  num_hidden_layers: 2,
  num_key_value_heads: 2,
  max_position_embeddings: 64,
  rms_norm_eps: 1e-5,
  sliding_window: null,
  vocab_size: 300,
};

const LLAMA_EXPECTED: LlamaConfig = {
  modelType: "llama",
  numHiddenLayers: 2,
  hiddenSize: 24,
  intermediateSize: 64,
  numAttentionHeads: 4,
  numKeyValueHeads: 2,
  headDim: 8,
  vocabSize: 300,
  maxPositionEmbeddings: 256,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  ropeScaling: {
    type: "llama3",
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositionEmbeddings: 128,
  },
  qkvBias: false,
  oBias: false,
  tieWordEmbeddings: false,
  initializerRange: 0.02,
  bosTokenId: 297,
  eosTokenIds: [298, 299],
};

Deno.test("readLlamaConfig reads the tiny-llama fixture: GQA, head_dim given, llama3 rope", async () => {
  assert.deepEqual(await readLlamaConfig("fixtures/tiny-llama"), LLAMA_EXPECTED);
});

Deno.test("readLlamaConfig reads the tiny-qwen2 fixture: q/k/v biases, tied, linear rope", async () => {
  assert.deepEqual(await readLlamaConfig("fixtures/tiny-qwen2"), {
    modelType: "qwen2",
    numHiddenLayers: 2,
    hiddenSize: 32,
    intermediateSize: 40,
    numAttentionHeads: 4,
    numKeyValueHeads: 1,
    headDim: 8,
    vocabSize: 300,
    maxPositionEmbeddings: 64,
    rmsNormEps: 1e-6,
    ropeTheta: 1e6,
    ropeScaling: { type: "linear", factor: 2 },
    qkvBias: true,
    oBias: false,
    tieWordEmbeddings: true,
    initializerRange: 0.02,
    bosTokenId: 299,
    eosTokenIds: [299],
  });
});

Deno.test("parseLlamaConfig reads configs in the shape of published checkpoints", () => {
  // Abridged from the configs of Llama-2-7b, Llama-3.1-8B, TinyLlama-1.1B, Mistral-7B-v0.3 and
  // Qwen2-0.5B: the keys that fix the architecture, and some that do not.
  const llama2 = parseLlamaConfig({
    architectures: ["LlamaForCausalLM"],
    bos_token_id: 1,
    eos_token_id: 2,
    hidden_act: "silu",
    hidden_size: 4096,
    intermediate_size: 11008,
    max_position_embeddings: 4096,
    model_type: "llama",
    num_attention_heads: 32,
    num_hidden_layers: 32,
    num_key_value_heads: 32,
    pretraining_tp: 1,
    rms_norm_eps: 1e-5,
    rope_scaling: null,
    tie_word_embeddings: false,
    torch_dtype: "float16",
    vocab_size: 32000,
  }, "llama2");
  assert.equal(llama2.ropeTheta, 10000);
  assert.equal(llama2.headDim, 128);
  assert.equal(llama2.ropeScaling, undefined);

  const llama31 = parseLlamaConfig({
    architectures: ["LlamaForCausalLM"],
    attention_bias: false,
    attention_dropout: 0.0,
    bos_token_id: 128000,
    eos_token_id: [128001, 128008, 128009],
    hidden_act: "silu",
    hidden_size: 4096,
    intermediate_size: 14336,
    max_position_embeddings: 131072,
    mlp_bias: false,
    model_type: "llama",
    num_attention_heads: 32,
    num_hidden_layers: 32,
    num_key_value_heads: 8,
    rms_norm_eps: 1e-5,
    rope_scaling: {
      factor: 8.0,
      low_freq_factor: 1.0,
      high_freq_factor: 4.0,
      original_max_position_embeddings: 8192,
      rope_type: "llama3",
    },
    rope_theta: 500000.0,
    tie_word_embeddings: false,
    vocab_size: 128256,
  }, "llama3.1");
  assert.deepEqual(llama31.eosTokenIds, [128001, 128008, 128009]);
  assert.equal(llama31.numKeyValueHeads, 8);
  assert.equal(llama31.ropeScaling?.type, "llama3");

  const tinyLlama = parseLlamaConfig({
    architectures: ["LlamaForCausalLM"],
    hidden_size: 2048,
    intermediate_size: 5632,
    max_position_embeddings: 2048,
    model_type: "llama",
    num_attention_heads: 32,
    num_hidden_layers: 22,
    num_key_value_heads: 4,
    rms_norm_eps: 1e-5,
    rope_theta: 10000.0,
    vocab_size: 32000,
  }, "tinyllama");
  assert.equal(
    llamaSites(tinyLlama).find((s) => s.name === "layers.0.self_attn.k_proj")
      ?.outFeatures,
    4 * 64,
  );

  const mistral = parseLlamaConfig({
    architectures: ["MistralForCausalLM"],
    head_dim: 128,
    hidden_size: 4096,
    intermediate_size: 14336,
    max_position_embeddings: 32768,
    model_type: "mistral",
    num_attention_heads: 32,
    num_hidden_layers: 32,
    num_key_value_heads: 8,
    rms_norm_eps: 1e-5,
    rope_theta: 1000000.0,
    sliding_window: null,
    tie_word_embeddings: false,
    vocab_size: 32768,
  }, "mistral");
  assert.equal(mistral.modelType, "mistral");
  assert.equal(mistral.qkvBias, false);

  const qwen2 = parseLlamaConfig({
    architectures: ["Qwen2ForCausalLM"],
    hidden_size: 896,
    intermediate_size: 4864,
    max_position_embeddings: 32768,
    max_window_layers: 24,
    model_type: "qwen2",
    num_attention_heads: 14,
    num_hidden_layers: 24,
    num_key_value_heads: 2,
    rms_norm_eps: 1e-6,
    rope_theta: 1000000.0,
    sliding_window: 32768,
    tie_word_embeddings: true,
    use_sliding_window: false,
    vocab_size: 151936,
  }, "qwen2");
  assert.equal(qwen2.headDim, 64);
  assert.deepEqual([qwen2.qkvBias, qwen2.oBias, qwen2.tieWordEmbeddings], [true, false, true]);
});

Deno.test("parseLlamaConfig fills HF's defaults and accepts both spellings of the rope type", () => {
  const {
    num_key_value_heads: _kv,
    rope_theta: _theta,
    rope_scaling: _scaling,
    tie_word_embeddings: _tie,
    initializer_range: _init,
    hidden_act: _act,
    eos_token_id: _eos,
    bos_token_id: _bos,
    ...bare
  } = TINY_LLAMA;
  const config = parseLlamaConfig(bare, "c");
  assert.equal(config.numKeyValueHeads, 4);
  assert.equal(config.ropeTheta, 10000);
  assert.equal(config.ropeScaling, undefined);
  assert.equal(config.tieWordEmbeddings, false);
  assert.equal(config.initializerRange, 0.02);
  assert.equal(config.eosTokenIds, undefined);
  assert.equal(config.bosTokenId, undefined);
  // null means absent for the optional keys.
  assert.equal(
    parseLlamaConfig({ ...TINY_LLAMA, num_key_value_heads: null }, "c").numKeyValueHeads,
    4,
  );
  const { head_dim: _hd, ...noHeadDim } = TINY_LLAMA;
  assert.equal(parseLlamaConfig({ ...noHeadDim, hidden_size: 32 }, "c").headDim, 8);
  assert.equal(parseLlamaConfig({ ...noHeadDim, hidden_size: 32, head_dim: null }, "c").headDim, 8);

  const linear = { type: "linear", factor: 2 };
  for (
    const scaling of [linear, { rope_type: "linear", factor: 2 }, {
      ...linear,
      rope_type: "linear",
    }]
  ) {
    assert.deepEqual(parseLlamaConfig({ ...TINY_LLAMA, rope_scaling: scaling }, "c").ropeScaling, {
      type: "linear",
      factor: 2,
    });
  }
  assert.equal(
    parseLlamaConfig({ ...TINY_LLAMA, rope_scaling: { rope_type: "default" } }, "c").ropeScaling,
    undefined,
  );
});

Deno.test("parseLlamaConfig reads transformers 5's rope_parameters like rope_theta plus rope_scaling", () => {
  const { rope_theta: _t, rope_scaling: scaling, ...rest } = TINY_LLAMA;
  const v5 = parseLlamaConfig({ ...rest, rope_parameters: { ...scaling, rope_theta: 10000 } }, "c");
  assert.deepEqual(v5, LLAMA_EXPECTED);
  // Both forms, agreeing, as a config converted between versions may carry them.
  const both = { ...TINY_LLAMA, rope_parameters: { ...scaling, rope_theta: 10000 } };
  assert.deepEqual(parseLlamaConfig(both, "c"), LLAMA_EXPECTED);
  const plain = parseLlamaConfig({
    ...rest,
    rope_parameters: { rope_type: "default", rope_theta: 500000 },
  }, "c");
  assert.equal(plain.ropeTheta, 500000);
  assert.equal(plain.ropeScaling, undefined);
});

Deno.test("parseLlamaConfig takes the model type from architectures, or from the family asking", () => {
  const { model_type: _, ...untyped } = TINY_MISTRAL;
  assert.equal(parseLlamaConfig(untyped, "c").modelType, "mistral");
  const { architectures: __, ...anonymous } = untyped;
  assert.equal(parseLlamaConfig(anonymous, "c", { modelType: "qwen2" }).modelType, "qwen2");
  assert.equal(parseLlamaConfig(TINY_MISTRAL, "c", { modelType: "mistral" }).modelType, "mistral");
});

Deno.test("parseLlamaConfig accepts a window that cannot bite and an unused Qwen2 window", () => {
  const mistral = parseLlamaConfig({ ...TINY_MISTRAL, sliding_window: 64 }, "c");
  assert.equal(mistral.maxPositionEmbeddings, 64);
  assert.equal(parseLlamaConfig({ ...TINY_QWEN2, sliding_window: 4 }, "c").modelType, "qwen2");
  const layerTypes = { ...TINY_QWEN2, layer_types: ["full_attention", "full_attention"] };
  assert.equal(parseLlamaConfig(layerTypes, "c").numHiddenLayers, 2);
  // Llama has no sliding window; its key means nothing there.
  assert.equal(parseLlamaConfig({ ...TINY_LLAMA, sliding_window: 4 }, "c").modelType, "llama");
});

type Case = [change: Record<string, unknown>, key: string | undefined, message: string];

function assertRefusals(base: Record<string, unknown>, family: string, cases: Case[]): void {
  for (const [change, key, message] of cases) {
    const json: Record<string, unknown> = { ...base, ...change };
    for (const [k, v] of Object.entries(change)) if (v === undefined) delete json[k];
    assert.throws(() => parseLlamaConfig(json, "m/config.json"), (e) => {
      assert.ok(e instanceof LlamaConfigError, String(e));
      assert.ok(e instanceof ModelConfigError);
      assert.equal(e.message, `Invalid ${family} config "m/config.json": ${message}`);
      assert.equal(e.key, key, message);
      assert.equal(e.file, "m/config.json");
      return true;
    });
  }
}

Deno.test("parseLlamaConfig names the file and key of each bad entry", () => {
  assertRefusals(TINY_LLAMA, "Llama", [
    [
      { model_type: "gpt2" },
      "model_type",
      `"model_type" is "gpt2", expected "llama", "mistral" or "qwen2"`,
    ],
    [
      { model_type: undefined, architectures: ["GPT2LMHeadModel"] },
      "model_type",
      `missing key "model_type" (expected "llama", "mistral" or "qwen2")`,
    ],
    [{ hidden_size: undefined }, "hidden_size", `missing key "hidden_size"`],
    [{ hidden_size: "24" }, "hidden_size", `"hidden_size" is "24", expected a positive integer`],
    [
      { intermediate_size: 0 },
      "intermediate_size",
      `"intermediate_size" is 0, expected a positive integer`,
    ],
    [
      { num_hidden_layers: 2.5 },
      "num_hidden_layers",
      `"num_hidden_layers" is 2.5, expected a positive integer`,
    ],
    [
      { num_hidden_layers: 5000 },
      "num_hidden_layers",
      `"num_hidden_layers" is 5000, more than the 4096 layers this project supports`,
    ],
    [
      { vocab_size: 2 ** 24 + 1 },
      "vocab_size",
      `"vocab_size" is 16777217, more than the 16777216 this project supports`,
    ],
    [
      { num_attention_heads: 2 ** 22, head_dim: 8 },
      "num_attention_heads",
      `"num_attention_heads" × head size is 33554432, more than the 16777216 this project supports`,
    ],
    [
      { max_position_embeddings: undefined },
      "max_position_embeddings",
      `missing key "max_position_embeddings"`,
    ],
    [
      { num_key_value_heads: 3 },
      "num_key_value_heads",
      `"num_attention_heads" (4) is not divisible by "num_key_value_heads" (3)`,
    ],
    [
      { num_key_value_heads: 8 },
      "num_key_value_heads",
      `"num_attention_heads" (4) is not divisible by "num_key_value_heads" (8)`,
    ],
    [{ head_dim: 7 }, "head_dim", `"head_dim" is 7: rotary embeddings need an even head size`],
    [{ head_dim: -8 }, "head_dim", `"head_dim" is -8, expected a positive integer`],
    [
      { head_dim: undefined, hidden_size: 26 },
      "hidden_size",
      `"hidden_size" (26) is not divisible by "num_attention_heads" (4) and there is no "head_dim"`,
    ],
    [
      { head_dim: undefined, hidden_size: 12 },
      "hidden_size",
      `the head size "hidden_size" / "num_attention_heads" is 3: rotary embeddings need an even ` +
      `head size`,
    ],
    [{ rms_norm_eps: 0 }, "rms_norm_eps", `"rms_norm_eps" is 0, expected a positive number`],
    [{ rms_norm_eps: undefined }, "rms_norm_eps", `missing key "rms_norm_eps"`],
    [
      { initializer_range: -1 },
      "initializer_range",
      `"initializer_range" is -1, expected a positive number`,
    ],
    [{ rope_theta: -1 }, "rope_theta", `"rope_theta" is -1, expected a positive number`],
    [{ rope_theta: "1e4" }, "rope_theta", `"rope_theta" is "1e4", expected a positive number`],
    [{ hidden_act: "gelu" }, "hidden_act", `"hidden_act" is "gelu", expected "silu"`],
    [{ mlp_bias: true }, "mlp_bias", `"mlp_bias" is true: MLP biases are not supported`],
    [{ mlp_bias: "no" }, "mlp_bias", `"mlp_bias" is "no", expected true or false`],
    [{ attention_bias: 1 }, "attention_bias", `"attention_bias" is 1, expected true or false`],
    [
      { tie_word_embeddings: "true" },
      "tie_word_embeddings",
      `"tie_word_embeddings" is "true", expected true or false`,
    ],
    [
      { partial_rotary_factor: 0.5 },
      "partial_rotary_factor",
      `"partial_rotary_factor" is 0.5: partial rotary embeddings are not supported`,
    ],
    [{ bos_token_id: -1 }, "bos_token_id", `"bos_token_id" is -1, expected a token id or null`],
    [
      { eos_token_id: [] },
      "eos_token_id",
      `"eos_token_id" is an array, expected a token id, a non-empty list of them, or null`,
    ],
    [
      { eos_token_id: [1, "2"] },
      "eos_token_id",
      `"eos_token_id" is an array, expected a token id, a non-empty list of them, or null`,
    ],
    [
      { eos_token_id: 1.5 },
      "eos_token_id",
      `"eos_token_id" is 1.5, expected a token id, a non-empty list of them, or null`,
    ],
  ]);
});

Deno.test("parseLlamaConfig refuses every rope scaling it does not implement, naming the type", () => {
  const llama3 = TINY_LLAMA.rope_scaling;
  const { low_freq_factor: _, ...noLow } = llama3;
  assertRefusals(TINY_LLAMA, "Llama", [
    [
      { rope_scaling: "linear" },
      "rope_scaling",
      `"rope_scaling" is "linear", expected null or an object`,
    ],
    ...["dynamic", "yarn", "longrope", "su"].map((type): Case => [
      { rope_scaling: { type, factor: 2 } },
      "rope_scaling",
      `"rope_scaling" type "${type}" is not supported (supported are "default", "linear" and ` +
      `"llama3")`,
    ]),
    [
      { rope_scaling: { rope_type: "yarn", factor: 4, original_max_position_embeddings: 32 } },
      "rope_scaling",
      `"rope_scaling" type "yarn" is not supported (supported are "default", "linear" and "llama3")`,
    ],
    [
      { rope_scaling: { factor: 2 } },
      "rope_scaling",
      `"rope_scaling" has no "rope_type" or "type"`,
    ],
    [
      { rope_scaling: { rope_type: "linear", type: "dynamic", factor: 2 } },
      "rope_scaling",
      `"rope_scaling" has "rope_type" "linear" and "type" "dynamic"`,
    ],
    [
      { rope_scaling: { type: "linear", factor: 0.5 } },
      "rope_scaling",
      `"rope_scaling.factor" is 0.5, expected a number at least 1`,
    ],
    [
      { rope_scaling: { type: "linear" } },
      "rope_scaling",
      `missing key "rope_scaling.factor"`,
    ],
    [
      { rope_scaling: { type: "linear", factor: 2, mscale: 1 } },
      "rope_scaling",
      `"rope_scaling" has key "mscale", which "linear" scaling does not use`,
    ],
    [
      { rope_scaling: { rope_type: "default", factor: 2 } },
      "rope_scaling",
      `"rope_scaling" has key "factor", which "default" scaling does not use`,
    ],
    [{ rope_scaling: noLow }, "rope_scaling", `missing key "rope_scaling.low_freq_factor"`],
    [
      { rope_scaling: { ...llama3, low_freq_factor: 4, high_freq_factor: 1 } },
      "rope_scaling",
      `"rope_scaling.high_freq_factor" (1) is not greater than "rope_scaling.low_freq_factor" (4)`,
    ],
    [
      { rope_scaling: { ...llama3, original_max_position_embeddings: 0 } },
      "rope_scaling",
      `"rope_scaling.original_max_position_embeddings" is 0, expected a positive integer`,
    ],
    [
      { rope_parameters: { rope_type: "yarn", rope_theta: 1e4, factor: 4 } },
      "rope_parameters",
      `"rope_parameters" type "yarn" is not supported (supported are "default", "linear" and ` +
      `"llama3")`,
    ],
    [
      { rope_parameters: { ...llama3, rope_theta: 500000 } },
      "rope_parameters",
      `"rope_parameters" disagrees with "rope_theta"`,
    ],
    [
      { rope_parameters: { rope_type: "linear", factor: 2, rope_theta: 10000 } },
      "rope_parameters",
      `"rope_parameters" disagrees with "rope_scaling"`,
    ],
    [
      { rope_parameters: { rope_type: "default", rope_theta: 0 } },
      "rope_parameters",
      `"rope_parameters.rope_theta" is 0, expected a positive number`,
    ],
  ]);
});

Deno.test("Mistral and Qwen2 configs are refused when their window or biases would change the model", () => {
  assertRefusals(TINY_MISTRAL, "Mistral", [
    [
      { sliding_window: 4096, max_position_embeddings: 32768 },
      "sliding_window",
      `"sliding_window" is 4096, less than "max_position_embeddings" (32768): sliding-window ` +
      `attention is not supported, and full attention would only approximate the model beyond ` +
      `4096 positions`,
    ],
    [
      { sliding_window: "4096" },
      "sliding_window",
      `"sliding_window" is "4096", expected a positive integer`,
    ],
    [
      { attention_bias: true },
      "attention_bias",
      `"attention_bias" is true: Mistral has no attention biases`,
    ],
  ]);
  assertRefusals(TINY_QWEN2, "Qwen2", [
    [
      { use_sliding_window: true },
      "use_sliding_window",
      `"use_sliding_window" is true: sliding-window attention is not supported, and full ` +
      `attention would only approximate the model`,
    ],
    [
      { layer_types: ["full_attention", "sliding_attention"] },
      "layer_types",
      `"layer_types" has "sliding_attention" at 1: only "full_attention" is supported`,
    ],
    [
      { attention_bias: true },
      "attention_bias",
      `"attention_bias" is true: Qwen2 has biases on q, k and v only`,
    ],
  ]);
  assert.throws(() => parseLlamaConfig(TINY_QWEN2, "c", { modelType: "llama" }), {
    name: "LlamaConfigError",
    message: `Invalid Llama config "c": "model_type" is "qwen2", expected "llama"`,
  });
  assert.throws(() => parseLlamaConfig([], "x.json"), {
    message: `Invalid Llama config "x.json": expected a JSON object, found an array`,
  });
});

Deno.test("parseLlamaConfig messages stay on one line whatever the file holds", () => {
  const cases: Array<[unknown, string]> = [
    [{ ...TINY_LLAMA, hidden_act: "si\u2028lu" }, "m\n/config.json"],
    [{ ...TINY_LLAMA, rope_scaling: { type: "linear", factor: 2, "a\nb": 1 } }, "m/config.json"],
    [{ ...TINY_LLAMA, rope_scaling: { type: "linear\r\u0000", factor: 2 } }, "m/config.json"],
  ];
  for (const [json, source] of cases) {
    assert.throws(() => parseLlamaConfig(json, source), (e) => {
      assert.ok(e instanceof LlamaConfigError);
      // deno-lint-ignore no-control-regex
      assert.doesNotMatch(e.message, /[\u0000-\u001f\u2028\u2029]/);
      return true;
    });
  }
});

Deno.test("llamaConfigHash is FNV-1a 64 of the canonical architecture JSON", async () => {
  const config = await readLlamaConfig("fixtures/tiny-llama");
  assert.equal(
    canonicalLlamaConfigJson(config),
    `{"model_type":"llama","num_hidden_layers":2,"hidden_size":24,"intermediate_size":64,` +
      `"num_attention_heads":4,"num_key_value_heads":2,"head_dim":8,"vocab_size":300,` +
      `"max_position_embeddings":256,"rms_norm_eps":0.00001,"rope_theta":10000,"rope_scaling":` +
      `{"rope_type":"llama3","factor":8,"low_freq_factor":1,"high_freq_factor":4,` +
      `"original_max_position_embeddings":128},"qkv_bias":false,"o_bias":false,` +
      `"tie_word_embeddings":false,"hidden_act":"silu"}`,
  );
  // Pinned (checked with an independent Python FNV-1a): adapter files store them.
  assert.equal(llamaConfigHash(config), "6209a1e0e13092e5");
  assert.equal(llamaConfigHash(await readLlamaConfig("fixtures/tiny-qwen2")), "86edd07bc7246f38");

  // Token ids, the init and dropout do not change the architecture; the spelling of the rope
  // type does not either.
  const same = parseLlamaConfig({
    ...TINY_LLAMA,
    eos_token_id: 5,
    initializer_range: 1,
    attention_dropout: 0.5,
  }, "c");
  assert.equal(llamaConfigHash(same), llamaConfigHash(config));
  const linearA = parseLlamaConfig(
    { ...TINY_LLAMA, rope_scaling: { type: "linear", factor: 2 } },
    "c",
  );
  const linearB = parseLlamaConfig({
    ...TINY_LLAMA,
    rope_scaling: { rope_type: "linear", factor: 2 },
  }, "c");
  assert.equal(llamaConfigHash(linearA), llamaConfigHash(linearB));
  const changed: Array<Partial<LlamaConfig>> = [
    { numKeyValueHeads: 4 },
    { headDim: 6 },
    { ropeTheta: 500000 },
    { ropeScaling: undefined },
    { qkvBias: true },
    { oBias: true },
    { tieWordEmbeddings: true },
    { modelType: "mistral" },
    { rmsNormEps: 1e-6 },
  ];
  for (const change of changed) {
    assert.notEqual(
      llamaConfigHash({ ...config, ...change }),
      llamaConfigHash(config),
      JSON.stringify(change),
    );
  }
});

Deno.test("llamaSites lists the seven linear layers of every layer with [out, in] features", async () => {
  const config = await readLlamaConfig("fixtures/tiny-llama");
  const sites = llamaSites(config);
  assert.equal(sites.length, 7 * 2);
  const features = sites.slice(7).map((s) => [s.name, s.inFeatures, s.outFeatures]);
  assert.deepEqual(features, [
    ["layers.1.self_attn.q_proj", 24, 32],
    ["layers.1.self_attn.k_proj", 24, 16],
    ["layers.1.self_attn.v_proj", 24, 16],
    ["layers.1.self_attn.o_proj", 32, 24],
    ["layers.1.mlp.gate_proj", 24, 64],
    ["layers.1.mlp.up_proj", 24, 64],
    ["layers.1.mlp.down_proj", 64, 24],
  ]);
  for (const site of sites) {
    assert.equal(site.linear, site.name);
    assert.equal(site.colOffset, 0);
  }
  assert.deepEqual(llamaFamilyShape(config), { configHash: llamaConfigHash(config), sites });
  // PEFT's key of the first site, as peft names LlamaForCausalLM's modules.
  assert.equal(
    `base_model.model.${LLAMA_PEFT.modulePrefix}${sites[0].name}.lora_A.weight`,
    "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
  );
  assert.equal(LLAMA_PEFT.taskType, "CAUSAL_LM");
});

Deno.test("readLlamaConfig names a missing config file", async () => {
  await assert.rejects(readLlamaConfig("fixtures/no-such-model"), {
    name: "ModelConfigError",
    message: /^Cannot read model config "fixtures\/no-such-model\/config.json": /,
  });
});
