import assert from "node:assert/strict";
import {
  ADAPTER_FORMAT,
  type AdapterDescription,
  adapterFileSize,
  encodeAdapter,
  loadAdapter,
  type ModuleValues,
  saveAdapter,
} from "../../adapters/adapter_file.ts";
import { AdapterSet, type AttachConfig, planAdapters } from "../../adapters/attach.ts";
import { CHECKSUM_KEY, CHECKSUM_PLACEHOLDER, sealChecksum } from "../../formats/checksum.ts";
import type { QuantOptions } from "../../formats/quantize.ts";
import { encodeSafetensors, SafetensorsFile } from "../../formats/safetensors.ts";
import type { Gpu } from "../../kernels/gpu.ts";
import { Gpt2 } from "../../models/gpt2.ts";
import { gpt2Family } from "../../models/gpt2_family.ts";
import {
  configHash,
  GPT2_SMALL,
  type Gpt2Config,
  readGpt2Config,
} from "../../models/gpt2_config.ts";
import { freshSeed, GPU_TEST, randomArray, relativeError, rng, testGpu } from "../_util.ts";

const FIXTURE = "fixtures/tiny-gpt2";
const config = await readGpt2Config(FIXTURE);
await Deno.mkdir("out/tmp", { recursive: true });
const QV = ["h.*.attn.c_attn.q", "h.*.attn.c_attn.v"];
const NOLA: AttachConfig = {
  method: "nola",
  targets: QV,
  r: 4,
  k: 32,
  l: 24,
  loraAlpha: 8,
  seed: 3,
  shareBasis: true,
  overrides: [{ pattern: "h.1.attn.c_attn.v", r: 2, k: 16, seed: 9, init: "uniform-coeffs" }],
};
const LORA: AttachConfig = {
  method: "lora",
  targets: ["h.0.attn.c_attn", "h.*.mlp.c_proj"],
  r: 3,
  loraAlpha: 6,
  seed: 1,
  overrides: [{ pattern: "h.1.mlp.c_proj", r: 1 }],
};

function describe(base: Gpt2Config, attach: AttachConfig, hash = configHash(base)) {
  return {
    baseModel: "tiny",
    baseConfigHash: hash,
    config: attach,
    modules: planAdapters(gpt2Family.shape(base), attach),
  };
}

function synthetic(desc: AdapterDescription, seed: number): Map<string, ModuleValues> {
  return new Map(desc.modules.map((m, i) => {
    const s = seed + 4 * i;
    return [
      m.name,
      m.method === "nola" ? { alpha: randomArray(m.k, s), beta: randomArray(m.l, s + 1) } : {
        loraA: randomArray(m.r * m.inFeatures, s),
        loraB: randomArray(m.outFeatures * m.r, s + 1),
      },
    ];
  }));
}

async function tempPath(): Promise<string> {
  return await Deno.makeTempFile({ dir: "out/tmp", suffix: ".safetensors" });
}

Deno.test("adapterFileSize equals the encoded length, F32, quantized and LoRA", () => {
  const seed = freshSeed();
  const quants: (QuantOptions | undefined)[] = [
    undefined,
    { bits: 4, scheme: "symmetric" },
    { bits: 3, scheme: "asymmetric" },
    { bits: 1, scheme: "symmetric" },
  ];
  for (const quant of quants) {
    const desc = describe(config, NOLA);
    const { bytes } = encodeAdapter(desc, synthetic(desc, seed), { quant });
    assert.equal(adapterFileSize(desc, { quant }), bytes.length, `${quant?.bits} seed ${seed}`);
  }
  const lora = describe(config, LORA);
  const { bytes } = encodeAdapter(lora, synthetic(lora, seed));
  assert.equal(adapterFileSize(lora), bytes.length);
  assert.throws(
    () => encodeAdapter(lora, synthetic(lora, seed), { quant: { bits: 4, scheme: "symmetric" } }),
    /Cannot quantize a LoRA adapter/,
  );
});

Deno.test("a 4-bit GPT-2 small q/v adapter (r 8, k = l = 1024) stays under 30 KiB", async () => {
  const desc = describe(GPT2_SMALL, {
    method: "nola",
    targets: QV,
    r: 8,
    k: 1024,
    loraAlpha: 8,
    seed: 0,
  });
  assert.equal(desc.modules.length, 24);
  const { bytes, values } = encodeAdapter(desc, synthetic(desc, freshSeed()), {
    quant: { bits: 4, scheme: "symmetric" },
  });
  console.log(`4-bit GPT-2 small q/v adapter: ${bytes.length} bytes`);
  assert(bytes.length < 30 * 1024, `${bytes.length} bytes`);
  // The file holds what the encoder says a loader gets back.
  const path = await tempPath();
  await Deno.writeFile(path, bytes);
  using file = await SafetensorsFile.open(path);
  assert.equal(file.metadata.format, ADAPTER_FORMAT);
  assert.equal(file.metadata.quant_bits, "4");
  assert.deepEqual(JSON.parse(file.metadata.targets).length, 24);
  assert.deepEqual(file.info("h.11.attn.c_attn.v.beta").shape, [512]);
  assert.deepEqual(file.info("quant.scale").shape, [48]);
  assert.equal(values.size, 24);
  await Deno.remove(path);
});

async function logitsOf(model: Gpt2): Promise<Float32Array> {
  const next = rng(5);
  const tokens = Uint32Array.from({ length: 12 }, () => Math.floor(next() * config.vocabSize));
  return (await model.forward({ B: 2, T: 6, tokens }).logits.read()) as Float32Array;
}

/** Attaches, sets random values, saves; returns the logits and the path. */
async function trained(gpu: Gpu, attach: AttachConfig, quant?: QuantOptions) {
  using model = await Gpt2.load(gpu, FIXTURE);
  using set = await AdapterSet.attach(model, attach, { maxRows: 12 });
  const seed = freshSeed();
  const values = synthetic(describe(config, attach), seed);
  for (const m of set.modules) {
    const v = values.get(m.name)!;
    if ("alpha" in v) {
      // Scaled down: logits stay in a sane range with random coefficients.
      gpu.write(m.nola!.alpha.buffer, v.alpha.map((x) => x * 0.3));
      gpu.write(m.nola!.beta.buffer, v.beta.map((x) => x * 0.3));
    } else {
      gpu.write(m.adapter.a.buffer, v.loraA);
      gpu.write(m.adapter.b.buffer, v.loraB.map((x) => x * 0.1));
    }
  }
  set.prepareStep();
  const path = await tempPath();
  const saved = await saveAdapter(set, path, { baseModel: "tiny-gpt2", quant });
  assert.equal((await Deno.stat(path)).size, saved.size);
  return { logits: await logitsOf(model), path, saved, seed };
}

Deno.test(
  "NOLA and LoRA adapters round-trip: identical logits in a fresh model",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    for (const attach of [NOLA, LORA]) {
      const { logits, path, seed } = await trained(gpu, attach);
      using model = await Gpt2.load(gpu, FIXTURE);
      const base = await logitsOf(model);
      using set = await loadAdapter(model, path, { maxRows: 12, method: attach.method });
      const got = await logitsOf(model);
      const what = `${attach.method} seed ${seed}`;
      assert(relativeError(got, logits) < 1e-6, `${what}: ${relativeError(got, logits)}`);
      assert(relativeError(base, logits) > 1e-4, `${what}: the adapter changes nothing`);
      assert.deepEqual(
        set.modules.map((m) => [m.name, m.r, m.k, m.seed]),
        describe(config, attach)
          .modules.map((m) => [m.name, m.r, m.k, m.seed]),
      );
      await Deno.remove(path);
    }
  },
);

Deno.test(
  "4-bit NOLA: loaded coefficients equal the dequantized ones exactly",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    for (const scheme of ["symmetric", "asymmetric"] as const) {
      const { path, saved, seed } = await trained(gpu, NOLA, { bits: 4, scheme });
      using model = await Gpt2.load(gpu, FIXTURE);
      using set = await loadAdapter(model, path, { maxRows: 12 });
      for (const m of set.modules) {
        const want = saved.values.get(m.name) as { alpha: Float32Array; beta: Float32Array };
        assert.deepEqual(
          await m.nola!.alpha.read(),
          want.alpha,
          `${scheme} ${m.name} seed ${seed}`,
        );
        assert.deepEqual(await m.nola!.beta.read(), want.beta, `${scheme} ${m.name} seed ${seed}`);
      }
      // Logits equal those of a model holding the dequantized coefficients in f32.
      const desc = describe(config, { ...NOLA });
      const f32 = await tempPath();
      await Deno.writeFile(f32, encodeAdapter(desc, saved.values).bytes);
      using other = await Gpt2.load(gpu, FIXTURE);
      using _ = await loadAdapter(other, f32, { maxRows: 12 });
      assert.deepEqual(await logitsOf(model), await logitsOf(other));
      await Deno.remove(path);
      await Deno.remove(f32);
    }
  },
);

Deno.test(
  "a quantized file whose targets another writer listed out of model order loads each module's own scales",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const desc = describe(config, NOLA);
    const values = synthetic(desc, seed);
    const quant: QuantOptions = { bits: 4, scheme: "asymmetric" };
    const { bytes, values: stored } = encodeAdapter(desc, values, { quant });
    // The same file with `targets` reversed and the scale table's slots moved to match.
    const path = await tempPath();
    await Deno.writeFile(path, bytes);
    const tensors = [];
    {
      using file = await SafetensorsFile.open(path);
      const targets = JSON.parse(file.metadata.targets) as string[];
      const reorder = async (name: string) => {
        const table = await file.readFloat32(name);
        const out = new Float32Array(table.length);
        targets.forEach((_, i) => {
          const j = targets.length - 1 - i;
          out.set(table.subarray(2 * i, 2 * i + 2), 2 * j);
        });
        return new Uint8Array(out.buffer);
      };
      for (const name of file.names()) {
        const { dtype, shape } = file.info(name);
        const data = name.startsWith("quant.") ? await reorder(name) : await file.readBytes(name);
        tensors.push({ name, dtype, shape, data });
      }
      const metadata = {
        ...file.metadata,
        targets: JSON.stringify([...targets].reverse()),
        [CHECKSUM_KEY]: CHECKSUM_PLACEHOLDER,
      };
      await Deno.writeFile(path, sealChecksum(encodeSafetensors(tensors, metadata)));
    }
    using model = await Gpt2.load(gpu, FIXTURE);
    using set = await loadAdapter(model, path, { maxRows: 12 });
    for (const m of set.modules) {
      const want = stored.get(m.name) as { alpha: Float32Array; beta: Float32Array };
      assert.deepEqual(await m.nola!.alpha.read(), want.alpha, `${m.name} seed ${seed}`);
      assert.deepEqual(await m.nola!.beta.read(), want.beta, `${m.name} seed ${seed}`);
    }
    await Deno.remove(path);
  },
);

/** Re-encodes an adapter file with its metadata or tensors changed, sealed with a new checksum. */
async function tampered(
  bytes: Uint8Array,
  change: { metadata?: Record<string, string>; drop?: string; add?: boolean },
): Promise<string> {
  const path = await tempPath();
  await Deno.writeFile(path, bytes);
  using file = await SafetensorsFile.open(path);
  const tensors = [];
  for (const name of file.names()) {
    if (name === change.drop) continue;
    const { dtype, shape } = file.info(name);
    tensors.push({ name, dtype, shape, data: await file.readBytes(name) });
  }
  if (change.add) {
    tensors.push({ name: "h.0.extra", dtype: "F32" as const, shape: [1], data: new Uint8Array(4) });
  }
  const metadata = { ...file.metadata, ...change.metadata, [CHECKSUM_KEY]: CHECKSUM_PLACEHOLDER };
  await Deno.writeFile(path, sealChecksum(encodeSafetensors(tensors, metadata)));
  return path;
}

Deno.test(
  "loadAdapter refuses files that do not fit the model, each with its reason",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    using model = await Gpt2.load(gpu, FIXTURE);
    const desc = describe(config, NOLA);
    const { bytes } = encodeAdapter(desc, synthetic(desc, 1));
    const cases: [string, Promise<string>, RegExp][] = [
      [
        "wrong hash",
        tampered(bytes, { metadata: { base_config_hash: "0123456789abcdef" } }),
        /base config hash 0123456789abcdef does not match the model's [0-9a-f]{16} \(trained on "tiny"/,
      ],
      [
        "basis spec",
        tampered(bytes, { metadata: { basis_spec: "philox4x32-10/v2" } }),
        /basis_spec "philox4x32-10\/v2" is unknown \(this version generates "philox4x32-10\/v1"\)/,
      ],
      [
        "format",
        tampered(bytes, { metadata: { format: "nola-gpu-adapter/2" } }),
        /format "nola-gpu-adapter\/2" is not supported \(this version reads "nola-gpu-adapter\/1"\)/,
      ],
      [
        "module",
        tampered(bytes, {
          metadata: { targets: JSON.stringify(["h.0.attn.c_attn.q", "h.5.attn.c_attn.q"]) },
        }),
        /module "h.5.attn.c_attn.q" is not in the model/,
      ],
      [
        "missing",
        tampered(bytes, { drop: "h.1.attn.c_attn.q.beta" }),
        /tensor "h.1.attn.c_attn.q.beta" is missing/,
      ],
      ["extra", tampered(bytes, { add: true }), /tensor "h.0.extra" belongs to no module/],
      [
        "quant",
        tampered(bytes, { metadata: { quant_bits: "12", quant_scheme: "symmetric" } }),
        /Invalid quantization bits 12/,
      ],
    ];
    for (const [what, pathPromise, message] of cases) {
      const path = await pathPromise;
      await assert.rejects(() => loadAdapter(model, path, { maxRows: 4 }), (e: Error) => {
        assert.match(e.message, new RegExp(`^Cannot load adapter "${path}": `), what);
        assert.match(e.message, message, what);
        return true;
      });
      await Deno.remove(path);
    }
    assert.equal(model.adapters.size, 0, "a refused file attaches nothing");

    const nolaPath = await tampered(bytes, {});
    await assert.rejects(
      () => loadAdapter(model, nolaPath, { maxRows: 4, method: "lora" }),
      /it is a nola adapter, expected lora/,
    );
    // Shapes: a LoRA file made for a wider GPT-2 under the fixture's name and hash.
    const wide = describe({ ...config, nEmbd: 64 }, LORA, configHash(config));
    const widePath = await tempPath();
    await Deno.writeFile(widePath, encodeAdapter(wide, synthetic(wide, 2)).bytes);
    await assert.rejects(
      () => loadAdapter(model, widePath, { maxRows: 4 }),
      /tensor "h.0.attn.c_attn.lora_A" is F32 \[3,64\], the model needs F32 \[3,48\]/,
    );
    await Deno.remove(nolaPath);
    await Deno.remove(widePath);
  },
);

Deno.test(
  "loadAdapter refuses a bit-flipped or truncated file in one line naming it, and loads one without a checksum",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    using model = await Gpt2.load(gpu, FIXTURE);
    const desc = describe(config, NOLA);
    const { bytes, values } = encodeAdapter(desc, synthetic(desc, seed));
    const next = rng(seed);
    const cases: [string, Uint8Array, RegExp][] = [];
    const dataStart = 8 + Number(new DataView(bytes.buffer).getBigUint64(0, true));
    for (let i = 0; i < 3; i++) {
      // One bit anywhere in the data, then one anywhere in the header (a digit of a setting).
      const at = dataStart + Math.floor(next() * (bytes.length - dataStart));
      const flipped = bytes.slice();
      flipped[at] ^= 1 << Math.floor(next() * 8);
      cases.push([`bit flip at byte ${at}`, flipped, /its bytes give checksum crc32:[0-9a-f]{8}/]);
    }
    const seedAt = new TextDecoder().decode(bytes).indexOf(`"seed":"3"`) + 8;
    const seedFlip = bytes.slice();
    seedFlip[seedAt] ^= 1; // "3" -> "2": a valid file with other bases, but for the checksum
    cases.push(["seed digit", seedFlip, /its bytes give checksum/]);
    cases.push([
      "truncated",
      bytes.slice(0, bytes.length - 5),
      /^Invalid safetensors file ".*": .*the file is truncated$/,
    ]);
    for (const [what, damaged, message] of cases) {
      const path = await tempPath();
      await Deno.writeFile(path, damaged);
      await assert.rejects(() => loadAdapter(model, path, { maxRows: 4 }), (e: Error) => {
        assert.match(e.message, message, `${what}, seed ${seed}`);
        assert(e.message.includes(`"${path}"`), `${what}: ${e.message}`);
        assert(!e.message.includes("\n"), `${what}: one line`);
        return true;
      });
      await Deno.remove(path);
    }
    assert.equal(model.adapters.size, 0, "a refused file attaches nothing");

    // A file written before checksums: the same file without the entry loads as it always did.
    const path = await tempPath();
    await Deno.writeFile(path, bytes);
    const old = await tempPath();
    {
      using file = await SafetensorsFile.open(path);
      const tensors = [];
      for (const name of file.names()) {
        const { dtype, shape } = file.info(name);
        tensors.push({ name, dtype, shape, data: await file.readBytes(name) });
      }
      const { [CHECKSUM_KEY]: _, ...metadata } = file.metadata;
      await Deno.writeFile(old, encodeSafetensors(tensors, metadata));
    }
    using set = await loadAdapter(model, old, { maxRows: 4 });
    for (const m of set.modules) {
      const want = values.get(m.name) as { alpha: Float32Array; beta: Float32Array };
      assert.deepEqual(await m.nola!.alpha.read(), want.alpha, `${m.name} seed ${seed}`);
    }
    await Deno.remove(path);
    await Deno.remove(old);
  },
);
