// The token embedding and the head kept 16-bit as the checkpoint stores them (any base format
// but f32): a 16-bit lookup and the head through the packed 16-bit product. References: the same
// checkpoint loaded with every weight widened to f32, and an f32 model of the host-packed int8
// linears; GPT-2 (tied head), Llama (untied head) and Qwen2 (tied head, q/k/v biases).

import assert from "node:assert/strict";
import { join } from "node:path";
import { AdapterSet } from "../../adapters/attach.ts";
import { packedLayout, packWeight, unpackWeight } from "../../formats/base_quant.ts";
import { toFloatDtype } from "../../formats/narrow.ts";
import { Checkpoint, writeSafetensors } from "../../formats/safetensors.ts";
import { Gpt2 } from "../../models/gpt2.ts";
import { loadGpt2Weights } from "../../models/gpt2_weights.ts";
import { Llama } from "../../models/llama.ts";
import { loadLlamaWeights } from "../../models/llama_weights.ts";
import type { Model } from "../../models/model.ts";
import { loadModel } from "../../models/registry.ts";
import { freshSeed, GPU_TEST, relativeError, rng, testGpu, withTempDir } from "../_util.ts";

const FIXTURES: Record<string, string[]> = {
  "fixtures/tiny-gpt2": ["wte.weight"],
  "fixtures/tiny-llama": ["embed_tokens.weight", "lm_head.weight"],
  "fixtures/tiny-qwen2": ["embed_tokens.weight"],
};

function randomBatch(seed: number, B = 2, T = 12) {
  const next = rng(seed);
  const tokens = Uint32Array.from({ length: B * T }, () => Math.floor(next() * 300));
  const targets = Uint32Array.from({ length: B * T }, () => Math.floor(next() * 300));
  return { B, T, tokens, targets };
}

/** A copy of a fixture with every tensor stored as `dtype`. */
async function copyAs(folder: string, dir: string, dtype: "F16" | "BF16"): Promise<string> {
  const out = join(dir, `${folder.split("/").pop()}-${dtype}`);
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

/** Logits without the row padding. */
async function logits(model: Model, batch: { B: number; T: number; tokens: Uint32Array }) {
  const acts = model.forward({ B: batch.B, T: batch.T, tokens: batch.tokens });
  const all = await acts.logits.read() as Float32Array;
  const V = model.outputs;
  return Float32Array.from(
    { length: batch.B * batch.T * V },
    (_, j) => all[Math.floor(j / V) * acts.logitsStride + (j % V)],
  );
}

/** NOLA coefficient gradients of one step on all linears, nonzero coefficients. */
async function nolaGrads(model: Model, batch: ReturnType<typeof randomBatch>, seed: number) {
  using set = await AdapterSet.attach(model, {
    method: "nola",
    targets: ["all-linear"],
    r: 2,
    k: 8,
    loraAlpha: 4,
    seed,
    init: "uniform-coeffs",
  }, { maxRows: batch.B * batch.T });
  set.zeroGrads();
  set.prepareStep();
  model.forward(batch);
  model.loss({ targets: batch.targets }, { backward: true });
  model.backward();
  set.finishBackward();
  const all: number[] = [];
  for (const p of set.parameters()) all.push(...await p.grad.read() as Float32Array);
  set.detach();
  return Float32Array.from(all);
}

for (const [fixture, tables] of Object.entries(FIXTURES)) {
  Deno.test(
    `${fixture} in bf16 and f16: embeddings and head kept 16-bit give the widened model's ` +
      `logits, NOLA gradients and cached decoding`,
    GPU_TEST,
    async () => {
      const gpu = await testGpu();
      const seed = freshSeed();
      const batch = randomBatch(seed);
      await withTempDir("half-embedding", async (dir) => {
        for (const dtype of ["BF16", "F16"] as const) {
          const what = `${fixture} ${dtype} (seed ${seed})`;
          const folder = await copyAs(fixture, dir, dtype);
          using half = await loadModel(gpu, folder, { baseFormat: "as-stored" });
          using wide = await loadModel(gpu, folder);
          const format = dtype.toLowerCase();
          const packed = half.packed!;
          for (const name of tables) {
            assert.equal(packed.get(name)?.layout.format, format, `${what}: ${name}`);
            assert(!half.params.has(name), `${what}: ${name} also f32`);
            // Unpacking gives the widened table exactly.
            using back = half.unpackWeight!(name);
            assert.deepEqual(await back.read(), await wide.params.get(name)!.read(), name);
          }
          const err = relativeError(await logits(half, batch), await logits(wide, batch));
          assert(err < 2e-6, `${what}: logits ${err}`);
          const gradErr = relativeError(
            await nolaGrads(half, batch, seed % 1000),
            await nolaGrads(wide, batch, seed % 1000),
          );
          assert(gradErr < 1e-5, `${what}: NOLA gradients ${gradErr}`);

          // Decoding with a cache: later rows embed at the cache's offset (GPT-2's positions).
          const one = { B: 1, T: 6, tokens: batch.tokens.slice(0, 6) };
          const full = await logits(half, one);
          using cache = half.newCache(8);
          const stepped: number[] = [];
          for (const [begin, end] of [[0, 4], [4, 5], [5, 6]]) {
            const T = end - begin;
            const acts = half.forward({ B: 1, T, tokens: one.tokens.slice(begin, end) }, cache);
            const all = await acts.logits.read() as Float32Array;
            for (let j = 0; j < T * half.outputs; j++) {
              stepped.push(
                all[Math.floor(j / half.outputs) * acts.logitsStride + (j % half.outputs)],
              );
            }
          }
          const cached = relativeError(Float32Array.from(stepped), full);
          assert(cached < 1e-5, `${what}: cached vs full ${cached}`);

          // Memory: the 16-bit bytes are the linears' and the tables', the f32 part the rest.
          const byPrecision = half.memory().weightsByPrecision!;
          const packedBytes = [...packed.values()].reduce((s, t) => s + t.byteLength, 0);
          assert.equal(byPrecision[format], packedBytes, `${what}: ${format} bytes`);
          let tableBytes = 0;
          let tableValues = 0;
          for (const name of tables) {
            const [V, C] = wide.params.get(name)!.shape;
            tableBytes += packedLayout(V, C, { format: format as "f16" | "bf16" }).bytes;
            tableValues += V * C;
          }
          const linearValues = half.sites
            .filter((s, i, all) => all.findIndex((t) => t.linear === s.linear) === i)
            .reduce((s, site) => {
              const w = half.linearWeight(site.linear)!;
              return s + w.inFeatures * w.outFeatures;
            }, 0);
          assert.equal(packedBytes - tableBytes, 2 * linearValues, `${what}: linear bytes`);
          assert.equal(
            byPrecision.f32,
            wide.memory().weights - 4 * (linearValues + tableValues),
            `${what}: f32 bytes`,
          );
        }
      });
    },
  );
}

for (const fixture of Object.keys(FIXTURES)) {
  Deno.test(
    `${fixture} in bf16 with an int8 base: the tables stay bf16 and the logits are those of ` +
      `the host-packed int8 linears`,
    GPU_TEST,
    async () => {
      const gpu = await testGpu();
      const seed = freshSeed();
      const batch = randomBatch(seed);
      await withTempDir("half-embedding-int8", async (dir) => {
        const folder = await copyAs(fixture, dir, "BF16");
        using model = await loadModel(gpu, folder, { baseFormat: "int8" });
        for (const name of FIXTURES[fixture]) {
          assert.equal(model.packed!.get(name)?.layout.format, "bf16", name);
        }
        // The reference: the bf16 values widened, the linears through the host's int8 packing.
        const gpt2 = fixture.endsWith("gpt2");
        const weights = gpt2 ? await loadGpt2Weights(folder) : await loadLlamaWeights(folder);
        for (const site of model.sites) {
          const name = `${site.linear}.weight`;
          const t = weights.tensors.get(name)!;
          const [rows, cols] = gpt2 ? [t.shape[1], t.shape[0]] : [t.shape[0], t.shape[1]];
          const back = unpackWeight(packWeight(t.data, [rows, cols], {
            format: "int8",
            transposed: gpt2,
          }));
          const data = gpt2
            ? Float32Array.from(
              { length: back.length },
              (_, j) => back[(j % rows) * cols + (j / rows | 0)],
            )
            : back;
          weights.tensors.set(name, { shape: t.shape, data });
        }
        using reference = gpt2
          ? await Gpt2.fromWeights(gpu, weights as Awaited<ReturnType<typeof loadGpt2Weights>>)
          : await Llama.fromWeights(gpu, weights as Awaited<ReturnType<typeof loadLlamaWeights>>);
        const err = relativeError(await logits(model, batch), await logits(reference, batch));
        assert(
          err < 2e-6,
          `${fixture}: int8 base with bf16 tables vs reference ${err} (seed ${seed})`,
        );
      });
    },
  );
}
