import assert from "node:assert/strict";
import { LowRankLinear } from "../../adapters/linear_adapter.ts";
import { exportPeft } from "../../adapters/peft.ts";

const PEFT_PREFIX = "base_model.model.transformer.";
import { SafetensorsFile } from "../../formats/safetensors.ts";
import { Gpt2 } from "../../models/gpt2.ts";
import { loadGpt2Weights } from "../../models/gpt2_weights.ts";
import { freshSeed, GPU_TEST, randomArray, relativeError, testGpu } from "../_util.ts";
import { attachRandomAdapters, B, batchTokens, FIXTURE, logitsOf, T } from "./_adapted_gpt2.ts";

async function tempDir(prefix: string): Promise<string> {
  await Deno.mkdir("out/tmp", { recursive: true });
  return await Deno.makeTempDir({ dir: "out/tmp", prefix });
}

interface LoraConfig {
  r: number;
  lora_alpha: number;
  target_modules: string[];
  rank_pattern: Record<string, number>;
  alpha_pattern: Record<string, number>;
  fan_in_fan_out: boolean;
}

// PEFT's rules, restated: a module is targeted when its path equals or ends with "." + a target;
// a pattern key applies when `re.match(rf"(.*\.)?({key})$", path)` does, first key first.
function targeted(config: LoraConfig, path: string): boolean {
  return config.target_modules.some((t) => path === t || path.endsWith(`.${t}`));
}
function fromPattern(pattern: Record<string, number>, path: string, fallback: number): number {
  const key = Object.keys(pattern).find((k) => new RegExp(`^(.*\\.)?(${k})$`).test(path));
  return key === undefined ? fallback : pattern[key];
}

/**
 * The base weights with a PEFT LoRA folder applied as PEFT merges it, in float64:
 * `W + (lora_alpha / r) (B A)ᵀ` for `fan_in_fan_out` (Conv1D) modules.
 */
async function applyPeft(folder: string, base: Awaited<ReturnType<typeof loadGpt2Weights>>) {
  const config: LoraConfig = JSON.parse(await Deno.readTextFile(`${folder}/adapter_config.json`));
  assert.equal(config.fan_in_fan_out, true);
  using file = await SafetensorsFile.open(`${folder}/adapter_model.safetensors`);
  const used = new Set<string>();
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, { shape, data }] of base.tensors) {
    const module = name.replace(/\.weight$/, "");
    const path = `transformer.${module}`;
    if (!name.endsWith(".weight") || !targeted(config, path)) {
      tensors.set(name, { shape, data });
      continue;
    }
    const r = fromPattern(config.rank_pattern, path, config.r);
    const alpha = fromPattern(config.alpha_pattern, path, config.lora_alpha);
    const [inF, outF] = shape;
    const keyA = `base_model.model.${path}.lora_A.weight`;
    const keyB = `base_model.model.${path}.lora_B.weight`;
    assert.deepEqual(file.info(keyA).shape, [r, inF], keyA);
    assert.deepEqual(file.info(keyB).shape, [outF, r], keyB);
    const a = await file.readFloat32(keyA);
    const b = await file.readFloat32(keyB);
    used.add(keyA).add(keyB);
    const merged = new Float32Array(data.length);
    for (let i = 0; i < inF; i++) {
      for (let o = 0; o < outF; o++) {
        let d = 0;
        for (let k = 0; k < r; k++) d += b[o * r + k] * a[k * inF + i];
        merged[i * outF + o] = data[i * outF + o] + (alpha / r) * d;
      }
    }
    tensors.set(name, { shape, data: merged });
  }
  assert.deepEqual(file.names().filter((n) => !used.has(n)), [], "tensors PEFT would not load");
  return { config: base.config, tensors };
}

Deno.test(
  "PEFT export: config, keys and shapes as PEFT writes them, and PEFT's merge reproduces the logits",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const base = await loadGpt2Weights(FIXTURE);
    const { nEmbd: C, nInner, nLayer } = base.config;
    using model = await Gpt2.fromWeights(gpu, base);
    const tokens = batchTokens(seed, base.config.vocabSize);
    const baseLogits = await logitsOf(model, tokens);
    const adapters = attachRandomAdapters(model, seed);
    using _ = { [Symbol.dispose]: () => adapters.forEach((a) => a[Symbol.dispose]()) };
    const adapted = await logitsOf(model, tokens);
    const moved = relativeError(adapted, baseLogits);
    assert(moved > 1e-2, `adapters barely change the logits (${moved}), seed ${seed}`);
    const dir = await tempDir("peft-");
    try {
      await exportPeft(model, `${dir}/peft`, { baseModelName: "gpt2" });
      assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["peft"]);
      const config = JSON.parse(await Deno.readTextFile(`${dir}/peft/adapter_config.json`));
      // c_attn carries q (r 4) and v (r 2): rank 6; c_fc rank 3; every scale folded into B.
      assert.deepEqual(config, {
        alpha_pattern: { c_fc: 3 },
        auto_mapping: null,
        base_model_name_or_path: "gpt2",
        bias: "none",
        fan_in_fan_out: true,
        inference_mode: true,
        init_lora_weights: true,
        layers_pattern: null,
        layers_to_transform: null,
        lora_alpha: 6,
        lora_dropout: 0,
        modules_to_save: null,
        peft_type: "LORA",
        r: 6,
        rank_pattern: { c_fc: 3 },
        revision: null,
        target_modules: ["c_attn", "c_fc"],
        task_type: "CAUSAL_LM",
      });

      using file = await SafetensorsFile.open(`${dir}/peft/adapter_model.safetensors`);
      const expected: Array<[string, number[]]> = [];
      for (let l = 0; l < nLayer; l++) {
        const attn = `base_model.model.transformer.h.${l}.attn.c_attn`;
        const fc = `base_model.model.transformer.h.${l}.mlp.c_fc`;
        expected.push([`${attn}.lora_A.weight`, [6, C]], [`${attn}.lora_B.weight`, [3 * C, 6]]);
        expected.push([`${fc}.lora_A.weight`, [3, C]], [`${fc}.lora_B.weight`, [nInner, 3]]);
      }
      assert.deepEqual(
        file.names().map((n) => [n, file.info(n).shape]).sort(),
        expected.sort(),
      );
      for (const n of file.names()) assert.equal(file.info(n).dtype, "F32");

      // B' of c_attn is block-sparse: s_q B_q at rows [0, C) cols [0, 4), s_v B_v at rows
      // [2C, 3C) cols [4, 6), zero elsewhere (no k part); A' stacks A_q over A_v.
      const [q, v] = adapters;
      const bq = await q.b.read();
      const bv = await v.b.read();
      const b = await file.readFloat32(`${PEFT_PREFIX}h.0.attn.c_attn.lora_B.weight`);
      for (let row = 0; row < 3 * C; row++) {
        for (let col = 0; col < 6; col++) {
          const want = row < C && col < 4
            ? Math.fround(q.scale * bq[row * 4 + col])
            : row >= 2 * C && col >= 4
            ? Math.fround(v.scale * bv[(row - 2 * C) * 2 + col - 4])
            : 0;
          assert.equal(b[row * 6 + col], want, `B'[${row}, ${col}]`);
        }
      }
      const a = await file.readFloat32(`${PEFT_PREFIX}h.0.attn.c_attn.lora_A.weight`);
      assert.deepEqual(a, Float32Array.of(...await q.a.read(), ...await v.a.read()));

      using peft = await Gpt2.fromWeights(gpu, await applyPeft(`${dir}/peft`, base));
      const err = relativeError(await logitsOf(peft, tokens), adapted);
      assert(err < 1e-5, `logits relative error ${err}, seed ${seed}`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test(
  "PEFT export of one layer's v slice targets that module by name with its scale in B",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const base = await loadGpt2Weights(FIXTURE);
    const C = base.config.nEmbd;
    using model = await Gpt2.fromWeights(gpu, base);
    const a = randomArray(2 * C, seed);
    const b = randomArray(C * 2, seed + 1);
    using v = LowRankLinear.create(model.ops.matmul, {
      name: "h.1.attn.c_attn.v",
      inFeatures: C,
      outFeatures: C,
      r: 2,
      loraAlpha: 5,
      maxRows: B * T,
      a,
      b,
    });
    model.attach("h.1.attn.c_attn", v, { colOffset: 2 * C });
    const tokens = batchTokens(seed, base.config.vocabSize);
    const adapted = await logitsOf(model, tokens);
    const dir = await tempDir("peft-one-");
    try {
      await exportPeft(model, dir, { baseModelName: "fixtures/tiny-gpt2" });
      const config = JSON.parse(await Deno.readTextFile(`${dir}/adapter_config.json`));
      assert.deepEqual(
        [config.r, config.lora_alpha, config.target_modules, config.rank_pattern],
        [2, 2, ["h.1.attn.c_attn"], {}],
      );
      assert.equal(config.base_model_name_or_path, "fixtures/tiny-gpt2");
      using file = await SafetensorsFile.open(`${dir}/adapter_model.safetensors`);
      const got = await file.readFloat32(`${PEFT_PREFIX}h.1.attn.c_attn.lora_B.weight`);
      assert.deepEqual(got.subarray(4 * C), b.map((x) => 2.5 * x));
      assert(got.subarray(0, 4 * C).every((x) => x === 0));
      using peft = await Gpt2.fromWeights(gpu, await applyPeft(dir, base));
      const err = relativeError(await logitsOf(peft, tokens), adapted);
      assert(err < 1e-5, `logits relative error ${err}, seed ${seed}`);

      model.detachAll();
      await assert.rejects(
        () => exportPeft(model, dir, { baseModelName: "gpt2" }),
        /Cannot export to PEFT folder ".*": the model has no adapters/,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
