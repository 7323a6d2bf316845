// Frozen bases kept packed inside the models (ModelOptions.baseFormat): 16-bit as stored, int8
// and nf4 quantized on the GPU at load. The references are the same family's f32 model built from
// weights packed and unpacked on the host (formats/base_quant.ts, bitsandbytes' layout), and the
// f32 model of the original checkpoint.

import assert from "node:assert/strict";
import { join } from "node:path";
import { AdapterSet } from "../../adapters/attach.ts";
import { mergeAdapters, writeMergedFolder } from "../../adapters/merge.ts";
import { packWeight, unpackWeight } from "../../formats/base_quant.ts";
import { toFloatDtype } from "../../formats/narrow.ts";
import { Checkpoint, SafetensorsFile, writeSafetensors } from "../../formats/safetensors.ts";
import type { Gpu } from "../../kernels/gpu.ts";
import { Gpt2 } from "../../models/gpt2.ts";
import { loadGpt2Weights } from "../../models/gpt2_weights.ts";
import { Llama } from "../../models/llama.ts";
import { loadLlamaWeights } from "../../models/llama_weights.ts";
import type { Model, ModelOptions } from "../../models/model.ts";
import { loadModel } from "../../models/registry.ts";
import { Optimizer } from "../../train/optimizer.ts";
import { freshSeed, GPU_TEST, relativeError, rng, testGpu, withTempDir } from "../_util.ts";

const FIXTURES = ["fixtures/tiny-gpt2", "fixtures/tiny-llama", "fixtures/tiny-qwen2"];
type Quantized = "int8" | "nf4";

/** Random token ids (and next-token targets) below 300, the fixtures' vocabulary. */
function randomBatch(seed: number, B = 2, T = 16) {
  const next = rng(seed);
  const tokens = Uint32Array.from({ length: B * T }, () => Math.floor(next() * 300));
  const targets = Uint32Array.from({ length: B * T }, () => Math.floor(next() * 300));
  return { B, T, tokens, targets };
}

/** The host weights of a fixture and whether its linears are stored `[in, out]`. */
async function hostWeights(folder: string) {
  if (folder.endsWith("gpt2")) {
    const w = await loadGpt2Weights(folder);
    const linears = new Set(
      [...w.tensors.keys()].filter((n) => /\.(c_attn|c_proj|c_fc)\.weight$/.test(n)),
    );
    return { weights: w, linears, conv: true };
  }
  const w = await loadLlamaWeights(folder);
  const linears = new Set(
    [...w.tensors.keys()].filter((n) => /_proj\.weight$/.test(n) && n.startsWith("layers.")),
  );
  return { weights: w, linears, conv: false };
}

/** The f32 model whose linear weights are the host reference's packed-then-unpacked values. */
async function dequantizedReference(
  gpu: Gpu,
  folder: string,
  options: { format: Quantized; blockSize?: number; doubleQuant?: boolean },
): Promise<Model> {
  const { weights, linears, conv } = await hostWeights(folder);
  for (const name of linears) {
    const t = weights.tensors.get(name)!;
    const [rows, cols] = conv ? [t.shape[1], t.shape[0]] : [t.shape[0], t.shape[1]];
    const back = unpackWeight(packWeight(t.data, [rows, cols], { ...options, transposed: conv }));
    const data = conv ? transpose(back, rows, cols) : back;
    weights.tensors.set(name, { shape: t.shape, data });
  }
  return conv
    ? Gpt2.fromWeights(gpu, weights as Awaited<ReturnType<typeof loadGpt2Weights>>)
    : Llama.fromWeights(gpu, weights as Awaited<ReturnType<typeof loadLlamaWeights>>);
}

/** `[rows, cols]` to `[cols, rows]`. */
function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c];
  return out;
}

async function logits(model: Model, batch: { B: number; T: number; tokens: Uint32Array }) {
  const acts = model.forward({ B: batch.B, T: batch.T, tokens: batch.tokens });
  const stride = acts.logitsStride;
  const all = await acts.logits.read() as Float32Array;
  const V = model.outputs;
  const out = new Float32Array(batch.B * batch.T * V);
  for (let i = 0; i < batch.B * batch.T; i++) {
    out.set(all.subarray(i * stride, i * stride + V), i * V);
  }
  return out;
}

async function meanLoss(model: Model, batch: ReturnType<typeof randomBatch>): Promise<number> {
  model.forward({ B: batch.B, T: batch.T, tokens: batch.tokens });
  const losses = await model.loss({ targets: batch.targets }).read() as Float32Array;
  return losses.reduce((s, v) => s + v, 0) / losses.length;
}

/** The largest |a - b| over the largest |b|. */
function maxRelative(a: Float32Array, b: Float32Array): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return diff / scale;
}

// Loose bounds on the logits of a quantized base against the original f32 base (max |Δ| over the
// largest |logit|), measured on the three fixtures with random tokens: int8 0.0022-0.0048, nf4
// 0.034-0.103. The bounds leave a margin of about 2.5-3x; a wrong block, scale or nibble order
// moves the logits by as much as the logits themselves.
const VS_F32: Record<Quantized, number> = { int8: 0.015, nf4: 0.25 };

for (const folder of FIXTURES) {
  for (const format of ["int8", "nf4"] as const) {
    Deno.test(
      `${folder} ${format}: logits equal the f32 model of the host-dequantized weights`,
      GPU_TEST,
      async () => {
        const gpu = await testGpu();
        const seed = freshSeed();
        const batch = randomBatch(seed);
        using packed = await loadModel(gpu, folder, { baseFormat: format });
        using reference = await dequantizedReference(gpu, folder, { format });
        using f32 = await loadModel(gpu, folder);
        const sites = new Set(packed.sites.map((s) => s.linear));
        for (const linear of sites) {
          const w = packed.linearWeight(linear)!;
          assert.equal(w.weight, null, linear);
          assert.equal(w.packed!.layout.format, format);
          // The GPU's packing, unpacked, is the host's bit for bit.
          using back = w.dequantize!();
          const ref = reference.linearWeight(linear)!.weight!;
          assert.deepEqual(await back.read(), await ref.read(), `${linear} (seed ${seed})`);
        }
        assert.equal(packed.summary().parameters, f32.summary().parameters);
        const got = await logits(packed, batch);
        const want = await logits(reference, batch);
        // Same weights, same f32 accumulation up to the order of the sums.
        assert(relativeError(got, want) < 2e-6, `vs dequantized ${relativeError(got, want)}`);
        const vsF32 = maxRelative(got, await logits(f32, batch));
        assert(vsF32 < VS_F32[format], `${format} vs f32: ${vsF32} (seed ${seed})`);
        assert(vsF32 > 0, "a quantized base cannot give the f32 logits exactly");
      },
    );
  }

  Deno.test(
    `${folder} nf4: NOLA coefficient gradients equal those with the dequantized f32 base`,
    GPU_TEST,
    async () => {
      const gpu = await testGpu();
      const seed = freshSeed();
      const batch = randomBatch(seed);
      const grads = async (model: Model) => {
        using set = await AdapterSet.attach(model, {
          method: "nola",
          targets: ["all-linear"],
          r: 2,
          k: 8,
          loraAlpha: 4,
          seed: seed % 1000,
          // Nonzero coefficients, so the gradient flows through both factors.
          init: "uniform-coeffs",
        }, { maxRows: batch.B * batch.T });
        set.zeroGrads();
        set.prepareStep();
        model.forward(batch);
        model.loss({ targets: batch.targets }, { backward: true });
        model.backward();
        set.finishBackward();
        const out = new Map<string, Float32Array>();
        for (const p of set.parameters()) out.set(p.name, await p.grad.read() as Float32Array);
        set.detach();
        return out;
      };
      using packed = await loadModel(gpu, folder, { baseFormat: "nf4" });
      using reference = await dequantizedReference(gpu, folder, { format: "nf4" });
      const got = await grads(packed);
      const want = await grads(reference);
      assert.deepEqual([...got.keys()], [...want.keys()]);
      const all = (m: Map<string, Float32Array>) =>
        Float32Array.from([...m.values()].flatMap((g) => [...g]));
      const err = relativeError(all(got), all(want));
      assert(err < 1e-5, `coefficient gradients: ${err} (seed ${seed})`);
      assert(all(want).some((v) => v !== 0));
    },
  );
}

for (const folder of FIXTURES) {
  Deno.test(
    `${folder} nf4: cached decoding gives the full forward's logits`,
    GPU_TEST,
    async () => {
      const gpu = await testGpu();
      const { tokens } = randomBatch(freshSeed(), 1, 6);
      using model = await loadModel(gpu, folder, { baseFormat: "nf4" });
      const full = await logits(model, { B: 1, T: 6, tokens });
      const V = model.outputs;
      using cache = model.newCache(8);
      // A prompt of 4, then one token at a time: later rows are written at the cache's offset.
      const step = async (begin: number, end: number) => {
        const T = end - begin;
        const acts = model.forward({ B: 1, T, tokens: tokens.slice(begin, end) }, cache);
        const all = await acts.logits.read() as Float32Array;
        return Array.from(
          { length: T * V },
          (_, j) => all[Math.floor(j / V) * acts.logitsStride + (j % V)],
        );
      };
      const stepped = Float32Array.from([
        ...await step(0, 4),
        ...await step(4, 5),
        ...await step(5, 6),
      ]);
      const err = relativeError(stepped, full);
      assert(err < 1e-5, `${folder}: cached vs full ${err}`);
    },
  );
}

Deno.test("nf4: NOLA training on a quantized base lowers the loss", GPU_TEST, async () => {
  const gpu = await testGpu();
  for (const folder of ["fixtures/tiny-gpt2", "fixtures/tiny-llama"]) {
    using model = await loadModel(gpu, folder, { baseFormat: "nf4" });
    const batch = randomBatch(freshSeed(), 2, 16);
    using set = await AdapterSet.attach(model, {
      method: "nola",
      targets: ["all-linear"],
      r: 2,
      k: 16,
      loraAlpha: 4,
      seed: 3,
    }, { maxRows: batch.B * batch.T });
    using optimizer = await Optimizer.create(gpu, [{
      kind: "adamw",
      lr: 0.05,
      params: set.parameters(),
    }]);
    set.prepareStep();
    const before = await meanLoss(model, batch);
    for (let step = 0; step < 5; step++) {
      set.zeroGrads();
      set.prepareStep();
      model.forward(batch);
      model.loss({ targets: batch.targets }, { backward: true });
      model.backward();
      set.finishBackward();
      optimizer.step(1);
    }
    set.prepareStep();
    const after = await meanLoss(model, batch);
    assert(after < before, `${folder}: loss ${before} -> ${after}`);

    // Merging writes the dequantized base plus the delta: the folder loads back in f32 with the
    // adapted model's logits (up to rounding to the checkpoint's f32).
    const adapted = await logits(model, batch);
    await withTempDir("base-format-merge", async (dir) => {
      await writeMergedFolder(model, folder, join(dir, "merged"));
      using merged = await loadModel(gpu, join(dir, "merged"));
      const err = relativeError(await logits(merged, batch), adapted);
      assert(err < 1e-5, `${folder}: merged folder vs adapted nf4 model: ${err}`);
    });
    assert.throws(() => mergeAdapters(model), /in place: its weight is kept nf4.*baseFormat "f32"/);
    await assert.rejects(
      () => model.save("out/tmp/never-written"),
      /Cannot save .* kept nf4 .*writeMergedFolder.*baseFormat "f32"/,
    );
  }
});

/** Writes a copy of a fixture with every float tensor stored as `dtype`. */
async function halfCopy(folder: string, dir: string, dtype: "F16" | "BF16"): Promise<string> {
  const out = join(dir, dtype);
  await Deno.mkdir(out, { recursive: true });
  await Deno.copyFile(join(folder, "config.json"), join(out, "config.json"));
  using ckpt = await Checkpoint.open(folder);
  const tensors = [];
  for (const name of ckpt.names()) {
    const { shape } = ckpt.info(name);
    tensors.push({ name, dtype, shape, data: toFloatDtype(await ckpt.readFloat32(name), dtype) });
  }
  await writeSafetensors(join(out, "model.safetensors"), tensors, { format: "pt" });
  return out;
}

for (const folder of FIXTURES) {
  Deno.test(
    `${folder} as-stored: f16 and bf16 checkpoints stay 16-bit and match f32 loading`,
    GPU_TEST,
    async () => {
      const gpu = await testGpu();
      const batch = randomBatch(freshSeed());
      await withTempDir("base-format-half", async (dir) => {
        for (const dtype of ["F16", "BF16"] as const) {
          const copy = await halfCopy(folder, dir, dtype);
          using stored = await loadModel(gpu, copy, { baseFormat: "as-stored" });
          using wide = await loadModel(gpu, copy);
          const linear = stored.sites[0].linear;
          assert.equal(stored.linearWeight(linear)!.packed?.layout.format, dtype.toLowerCase());
          using back = stored.linearWeight(linear)!.dequantize!();
          assert.deepEqual(await back.read(), await wide.linearWeight(linear)!.weight!.read());
          const err = relativeError(await logits(stored, batch), await logits(wide, batch));
          assert(err < 2e-6, `${dtype}: as-stored vs f32 ${err}`);
          const bytes = (m: Model) => m.memory().weights;
          assert(bytes(stored) < bytes(wide), `${bytes(stored)} vs ${bytes(wide)}`);
        }
        // An f32 checkpoint stays f32 as stored.
        using f32 = await loadModel(gpu, folder, { baseFormat: "as-stored" });
        assert(f32.linearWeight(f32.sites[0].linear)!.weight !== null);
      });
    },
  );
}

Deno.test("a packed base refuses full fine-tuning in one line", GPU_TEST, async () => {
  const gpu = await testGpu();
  for (const baseFormat of ["int8", "nf4"] as const) {
    const options: ModelOptions = { baseFormat, trainAll: true };
    await assert.rejects(
      () => loadModel(gpu, "fixtures/tiny-llama", options),
      (e: Error) =>
        e instanceof RangeError && !e.message.includes("\n") &&
        e.message.includes(baseFormat) &&
        e.message.includes(`full fine-tuning needs baseFormat "f32"`),
    );
  }
  await assert.rejects(
    () => loadModel(gpu, "fixtures/tiny-gpt2", { baseFormat: "fp8" as never }),
    /Unknown baseFormat "fp8": expected one of f32, as-stored, int8, nf4/,
  );
});

// The file's own check that the fixtures hold f32 weights, so `as-stored` on them is f32.
Deno.test("the fixtures are stored in f32", async () => {
  for (const folder of FIXTURES) {
    using file = await SafetensorsFile.open(join(folder, "model.safetensors"));
    assert(file.names().every((n) => file.info(n).dtype === "F32"), folder);
  }
});
