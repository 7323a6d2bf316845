// Fuzzing adapter files through loadAdapter on the tiny GPT-2 fixture: metadata values, tensors
// dropped, renamed or resized, and mutated bytes. Each mutated file is sealed with a fresh
// checksum (or left with a stale one), so the checks behind the checksum are reached. Every case
// ends in an attached set or in one line of AdapterFileError or SafetensorsError naming the file,
// and a refused file attaches nothing.

import assert from "node:assert/strict";
import { join } from "node:path";
import fc from "fast-check";
import { AdapterFileError, encodeAdapter, loadAdapter } from "../../adapters/adapter_file.ts";
import type { ModuleValues } from "../../adapters/adapter_file.ts";
import { type AttachConfig, planAdapters } from "../../adapters/attach.ts";
import { CHECKSUM_KEY, CHECKSUM_PLACEHOLDER, sealChecksum } from "../../formats/checksum.ts";
import type { QuantOptions } from "../../formats/quantize.ts";
import {
  type Dtype,
  encodeSafetensors,
  SafetensorsError,
  SafetensorsFile,
  type TensorToWrite,
} from "../../formats/safetensors.ts";
import type { Model } from "../../models/model.ts";
import { loadModel, modelShape, readModelConfig } from "../../models/registry.ts";
import { GPU_TEST, randomArray, testGpu, withTempDir } from "../_util.ts";
import { applyEdits, assertRefusal, byteEdits, fuzz, refusedOrOk } from "./_fuzz.ts";

const FIXTURE = "fixtures/tiny-gpt2";
const CLASSES = [AdapterFileError, SafetensorsError];

const NOLA: AttachConfig = {
  method: "nola",
  targets: ["h.*.attn.c_attn.q", "h.*.attn.c_attn.v"],
  r: 4,
  k: 16,
  l: 12,
  loraAlpha: 8,
  seed: 3,
  overrides: [{ pattern: "h.1.attn.c_attn.v", r: 2, k: 8, init: "uniform-coeffs" }],
};
const LORA: AttachConfig = {
  method: "lora",
  targets: ["h.0.attn.c_attn", "h.1.mlp.c_proj"],
  r: 2,
  loraAlpha: 4,
  seed: 1,
};

/** A valid file's tensors and metadata, to be mutated and encoded again. */
interface Parts {
  tensors: TensorToWrite[];
  metadata: Record<string, string>;
}

async function validParts(
  model: Model,
  dir: string,
  attach: AttachConfig,
  quant?: QuantOptions,
): Promise<Parts> {
  const modules = planAdapters(model, attach);
  const values = new Map<string, ModuleValues>(modules.map((m, i) => [
    m.name,
    m.method === "nola" ? { alpha: randomArray(m.k, 2 * i), beta: randomArray(m.l, 2 * i + 1) } : {
      loraA: randomArray(m.r * m.inFeatures, 2 * i),
      loraB: randomArray(m.outFeatures * m.r, 2 * i + 1),
    },
  ]));
  const desc = { baseModel: "tiny", baseConfigHash: model.configHash, config: attach, modules };
  const path = join(dir, "valid.safetensors");
  await Deno.writeFile(path, encodeAdapter(desc, values, { quant }).bytes);
  using file = await SafetensorsFile.open(path);
  const tensors: TensorToWrite[] = [];
  for (const [name, info] of file.tensors) {
    tensors.push({ name, dtype: info.dtype, shape: info.shape, data: await file.readBytes(name) });
  }
  return { tensors, metadata: { ...file.metadata } };
}

const KEYS = [
  "format",
  "method",
  "base_model",
  "base_config_hash",
  "targets",
  "r",
  "lora_alpha",
  "k",
  "l",
  "seed",
  "init",
  "basis_spec",
  "share_basis",
  "quant_bits",
  "quant_scheme",
  "modules",
  CHECKSUM_KEY,
];

const VALUES = [
  "",
  "NaN",
  "Infinity",
  "1e400",
  "-1",
  "0",
  "1.5",
  "1e9",
  "2",
  "3",
  "4",
  "8",
  "32",
  "none",
  "symmetric",
  "asymmetric",
  "nola",
  "lora",
  "true",
  "null",
  "[]",
  "{}",
  '"text"',
  "[1]",
  '["h.0.attn.c_attn.q"]',
  '["h.0.attn.c_attn.q","h.0.attn.c_attn.q"]',
  '["h.0.attn.c_attn.v","h.0.attn.c_attn.q","h.1.attn.c_attn.v","h.1.attn.c_attn.q"]',
  '{"h.0.attn.c_attn.q":{"r":2}}',
  '{"h.0.attn.c_attn.q":null}',
  '{"h.0.attn.c_attn.q":"r"}',
  '{"h.0.attn.c_attn.q":[1,2]}',
  '{"h.*.attn.c_attn.q":{"k":1e9}}',
  '{"h.0.attn.c_attn.q":{"init":"bogus"}}',
  '{"h.0.attn.c_attn.q":{"init":7}}',
  '{"h.0.attn.c_attn.q":{"r":-1}}',
  '{"__proto__":{"r":1}}',
  "official",
  "uniform-coeffs",
  "kaiming-uniform",
  "philox4x32-10/v1",
  "nola-gpu-adapter/1",
  "crc32:00000000",
  "a\nb",
];

type AdapterEdit =
  | { op: "set"; key: string; value: string }
  | { op: "drop"; key: string }
  | { op: "dropTensor"; at: number }
  | { op: "renameTensor"; at: number; name: string }
  | { op: "resizeTensor"; at: number; dtype: Dtype; elements: number };

const adapterEdits: fc.Arbitrary<AdapterEdit[]> = fc.array(
  fc.oneof(
    {
      weight: 6,
      arbitrary: fc.record({
        op: fc.constant("set" as const),
        key: fc.oneof(fc.constantFrom(...KEYS), fc.string({ maxLength: 4 })),
        value: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...VALUES) }, fc.string()),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({ op: fc.constant("drop" as const), key: fc.constantFrom(...KEYS) }),
    },
    { weight: 1, arbitrary: fc.record({ op: fc.constant("dropTensor" as const), at: fc.nat() }) },
    {
      weight: 1,
      arbitrary: fc.record({
        op: fc.constant("renameTensor" as const),
        at: fc.nat(),
        name: fc.oneof(
          fc.constantFrom(
            "quant.scale",
            "quant.zero_point",
            "h.0.attn.c_attn.q.alpha",
            "h.9.x",
            "x\ny",
          ),
          fc.string({ maxLength: 6 }),
        ),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        op: fc.constant("resizeTensor" as const),
        at: fc.nat(),
        dtype: fc.constantFrom<Dtype>("F32", "U8", "F16", "I64", "BOOL"),
        elements: fc.nat(40),
      }),
    },
  ),
  { minLength: 1, maxLength: 3 },
);

/** The file after `edits`, sealed with a fresh checksum when `seal` (the writer always seals). */
function encode(parts: Parts, edits: AdapterEdit[], seal: boolean): Uint8Array {
  const metadata = { ...parts.metadata };
  let tensors = parts.tensors.slice();
  for (const e of edits) {
    if (e.op === "set") metadata[e.key] = e.value;
    else if (e.op === "drop") delete metadata[e.key];
    else if (tensors.length === 0) continue;
    else if (e.op === "dropTensor") tensors.splice(e.at % tensors.length, 1);
    else {
      const at = e.at % tensors.length;
      const t = tensors[at];
      tensors[at] = e.op === "renameTensor" ? { ...t, name: e.name } : {
        ...t,
        dtype: e.dtype,
        shape: [e.elements],
        data: new Uint8Array(
          e.elements *
            ({ F32: 4, U8: 1, F16: 2, I64: 8, BOOL: 1 } as Record<string, number>)[e.dtype],
        ),
      };
    }
  }
  const names = new Set<string>();
  tensors = tensors.filter((t) =>
    !names.has(t.name) && names.add(t.name) && t.name !== "__metadata__"
  );
  if (!seal) return encodeSafetensors(tensors, metadata);
  metadata[CHECKSUM_KEY] = CHECKSUM_PLACEHOLDER;
  const bytes = encodeSafetensors(tensors, metadata);
  try {
    return sealChecksum(bytes);
  } catch {
    return bytes; // the placeholder is written twice: a file the writer never makes
  }
}

/** Thrown by the stand-in model once loadAdapter attaches: the file passed every check. */
class Attached extends Error {}

/**
 * The fixture's shape without a GPU: loadAdapter reads `configHash` and `sites` to check a file,
 * and the first thing attaching does is list `adapters`, which throws {@linkcode Attached}.
 */
async function checkOnlyModel(): Promise<Model> {
  const shape = modelShape(await readModelConfig(FIXTURE));
  return {
    ...shape,
    get adapters(): never {
      throw new Attached();
    },
  } as unknown as Model;
}

/** Checks the file: true when it passed every check, false when it was refused in one line. */
async function checks(model: Model, path: string): Promise<boolean> {
  try {
    await loadAdapter(model, path, { maxRows: 4 });
  } catch (e) {
    if (e instanceof Attached) return true;
    assertRefusal(e, CLASSES, path);
    return false;
  }
  throw new Error("the stand-in model cannot attach");
}

/** Loads the file on the GPU; a loaded set is detached, a refused file attaches nothing. */
async function loadOnce(model: Model, path: string): Promise<boolean> {
  const set = await refusedOrOk(() => loadAdapter(model, path, { maxRows: 4 }), CLASSES, path);
  if (set !== undefined) set[Symbol.dispose]();
  assert.equal(model.adapters.size, 0, "nothing stays attached");
  return set !== undefined;
}

// Mostly sealed, so that the checks behind the checksum are reached.
const sealed = fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, fc.constant(false));

// Under ~8 s in all for this file on the 2-core CI machine. Only the last runs on the GPU: a
// file that passes the checks attaches there, and thousands of attachments are slow on llvmpipe.
const METADATA = { runs: 4000, ms: 4_000 };
const BYTES = { runs: 3000, ms: 2_000 };
const ON_GPU = { runs: 150, ms: 2_000 };

async function allVariants(model: Model, dir: string): Promise<Parts[]> {
  return [
    await validParts(model, dir, NOLA),
    await validParts(model, dir, NOLA, { bits: 4, scheme: "symmetric" }),
    await validParts(model, dir, NOLA, { bits: 3, scheme: "asymmetric" }),
    await validParts(model, dir, LORA),
  ];
}

Deno.test("fuzz: loadAdapter's checks on mutated adapter files pass or refuse in one line", async () => {
  const stub = await checkOnlyModel();
  await withTempDir("fuzz-adapter", async (dir) => {
    const variants = await allVariants(stub, dir);
    const path = join(dir, "case.safetensors");
    for (const parts of variants) {
      await Deno.writeFile(path, encode(parts, [], true));
      assert.ok(await checks(stub, path), "every unmutated variant passes");
    }
    let passed = 0;
    const runs = await fuzz(
      "adapter metadata and tensors",
      fc.tuple(fc.nat(variants.length - 1), adapterEdits, sealed),
      async ([variant, edits, seal]) => {
        await Deno.writeFile(path, encode(variants[variant], edits, seal));
        if (await checks(stub, path)) passed++;
      },
      METADATA,
    );
    assert.ok(passed < runs, "some mutations are refused");
    await fuzz(
      "adapter bytes",
      fc.tuple(fc.nat(variants.length - 1), byteEdits, fc.boolean()),
      async ([variant, edits, seal]) => {
        await Deno.writeFile(path, applyEdits(encode(variants[variant], [], seal), edits));
        await checks(stub, path);
      },
      BYTES,
    );
  });
});

Deno.test({
  name: "fuzz: loadAdapter on the GPU attaches what passes its checks, or refuses in one line",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    using model = await loadModel(gpu, FIXTURE);
    await withTempDir("fuzz-adapter", async (dir) => {
      const variants = await allVariants(model, dir);
      const path = join(dir, "case.safetensors");
      for (const parts of variants) {
        await Deno.writeFile(path, encode(parts, [], true));
        assert.ok(await loadOnce(model, path), "every unmutated variant loads");
      }
      await fuzz(
        "adapter files on the GPU",
        fc.tuple(fc.nat(variants.length - 1), adapterEdits),
        async ([variant, edits]) => {
          await Deno.writeFile(path, encode(variants[variant], edits, true));
          await loadOnce(model, path);
        },
        ON_GPU,
      );
    });
  },
});

// Cases the fuzzer found, kept as they were shrunk.
Deno.test("adapter files found by fuzzing are refused in one line", async () => {
  const stub = await checkOnlyModel();
  await withTempDir("fuzz-adapter", async (dir) => {
    const nola = await validParts(stub, dir, NOLA);
    const path = join(dir, "case.safetensors");
    const cases: [string, AdapterEdit[], RegExp][] = [
      // The message quotes the value, line break and all.
      [
        "format with a line break",
        [{ op: "set", key: "format", value: "a\nb" }],
        /format "a\\nb" is not supported/,
      ],
      // `key in diff` on a string or a list entry threw a TypeError from inside loadAdapter.
      [
        "modules a string",
        [{ op: "set", key: "modules", value: '"text"' }],
        /metadata "modules" is not an object/,
      ],
      [
        "modules a list",
        [{ op: "set", key: "modules", value: '["h.0.attn.c_attn.v","h.0.attn.c_attn.q"]' }],
        /metadata "modules" is not an object/,
      ],
      [
        "a module's settings null",
        [{ op: "set", key: "modules", value: '{"h.0.attn.c_attn.q":null}' }],
        /metadata "modules" gives module "h.0.attn.c_attn.q" no object of settings/,
      ],
      // A NOLA file's tensors do not depend on r, so r = 1e9 passed every check and attaching
      // asked the GPU for 192 GB.
      [
        "rank 1e9",
        [{ op: "set", key: "r", value: "1e9" }],
        /Invalid adapter r 1000000000 for "h.0.attn.c_attn.q": at most min\(in, out\) = 48/,
      ],
      [
        "rank 49 in one module",
        [{ op: "set", key: "modules", value: '{"h.1.attn.c_attn.q":{"r":49}}' }],
        /Invalid adapter r 49 for "h.1.attn.c_attn.q": at most min\(in, out\) = 48/,
      ],
    ];
    for (const [what, edits, message] of cases) {
      await Deno.writeFile(path, encode(nola, edits, true));
      await assert.rejects(() => loadAdapter(stub, path, { maxRows: 4 }), (e: Error) => {
        assertRefusal(e, [AdapterFileError], path);
        assert.match(e.message, message, what);
        return true;
      });
    }
  });
});
