// Folders are written in the published gpt2 layout for a tiny config, then loaded back; each
// mistake a downloaded or hand-made checkpoint can have gets its own test and message.

import assert from "node:assert/strict";
import { rng } from "../_util.ts";
import { type TensorToWrite, writeSafetensors } from "../../formats/safetensors.ts";
import { SafetensorsFile } from "../../formats/safetensors.ts";
import {
  canonicalConfigJson,
  configHash,
  type Gpt2Config,
  Gpt2ConfigError,
  parseGpt2Config,
} from "../../models/gpt2_config.ts";
import {
  expectedGpt2Shapes,
  Gpt2WeightsError,
  loadGpt2Weights,
} from "../../models/gpt2_weights.ts";

// As HF writes it for a tiny model; dropout and summary keys must be ignored.
const HF_CONFIG = {
  architectures: ["GPT2LMHeadModel"],
  model_type: "gpt2",
  activation_function: "gelu_new",
  attn_pdrop: 0.1,
  embd_pdrop: 0.1,
  bos_token_id: 6,
  eos_token_id: 6,
  layer_norm_epsilon: 1e-5,
  n_ctx: 5,
  n_embd: 4,
  n_head: 2,
  n_inner: null,
  n_layer: 2,
  n_positions: 5,
  resid_pdrop: 0.1,
  summary_type: "cls_index",
  vocab_size: 7,
};
const TINY: Gpt2Config = {
  nLayer: 2,
  nHead: 2,
  nEmbd: 4,
  nPositions: 5,
  vocabSize: 7,
  nInner: 16,
  layerNormEpsilon: 1e-5,
  activationFunction: "gelu_new",
  eosTokenId: 6,
  bosTokenId: 6,
};

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  await Deno.mkdir("out/tmp", { recursive: true });
  const dir = await Deno.makeTempDir({ dir: "out/tmp", prefix: "gpt2-weights-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Distinct seeded values for every parameter of TINY. */
function tinyParams(): Map<string, { shape: number[]; data: Float32Array }> {
  const next = rng(42);
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const { name, shape } of expectedGpt2Shapes(TINY)) {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    for (let i = 0; i < data.length; i++) data[i] = next() * 2 - 1;
    out.set(name, { shape, data });
  }
  return out;
}

/** The published layout: parameters in order, causal buffers after each block's c_proj. */
function publishedTensors(
  params: Map<string, { shape: number[]; data: Float32Array }>,
  options: { prefix?: string; dtype?: "F32" | "F16" } = {},
): TensorToWrite[] {
  const { prefix = "", dtype = "F32" } = options;
  const P = TINY.nPositions;
  const out: TensorToWrite[] = [];
  for (const [name, { shape, data }] of params) {
    out.push({
      name: prefix + name,
      dtype,
      shape,
      data: dtype === "F16" ? new Float16Array(data) : data,
    });
    if (name.endsWith("attn.c_proj.bias")) {
      const mask = new Float32Array(P * P).map((_, i) => (i % P <= Math.floor(i / P) ? 1 : 0));
      const base = prefix + name.replace("c_proj.bias", "");
      out.push({ name: `${base}bias`, dtype: "F32", shape: [1, 1, P, P], data: mask });
      out.push({
        name: `${base}masked_bias`,
        dtype: "F32",
        shape: [],
        data: new Float32Array([-1e4]),
      });
    }
  }
  return out;
}

async function writeFolder(
  dir: string,
  tensors: TensorToWrite[],
  config: object = HF_CONFIG,
): Promise<void> {
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config, null, 2));
  await writeSafetensors(`${dir}/model.safetensors`, tensors, { format: "pt" });
}

function assertLoaded(
  loaded: Map<string, { shape: number[]; data: Float32Array }>,
  params: Map<string, { shape: number[]; data: Float32Array }>,
) {
  assert.deepEqual([...loaded.keys()], [...params.keys()]);
  for (const [name, { shape, data }] of params) {
    const got = loaded.get(name)!;
    assert.deepEqual(got.shape, shape, name);
    assert.ok(got.data instanceof Float32Array, name);
    assert.deepEqual(got.data, data, name);
  }
}

Deno.test("expectedGpt2Shapes lists every parameter with Conv1D weights as [in, out]", () => {
  const shapes = expectedGpt2Shapes(TINY);
  assert.equal(shapes.length, 2 + 12 * TINY.nLayer + 2);
  const get = (n: string) => shapes.find((s) => s.name === n)?.shape;
  assert.deepEqual(get("wte.weight"), [7, 4]);
  assert.deepEqual(get("wpe.weight"), [5, 4]);
  assert.deepEqual(get("h.1.attn.c_attn.weight"), [4, 12]);
  assert.deepEqual(get("h.1.attn.c_attn.bias"), [12]);
  assert.deepEqual(get("h.0.attn.c_proj.weight"), [4, 4]);
  assert.deepEqual(get("h.0.mlp.c_fc.weight"), [4, 16]);
  assert.deepEqual(get("h.0.mlp.c_fc.bias"), [16]);
  assert.deepEqual(get("h.0.mlp.c_proj.weight"), [16, 4]);
  assert.deepEqual(get("h.0.mlp.c_proj.bias"), [4]);
  assert.deepEqual(get("ln_f.bias"), [4]);
});

Deno.test("loadGpt2Weights loads the published layout, skipping attn.bias and masked_bias", async () => {
  await withTempDir(async (dir) => {
    const params = tinyParams();
    await writeFolder(dir, publishedTensors(params));
    const { config, tensors } = await loadGpt2Weights(dir);
    assert.deepEqual(config, TINY);
    assertLoaded(tensors, params);
  });
});

Deno.test("loadGpt2Weights strips a transformer. prefix and accepts a tied lm_head", async () => {
  await withTempDir(async (dir) => {
    const params = tinyParams();
    const tensors = publishedTensors(params, { prefix: "transformer." });
    const wte = params.get("wte.weight")!;
    tensors.push({ name: "lm_head.weight", dtype: "F32", shape: wte.shape, data: wte.data });
    await writeFolder(dir, tensors);
    assertLoaded((await loadGpt2Weights(dir)).tensors, params);
  });
});

Deno.test("loadGpt2Weights widens an f16 checkpoint to f32", async () => {
  await withTempDir(async (dir) => {
    const params = tinyParams();
    await writeFolder(dir, publishedTensors(params, { dtype: "F16" }));
    const rounded = new Map(
      [...params].map(([n, t]) => [n, { ...t, data: Float32Array.from(new Float16Array(t.data)) }]),
    );
    // The rounding is visible, so this cannot pass by reading the f32 values back.
    assert.notDeepEqual(rounded.get("wte.weight")!.data, params.get("wte.weight")!.data);
    assertLoaded((await loadGpt2Weights(dir)).tensors, rounded);
  });
});

Deno.test("loadGpt2Weights reads a sharded checkpoint through its index", async () => {
  await withTempDir(async (dir) => {
    const params = tinyParams();
    const tensors = publishedTensors(params);
    const half = Math.floor(tensors.length / 2);
    const shards = [tensors.slice(0, half), tensors.slice(half)];
    const weightMap: Record<string, string> = {};
    for (const [i, shard] of shards.entries()) {
      const file = `model-0000${i + 1}-of-00002.safetensors`;
      await writeSafetensors(`${dir}/${file}`, shard, { format: "pt" });
      for (const t of shard) weightMap[t.name] = file;
    }
    await Deno.writeTextFile(
      `${dir}/model.safetensors.index.json`,
      JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }),
    );
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(HF_CONFIG));
    assertLoaded((await loadGpt2Weights(dir)).tensors, params);
  });
});

Deno.test("loadGpt2Weights names a missing tensor, its expected shape and the file", async () => {
  await withTempDir(async (dir) => {
    const tensors = publishedTensors(tinyParams()).filter((t) => t.name !== "h.1.ln_2.bias");
    await writeFolder(dir, tensors);
    await assert.rejects(loadGpt2Weights(dir), {
      name: "Gpt2WeightsError",
      message: `Invalid GPT-2 checkpoint "${dir}/model.safetensors": missing tensor ` +
        `"h.1.ln_2.bias" with shape [4]`,
    });
  });
});

Deno.test("loadGpt2Weights counts the other missing tensors", async () => {
  await withTempDir(async (dir) => {
    const tensors = publishedTensors(tinyParams(), { prefix: "transformer." })
      .filter((t) => !t.name.startsWith("transformer.h.1."));
    await writeFolder(dir, tensors);
    await assert.rejects(loadGpt2Weights(dir), {
      message: `Invalid GPT-2 checkpoint "${dir}/model.safetensors": missing tensor ` +
        `"transformer.h.1.ln_1.weight" with shape [4] (and 11 more)`,
    });
  });
});

Deno.test("loadGpt2Weights rejects an unexpected tensor", async () => {
  await withTempDir(async (dir) => {
    const tensors = publishedTensors(tinyParams());
    tensors.push({ name: "h.2.ln_1.weight", dtype: "F32", shape: [4], data: new Float32Array(4) });
    await writeFolder(dir, tensors);
    await assert.rejects(loadGpt2Weights(dir), (e) => {
      assert.ok(e instanceof Gpt2WeightsError);
      assert.equal(
        e.message,
        `Invalid GPT-2 checkpoint "${dir}/model.safetensors": unexpected tensor ` +
          `"h.2.ln_1.weight" (a GPT-2 with n_layer 2 has no such parameter)`,
      );
      assert.equal(e.tensor, "h.2.ln_1.weight");
      return true;
    });
  });
});

Deno.test("loadGpt2Weights rejects a Conv1D weight stored as [out, in]", async () => {
  await withTempDir(async (dir) => {
    const tensors = publishedTensors(tinyParams()).map((t) =>
      t.name === "h.0.attn.c_attn.weight" ? { ...t, shape: [12, 4] } : t
    );
    await writeFolder(dir, tensors);
    await assert.rejects(loadGpt2Weights(dir), {
      name: "Gpt2WeightsError",
      message: `Invalid GPT-2 checkpoint "${dir}/model.safetensors": tensor ` +
        `"h.0.attn.c_attn.weight" has shape [12, 4], expected [4, 12]`,
    });
  });
});

Deno.test("loadGpt2Weights rejects an lm_head.weight that differs from wte", async () => {
  await withTempDir(async (dir) => {
    const params = tinyParams();
    const tensors = publishedTensors(params);
    const head = params.get("wte.weight")!.data.slice();
    head[9] += 1e-6;
    tensors.push({ name: "lm_head.weight", dtype: "F32", shape: [7, 4], data: head });
    await writeFolder(dir, tensors);
    await assert.rejects(loadGpt2Weights(dir), {
      name: "Gpt2WeightsError",
      message: `Invalid GPT-2 checkpoint "${dir}/model.safetensors": "lm_head.weight" differs ` +
        `from "wte.weight": untied heads are not supported (first difference at element 9)`,
    });
  });
});

Deno.test("loadGpt2Weights rejects names mixing the transformer. prefix and bare ones", async () => {
  await withTempDir(async (dir) => {
    const tensors = publishedTensors(tinyParams(), { prefix: "transformer." }).map((t) =>
      t.name === "transformer.ln_f.bias" ? { ...t, name: "ln_f.bias" } : t
    );
    await writeFolder(dir, tensors);
    await assert.rejects(loadGpt2Weights(dir), {
      message: `Invalid GPT-2 checkpoint "${dir}/model.safetensors": tensor "ln_f.bias" has no ` +
        `"transformer." prefix while "transformer.wte.weight" has one; a checkpoint must use one ` +
        `naming for all its parameters`,
    });
  });
});

Deno.test("loadGpt2Weights reports a bad config key with the config's path", async () => {
  await withTempDir(async (dir) => {
    await writeFolder(dir, publishedTensors(tinyParams()), {
      ...HF_CONFIG,
      activation_function: "relu",
    });
    await assert.rejects(loadGpt2Weights(dir), {
      name: "Gpt2ConfigError",
      message: `Invalid GPT-2 config "${dir}/config.json": "activation_function" is "relu", ` +
        `expected one of "gelu_new", "gelu_pytorch_tanh", "gelu_fast" (GELU, tanh form)`,
    });
  });
});

Deno.test("parseGpt2Config names the file and key of each bad entry", () => {
  const cases: Array<[object, string, string]> = [
    [{ n_head: undefined }, "n_head", `missing key "n_head"`],
    [{ n_embd: "4" }, "n_embd", `"n_embd" is "4", expected a positive integer`],
    [{ n_layer: 1.5 }, "n_layer", `"n_layer" is 1.5, expected a positive integer`],
    [{ n_head: 3 }, "n_embd", `"n_embd" (4) is not divisible by "n_head" (3)`],
    [{ model_type: "llama" }, "model_type", `"model_type" is "llama", expected "gpt2"`],
    [
      { layer_norm_epsilon: 0 },
      "layer_norm_epsilon",
      `"layer_norm_epsilon" is 0, expected a positive number`,
    ],
    [{ n_positions: undefined, n_ctx: undefined }, "n_positions", `missing key "n_positions"`],
    [{ vocab_size: null }, "vocab_size", `"vocab_size" is null, expected a positive integer`],
    [
      { tie_word_embeddings: false },
      "tie_word_embeddings",
      `"tie_word_embeddings" is false: untied lm_head weights are not supported`,
    ],
    [
      { add_cross_attention: true },
      "add_cross_attention",
      `"add_cross_attention" is true: cross-attention is not supported`,
    ],
  ];
  for (const [change, key, message] of cases) {
    assert.throws(() => parseGpt2Config({ ...HF_CONFIG, ...change }, "m/config.json"), (e) => {
      assert.ok(e instanceof Gpt2ConfigError);
      assert.equal(e.message, `Invalid GPT-2 config "m/config.json": ${message}`);
      assert.equal(e.key, key);
      assert.equal(e.file, "m/config.json");
      return true;
    });
  }
  assert.throws(() => parseGpt2Config([], "x.json"), {
    message: `Invalid GPT-2 config "x.json": expected a JSON object, found an array`,
  });
});

Deno.test("parseGpt2Config takes n_ctx when n_positions is absent, and n_inner when set", () => {
  const { n_positions: _, ...old } = HF_CONFIG;
  assert.equal(parseGpt2Config({ ...old, n_ctx: 9 }, "c").nPositions, 9);
  assert.equal(parseGpt2Config({ ...HF_CONFIG, n_inner: 10 }, "c").nInner, 10);
  const { model_type: __, ...untyped } = HF_CONFIG;
  assert.deepEqual(parseGpt2Config(untyped, "c"), TINY);
});

Deno.test("configHash is FNV-1a 64 of the canonical architecture JSON", () => {
  assert.equal(
    canonicalConfigJson(TINY),
    `{"model_type":"gpt2","n_layer":2,"n_head":2,"n_embd":4,"n_positions":5,"vocab_size":7,` +
      `"n_inner":16,"layer_norm_epsilon":0.00001,"activation_function":"gelu_new"}`,
  );
  // Pinned (checked with an independent Python FNV-1a): adapter files store it; it must not drift.
  assert.equal(configHash(TINY), "75d2e42f4d4224e3");
  const same = parseGpt2Config({ ...HF_CONFIG, attn_pdrop: 0, eos_token_id: 1 }, "c");
  assert.equal(configHash(same), configHash(TINY));
  assert.notEqual(configHash({ ...TINY, nPositions: 6 }), configHash(TINY));
  assert.notEqual(configHash({ ...TINY, layerNormEpsilon: 1e-6 }), configHash(TINY));
});

Deno.test("the tiny-gpt2 fixture loads with the names and shapes of its golden gradients", async () => {
  const { config, tensors } = await loadGpt2Weights("fixtures/tiny-gpt2");
  assert.equal(config.nEmbd, 48);
  using golden = await SafetensorsFile.open("fixtures/tiny-gpt2/golden.safetensors");
  const gradNames = golden.names().filter((n) => n.startsWith("grad."));
  assert.deepEqual(gradNames, [...tensors.keys()].map((n) => `grad.${n}`));
  for (const [name, { shape, data }] of tensors) {
    assert.deepEqual(golden.info(`grad.${name}`).shape, shape, name);
    assert.equal(data.length, shape.reduce((a, b) => a * b, 1), name);
  }
  // LayerNorm weights are deliberately not all ones, so LN gradient bugs show.
  assert.ok(tensors.get("h.0.ln_1.weight")!.data.some((v) => Math.abs(v - 1) > 0.01));
});

Deno.test("the golden dump is self-consistent: shifted targets, loss = mean CE of logits", async () => {
  using golden = await SafetensorsFile.open("fixtures/tiny-gpt2/golden.safetensors");
  const [B, T, V] = golden.info("logits").shape;
  assert.deepEqual([B, T, V], [2, 32, 300]);
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
  assert.ok(Math.abs(sum / (B * T) - loss) < 1e-5, `${sum / (B * T)} vs ${loss}`);
  const losses = await golden.readFloat32("losses");
  assert.equal(losses.length, 10);
  assert.equal(losses[0], loss);
  assert.ok(losses.every((l, i) => i === 0 || l < losses[i - 1]), "AdamW lowers the loss");
  assert.equal(JSON.parse(golden.metadata.optimizer).lr, 1e-3);
});
