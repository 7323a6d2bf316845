// The training-memory estimate (models/memory_estimate.ts) against what a real run allocates:
// `Model.memory()` (weights by precision, gradients, the arena after a forward and backward), the
// adapter set's bytes and the optimizer's moments, on tiny models of both families stored in f32
// and bf16, kept f32, nf4 or trainable. The estimate must equal each part to the byte; what it
// leaves out (pool temporaries, uniforms, scratch norm gradients) is not in these counts. Then the
// one-line refusals, the published size of Llama-2-7B, and the size parser.

import assert from "node:assert/strict";
import { join } from "node:path";
import fc from "fast-check";
import { AdapterSet, type AttachConfig, planAdapters } from "../../adapters/attach.ts";
import { toFloatDtype } from "../../formats/narrow.ts";
import { Checkpoint, writeSafetensors } from "../../formats/safetensors.ts";
import {
  checkpointDtypes,
  estimateTrainingMemory,
  memoryProblem,
  parseByteSize,
} from "../../models/memory_estimate.ts";
import type { Model, ModelOptions } from "../../models/model.ts";
import { parseModelConfig, readModelConfig } from "../../models/registry.ts";
import { Optimizer, type ParamGroup } from "../../train/optimizer.ts";
import { GPU_TEST, testGpu, withTempDir } from "../_util.ts";

/** A copy of a fixture with every tensor stored as `dtype`. */
async function storedAs(folder: string, dir: string, dtype: "F32" | "BF16"): Promise<string> {
  if (dtype === "F32") return folder;
  using ckpt = await Checkpoint.open(folder);
  const tensors = [];
  for (const name of ckpt.names()) {
    const data = await ckpt.readFloat32(name);
    tensors.push({ name, shape: ckpt.info(name).shape, dtype, data: toFloatDtype(data, dtype) });
  }
  const out = join(dir, `${folder.split("/").pop()}-${dtype}`);
  await Deno.mkdir(out, { recursive: true });
  await Deno.copyFile(join(folder, "config.json"), join(out, "config.json"));
  await writeSafetensors(join(out, "model.safetensors"), tensors, { format: "pt" });
  return out;
}

interface Case {
  name: string;
  folder: string;
  dtype: "F32" | "BF16";
  model: ModelOptions;
  attach?: AttachConfig;
  optimizer: { kind: "adamw" | "sgd"; momentum?: number };
}

const CASES: Case[] = [
  {
    name: "GPT-2 f32, NOLA on q and v, AdamW",
    folder: "fixtures/tiny-gpt2",
    dtype: "F32",
    model: { baseFormat: "f32" },
    attach: {
      method: "nola",
      targets: ["h.*.attn.c_attn.q", "h.*.attn.c_attn.v"],
      r: 4,
      k: 32,
      l: 24,
      loraAlpha: 4,
      seed: 1,
    },
    optimizer: { kind: "adamw" },
  },
  {
    name: "GPT-2 stored bf16 in nf4 (16-bit embedding), LoRA on every linear, SGD with momentum",
    folder: "fixtures/tiny-gpt2",
    dtype: "BF16",
    model: { baseFormat: "nf4" },
    attach: { method: "lora", targets: ["all-linear"], r: 2, loraAlpha: 4, seed: 1 },
    optimizer: { kind: "sgd", momentum: 0.9 },
  },
  {
    name: "Llama stored bf16 in nf4 (block 32, no double quantization), NOLA on every linear",
    folder: "fixtures/tiny-llama",
    dtype: "BF16",
    model: { baseFormat: "nf4", blockSize: 32, doubleQuant: false },
    attach: { method: "nola", targets: ["all-linear"], r: 2, k: 16, l: 16, loraAlpha: 2, seed: 3 },
    optimizer: { kind: "adamw" },
  },
  {
    name: "Llama stored bf16 as-stored, NOLA on the MLP",
    folder: "fixtures/tiny-llama",
    dtype: "BF16",
    model: { baseFormat: "as-stored" },
    attach: {
      method: "nola",
      targets: ["layers.*.mlp.*"],
      r: 4,
      k: 8,
      l: 8,
      loraAlpha: 4,
      seed: 3,
    },
    optimizer: { kind: "adamw" },
  },
  {
    name: "Llama f32, every weight trained, AdamW",
    folder: "fixtures/tiny-llama",
    dtype: "F32",
    model: { baseFormat: "f32", trainAll: true },
    optimizer: { kind: "adamw" },
  },
];

/** One training step at (B, T); returns the optimizer moments' bytes. */
async function step(model: Model, set: AdapterSet | undefined, c: Case): Promise<number> {
  const B = 3;
  const T = 5;
  const params: ParamGroup["params"] = set
    ? set.parameters()
    : [...model.params].map(([name, param]) => ({ name, param, grad: model.grads!.get(name)! }));
  using optimizer = await Optimizer.create(model.gpu, [{ ...c.optimizer, lr: 1e-3, params }]);
  const V = model.outputs;
  const tokens = new Uint32Array(B * T).map((_, i) => (i * 13 + 5) % V);
  set?.zeroGrads();
  set?.prepareStep();
  model.forward({ B, T, tokens });
  model.loss({ targets: tokens.map((t) => (t + 1) % V) }, { backward: true });
  model.backward();
  set?.finishBackward();
  optimizer.step(1);
  const state = await optimizer.state();
  return [...state.tensors.values()].reduce((s, t) => s + t.byteLength, 0);
}

for (const c of CASES) {
  Deno.test(`memory estimate equals the allocation: ${c.name}`, GPU_TEST, async () => {
    const gpu = await testGpu();
    await withTempDir("memory-estimate", async (dir) => {
      const folder = await storedAs(c.folder, dir, c.dtype);
      const config = await readModelConfig(folder);
      using model = await config.family.load(gpu, folder, config.config, c.model);
      const maxRows = 8 * 5; // as the attach stage sizes it: max(8, batch) x seq_len
      const plans = c.attach ? planAdapters(model, c.attach) : [];
      const estimate = estimateTrainingMemory(config, {
        model: c.model,
        storedDtypes: await checkpointDtypes(folder, config),
        batch: { B: 3, T: 5 },
        evaluation: { B: 8, T: 5 },
        adapters: { modules: plans, maxRows },
        optimizer: c.optimizer,
      });
      using set = c.attach ? await AdapterSet.attach(model, c.attach, { maxRows }) : undefined;
      const moments = await step(model, set, c);
      // A loss evaluation of 8 rows: a second arena, forward only.
      model.forward({ B: 8, T: 5, tokens: new Uint32Array(40).map((_, i) => i % model.outputs) });
      await model.gpu.sync();
      const real = model.memory();
      assert.deepEqual(estimate.weightsByPrecision, real.weightsByPrecision);
      assert.equal(estimate.weights, real.weights);
      assert.equal(estimate.gradients, real.gradients);
      assert.equal(estimate.activations + estimate.evaluation, real.activations);
      assert(estimate.evaluation > 0 && estimate.evaluation < estimate.activations * 8 / 3);
      assert.equal(estimate.adapters, set?.bytes ?? 0);
      // The moments, and the optimizer's two one-value tensors (norm and scale).
      assert.equal(estimate.optimizer, moments + 8);
      assert.equal(
        estimate.total,
        real.weights + real.gradients + real.activations + (set?.bytes ?? 0) + moments + 8,
      );
      const kinds = Object.values(estimate.weightsByKind).reduce((s, b) => s + b!, 0);
      assert.equal(kinds, estimate.weights);
      if (c.dtype === "BF16" && c.model.baseFormat !== "f32") {
        assert(estimate.weightsByPrecision.bf16 > 0, "the 16-bit embedding is counted");
      }
    });
  });
}

const LLAMA_2_7B = {
  model_type: "llama",
  hidden_size: 4096,
  intermediate_size: 11008,
  num_hidden_layers: 32,
  num_attention_heads: 32,
  num_key_value_heads: 32,
  vocab_size: 32000,
  max_position_embeddings: 4096,
  rms_norm_eps: 1e-5,
  tie_word_embeddings: false,
};

Deno.test("memory estimate of Llama-2-7B: its published size in f32, under 0.30x in nf4", () => {
  const config = parseModelConfig(LLAMA_2_7B, "<7b>");
  const f32 = estimateTrainingMemory(config);
  // meta-llama/Llama-2-7b-hf has 6,738,415,616 parameters.
  assert.equal(f32.weights, 4 * 6_738_415_616);
  assert.equal(f32.total, f32.weights);
  const nf4 = estimateTrainingMemory(config, { model: { baseFormat: "nf4" } });
  assert(nf4.weights / f32.weights < 0.3, `${nf4.weights / f32.weights}`);
  // The embedding and the head stay f32 (no checkpoint dtype): 2 x 32000 x 4096 x 4 bytes.
  assert.equal(nf4.weightsByKind.embedding! + nf4.weightsByKind.head!, 2 * 32000 * 4096 * 4);
  // Every linear: 4.127 bits a weight (nf4 and a byte an absmax every 64 weights, plus a few).
  const linear = 6_738_415_616 - 2 * 32000 * 4096 - 65 * 4096;
  const bits = 8 * nf4.weightsByKind.linear! / linear;
  assert(Math.abs(bits - 4.127) < 0.001, `${bits} bits a weight`);
});

Deno.test("memoryProblem names the buffer, the binding or the total that does not fit", () => {
  const config = parseModelConfig(LLAMA_2_7B, "<7b>");
  const at = (batch: { B: number; T: number }, model: ModelOptions = { baseFormat: "nf4" }) =>
    estimateTrainingMemory(config, { model, batch });
  const roomy = { maxBufferSize: 2 ** 31 - 1, maxStorageBufferBindingSize: 2 ** 27 };
  assert.equal(memoryProblem(at({ B: 1, T: 16 }), roomy), undefined);
  // Logits of 8 x 4096 tokens x 32000: 4.2 GB in one buffer.
  const big = memoryProblem(at({ B: 8, T: 4096 }), roomy)!;
  assert.match(big.message, /^"activations logits" would take 4,194,304,000 bytes in one buffer/);
  assert.match(big.message, /over this adapter's maxBufferSize of 2,147,483,647$/);
  assert.match(big.hint, /batch_size or the data stage's seq_len/);
  // An f32 embedding is 524 MB: over a 256 MiB buffer limit.
  const table = memoryProblem(at({ B: 1, T: 16 }, { baseFormat: "f32" }), {
    ...roomy,
    maxBufferSize: 2 ** 28,
  })!;
  assert.match(table.message, /^"embed_tokens\.weight" would take 524,288,000 bytes/);
  assert.match(table.hint, /quantize_base: nf4/);
  // The absmax codes of an nf4 gate_proj, one byte each 64 weights, are read in one binding.
  const narrow = memoryProblem(at({ B: 1, T: 16 }), {
    ...roomy,
    maxStorageBufferBindingSize: 100_000,
  })!;
  assert.match(
    narrow.message,
    /^"layers\.0\.mlp\.gate_proj\.weight absmaxes" needs 704,512 bytes in one storage binding/,
  );
  assert.match(narrow.hint, /larger block_size/);
  const total = at({ B: 1, T: 16 }).total;
  const over = memoryProblem(at({ B: 1, T: 16 }), { ...roomy, maxMemory: total - 1 })!;
  assert.match(over.message, /^training needs about [\d,]+ bytes of GPU memory \(weights /);
  assert.match(over.message, /over the [\d,]+ of --max-memory$/);
  assert.match(over.hint, /quantize_base: nf4/);
  assert.equal(memoryProblem(at({ B: 1, T: 16 }), { ...roomy, maxMemory: total }), undefined);
  for (const p of [big, table, narrow, over]) assert(!p.message.includes("\n"));
});

Deno.test("parseByteSize reads decimal and binary units, and refuses anything else", () => {
  assert.equal(parseByteSize("6GB"), 6e9);
  assert.equal(parseByteSize("6GiB"), 6 * 2 ** 30);
  assert.equal(parseByteSize(" 512 mb "), 512e6);
  assert.equal(parseByteSize("1.5e9"), 1.5e9);
  assert.equal(parseByteSize("4096"), 4096);
  const units = { B: 1, KB: 1e3, MB: 1e6, GB: 1e9, KiB: 1024, MiB: 2 ** 20, GiB: 2 ** 30 };
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 4000 }),
      fc.constantFrom(...Object.keys(units)),
      (v, u) => parseByteSize(`${v}${u}`) === v * units[u as keyof typeof units],
    ),
  );
  for (const bad of ["", "6 XB", "-1GB", "0", "GB", "six GB", "1e400"]) {
    assert.throws(() => parseByteSize(bad), /^RangeError: Invalid size ".*": expected a positive/);
  }
});
