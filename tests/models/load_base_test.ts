// Loading streams tensor by tensor: the GPU weights of a streamed load, in every base format and
// stored dtype, against a reference computed from the file alone (the raw 16-bit codes, and
// formats/base_quant.ts's host packing, bitsandbytes' layout); the host memory a load holds at
// once, watched through a reader that takes back every buffer it handed out as soon as the next
// read starts; and a checkpoint that does not match its config failing from its header before
// any weight is read.

import assert from "node:assert/strict";
import { join } from "node:path";
import { packHalfBits, packWeight } from "../../formats/base_quant.ts";
import { toFloatDtype } from "../../formats/narrow.ts";
import { Checkpoint, type Dtype, writeSafetensors } from "../../formats/safetensors.ts";
import type { Gpu } from "../../kernels/gpu.ts";
import { storedDtypes, type WeightLoaded, type WeightReader } from "../../models/_base_weights.ts";
import { Gpt2 } from "../../models/gpt2.ts";
import { parseGpt2Config, readGpt2Config } from "../../models/gpt2_config.ts";
import { initGpt2Weights } from "../../models/gpt2_init.ts";
import { gpt2WeightNames, loadGpt2Weights } from "../../models/gpt2_weights.ts";
import { Llama } from "../../models/llama.ts";
import { parseLlamaConfig, readLlamaConfig } from "../../models/llama_config.ts";
import {
  initLlamaWeights,
  llamaWeightNames,
  loadLlamaWeights,
} from "../../models/llama_weights.ts";
import type { BaseWeightFormat } from "../../models/model.ts";
import { GPU_TEST, testGpu, withTempDir } from "../_util.ts";

type Loaded = Gpt2 | Llama;
const FORMATS: readonly BaseWeightFormat[] = ["f32", "as-stored", "int8", "nf4"];
const TABLES = new Set(["wte.weight", "embed_tokens.weight", "lm_head.weight"]);

/** Writes a model folder: its config and one safetensors file with every tensor as `dtype`. */
async function writeModel(
  dir: string,
  config: unknown,
  tensors: Array<{ name: string; shape: number[]; data: Float32Array }>,
  dtype: "F32" | "F16" | "BF16",
): Promise<string> {
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(config, null, 2));
  await writeSafetensors(
    join(dir, "model.safetensors"),
    tensors.map((t) => ({ ...t, dtype, data: toFloatDtype(t.data, dtype) })),
    { format: "pt" },
  );
  return dir;
}

/** A copy of a fixture with every tensor stored as `dtype`. */
async function copyAs(folder: string, dir: string, dtype: "F32" | "F16" | "BF16") {
  using ckpt = await Checkpoint.open(folder);
  const tensors = [];
  for (const name of ckpt.names()) {
    tensors.push({ name, shape: ckpt.info(name).shape, data: await ckpt.readFloat32(name) });
  }
  const config = JSON.parse(await Deno.readTextFile(join(folder, "config.json")));
  return writeModel(join(dir, `${folder.split("/").pop()}-${dtype}`), config, tensors, dtype);
}

/**
 * Models whose widths are not multiples of 8 values (16-bit rows are padded) and whose
 * vocabularies are odd: a GPT-2 (20 wide, so its conv1d linears are transposed into padded
 * rows) and a Llama (20 wide, untied head), fresh weights from the families' own init.
 */
async function oddModels(dir: string, dtype: "F16" | "BF16"): Promise<string[]> {
  const gpt2Json = {
    ...JSON.parse(await Deno.readTextFile("fixtures/tiny-gpt2/config.json")),
    n_embd: 20,
    n_head: 4,
    vocab_size: 37,
  };
  const gpt2 = initGpt2Weights(parseGpt2Config(gpt2Json, "odd gpt2"), { seed: 5 });
  const llamaJson = {
    ...JSON.parse(await Deno.readTextFile("fixtures/tiny-llama/config.json")),
    hidden_size: 20,
    head_dim: 10,
    num_attention_heads: 2,
    num_key_value_heads: 1,
    intermediate_size: 36,
    vocab_size: 37,
  };
  const llama = initLlamaWeights(parseLlamaConfig(llamaJson, "odd llama"), { seed: 6 });
  const list = (tensors: Map<string, { shape: number[]; data: Float32Array }>, prefix: string) =>
    [...tensors].map(([name, t]) => ({
      name: name === "lm_head.weight" ? name : prefix + name,
      ...t,
    }));
  return [
    await writeModel(join(dir, `odd-gpt2-${dtype}`), gpt2Json, list(gpt2.tensors, ""), dtype),
    await writeModel(
      join(dir, `odd-llama-${dtype}`),
      llamaJson,
      list(llama.tensors, "model."),
      dtype,
    ),
  ];
}

async function isGpt2(folder: string): Promise<boolean> {
  const json = JSON.parse(await Deno.readTextFile(join(folder, "config.json")));
  return json.model_type === "gpt2";
}

/** Streams a folder through `reader` (a wrapper of its checkpoint, or the checkpoint itself). */
async function streamed(
  gpu: Gpu,
  folder: string,
  reader: WeightReader,
  options: { baseFormat?: BaseWeightFormat; onWeight?: (w: WeightLoaded) => void } = {},
): Promise<Loaded> {
  if (await isGpt2(folder)) {
    return Gpt2.fromReader(gpu, await readGpt2Config(folder), reader, options);
  }
  return Llama.fromReader(gpu, await readLlamaConfig(folder), reader, options);
}

/** The same folder through the host path: every tensor in memory first, then uploaded. */
async function fromHost(gpu: Gpu, folder: string, baseFormat: BaseWeightFormat): Promise<Loaded> {
  if (await isGpt2(folder)) {
    const storedDtypesOf = await storedDtypes(folder, gpt2WeightNames);
    return Gpt2.fromWeights(gpu, await loadGpt2Weights(folder), {
      baseFormat,
      storedDtypes: storedDtypesOf,
    });
  }
  const weights = await loadLlamaWeights(folder);
  return Llama.fromWeights(gpu, weights, {
    baseFormat,
    storedDtypes: await storedDtypes(folder, (n) => llamaWeightNames(n, weights.config)),
  });
}

/**
 * Checks every weight of `model` against the file: f32 weights equal the values read as f32;
 * 16-bit ones hold the stored codes (transposed to `[out, in]` for conv1d linears, rows padded);
 * int8/nf4 ones the host packing of the f32 values, byte for byte. Which precision each weight
 * has is decided here from the rules, not asked of the loader.
 */
async function checkWeights(
  model: Loaded,
  folder: string,
  format: BaseWeightFormat,
  what: string,
): Promise<void> {
  using ckpt = await Checkpoint.open(folder);
  const linears = new Set(model.sites.map((s) => `${s.linear}.weight`));
  const seen = new Set<string>();
  for (const [stored, name] of model.weightNames(ckpt.names())) {
    if (name === null || seen.has(name)) continue;
    seen.add(name);
    const { dtype, shape } = ckpt.info(stored);
    const half = dtype === "F16" ? "f16" : dtype === "BF16" ? "bf16" : null;
    const linear = linears.has(name);
    const want = linear
      ? (format === "int8" || format === "nf4" ? format : format === "as-stored" ? half : null)
      : TABLES.has(name) && format !== "f32"
      ? half
      : null;
    const at = `${what}: ${name}`;
    if (want === null) {
      assert(!model.packed.has(name), `${at} should be f32`);
      assert.deepEqual(await model.params.get(name)!.read(), await ckpt.readFloat32(stored), at);
      continue;
    }
    const packed = model.packed.get(name);
    assert(packed, `${at} should be packed ${want}`);
    assert.equal(packed.layout.format, want, at);
    assert(!model.params.has(name), `${at} is also f32`);
    const conv = linear && model.layout === "conv1d";
    const [rows, cols] = conv ? [shape[1], shape[0]] : [shape[0], shape[1]];
    const got = await packed.read();
    if (want === "f16" || want === "bf16") {
      const bytes = await ckpt.readBytes(stored);
      const bits = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.length / 2);
      const oriented = conv
        ? Uint16Array.from(
          { length: rows * cols },
          (_, j) => bits[(j % cols) * rows + (j / cols | 0)],
        )
        : bits;
      assert.deepEqual(got.codes, packHalfBits(oriented, [rows, cols], want).codes, at);
      continue;
    }
    const ref = packWeight(await ckpt.readFloat32(stored), [rows, cols], {
      format: want,
      transposed: conv,
    });
    for (const part of ["codes", "absmax", "absmaxCodes", "absmax2", "offset"] as const) {
      assert.deepEqual(got[part], ref[part], `${at} ${part}`);
    }
  }
  assert.equal(model.params.size + model.packed.size, seen.size, `${what}: weights`);
}

for (const group of ["gpt2", "llama", "qwen2", "odd"]) {
  Deno.test(
    `${group}: a streamed load puts exactly the file's weights on the GPU, in every base format ` +
      `and stored dtype, as the host path does`,
    GPU_TEST,
    async () => {
      const gpu = await testGpu();
      await withTempDir("load-base", async (dir) => {
        const folders = group === "odd"
          ? [...await oddModels(dir, "BF16"), ...await oddModels(dir, "F16")]
          : await Promise.all(
            (["F32", "BF16", "F16"] as const).map((d) => copyAs(`fixtures/tiny-${group}`, dir, d)),
          );
        for (const folder of folders) {
          for (const baseFormat of FORMATS) {
            const what = `${folder} ${baseFormat}`;
            {
              using ckpt = await Checkpoint.open(folder);
              using model = await streamed(gpu, folder, ckpt, { baseFormat });
              await checkWeights(model, folder, baseFormat, `${what} streamed`);
            }
            // The host path (whole checkpoint in f32 first) gives the same, 16-bit included.
            if (!folder.endsWith("BF16")) continue;
            using host = await fromHost(gpu, folder, baseFormat);
            await checkWeights(host, folder, baseFormat, `${what} host`);
          }
        }
      });
    },
  );
}

/**
 * A checkpoint reader that records every read and takes back (detaches) the buffer of the last
 * one as soon as the next read starts, so a loader that kept an earlier tensor and used it later
 * would find it empty.
 */
class WatchedReader implements WeightReader {
  readonly reads: Array<{ name: string; bytes: number }> = [];
  inFlight = 0;
  maxInFlight = 0;
  #last: ArrayBuffer | null = null;

  constructor(readonly ckpt: Checkpoint) {}

  get folder(): string {
    return this.ckpt.folder;
  }
  names(): string[] {
    return this.ckpt.names();
  }
  info(name: string) {
    return this.ckpt.info(name);
  }
  fileOf(name: string): string {
    return this.ckpt.fileOf(name);
  }
  readBytes(name: string): Promise<Uint8Array> {
    return this.#watch(name, () => this.ckpt.readBytes(name));
  }
  readFloat32(name: string): Promise<Float32Array> {
    return this.#watch(name, () => this.ckpt.readFloat32(name));
  }

  async #watch<T extends Uint8Array | Float32Array>(name: string, read: () => Promise<T>) {
    this.#last?.transfer();
    this.#last = null;
    this.maxInFlight = Math.max(this.maxInFlight, ++this.inFlight);
    try {
      const out = await read();
      this.reads.push({ name, bytes: out.byteLength });
      this.#last = out.buffer as ArrayBuffer;
      return out;
    } finally {
      this.inFlight--;
    }
  }
}

Deno.test(
  "a streamed load holds one tensor on the host at a time, tied head checked without the embedding",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    await withTempDir("load-base-peak", async (dir) => {
      // GPT-2 in bf16 with its tied head stored (compared by digest after wte is gone), and the
      // untied Llama fixture in f32.
      const gpt2 = await copyAs("fixtures/tiny-gpt2", dir, "BF16");
      {
        using ckpt = await Checkpoint.open(gpt2);
        const tensors = [];
        for (const name of ckpt.names()) {
          tensors.push({ name, shape: ckpt.info(name).shape, data: await ckpt.readFloat32(name) });
        }
        const wte = tensors.find((t) => t.name === "wte.weight")!;
        tensors.push({ ...wte, name: "lm_head.weight" });
        const config = JSON.parse(await Deno.readTextFile(join(gpt2, "config.json")));
        await writeModel(gpt2, config, tensors, "BF16");
      }
      // The tied head's digest is taken over the 16-bit codes widened (as-stored, nf4: wte stays
      // bf16) or over the f32 values uploaded (f32).
      const cases = [
        [gpt2, "as-stored"],
        [gpt2, "nf4"],
        [gpt2, "f32"],
        ["fixtures/tiny-llama", "int8"],
        ["fixtures/tiny-llama", "f32"],
      ] as const;
      for (const [folder, baseFormat] of cases) {
        const what = `${folder} ${baseFormat}`;
        using ckpt = await Checkpoint.open(folder);
        const reader = new WatchedReader(ckpt);
        const loaded: WeightLoaded[] = [];
        using model = await streamed(gpu, folder, reader, {
          baseFormat,
          onWeight: (w) => loaded.push(w),
        });
        // Nothing read earlier was needed later: the weights are the file's all the same.
        await checkWeights(model, folder, baseFormat, what);
        assert.equal(reader.maxInFlight, 1, `${what}: reads overlapped`);
        const sizes = ckpt.names().map((n) => ckpt.info(n).shape.reduce((a, b) => a * b, 1));
        const largest = Math.max(...sizes);
        const total = sizes.reduce((a, b) => a + b, 0);
        // A read returns one tensor: as stored, or widened to f32.
        const biggestRead = Math.max(...reader.reads.map((r) => r.bytes));
        assert(biggestRead <= 4 * largest, `${what}: a read of ${biggestRead} bytes`);
        // What the loader held for one weight: its read plus a widened, transposed or padded
        // copy, at most 6 bytes a value; the checkpoint is several times that.
        const peak = Math.max(...loaded.map((w) => w.hostBytes));
        assert(peak <= 6 * largest, `${what}: ${peak} host bytes at once`);
        assert(peak * 3 < 4 * total, `${what}: ${peak} host bytes of ${4 * total}`);
        // Each weight is reported once, with the bytes it holds on the GPU.
        const names = loaded.map((w) => w.name).sort();
        assert.deepEqual(names, [...model.params.keys(), ...model.packed.keys()].sort(), what);
        const gpuBytes = loaded.reduce((s, w) => s + w.gpuBytes, 0);
        assert.equal(gpuBytes, model.memory().weights, `${what}: GPU bytes`);
      }
    });
  },
);

/** Writes a broken copy of a fixture: `edit` changes the list of tensors written (all F32). */
async function brokenCopy(
  folder: string,
  dir: string,
  name: string,
  edit: (
    tensors: Array<{ name: string; shape: number[]; data: Float32Array; dtype?: Dtype }>,
  ) => void,
): Promise<string> {
  using ckpt = await Checkpoint.open(folder);
  const tensors: Array<{ name: string; shape: number[]; data: Float32Array; dtype?: Dtype }> = [];
  for (const n of ckpt.names()) {
    tensors.push({ name: n, shape: ckpt.info(n).shape, data: await ckpt.readFloat32(n) });
  }
  edit(tensors);
  const out = join(dir, name);
  await Deno.mkdir(out, { recursive: true });
  await Deno.copyFile(join(folder, "config.json"), join(out, "config.json"));
  await writeSafetensors(
    join(out, "model.safetensors"),
    tensors.map((t) => ({
      name: t.name,
      shape: t.shape,
      dtype: t.dtype ?? "F32",
      data: t.dtype === "I32" ? Int32Array.from(t.data) : t.data,
    })),
  );
  return out;
}

Deno.test(
  "a checkpoint that does not match its config fails from its header before any weight is read",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    await withTempDir("load-base-header", async (dir) => {
      const cases: Array<[string, string, Parameters<typeof brokenCopy>[3], RegExp]> = [
        ["fixtures/tiny-gpt2", "last-shape", (t) => {
          const last = t.findIndex((x) => x.name === "ln_f.bias");
          t[last] = { ...t[last], shape: [47], data: new Float32Array(47) };
        }, /Invalid GPT-2 checkpoint ".*": tensor "ln_f.bias" has shape \[47\], expected \[48\]$/],
        ["fixtures/tiny-gpt2", "int-weight", (t) => {
          const last = t.findIndex((x) => x.name === "ln_f.weight");
          t[last] = { ...t[last], dtype: "I32" };
        }, /tensor "ln_f.weight" has dtype I32; weights must be F32, F16, BF16, F64$/],
        [
          "fixtures/tiny-gpt2",
          "head-shape",
          (t) => {
            t.push({ name: "lm_head.weight", shape: [299, 48], data: new Float32Array(299 * 48) });
          },
          /"lm_head.weight" differs from "wte.weight": untied heads are not supported \(its shape is \[299, 48\], not \[300, 48\]\)$/,
        ],
        ["fixtures/tiny-llama", "missing", (t) => {
          t.splice(t.findIndex((x) => x.name === "model.norm.weight"), 1);
        }, /Invalid Llama checkpoint ".*": missing tensor "model.norm.weight" with shape \[24\]$/],
        ["fixtures/tiny-qwen2", "head-dtype", (t) => {
          const embed = t.find((x) => x.name === "model.embed_tokens.weight")!;
          t.push({ ...embed, name: "lm_head.weight", dtype: "I32" });
        }, /tensor "lm_head.weight" has dtype I32; weights must be F32, F16, BF16, F64$/],
      ];
      for (const [fixture, name, edit, message] of cases) {
        const folder = await brokenCopy(fixture, dir, name, edit);
        using ckpt = await Checkpoint.open(folder);
        const reader = new WatchedReader(ckpt);
        await assert.rejects(() => streamed(gpu, folder, reader), (e: Error) => {
          assert.match(e.message, message, name);
          assert(!e.message.includes("\n"), name);
          return true;
        });
        assert.deepEqual(reader.reads, [], `${name}: read before failing`);
      }
    });
  },
);

Deno.test(
  "a stored tied head that differs is named at its first differing element, streaming too",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    await withTempDir("load-base-tied", async (dir) => {
      for (
        const [fixture, embed] of [
          ["fixtures/tiny-gpt2", "wte.weight"],
          ["fixtures/tiny-qwen2", "model.embed_tokens.weight"],
        ]
      ) {
        const at = 1 + Math.floor(Math.random() * 5000);
        const folder = await brokenCopy(fixture, dir, `tied-${at}`, (t) => {
          const table = t.find((x) => x.name === embed)!;
          const data = table.data.slice();
          data[at] += 1;
          t.push({ name: "lm_head.weight", shape: table.shape, data });
        });
        const message = new RegExp(
          `"lm_head.weight" differs from "${embed}".*\\(first difference at element ${at}\\)$`,
        );
        for (const baseFormat of ["f32", "nf4"] as const) {
          using ckpt = await Checkpoint.open(folder);
          await assert.rejects(() => streamed(gpu, folder, ckpt, { baseFormat }), message);
        }
        const host = fixture.endsWith("gpt2") ? loadGpt2Weights(folder) : loadLlamaWeights(folder);
        await assert.rejects(() => host, message);
      }
    });
  },
);

Deno.test(
  "a sharded bf16 checkpoint streams shard by shard to the same weights",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    await withTempDir("load-base-sharded", async (dir) => {
      const single = await copyAs("fixtures/tiny-llama", dir, "BF16");
      const sharded = join(dir, "sharded");
      await Deno.mkdir(sharded);
      await Deno.copyFile(join(single, "config.json"), join(sharded, "config.json"));
      using ckpt = await Checkpoint.open(single);
      const names = ckpt.names();
      const weightMap: Record<string, string> = {};
      for (const [i, part] of [names.slice(0, 7), names.slice(7)].entries()) {
        const file = `model-0000${i + 1}-of-00002.safetensors`;
        const tensors = [];
        for (const name of part) {
          const bytes = await ckpt.readBytes(name);
          tensors.push({
            name,
            dtype: "BF16" as const,
            shape: ckpt.info(name).shape,
            data: new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.length / 2),
          });
          weightMap[name] = file;
        }
        await writeSafetensors(join(sharded, file), tensors, { format: "pt" });
      }
      await Deno.writeTextFile(
        join(sharded, "model.safetensors.index.json"),
        JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }),
      );
      for (const baseFormat of ["as-stored", "nf4"] as const) {
        using shards = await Checkpoint.open(sharded);
        using model = await streamed(gpu, sharded, new WatchedReader(shards), { baseFormat });
        await checkWeights(model, single, baseFormat, `sharded ${baseFormat}`);
      }
    });
  },
);
