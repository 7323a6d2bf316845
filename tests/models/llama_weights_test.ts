// Llama-family folders are written for tiny configs in the layouts HF saves (prefixed or bare,
// f32, f16, bf16, sharded), then loaded back; each mistake a downloaded or hand-made checkpoint
// can have gets its own test and message. The committed fixtures and their golden dumps are
// checked against the loader and against themselves.

import assert from "node:assert/strict";
import { rng, withTempDir } from "../_util.ts";
import {
  SafetensorsFile,
  type TensorToWrite,
  writeSafetensors,
} from "../../formats/safetensors.ts";
import { type LlamaConfig, llamaSites, parseLlamaConfig } from "../../models/llama_config.ts";
import {
  expectedLlamaShapes,
  initLlamaWeights,
  llamaWeightNames,
  LlamaWeightsError,
  loadLlamaWeights,
} from "../../models/llama_weights.ts";
import { ModelWeightsError } from "../../models/model.ts";

// D = 6 while H * hd = 8, KVH = 1: every projection has a different shape.
const HF_CONFIG = {
  architectures: ["LlamaForCausalLM"],
  model_type: "llama",
  hidden_size: 6,
  intermediate_size: 10,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  head_dim: 4,
  num_hidden_layers: 2,
  max_position_embeddings: 16,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  tie_word_embeddings: false,
  vocab_size: 11,
};
const TINY = parseLlamaConfig(HF_CONFIG, "config.json");
const QWEN2_CONFIG = {
  ...HF_CONFIG,
  architectures: ["Qwen2ForCausalLM"],
  model_type: "qwen2",
  tie_word_embeddings: true,
};

type Params = Map<string, { shape: number[]; data: Float32Array }>;

/** Distinct seeded values for every parameter of a config. */
function tinyParams(config: LlamaConfig = TINY): Params {
  const next = rng(42);
  const out: Params = new Map();
  for (const { name, shape } of expectedLlamaShapes(config)) {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    for (let i = 0; i < data.length; i++) data[i] = next() * 2 - 1;
    out.set(name, { shape, data });
  }
  return out;
}

/** As `save_pretrained` writes them: `model.` before all but `lm_head.weight`. */
function savedTensors(
  params: Params,
  options: { prefix?: string; dtype?: "F32" | "F16" | "BF16" } = {},
): TensorToWrite[] {
  const { prefix = "model.", dtype = "F32" } = options;
  return [...params].map(([name, { shape, data }]) => ({
    name: name === "lm_head.weight" ? name : prefix + name,
    dtype,
    shape,
    data: dtype === "F16" ? new Float16Array(data) : dtype === "BF16" ? toBf16(data) : data,
  }));
}

// Truncated to the upper 16 bits: exact bf16 values, so the widened result is known.
function toBf16(data: Float32Array): Uint16Array {
  const bits = new Uint32Array(data.buffer, data.byteOffset, data.length);
  return Uint16Array.from(bits, (b) => b >>> 16);
}

function fromBf16(data: Float32Array): Float32Array {
  const bits = Uint32Array.from(
    new Uint32Array(data.buffer, data.byteOffset, data.length),
    (b) => (b & 0xffff0000) >>> 0,
  );
  return new Float32Array(bits.buffer);
}

async function writeFolder(
  dir: string,
  tensors: TensorToWrite[],
  config: object = HF_CONFIG,
): Promise<void> {
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config, null, 2));
  await writeSafetensors(`${dir}/model.safetensors`, tensors, { format: "pt" });
}

function assertLoaded(loaded: Params, params: Params) {
  assert.deepEqual([...loaded.keys()], [...params.keys()]);
  for (const [name, { shape, data }] of params) {
    const got = loaded.get(name)!;
    assert.deepEqual(got.shape, shape, name);
    assert.ok(got.data instanceof Float32Array, name);
    assert.deepEqual(got.data, data, name);
  }
}

function rejectsWith(folder: string, message: string, tensor?: string): Promise<void> {
  return assert.rejects(loadLlamaWeights(folder), (e) => {
    assert.ok(e instanceof LlamaWeightsError, String(e));
    assert.ok(e instanceof ModelWeightsError);
    assert.equal(e.message, message);
    if (tensor !== undefined) assert.equal(e.tensor, tensor);
    return true;
  });
}

Deno.test("expectedLlamaShapes lists every parameter with [out, in] projections", () => {
  const shapes = expectedLlamaShapes(TINY);
  assert.equal(shapes.length, 1 + 9 * 2 + 2);
  const get = (n: string) => shapes.find((s) => s.name === n)?.shape;
  assert.deepEqual(get("embed_tokens.weight"), [11, 6]);
  assert.deepEqual(get("layers.1.self_attn.q_proj.weight"), [8, 6]);
  assert.deepEqual(get("layers.1.self_attn.k_proj.weight"), [4, 6]);
  assert.deepEqual(get("layers.1.self_attn.v_proj.weight"), [4, 6]);
  assert.deepEqual(get("layers.1.self_attn.o_proj.weight"), [6, 8]);
  assert.deepEqual(get("layers.0.mlp.gate_proj.weight"), [10, 6]);
  assert.deepEqual(get("layers.0.mlp.up_proj.weight"), [10, 6]);
  assert.deepEqual(get("layers.0.mlp.down_proj.weight"), [6, 10]);
  assert.deepEqual(get("layers.0.input_layernorm.weight"), [6]);
  assert.deepEqual(get("layers.0.post_attention_layernorm.weight"), [6]);
  assert.deepEqual(get("norm.weight"), [6]);
  assert.deepEqual(shapes.at(-1), { name: "lm_head.weight", shape: [11, 6] });
  assert.equal(shapes.filter((s) => s.name.endsWith(".bias")).length, 0);

  const qwen2 = parseLlamaConfig(QWEN2_CONFIG, "c");
  const biases = expectedLlamaShapes(qwen2).filter((s) => s.name.startsWith("layers.0."))
    .filter((s) => s.name.endsWith(".bias")).map((s) => [s.name, s.shape]);
  assert.deepEqual(biases, [
    ["layers.0.self_attn.q_proj.bias", [8]],
    ["layers.0.self_attn.k_proj.bias", [4]],
    ["layers.0.self_attn.v_proj.bias", [4]],
  ]);
  assert.ok(!expectedLlamaShapes(qwen2).some((s) => s.name === "lm_head.weight"), "tied");
  const withBias = parseLlamaConfig({ ...HF_CONFIG, attention_bias: true }, "c");
  assert.deepEqual(
    expectedLlamaShapes(withBias).find((s) => s.name === "layers.0.self_attn.o_proj.bias")?.shape,
    [6],
  );
});

Deno.test("every site is a weight of shape [out, in]", () => {
  const shapes = new Map(expectedLlamaShapes(TINY).map((s) => [s.name, s.shape]));
  for (const site of llamaSites(TINY)) {
    assert.deepEqual(shapes.get(`${site.name}.weight`), [site.outFeatures, site.inFeatures]);
  }
});

Deno.test("loadLlamaWeights loads what LlamaForCausalLM saves, untied head included", async () => {
  await withTempDir("llama-weights", async (dir) => {
    const params = tinyParams();
    await writeFolder(dir, savedTensors(params));
    const { config, tensors } = await loadLlamaWeights(dir);
    assert.deepEqual(config, TINY);
    assertLoaded(tensors, params);
  });
});

Deno.test("loadLlamaWeights loads a bare LlamaModel naming and skips rotary inv_freq buffers", async () => {
  await withTempDir("llama-weights", async (dir) => {
    const params = tinyParams();
    const tensors = savedTensors(params, { prefix: "" });
    for (const name of ["layers.0.self_attn.rotary_emb.inv_freq", "rotary_emb.inv_freq"]) {
      tensors.push({ name, dtype: "F32", shape: [2], data: new Float32Array([1, 0.01]) });
    }
    await writeFolder(dir, tensors);
    assertLoaded((await loadLlamaWeights(dir)).tensors, params);
  });
});

Deno.test("loadLlamaWeights widens f16 and bf16 checkpoints to f32", async () => {
  for (const dtype of ["F16", "BF16"] as const) {
    await withTempDir("llama-weights", async (dir) => {
      const params = tinyParams();
      await writeFolder(dir, savedTensors(params, { dtype }));
      const widen = dtype === "F16"
        ? (d: Float32Array) => Float32Array.from(new Float16Array(d))
        : fromBf16;
      const rounded: Params = new Map(
        [...params].map(([n, t]) => [n, { ...t, data: widen(t.data) }]),
      );
      // The rounding is visible, so this cannot pass by reading the f32 values back.
      assert.notDeepEqual(rounded.get("norm.weight")!.data, params.get("norm.weight")!.data);
      assertLoaded((await loadLlamaWeights(dir)).tensors, rounded);
    });
  }
});

Deno.test("loadLlamaWeights reads a sharded checkpoint through its index", async () => {
  await withTempDir("llama-weights", async (dir) => {
    const params = tinyParams();
    const tensors = savedTensors(params);
    const third = Math.ceil(tensors.length / 3);
    const shards = [0, 1, 2].map((i) => tensors.slice(i * third, (i + 1) * third));
    const weightMap: Record<string, string> = {};
    for (const [i, shard] of shards.entries()) {
      const file = `model-0000${i + 1}-of-00003.safetensors`;
      await writeSafetensors(`${dir}/${file}`, shard, { format: "pt" });
      for (const t of shard) weightMap[t.name] = file;
    }
    await Deno.writeTextFile(
      `${dir}/model.safetensors.index.json`,
      JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }),
    );
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(HF_CONFIG));
    assertLoaded((await loadLlamaWeights(dir)).tensors, params);

    // A tensor missing from every shard is reported against the index.
    const [dropped] = shards[1].splice(0, 1);
    delete weightMap[dropped.name];
    await writeSafetensors(`${dir}/model-00002-of-00003.safetensors`, shards[1]);
    await Deno.writeTextFile(
      `${dir}/model.safetensors.index.json`,
      JSON.stringify({ weight_map: weightMap }),
    );
    await rejectsWith(
      dir,
      `Invalid Llama checkpoint "${dir}/model.safetensors.index.json": missing tensor ` +
        `"${dropped.name}" with shape [${dropped.shape.join(", ")}]`,
      dropped.name,
    );
  });
});

Deno.test("loadLlamaWeights accepts a stored tied head equal to embed_tokens, and drops it", async () => {
  await withTempDir("llama-weights", async (dir) => {
    const qwen2 = parseLlamaConfig(QWEN2_CONFIG, "c");
    const params = tinyParams(qwen2);
    const tensors = savedTensors(params);
    const embed = params.get("embed_tokens.weight")!;
    tensors.push({ name: "lm_head.weight", dtype: "F32", shape: embed.shape, data: embed.data });
    await writeFolder(dir, tensors, QWEN2_CONFIG);
    const loaded = await loadLlamaWeights(dir);
    assertLoaded(loaded.tensors, params);
    assert.equal(loaded.config.modelType, "qwen2");
  });
});

Deno.test("loadLlamaWeights refuses a stored tied head that differs from embed_tokens", async () => {
  await withTempDir("llama-weights", async (dir) => {
    const params = tinyParams(parseLlamaConfig(QWEN2_CONFIG, "c"));
    const head = params.get("embed_tokens.weight")!.data.slice();
    head[9] += 1e-6;
    const tensors = savedTensors(params);
    await writeFolder(dir, [
      ...tensors,
      { name: "lm_head.weight", dtype: "F32", shape: [11, 6], data: head },
    ], QWEN2_CONFIG);
    await rejectsWith(
      dir,
      `Invalid Qwen2 checkpoint "${dir}/model.safetensors": "lm_head.weight" differs from ` +
        `"model.embed_tokens.weight" while "tie_word_embeddings" is true (first difference at ` +
        `element 9)`,
      "lm_head.weight",
    );
    await writeFolder(dir, [
      ...tensors,
      { name: "lm_head.weight", dtype: "F32", shape: [6, 11], data: head },
    ], QWEN2_CONFIG);
    await rejectsWith(
      dir,
      `Invalid Qwen2 checkpoint "${dir}/model.safetensors": "lm_head.weight" differs from ` +
        `"model.embed_tokens.weight" while "tie_word_embeddings" is true (its shape is [6, 11], ` +
        `not [11, 6])`,
    );
  });
});

Deno.test("loadLlamaWeights names a missing untied head, and counts other missing tensors", async () => {
  await withTempDir("llama-weights", async (dir) => {
    const tensors = savedTensors(tinyParams()).filter((t) => t.name !== "lm_head.weight");
    await writeFolder(dir, tensors);
    await rejectsWith(
      dir,
      `Invalid Llama checkpoint "${dir}/model.safetensors": missing tensor "lm_head.weight" ` +
        `with shape [11, 6] ("tie_word_embeddings" is false)`,
      "lm_head.weight",
    );
    await writeFolder(dir, tensors.filter((t) => !t.name.startsWith("model.layers.1.")));
    await rejectsWith(
      dir,
      `Invalid Llama checkpoint "${dir}/model.safetensors": missing tensor ` +
        `"model.layers.1.self_attn.q_proj.weight" with shape [8, 6] (and 9 more)`,
    );
  });
});

Deno.test("loadLlamaWeights refuses projections sized for other head counts, saying why", async () => {
  await withTempDir("llama-weights", async (dir) => {
    const params = tinyParams();
    const reshape = (name: string, shape: number[]) =>
      savedTensors(params).map((t) =>
        t.name === name ? { ...t, shape, data: new Float32Array(shape[0] * shape[1]) } : t
      );
    // k_proj with a row per query head: a checkpoint of the same model without grouped queries.
    await writeFolder(dir, reshape("model.layers.0.self_attn.k_proj.weight", [8, 6]));
    await rejectsWith(
      dir,
      `Invalid Llama checkpoint "${dir}/model.safetensors": tensor ` +
        `"model.layers.0.self_attn.k_proj.weight" has shape [8, 6], expected [4, 6] ` +
        `(num_key_value_heads × head_dim = 1 × 4 rows)`,
      "model.layers.0.self_attn.k_proj.weight",
    );
    await writeFolder(dir, reshape("model.layers.1.self_attn.q_proj.weight", [6, 6]));
    await rejectsWith(
      dir,
      `Invalid Llama checkpoint "${dir}/model.safetensors": tensor ` +
        `"model.layers.1.self_attn.q_proj.weight" has shape [6, 6], expected [8, 6] ` +
        `(num_attention_heads × head_dim = 2 × 4 rows)`,
    );
    await writeFolder(dir, reshape("model.layers.1.self_attn.o_proj.weight", [8, 6]));
    await rejectsWith(
      dir,
      `Invalid Llama checkpoint "${dir}/model.safetensors": tensor ` +
        `"model.layers.1.self_attn.o_proj.weight" has shape [8, 6], expected [6, 8] ` +
        `(num_attention_heads × head_dim = 2 × 4 columns)`,
    );
    // A Conv1D-style [in, out] MLP weight.
    await writeFolder(dir, reshape("model.layers.0.mlp.down_proj.weight", [10, 6]));
    await rejectsWith(
      dir,
      `Invalid Llama checkpoint "${dir}/model.safetensors": tensor ` +
        `"model.layers.0.mlp.down_proj.weight" has shape [10, 6], expected [6, 10]`,
    );
  });
});

Deno.test("loadLlamaWeights refuses unexpected tensors, saying why biases are", async () => {
  const cases: Array<[config: object, name: string, shape: number[], why: string]> = [
    [
      HF_CONFIG,
      "model.layers.2.input_layernorm.weight",
      [6],
      "a Llama with num_hidden_layers 2 has no such parameter",
    ],
    [
      HF_CONFIG,
      "model.layers.0.self_attn.q_proj.bias",
      [8],
      `"attention_bias" is false: the projections have no biases`,
    ],
    [QWEN2_CONFIG, "model.layers.0.self_attn.o_proj.bias", [6], "Qwen2's o_proj has no bias"],
    [
      { ...HF_CONFIG, model_type: "mistral", architectures: ["MistralForCausalLM"] },
      "model.layers.1.self_attn.v_proj.bias",
      [4],
      "Mistral's projections have no biases",
    ],
    [HF_CONFIG, "model.layers.0.mlp.up_proj.bias", [10], "MLP biases are not supported"],
    [
      HF_CONFIG,
      "model.lm_head.weight",
      [11, 6],
      "a Llama with num_hidden_layers 2 has no such parameter",
    ],
    // Tied: still no head inside the model.
    [
      QWEN2_CONFIG,
      "model.lm_head.weight",
      [11, 6],
      "a Qwen2 with num_hidden_layers 2 has no such parameter",
    ],
  ];
  for (const [config, name, shape, why] of cases) {
    await withTempDir("llama-weights", async (dir) => {
      const params = tinyParams(parseLlamaConfig(config, "c"));
      const tensors = savedTensors(params);
      tensors.push({
        name,
        dtype: "F32",
        shape,
        data: new Float32Array(shape[0] * (shape[1] ?? 1)),
      });
      await writeFolder(dir, tensors, config);
      const family = { llama: "Llama", qwen2: "Qwen2", mistral: "Mistral" }[
        (config as { model_type: "llama" | "qwen2" | "mistral" }).model_type
      ];
      await rejectsWith(
        dir,
        `Invalid ${family} checkpoint "${dir}/model.safetensors": unexpected tensor "${name}" ` +
          `(${why})`,
        name,
      );
    });
  }
});

Deno.test("loadLlamaWeights refuses names mixing the model. prefix and bare ones", async () => {
  await withTempDir("llama-weights", async (dir) => {
    const tensors = savedTensors(tinyParams()).map((t) =>
      t.name === "model.norm.weight" ? { ...t, name: "norm.weight" } : t
    );
    await writeFolder(dir, tensors);
    await rejectsWith(
      dir,
      `Invalid Llama checkpoint "${dir}/model.safetensors": tensor "norm.weight" has no ` +
        `"model." prefix while "model.embed_tokens.weight" has one; a checkpoint must use one ` +
        `naming for all its parameters`,
      "norm.weight",
    );
  });
});

Deno.test("loadLlamaWeights reports a bad config key with the config's path", async () => {
  await withTempDir("llama-weights", async (dir) => {
    await writeFolder(dir, savedTensors(tinyParams()), { ...HF_CONFIG, mlp_bias: true });
    await assert.rejects(loadLlamaWeights(dir), {
      name: "LlamaConfigError",
      message: `Invalid Llama config "${dir}/config.json": "mlp_bias" is true: MLP biases are ` +
        `not supported`,
    });
    await assert.rejects(loadLlamaWeights(dir, { modelType: "qwen2" }), {
      message: `Invalid Qwen2 config "${dir}/config.json": "model_type" is "llama", expected ` +
        `"qwen2"`,
    });
  });
});

Deno.test("loadLlamaWeights messages stay on one line with a tensor name holding a line break", async () => {
  await withTempDir("llama-weights", async (dir) => {
    const tensors = savedTensors(tinyParams());
    tensors.push({ name: "model.x\ny", dtype: "F32", shape: [1], data: new Float32Array(1) });
    await writeFolder(dir, tensors);
    await assert.rejects(loadLlamaWeights(dir), (e) => {
      assert.ok(e instanceof LlamaWeightsError);
      assert.ok(e.message.includes(`unexpected tensor "model.x\\ny"`), e.message);
      assert.equal(e.tensor, "model.x\ny");
      return true;
    });
  });
});

Deno.test("llamaWeightNames drops the model. prefix and buffers, and maps a tied head", () => {
  const names = [
    "model.embed_tokens.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.0.self_attn.rotary_emb.inv_freq",
    "model.norm.weight",
    "lm_head.weight",
  ];
  assert.deepEqual([...llamaWeightNames(names, { tieWordEmbeddings: false })], [
    ["model.embed_tokens.weight", "embed_tokens.weight"],
    ["model.layers.0.self_attn.q_proj.weight", "layers.0.self_attn.q_proj.weight"],
    ["model.layers.0.self_attn.rotary_emb.inv_freq", null],
    ["model.norm.weight", "norm.weight"],
    ["lm_head.weight", "lm_head.weight"],
  ]);
  assert.equal(
    llamaWeightNames(names, { tieWordEmbeddings: true }).get("lm_head.weight"),
    "embed_tokens.weight",
  );
  const bare = llamaWeightNames(["embed_tokens.weight", "rotary_emb.inv_freq"], {
    tieWordEmbeddings: true,
  });
  assert.deepEqual([...bare], [["embed_tokens.weight", "embed_tokens.weight"], [
    "rotary_emb.inv_freq",
    null,
  ]]);
});

Deno.test("llamaWeightNames maps every tensor of the fixtures to a loaded weight", async () => {
  for (const folder of ["fixtures/tiny-llama", "fixtures/tiny-qwen2"]) {
    const { config, tensors } = await loadLlamaWeights(folder);
    using file = await SafetensorsFile.open(`${folder}/model.safetensors`);
    const map = llamaWeightNames(file.names(), config);
    assert.deepEqual([...map.values()].sort(), [...tensors.keys()].sort(), folder);
  }
});

Deno.test("initLlamaWeights draws N(0, initializer_range) weights, unit norms and zero biases", () => {
  const config = parseLlamaConfig({
    ...QWEN2_CONFIG,
    hidden_size: 64,
    num_attention_heads: 4,
    head_dim: 16,
    vocab_size: 1000,
    initializer_range: 0.05,
    tie_word_embeddings: false,
  }, "c");
  const { tensors } = initLlamaWeights(config, { seed: 7 });
  assert.deepEqual(
    [...tensors].map(([n, t]) => [n, t.shape]),
    expectedLlamaShapes(config).map((e) => [e.name, e.shape]),
  );
  for (const [name, { data }] of tensors) {
    if (name.endsWith("norm.weight")) assert.ok(data.every((v) => v === 1), name);
    else if (name.endsWith(".bias")) assert.ok(data.every((v) => v === 0), name);
  }
  const embed = tensors.get("embed_tokens.weight")!.data; // 64,000 draws
  const mean = embed.reduce((a, b) => a + b, 0) / embed.length;
  const std = Math.sqrt(embed.reduce((a, b) => a + (b - mean) ** 2, 0) / embed.length);
  assert.ok(Math.abs(mean) < 0.05 * 0.02, `mean ${mean}`);
  assert.ok(Math.abs(std / 0.05 - 1) < 0.02, `std ${std}`);
  const head = tensors.get("lm_head.weight")!.data;
  assert.notDeepEqual(head, embed, "the untied head is drawn on its own");

  const again = initLlamaWeights(config, { seed: 7 }).tensors;
  const other = initLlamaWeights(config, { seed: 8 }).tensors;
  assert.deepEqual(
    again.get("layers.1.mlp.down_proj.weight"),
    tensors.get("layers.1.mlp.down_proj.weight"),
  );
  assert.notDeepEqual(
    other.get("layers.1.mlp.down_proj.weight"),
    tensors.get("layers.1.mlp.down_proj.weight"),
  );
});

const FIXTURES = ["fixtures/tiny-llama", "fixtures/tiny-qwen2"];

Deno.test("the fixtures load with the names and shapes of their golden gradients", async () => {
  for (const folder of FIXTURES) {
    const { config, tensors } = await loadLlamaWeights(folder);
    using golden = await SafetensorsFile.open(`${folder}/golden.safetensors`);
    const gradNames = golden.names().filter((n) => n.startsWith("grad."));
    assert.deepEqual(gradNames, [...tensors.keys()].map((n) => `grad.${n}`), folder);
    for (const [name, { shape }] of tensors) {
      assert.deepEqual(golden.info(`grad.${name}`).shape, shape, name);
    }
    // Norm weights are deliberately not all ones, so RMSNorm gradient bugs show.
    assert.ok(
      tensors.get("layers.0.input_layernorm.weight")!.data.some((v) => Math.abs(v - 1) > 0.01),
    );
    // What each fixture is there to cover.
    if (config.modelType === "llama") {
      assert.ok(config.numKeyValueHeads < config.numAttentionHeads);
      assert.notEqual(config.hiddenSize, config.numAttentionHeads * config.headDim);
      assert.ok(tensors.has("lm_head.weight"));
      // llama3 scaling keeps, ramps and divides at least one frequency each.
      const s = config.ropeScaling!;
      assert.equal(s.type, "llama3");
      if (s.type !== "llama3") continue;
      const wavelens = Array.from(
        { length: config.headDim / 2 },
        (_, i) => 2 * Math.PI * config.ropeTheta ** (2 * i / config.headDim),
      );
      const old = s.originalMaxPositionEmbeddings;
      assert.ok(wavelens.some((w) => w < old / s.highFreqFactor));
      assert.ok(wavelens.some((w) => w >= old / s.highFreqFactor && w <= old / s.lowFreqFactor));
      assert.ok(wavelens.some((w) => w > old / s.lowFreqFactor));
    } else {
      assert.ok(tensors.has("layers.1.self_attn.k_proj.bias"));
      assert.ok(!tensors.has("lm_head.weight"));
    }
  }
});

// HF's inverse frequencies in float64, written out from modeling_rope_utils independently of the
// fixture script, from the parsed config.
function invFreq(config: LlamaConfig): number[] {
  const hd = config.headDim;
  const inv = Array.from({ length: hd / 2 }, (_, i) => 1 / config.ropeTheta ** (2 * i / hd));
  const s = config.ropeScaling;
  if (s === undefined) return inv;
  if (s.type === "linear") return inv.map((f) => f / s.factor);
  const old = s.originalMaxPositionEmbeddings;
  return inv.map((f) => {
    const wavelen = 2 * Math.PI / f;
    if (wavelen < old / s.highFreqFactor) return f;
    if (wavelen > old / s.lowFreqFactor) return f / s.factor;
    const smooth = (old / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
    return (1 - smooth) * f / s.factor + smooth * f;
  });
}

Deno.test("the golden dumps are self-consistent: shifted targets, loss = mean CE, rope tables", async () => {
  for (const folder of FIXTURES) {
    const { config } = await loadLlamaWeights(folder);
    using golden = await SafetensorsFile.open(`${folder}/golden.safetensors`);
    const [B, T, V] = golden.info("logits").shape;
    assert.deepEqual([B, T, V], [2, 32, config.vocabSize]);
    const tokens = new Int32Array((await golden.readBytes("tokens")).buffer);
    const targets = new Int32Array((await golden.readBytes("targets")).buffer);
    for (let b = 0; b < B; b++) {
      for (let t = 0; t + 1 < T; t++) assert.equal(targets[b * T + t], tokens[b * T + t + 1]);
    }
    assert.ok(tokens.every((id) => id >= 0 && id < V));
    const logits = await golden.readFloat32("logits");
    let sum = 0;
    for (let r = 0; r < B * T; r++) {
      const row = logits.subarray(r * V, (r + 1) * V);
      const max = row.reduce((a, b) => Math.max(a, b), -Infinity);
      const lse = max + Math.log(row.reduce((a, x) => a + Math.exp(x - max), 0));
      sum += lse - row[targets[r]];
    }
    const [loss] = await golden.readFloat32("loss");
    assert.ok(Math.abs(sum / (B * T) - loss) < 1e-5, `${folder}: ${sum / (B * T)} vs ${loss}`);
    const losses = await golden.readFloat32("losses");
    assert.equal(losses.length, 10);
    assert.equal(losses[0], loss);
    assert.ok(losses.every((l, i) => i === 0 || l < losses[i - 1]), "AdamW lowers the loss");
    assert.equal(JSON.parse(golden.metadata.optimizer).lr, 1e-3);

    // The config as parsed here gives the frequencies PyTorch used (to f32 rounding).
    const inv = await golden.readFloat32("rope.inv_freq");
    const expected = invFreq(config);
    assert.equal(inv.length, config.headDim / 2);
    inv.forEach((f, i) => assert.ok(Math.abs(f / expected[i] - 1) < 1e-6, `${folder} ${i}: ${f}`));
    const cos = await golden.readFloat32("rope.cos");
    const sin = await golden.readFloat32("rope.sin");
    const hd = config.headDim;
    for (let t = 0; t < T; t++) {
      for (let i = 0; i < hd; i++) {
        const angle = Math.fround(t * inv[i % (hd / 2)]);
        assert.ok(Math.abs(cos[t * hd + i] - Math.cos(angle)) < 1e-6, `cos ${t} ${i}`);
        assert.ok(Math.abs(sin[t * hd + i] - Math.sin(angle)) < 1e-6, `sin ${t} ${i}`);
      }
    }
  }
});
