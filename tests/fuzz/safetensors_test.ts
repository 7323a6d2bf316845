// Fuzzing the safetensors reader: mutated headers, mutated bytes, header lengths and sizes that a
// file merely claims, and sharded checkpoints whose index and shards disagree. Every case ends in
// an open file whose tensors all read back, or in one line of SafetensorsError naming the file.

import assert from "node:assert/strict";
import { join } from "node:path";
import fc from "fast-check";
import {
  Checkpoint,
  dtypeBytes,
  DTYPES,
  MAX_HEADER_BYTES,
  SafetensorsError,
  SafetensorsFile,
} from "../../formats/safetensors.ts";
import type { Dtype } from "../../formats/safetensors.ts";
import { withTempDir } from "../_util.ts";
import {
  applyEdits,
  assertRefusal,
  type ByteEdit,
  byteEdits,
  fuzz,
  nastyJson,
  refusedOrOk,
} from "./_fuzz.ts";

const OPTS = { sanitizeResources: true, sanitizeOps: true };

interface Tensor {
  name: string;
  dtype: Dtype;
  shape: number[];
}

/** A few small tensors with distinct names. */
const tensorsArb: fc.Arbitrary<Tensor[]> = fc.uniqueArray(
  fc.record({
    name: fc.oneof(
      fc.string({ minLength: 1, maxLength: 8 }),
      fc.string({ unit: "binary", minLength: 1, maxLength: 4 }),
      fc.constantFrom("h.0.w", "wte", "a\nb", "\u2028"),
    ),
    dtype: fc.constantFrom(...DTYPES),
    shape: fc.array(fc.nat(3), { maxLength: 3 }),
  }),
  { selector: (t) => t.name, maxLength: 4 },
).map((ts) => ts.filter((t) => t.name !== "__metadata__"));

/** The header object and data section of a valid file holding `tensors`. */
function layout(tensors: Tensor[], metadata?: Record<string, string>) {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    const size = t.shape.reduce((a, b) => a * b, 1) * dtypeBytes(t.dtype);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + size] };
    offset += size;
  }
  const data = new Uint8Array(offset);
  for (let i = 0; i < offset; i++) data[i] = (i * 37) & 255;
  return { header, data };
}

/** The whole file: the length field (optionally wrong by `lengthDelta`), header text, data. */
function assemble(headerText: string, data: Uint8Array, lengthField?: bigint): Uint8Array {
  const header = new TextEncoder().encode(headerText);
  const out = new Uint8Array(8 + header.length + data.length);
  new DataView(out.buffer).setBigUint64(0, lengthField ?? BigInt(header.length), true);
  out.set(header, 8);
  out.set(data, 8 + header.length);
  return out;
}

/** Opens a file, reads every tensor, closes it; asserts any refusal is one line naming it. */
async function openAndReadAll(path: string): Promise<boolean> {
  const file = await refusedOrOk(() => SafetensorsFile.open(path), [SafetensorsError], path);
  if (file === undefined) return false;
  using f = file;
  for (const [name, info] of f.tensors) {
    const bytes = await f.readBytes(name);
    assert.equal(bytes.length, info.end - info.begin);
    const floats = await refusedOrOk(() => f.readFloat32(name), [SafetensorsError], path);
    if (floats !== undefined) {
      const elements = info.shape.reduce((a, b) => a * b, 1);
      assert.equal(floats.length, elements, `tensor "${name}" read back whole`);
    }
  }
  return true;
}

type HeaderEdit =
  | { op: "field"; entry: number; key: string; value: unknown }
  | { op: "drop"; entry: number; key: string }
  | { op: "entry"; entry: number; value: unknown }
  | { op: "rename"; entry: number; name: string }
  | { op: "shift"; entry: number; which: 0 | 1; delta: number }
  | { op: "metadata"; value: unknown }
  | { op: "duplicate"; entry: number };

const headerEdits: fc.Arbitrary<HeaderEdit[]> = fc.array(
  fc.oneof(
    fc.record({
      op: fc.constant("field" as const),
      entry: fc.nat(),
      key: fc.constantFrom("dtype", "shape", "data_offsets", "extra"),
      value: fc.oneof(nastyJson, fc.constantFrom(...DTYPES, "F8", "f32", "U16")),
    }),
    fc.record({
      op: fc.constant("drop" as const),
      entry: fc.nat(),
      key: fc.constantFrom("dtype", "shape", "data_offsets"),
    }),
    fc.record({ op: fc.constant("entry" as const), entry: fc.nat(), value: nastyJson }),
    fc.record({
      op: fc.constant("rename" as const),
      entry: fc.nat(),
      name: fc.oneof(
        fc.string({ unit: "binary" }),
        fc.constantFrom("__metadata__", "0", "1", "", "\r"),
      ),
    }),
    fc.record({
      op: fc.constant("shift" as const),
      entry: fc.nat(),
      which: fc.constantFrom(0 as const, 1 as const),
      delta: fc.oneof(fc.integer({ min: -9, max: 9 }), fc.constantFrom(2 ** 40, -(2 ** 40))),
    }),
    fc.record({ op: fc.constant("metadata" as const), value: nastyJson }),
    fc.record({ op: fc.constant("duplicate" as const), entry: fc.nat() }),
  ),
  { minLength: 1, maxLength: 3 },
);

/** The header text after `edits`; a duplicate key can only be written in the text. */
function editHeader(header: Record<string, unknown>, edits: HeaderEdit[]): string {
  const h = structuredClone(header);
  const names = () => Object.keys(h).filter((k) => k !== "__metadata__");
  const duplicates: string[] = [];
  for (const edit of edits) {
    if (edit.op === "metadata") {
      h.__metadata__ = edit.value;
      continue;
    }
    const all = names();
    if (all.length === 0) continue;
    const name = all[edit.entry % all.length];
    const entry = h[name];
    const fields = typeof entry === "object" && entry !== null && !Array.isArray(entry)
      ? entry as Record<string, unknown>
      : undefined;
    if (edit.op === "field" && fields) fields[edit.key] = edit.value;
    else if (edit.op === "drop" && fields) delete fields[edit.key];
    else if (edit.op === "entry") h[name] = edit.value;
    else if (edit.op === "rename") {
      delete h[name];
      h[edit.name] = entry;
    } else if (edit.op === "shift" && fields && Array.isArray(fields.data_offsets)) {
      const offsets = fields.data_offsets.slice();
      offsets[edit.which] = Number(offsets[edit.which]) + edit.delta;
      fields.data_offsets = offsets;
    } else if (edit.op === "duplicate") {
      duplicates.push(`${JSON.stringify(name)}:${JSON.stringify(entry) ?? "null"}`);
    }
  }
  const text = JSON.stringify(h);
  if (duplicates.length === 0) return text;
  return `${text.slice(0, -1)}${text.length > 2 ? "," : ""}${duplicates.join(",")}}`;
}

// Under ~12 s in all for this file on the 2-core CI machine.
const HEADERS = { runs: 2500, ms: 4_000 };
const BYTES = { runs: 2500, ms: 3_000 };
const TEXTS = { runs: 1500, ms: 2_000 };
const CHECKPOINTS = { runs: 2000, ms: 3_000 };

Deno.test(
  "fuzz: SafetensorsFile.open on mutated headers ends in a file or one line",
  OPTS,
  async () => {
    await withTempDir("fuzz-st", async (dir) => {
      const path = join(dir, "case.safetensors");
      let opened = 0;
      const runs = await fuzz(
        "safetensors headers",
        fc.tuple(
          tensorsArb,
          fc.option(fc.dictionary(fc.string({ unit: "binary" }), fc.string(), { maxKeys: 3 })),
          headerEdits,
          fc.option(fc.integer({ min: -3, max: 3 })),
        ),
        async ([tensors, metadata, edits, lengthDelta]) => {
          const { header, data } = layout(tensors, metadata ?? undefined);
          const text = editHeader(header, edits);
          const length = new TextEncoder().encode(text).length + (lengthDelta ?? 0);
          await Deno.writeFile(path, assemble(text, data, BigInt(Math.max(0, length))));
          if (await openAndReadAll(path)) opened++;
        },
        HEADERS,
      );
      assert.ok(opened < runs, "some mutations are refused");
    });
  },
);

Deno.test(
  "fuzz: SafetensorsFile.open on mutated bytes ends in a file or one line",
  OPTS,
  async () => {
    await withTempDir("fuzz-st", async (dir) => {
      const path = join(dir, "case.safetensors");
      await fuzz(
        "safetensors bytes",
        fc.tuple(tensorsArb, byteEdits),
        async ([tensors, edits]) => {
          const { header, data } = layout(tensors, { format: "pt" });
          await Deno.writeFile(path, applyEdits(assemble(JSON.stringify(header), data), edits));
          await openAndReadAll(path);
        },
        BYTES,
      );
    });
  },
);

Deno.test(
  "fuzz: SafetensorsFile.open on arbitrary header text ends in one line",
  OPTS,
  async () => {
    await withTempDir("fuzz-st", async (dir) => {
      const path = join(dir, "case.safetensors");
      await fuzz(
        "safetensors header text",
        fc.tuple(
          fc.oneof(fc.json({ maxDepth: 4 }), fc.string({ unit: "binary" }), fc.string()),
          fc.uint8Array({ maxLength: 16 }),
        ),
        async ([text, data]) => {
          await Deno.writeFile(path, assemble(text, data));
          await openAndReadAll(path);
        },
        TEXTS,
      );
    });
  },
);

Deno.test(
  "a header that claims more bytes than exist is refused before anything is allocated",
  OPTS,
  async () => {
    await withTempDir("fuzz-st", async (dir) => {
      const path = join(dir, "claims.safetensors");
      const big = (n: number) => ({ dtype: "F32", shape: [n / 4], data_offsets: [0, n] });
      const cases: [string, Uint8Array, RegExp][] = [
        [
          "2^40-byte header",
          assemble("{}", new Uint8Array(0), 2n ** 40n),
          /exceeds the 100000000-byte limit/,
        ],
        ["2^64-1-byte header", assemble("{}", new Uint8Array(0), 2n ** 64n - 1n), /exceeds the/],
        [
          "header at the limit, past the file",
          assemble("{}", new Uint8Array(0), BigInt(MAX_HEADER_BYTES)),
          /runs past the end of the file/,
        ],
        [
          "2^40-byte tensor",
          assemble(JSON.stringify({ w: big(2 ** 40) }), new Uint8Array(4)),
          /ends past the data/,
        ],
        [
          "2^52-byte tensor",
          assemble(JSON.stringify({ w: big(2 ** 52) }), new Uint8Array(4)),
          /ends past the data/,
        ],
        [
          "shape over 2^53 bytes",
          assemble(
            JSON.stringify({
              w: { dtype: "F64", shape: [2 ** 30, 2 ** 30], data_offsets: [0, 8] },
            }),
            new Uint8Array(8),
          ),
          /byte size overflows/,
        ],
        [
          "offset 2^64",
          assemble(
            JSON.stringify({
              w: { dtype: "U8", shape: [1], data_offsets: [2 ** 64, 2 ** 64 + 1] },
            }),
            new Uint8Array(1),
          ),
          /data_offsets/,
        ],
      ];
      const before = Deno.memoryUsage().rss;
      for (const [what, bytes, message] of cases) {
        await Deno.writeFile(path, bytes);
        const start = performance.now();
        await assert.rejects(() => SafetensorsFile.open(path), (e: Error) => {
          assert.ok(e instanceof SafetensorsError, what);
          assert.match(e.message, new RegExp(`^Invalid safetensors file "${path}": `), what);
          assert.match(e.message, message, what);
          return true;
        });
        assert.ok(performance.now() - start < 500, `${what} is refused at once`);
      }
      const grown = Deno.memoryUsage().rss - before;
      assert.ok(grown < 64 * 2 ** 20, `memory grew by ${grown} bytes`);
    });
  },
);

// A two-shard checkpoint, and mutations of its index and of either shard.
type ShardEdit =
  | { op: "map"; entry: number; value: unknown }
  | { op: "shard"; entry: number; name: string }
  | { op: "index"; value: unknown }
  | { op: "indexBytes"; edits: ByteEdit[] }
  | { op: "shardBytes"; shard: 0 | 1; edits: ByteEdit[] };

const shardNames = fc.constantFrom(
  "a.safetensors",
  "b.safetensors",
  "missing.safetensors",
  ".",
  "sub",
  "sub/",
  "./a.safetensors",
  "sub/../a.safetensors",
  "../a.safetensors",
  "/etc/passwd",
  "",
  "a\u0000b",
  "model.safetensors.index.json",
);

const shardEdits: fc.Arbitrary<ShardEdit[]> = fc.array(
  fc.oneof(
    fc.record({ op: fc.constant("map" as const), entry: fc.nat(), value: nastyJson }),
    fc.record({ op: fc.constant("shard" as const), entry: fc.nat(), name: shardNames }),
    fc.record({ op: fc.constant("index" as const), value: nastyJson }),
    fc.record({ op: fc.constant("indexBytes" as const), edits: byteEdits }),
    fc.record({
      op: fc.constant("shardBytes" as const),
      shard: fc.constantFrom(0 as const, 1 as const),
      edits: byteEdits,
    }),
  ),
  { minLength: 1, maxLength: 3 },
);

Deno.test(
  "fuzz: Checkpoint.open on mutated sharded folders ends in a checkpoint or one line",
  OPTS,
  async () => {
    await withTempDir("fuzz-ckpt", async (root) => {
      let n = 0;
      await fuzz(
        "checkpoint folders",
        shardEdits,
        async (edits) => {
          const dir = join(root, String(n++));
          await Deno.mkdir(join(dir, "sub"), { recursive: true });
          const a = layout([{ name: "x", dtype: "F32", shape: [2] }, {
            name: "y",
            dtype: "U8",
            shape: [3],
          }]);
          const b = layout([{ name: "z", dtype: "F16", shape: [1, 2] }]);
          let shards = [
            assemble(JSON.stringify(a.header), a.data),
            assemble(JSON.stringify(b.header), b.data),
          ];
          let index: unknown = {
            metadata: { total_size: 13 },
            weight_map: { x: "a.safetensors", y: "a.safetensors", z: "b.safetensors" },
          };
          let indexBytes: Uint8Array | undefined;
          for (const edit of edits) {
            const map = (index as { weight_map?: unknown })?.weight_map;
            const keys = typeof map === "object" && map !== null ? Object.keys(map) : [];
            if (edit.op === "index") index = edit.value;
            else if (edit.op === "map" && typeof index === "object" && index !== null) {
              (index as Record<string, unknown>).weight_map = edit.value;
            } else if (edit.op === "shard" && keys.length > 0) {
              (map as Record<string, unknown>)[keys[edit.entry % keys.length]] = edit.name;
            } else if (edit.op === "indexBytes") {
              indexBytes = applyEdits(new TextEncoder().encode(JSON.stringify(index)), edit.edits);
            } else if (edit.op === "shardBytes") {
              shards = shards.map((s, i) => i === edit.shard ? applyEdits(s, edit.edits) : s);
            }
          }
          await Deno.writeFile(join(dir, "a.safetensors"), shards[0]);
          await Deno.writeFile(join(dir, "b.safetensors"), shards[1]);
          await Deno.writeFile(
            join(dir, "model.safetensors.index.json"),
            indexBytes ?? new TextEncoder().encode(JSON.stringify(index) ?? ""),
          );
          const ckpt = await refusedOrOk(() => Checkpoint.open(dir), [SafetensorsError], dir);
          if (ckpt !== undefined) {
            using c = ckpt;
            for (const name of c.names()) await c.readBytes(name);
          }
          await Deno.remove(dir, { recursive: true });
        },
        CHECKPOINTS,
      );
    });
  },
);

// Cases the fuzzer found, kept as they were shrunk.
Deno.test("refusals found by fuzzing stay one line naming the file", OPTS, async () => {
  await withTempDir("fuzz-st", async (dir) => {
    const path = join(dir, "case.safetensors");
    const files: [string, Uint8Array, RegExp][] = [
      // JSON.parse quotes the header text in its message, line breaks included.
      [
        "header text with carriage returns",
        assemble("\u{10fff0}key\u2e4d\u0002\r\r", new Uint8Array(0)),
        /header is not valid JSON \(.*\\r\\r/,
      ],
      ["header text with a line break", assemble('{"a\n', new Uint8Array(0)), /not valid JSON/],
      // A name from the file, quoted in the message.
      [
        "tensor name with a line break",
        assemble(
          JSON.stringify({ "a\nb": { dtype: "F8", shape: [], data_offsets: [0, 1] } }),
          new Uint8Array(1),
        ),
        /tensor "a\\nb" has unknown dtype "F8"/,
      ],
      [
        "metadata key with a line separator",
        assemble(JSON.stringify({ __metadata__: { "k\u2028": 1 } }), new Uint8Array(0)),
        /"__metadata__" entry "k\\u2028" is a number, not a string/,
      ],
    ];
    for (const [what, bytes, message] of files) {
      await Deno.writeFile(path, bytes);
      await assert.rejects(() => SafetensorsFile.open(path), (e: Error) => {
        assertRefusal(e, [SafetensorsError], path);
        assert.match(e.message, message, what);
        return true;
      });
    }

    // A shard named "." or "sub/" is a folder: Deno opens it, and reading it failed with
    // IsADirectory from deep inside.
    for (const shard of [".", "sub/"]) {
      const folder = join(dir, `ckpt-${shard === "." ? "dot" : "sub"}`);
      await Deno.mkdir(join(folder, "sub"), { recursive: true });
      const index = { weight_map: { x: shard } };
      await Deno.writeTextFile(join(folder, "model.safetensors.index.json"), JSON.stringify(index));
      await assert.rejects(() => Checkpoint.open(folder), (e: Error) => {
        assertRefusal(e, [SafetensorsError], folder);
        assert.match(e.message, /folder, not a file/);
        return true;
      });
    }
  });
});
