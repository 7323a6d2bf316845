// The training-memory estimate (models/memory_estimate.ts) against what a real run allocates:
// `Model.memory()` (weights by precision, gradients, the arena after a forward and backward), the
// adapter set's bytes, a trained head's gradients and the optimizer's moments, on tiny models of
// every family (GPT-2, Llama, ViT in both layouts) stored in f32 and bf16, kept f32, as stored,
// int8, nf4 or trainable, ViT with and without a new head. The estimate must equal each part to the
// byte; what it leaves out (pool temporaries, uniforms, scratch norm gradients) is not in these
// counts. Then the one-line refusals, the published sizes of Llama-2-7B and ViT-B/16 against a hand
// count, and the size parser.

import assert from "node:assert/strict";
import { join } from "node:path";
import fc from "fast-check";
import { AdapterSet, type AttachConfig, planAdapters } from "../../adapters/attach.ts";
import { type AdapterHead, newHead, trainCheckpointHead } from "../../adapters/head.ts";
import { toFloatDtype } from "../../formats/narrow.ts";
import { Checkpoint, writeSafetensors } from "../../formats/safetensors.ts";
import {
  checkpointDtypes,
  estimateTrainingMemory,
  formatEstimate,
  memoryProblem,
  parseByteSize,
} from "../../models/memory_estimate.ts";
import type { Model, ModelOptions } from "../../models/model.ts";
import { modelShape, parseModelConfig, readModelConfig } from "../../models/registry.ts";
import type { VitConfig } from "../../models/vit_config.ts";
import { runPipeline } from "../../pipelines/run.ts";
import { Optimizer, type ParamGroup } from "../../train/optimizer.ts";
import { freshSeed, GPU_TEST, randomArray, tempDir, testGpu, withTempDir } from "../_util.ts";

/**
 * A copy of a fixture with every tensor stored as `dtype`; `backbone` turns a Hugging Face ViT
 * into what a `ViTModel` checkpoint holds: no classifier, and a pooler.
 */
async function storedAs(
  folder: string,
  dir: string,
  dtype: "F32" | "BF16",
  backbone = false,
): Promise<string> {
  if (dtype === "F32" && !backbone) return folder;
  using ckpt = await Checkpoint.open(folder);
  const tensors = [];
  for (const name of ckpt.names()) {
    if (backbone && name.startsWith("classifier.")) continue;
    const data = await ckpt.readFloat32(name);
    tensors.push({ name, shape: ckpt.info(name).shape, dtype, data: toFloatDtype(data, dtype) });
  }
  if (backbone) {
    const D = ckpt.info("vit.embeddings.cls_token").shape[2];
    for (const [name, shape] of [["weight", [D, D]], ["bias", [D]]] as const) {
      const data = randomArray(shape.reduce((a, b) => a * b, 1), 7);
      tensors.push({
        name: `vit.pooler.dense.${name}`,
        shape: [...shape],
        dtype,
        data: toFloatDtype(data, dtype),
      });
    }
  }
  const out = join(dir, `${folder.split("/").pop()}-${dtype}${backbone ? "-backbone" : ""}`);
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
  /** Training rows (token rows, or images); 3 when absent. */
  B?: number;
  /** A ViT's head: a new one of this many classes, or the checkpoint's trained. */
  head?: number | "train";
  /** A Hugging Face ViT stored as a `ViTModel` backbone (a pooler, no classifier). */
  backbone?: boolean;
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
  {
    name: "ViT (Hugging Face) f32, NOLA-MLP and a new head of 3 classes, AdamW, 3 images",
    folder: "fixtures/tiny-vit",
    dtype: "F32",
    model: { baseFormat: "f32" },
    attach: { method: "nola", targets: ["mlp"], r: 1, k: 32, l: 16, loraAlpha: 1, seed: 5 },
    optimizer: { kind: "adamw" },
    head: 3,
  },
  {
    name: "ViT (timm) stored bf16 in nf4, LoRA on q and v, frozen head, SGD momentum, 5 images",
    folder: "fixtures/tiny-vit-timm",
    dtype: "BF16",
    model: { baseFormat: "nf4", blockSize: 32 },
    attach: {
      method: "lora",
      targets: ["blocks.*.attn.qkv.q", "blocks.*.attn.qkv.v"],
      r: 2,
      loraAlpha: 4,
      seed: 1,
    },
    optimizer: { kind: "sgd", momentum: 0.9 },
    B: 5,
  },
  {
    name: "ViT (Hugging Face) stored bf16 as-stored, LoRA on q and v, the checkpoint's head " +
      "trained, AdamW, 1 image",
    folder: "fixtures/tiny-vit",
    dtype: "BF16",
    model: { baseFormat: "as-stored" },
    attach: {
      method: "lora",
      targets: [
        "encoder.layer.*.attention.attention.query",
        "encoder.layer.*.attention.attention.value",
      ],
      r: 4,
      loraAlpha: 8,
      seed: 2,
    },
    optimizer: { kind: "adamw" },
    B: 1,
    head: "train",
  },
  {
    name: "ViT (timm) int8, NOLA-MLP and a new head of 7 classes, SGD, 8 images (the " +
      "evaluation's shape)",
    folder: "fixtures/tiny-vit-timm",
    dtype: "F32",
    model: { baseFormat: "int8" },
    attach: { method: "nola", targets: ["mlp"], r: 2, k: 8, l: 8, loraAlpha: 2, seed: 4 },
    optimizer: { kind: "sgd" },
    B: 8,
    head: 7,
  },
  {
    name: "ViT (Hugging Face) ViTModel backbone (a pooler, a zero head) f32, every weight and a " +
      "new head of 2 classes trained, AdamW, 3 images",
    folder: "fixtures/tiny-vit",
    dtype: "F32",
    model: { baseFormat: "f32", trainAll: true },
    optimizer: { kind: "adamw" },
    head: 2,
    backbone: true,
  },
];

/** The `[C, H, W]` of a ViT's images. */
function vitInputShape(c: VitConfig): number[] {
  return [c.numChannels, c.imageHeight, c.imageWidth];
}

/**
 * One forward of `B` rows: token rows of length `T`, or `B` random images of `inputShape` (`T`
 * unused); returns the targets.
 */
function forward(
  model: Model,
  shape: { B: number; T: number; inputShape?: number[] },
  seed: number,
): Uint32Array {
  const { B, T, inputShape } = shape;
  if (inputShape) {
    const inputs = randomArray(B * inputShape[0] * inputShape[1] * inputShape[2], seed);
    model.forward({ kind: "labelled", B, inputShape, inputs });
    return Uint32Array.from({ length: B }, (_, i) => (i * 3 + seed) % model.outputs);
  }
  const V = model.outputs;
  const tokens = new Uint32Array(B * T).map((_, i) => (i * 13 + seed) % V);
  model.forward({ B, T, tokens });
  return tokens.map((t) => (t + 1) % V);
}

/** One training step at (B, T); returns the optimizer moments' bytes. */
async function step(
  model: Model,
  set: AdapterSet | undefined,
  c: Case,
  options: { seed: number; inputShape?: number[] },
): Promise<number> {
  const { seed, inputShape } = options;
  const B = c.B ?? 3;
  const T = 5;
  const params: ParamGroup["params"] = set
    ? set.parameters()
    : [...model.params].map(([name, param]) => ({ name, param, grad: model.grads!.get(name)! }));
  using optimizer = await Optimizer.create(model.gpu, [{ ...c.optimizer, lr: 1e-3, params }]);
  set?.zeroGrads();
  set?.prepareStep();
  const targets = forward(model, { B, T, inputShape }, seed);
  model.loss({ targets }, { backward: true });
  model.backward();
  set?.finishBackward();
  optimizer.step(1);
  const state = await optimizer.state();
  return [...state.tensors.values()].reduce((s, t) => s + t.byteLength, 0);
}

for (const c of CASES) {
  Deno.test(`memory estimate equals the allocation: ${c.name}`, GPU_TEST, async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    await withTempDir("memory-estimate", async (dir) => {
      const folder = await storedAs(c.folder, dir, c.dtype, c.backbone);
      const config = await readModelConfig(folder);
      using model = await config.family.load(gpu, folder, config.config, c.model);
      const B = c.B ?? 3;
      const image = model.task === "classification";
      // As the load stage asks: an image's tokens, or the data's seq_len (an image arena
      // ignores it: a T the ViT does not have is given to show that).
      const T = image ? 999 : 5;
      // As the attach stage sizes it: max(8, batch) x seq_len, or x the tokens of an image.
      const maxRows = Math.max(8, B) * (image ? model.maxPositions : T);
      const plans = c.attach ? planAdapters(model, c.attach) : [];
      const estimate = estimateTrainingMemory(config, {
        model: c.model,
        storedDtypes: await checkpointDtypes(folder, config),
        batch: { B, T },
        evaluation: { B: 8, T },
        adapters: { modules: plans, maxRows },
        optimizer: c.optimizer,
        head: c.head === undefined
          ? undefined
          : { classes: c.head === "train" ? undefined : c.head, trainable: true },
      });
      using set = c.attach ? await AdapterSet.attach(model, c.attach, { maxRows }) : undefined;
      let head: AdapterHead | null = null;
      if (typeof c.head === "number") {
        const labels = Array.from({ length: c.head }, (_, i) => `class ${i}`);
        head = newHead(model, labels, { seed });
      } else if (c.head === "train") {
        head = await trainCheckpointHead(model, { source: "the checkpoint's head" });
      }
      set?.setHead(head);
      const inputShape = image ? vitInputShape(config.config as VitConfig) : undefined;
      const moments = await step(model, set, c, { seed, inputShape });
      // A loss evaluation of 8 rows: a second arena, forward only (the same one at B = 8).
      forward(model, { B: 8, T, inputShape }, seed + 1);
      await model.gpu.sync();
      const real = model.memory();
      // A head trained beside the adapters keeps its gradients apart from the model's weights'.
      const headGrads = head?.grads && !c.model.trainAll
        ? head.grads.weight.byteLength + head.grads.bias.byteLength
        : 0;
      if (c.head !== undefined) assert(head?.grads, "the head trains");
      assert.deepEqual(estimate.weightsByPrecision, real.weightsByPrecision);
      assert.equal(estimate.weights, real.weights);
      assert.equal(estimate.gradients, real.gradients + headGrads);
      assert.equal(estimate.activations + estimate.evaluation, real.activations);
      if (B === 8) assert.equal(estimate.evaluation, 0);
      else assert(estimate.evaluation > 0 && estimate.evaluation < estimate.activations * 8 / B);
      assert.equal(estimate.adapters, set?.bytes ?? 0);
      // The moments, and the optimizer's two one-value tensors (norm and scale).
      assert.equal(estimate.optimizer, moments + 8);
      assert.equal(
        estimate.total,
        real.weights + real.gradients + headGrads + real.activations + (set?.bytes ?? 0) +
          moments + 8,
      );
      const kinds = Object.values(estimate.weightsByKind).reduce((s, b) => s + b!, 0);
      assert.equal(kinds, estimate.weights);
      if (c.dtype === "BF16" && c.model.baseFormat !== "f32" && !image) {
        assert(estimate.weightsByPrecision.bf16 > 0, "the 16-bit embedding is counted");
      }
      if (image && c.dtype === "BF16") {
        // A ViT keeps only its adaptable linears packed or 16-bit: the rest is f32.
        const packed = c.model.baseFormat === "as-stored" ? "bf16" : c.model.baseFormat!;
        assert.deepEqual(Object.keys(estimate.weightsByPrecision).sort(), ["f32", packed].sort());
        assert.equal(estimate.weightsByPrecision[packed], estimate.weightsByKind.linear);
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

// google/vit-base-patch16-224's config: 224 x 224 images in 16 x 16 patches, 1000 classes.
const VIT_B16 = {
  model_type: "vit",
  hidden_size: 768,
  num_hidden_layers: 12,
  num_attention_heads: 12,
  intermediate_size: 3072,
  image_size: 224,
  patch_size: 16,
  num_channels: 3,
  num_labels: 1000,
};

Deno.test("memory estimate of ViT-B/16: 86.6M parameters by hand, in either layout", () => {
  // By hand: D 768, MLP 3072, 12 blocks, 14 x 14 = 196 patches + the class token, 1000 classes.
  const D = 768;
  const patch = D * 3 * 16 * 16 + D;
  const cls = D;
  const position = 197 * D;
  const block = {
    linear: 4 * D * D + 2 * D * 3072, // q, k, v, the output projection, fc1, fc2
    bias: 4 * D + 3072 + D, // their biases
    norm: 2 * D, // the two norms' weights
    normBias: 2 * D, // and biases
  };
  const head = D * 1000 + 1000;
  const finalNorm = 2 * D;
  const parameters = patch + cls + position +
    12 * (block.linear + block.bias + block.norm + block.normBias) + finalNorm + head;
  // The published count of google/vit-base-patch16-224 (ViTForImageClassification).
  assert.equal(parameters, 86_567_656);
  const timm = { architecture: "vit_base_patch16_224", num_classes: 1000 };
  for (const json of [VIT_B16, timm]) {
    const config = parseModelConfig(json, "<vit-b16>");
    const f32 = estimateTrainingMemory(config);
    assert.equal(f32.weights, 4 * parameters); // 346 MB
    assert.deepEqual(f32.weightsByKind, {
      linear: 4 * 12 * block.linear,
      embedding: 4 * cls,
      patch: 4 * patch,
      head: 4 * head,
      position: 4 * position,
      norm: 4 * (12 * 2 * D + D),
      bias: 4 * (12 * (block.bias + block.normBias) + D),
    });
    // nf4 packs the 72 block linears only: 4 bits a weight and a byte an absmax each 64, plus
    // the second-level scales of double quantization.
    const nf4 = estimateTrainingMemory(config, { model: { baseFormat: "nf4" } });
    assert.equal(nf4.weights - nf4.weightsByKind.linear!, 4 * (parameters - 12 * block.linear));
    const bits = 8 * nf4.weightsByKind.linear! / (12 * block.linear);
    assert(bits > 4.125 && bits < 4.14, `${bits} bits a weight`);
  }
});

Deno.test("memory estimate of ViT-B/16 NOLA-MLP few-shot: a new head, images as loss rows", () => {
  const config = parseModelConfig(VIT_B16, "<vit-b16>");
  const D = 768;
  const I = 3072;
  const modules = Array.from({ length: 12 }, () => [
    { inFeatures: D, outFeatures: I, r: 1, k: 1024, l: 1024, method: "nola" as const },
    { inFeatures: I, outFeatures: D, r: 1, k: 1024, l: 1024, method: "nola" as const },
  ]).flat();
  const B = 10;
  const at = (T: number, head?: { classes?: number; trainable: boolean }) =>
    estimateTrainingMemory(config, {
      batch: { B, T },
      adapters: { modules, maxRows: B * 197 },
      optimizer: { kind: "adamw" },
      head,
    });
  const frozen = at(197);
  // The sequence length a text pipeline would give changes nothing: an image is 197 tokens.
  assert.deepEqual(at(1), frozen);
  const fresh = at(197, { classes: 10, trainable: true });
  // A head of 10 classes replaces the 1000: (1000 - 10) x 769 values fewer.
  assert.equal(frozen.weights - fresh.weights, 4 * 990 * 769);
  assert.equal(fresh.gradients, 4 * 10 * 769);
  // AdamW: two moments for each of the 24 x 2048 coefficients and the head's values.
  assert.equal(frozen.optimizer, 4 * 2 * 24 * 2048 + 8);
  assert.equal(fresh.optimizer, 4 * 2 * (24 * 2048 + 10 * 769) + 8);
  // The logits are one row of the classes (rounded up to 4) an image, not one a token.
  const logits = (e: typeof frozen) =>
    e.activations - at(197, { classes: 1, trainable: false })
      .activations;
  assert.equal(logits(frozen) - logits(fresh), 4 * B * (1000 - 12));
  // By hand at B = 10: 197 tokens, 196 patches of 768 values; per block 7 + 3 (q, k, v) tensors
  // of tokens x D, two of tokens x 3072, four of a value a token, and the attention's lse.
  const rows = B * 197;
  const perBlock = 10 * rows * D + 2 * rows * I + 4 * rows + B * 12 * 197;
  const forward = B * 3 * 224 * 224 + 2 * B * 196 * D + rows * D + 12 * perBlock + 2 * B * D +
    3 * B + B * 1000 + 4 * B;
  const backward = 6 * rows * D + 2 * rows * I + 2 * B * D + B * 196 * D;
  assert.equal(frozen.activations, 4 * (forward + backward));
});

Deno.test("memory estimate refuses a head for a family without one, and a head of no class", async () => {
  const gpt2 = await readModelConfig("fixtures/tiny-gpt2");
  assert.throws(
    () => estimateTrainingMemory(gpt2, { head: { classes: 3, trainable: true } }),
    /^RangeError: Cannot estimate a classifier head for model_type "gpt2": it has no classifier head$/,
  );
  const vit = parseModelConfig(VIT_B16, "<vit-b16>");
  assert.throws(
    () => estimateTrainingMemory(vit, { head: { classes: 0, trainable: true } }),
    /^RangeError: A head needs a positive number of classes, got 0$/,
  );
});

Deno.test("memoryProblem on a ViT asks for a smaller batch, never a shorter seq_len", () => {
  const config = parseModelConfig(VIT_B16, "<vit-b16>");
  const roomy = { maxBufferSize: 2 ** 31 - 1, maxStorageBufferBindingSize: 2 ** 30 };
  const e = estimateTrainingMemory(config, {
    model: { baseFormat: "nf4" },
    batch: { B: 64, T: 197 },
    evaluation: { B: 8, T: 197 },
  });
  assert.equal(e.fixedLength, true);
  const over = memoryProblem(e, { ...roomy, maxMemory: 1e6 })!;
  assert.match(over.message, /^training needs about [\d,]+ bytes of GPU memory \(weights /);
  assert.equal(
    over.hint,
    "lower the train stage's batch_size (an image's tokens are fixed by the model's image and " +
      "patch sizes), or raise --max-memory",
  );
  // 64 images x 197 tokens x 3072 of one block's fc1 output: 155 MB in one buffer.
  const big = memoryProblem(e, { ...roomy, maxBufferSize: 2 ** 27 })!;
  assert.match(big.message, /^"activations fch, fchGelu" would take 154,927,104 bytes/);
  assert.doesNotMatch(big.hint, /seq_len/);
  for (const p of [over, big]) assert(!p.message.includes("\n"));
  const text = estimateTrainingMemory(parseModelConfig(LLAMA_2_7B, "<7b>"));
  assert.equal(text.fixedLength, false);
});

Deno.test(
  "the load stage estimates a ViT few-shot run: images of the model's tokens, the data's classes",
  GPU_TEST,
  async () => {
    const dir = await tempDir("vit-estimate");
    try {
      const path = `${dir}/p.yaml`;
      await Deno.writeTextFile(
        path,
        `version: 1
name: vit-estimate
out: ${dir}/run
stages:
  - kind: load
    model: ../../../fixtures/tiny-vit
  - kind: data
    format: images
    train: ../../../fixtures/fashion-fewshot/train-images-idx3-ubyte.gz
    test: ../../../fixtures/fashion-fewshot/t10k-images-idx3-ubyte.gz
    class_ids: [5, 7, 9]
    shots: 2
  - kind: attach
    method: nola
    targets: [mlp]
    r: 1
    k: 16
    l: 8
    head: new
  - kind: train
    steps: 1
    batch_size: 3
    lr: 1.0e-2
  - kind: evaluate
    split: test
    metrics: [loss]
    max_examples: 16
`,
      );
      const lines: string[] = [];
      await runPipeline(path, { say: (l) => lines.push(l) });
      const config = await readModelConfig("fixtures/tiny-vit");
      // What the attach stage allocates: rows of max(8, batch) images of 10 tokens (9 patches and
      // the class token), and a new head of the data's 3 classes, trained.
      const plan = planAdapters(modelShape(config), {
        method: "nola",
        targets: ["mlp"],
        r: 1,
        k: 16,
        l: 8,
        loraAlpha: 1,
        seed: 0,
      });
      const want = estimateTrainingMemory(config, {
        model: { baseFormat: "f32", trainAll: false },
        storedDtypes: await checkpointDtypes("fixtures/tiny-vit", config),
        batch: { B: 3, T: 10 },
        evaluation: { B: 8, T: 10 },
        adapters: { modules: plan, maxRows: 8 * 10 },
        optimizer: { kind: "adamw" },
        head: { classes: 3, trainable: true },
      });
      assert(
        lines.includes(`GPU memory estimate, batch 3 x 10: ${formatEstimate(want)}`),
        lines[0],
      );
      assert(want.gradients === 4 * 3 * 25 && want.evaluation > 0);
      const summary = JSON.parse(await Deno.readTextFile(`${dir}/run/summary.json`));
      assert.equal(summary.load.estimate_bytes, want.total);
      assert.equal(summary.load.estimate_adapter_bytes, want.adapters);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
