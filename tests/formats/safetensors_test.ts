// One file for the reader, the writer and the malformed-file corpus, so the corpus sits beside
// the round trips that show the same layouts are accepted when well formed.

import assert from "node:assert/strict";
import {
  bf16ToF32,
  Checkpoint,
  type Dtype,
  dtypeBytes,
  DTYPES,
  encodeSafetensors,
  f16ToF32,
  SafetensorsError,
  SafetensorsFile,
  type TensorToWrite,
  widenHalf,
  writeSafetensors,
} from "../../formats/safetensors.ts";

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  await Deno.mkdir("out/tmp", { recursive: true });
  const dir = await Deno.makeTempDir({ dir: "out/tmp", prefix: "safetensors-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A file from a header (JSON text, an object to stringify, or raw bytes) and its data. */
function rawFile(
  header: string | object | Uint8Array,
  data: Uint8Array | number,
  options: { headerLength?: bigint } = {},
): Uint8Array {
  const headerBytes = header instanceof Uint8Array
    ? header
    : new TextEncoder().encode(typeof header === "string" ? header : JSON.stringify(header));
  const dataBytes = typeof data === "number" ? new Uint8Array(data) : data;
  const out = new Uint8Array(8 + headerBytes.length + dataBytes.length);
  const length = options.headerLength ?? BigInt(headerBytes.length);
  new DataView(out.buffer).setBigUint64(0, length, true);
  out.set(headerBytes, 8);
  out.set(dataBytes, 8 + headerBytes.length);
  return out;
}

function bytesOf(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

function sameFloat(actual: number, expected: number): boolean {
  return Object.is(actual, expected) || (Number.isNaN(actual) && Number.isNaN(expected));
}

const SAMPLES: Record<Dtype, TensorToWrite["data"]> = {
  F64: new Float64Array([1.5, -0, 1e300, -Infinity, NaN, 5e-324]),
  F32: new Float32Array([1.5, -0, 3.4e38, Infinity, NaN, 1e-45]),
  F16: new Float16Array([1.5, -0, 65504, -Infinity, NaN, 2 ** -24]),
  BF16: new Uint16Array([0x3fc0, 0x8000, 0x7f7f, 0xff80, 0x7fc0, 0x0001]),
  I64: new BigInt64Array([-(2n ** 63n), 2n ** 63n - 1n, 0n, -1n, 42n, 7n]),
  I32: new Int32Array([-(2 ** 31), 2 ** 31 - 1, 0, -1, 42, 7]),
  I16: new Int16Array([-32768, 32767, 0, -1, 42, 7]),
  I8: new Int8Array([-128, 127, 0, -1, 42, 7]),
  U8: new Uint8Array([0, 255, 1, 2, 3, 4]),
  BOOL: new Uint8Array([0, 1, 1, 0, 0, 1]),
};

Deno.test("every dtype round-trips byte for byte through writeSafetensors and readBytes", async () => {
  await withTempDir(async (dir) => {
    const tensors = DTYPES.map((dtype) => ({
      name: `t.${dtype}`,
      dtype,
      shape: [2, 3],
      data: SAMPLES[dtype],
    }));
    await writeSafetensors(`${dir}/all.safetensors`, tensors);
    using file = await SafetensorsFile.open(`${dir}/all.safetensors`);
    assert.deepEqual(file.names(), tensors.map((t) => t.name));
    assert.deepEqual(file.metadata, {});
    let previousEnd = -1;
    for (const t of tensors) {
      const info = file.info(t.name);
      assert.deepEqual(info, { ...info, name: t.name, dtype: t.dtype, shape: [2, 3] });
      assert.equal(info.end - info.begin, 6 * dtypeBytes(t.dtype));
      assert.ok(previousEnd === -1 || info.begin === previousEnd, "data is laid out in order");
      previousEnd = info.end;
      assert.deepEqual(await file.readBytes(t.name), bytesOf(t.data), t.dtype);
    }
    assert.equal(previousEnd, (await Deno.stat(`${dir}/all.safetensors`)).size);
  });
});

Deno.test("scalars and empty tensors round-trip", async () => {
  const bytes = encodeSafetensors([
    { name: "scalar", dtype: "F32", shape: [], data: new Float32Array([2.5]) },
    { name: "empty", dtype: "F32", shape: [0, 4], data: new Float32Array() },
    { name: "after", dtype: "I8", shape: [1], data: new Int8Array([-3]) },
  ]);
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/s.safetensors`, bytes);
    using file = await SafetensorsFile.open(`${dir}/s.safetensors`);
    assert.deepEqual(await file.readFloat32("scalar"), new Float32Array([2.5]));
    assert.deepEqual(await file.readFloat32("empty"), new Float32Array());
    assert.deepEqual(file.info("empty").shape, [0, 4]);
    assert.deepEqual(await file.readBytes("after"), new Uint8Array([0xfd]));
  });
});

Deno.test("header order is kept for names JSON.parse would reorder or that need escapes", async () => {
  // Quotes, backslashes and brackets inside names exercise the duplicate-key scanner too.
  const names = [
    "b",
    "10",
    "a",
    "2",
    'q"}\\",',
    "{[:]}",
    "\u00e9\u{1f680}",
    "h.0.attn.c_attn.weight",
  ];
  const bytes = encodeSafetensors(
    names.map((name, i) => ({ name, dtype: "U8", shape: [1], data: new Uint8Array([i]) })),
  );
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/o.safetensors`, bytes);
    using file = await SafetensorsFile.open(`${dir}/o.safetensors`);
    assert.deepEqual(file.names(), names);
    for (const [i, name] of names.entries()) {
      assert.deepEqual(await file.readBytes(name), new Uint8Array([i]));
    }
  });
});

Deno.test("metadata round-trips and __metadata__ comes first in the header", async () => {
  const metadata = { format: "pt", method: "nola", note: 'quote " backslash \\ \u00e9 \u{1f680}' };
  const bytes = encodeSafetensors(
    [{ name: "w", dtype: "F32", shape: [1], data: new Float32Array([1]) }],
    metadata,
  );
  const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header = new TextDecoder().decode(bytes.subarray(8, 8 + headerLength));
  assert.ok(header.startsWith('{"__metadata__":{'), header);
  await withTempDir(async (dir) => {
    await writeSafetensors(`${dir}/m.safetensors`, [], metadata);
    using file = await SafetensorsFile.open(`${dir}/m.safetensors`);
    assert.deepEqual(file.metadata, metadata);
    assert.deepEqual(file.names(), []);
  });
});

Deno.test("headers are padded with spaces to a multiple of 8 bytes for every name length", () => {
  for (let length = 1; length <= 17; length++) {
    const bytes = encodeSafetensors([
      { name: "x".repeat(length), dtype: "U8", shape: [3], data: new Uint8Array([1, 2, 3]) },
    ]);
    const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    assert.equal(headerLength % 8, 0);
    const header = new TextDecoder().decode(bytes.subarray(8, 8 + headerLength));
    const json = header.trimEnd();
    assert.ok(header.length - json.length < 8);
    assert.match(header.slice(json.length), /^ *$/);
    JSON.parse(json);
    assert.deepEqual(bytes.subarray(8 + headerLength), new Uint8Array([1, 2, 3]));
  }
});

Deno.test("encodeSafetensors matches a hand-written file byte for byte", () => {
  // Built from the format description: u64 LE length, JSON with dtype, shape, data_offsets in
  // that order, spaces to a multiple of 8, then little-endian data.
  const json = '{"__metadata__":{"format":"pt"},' +
    '"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},' +
    '"b":{"dtype":"I16","shape":[1,1],"data_offsets":[8,10]}}';
  assert.equal(json.length, 141);
  const expected = new Uint8Array([
    ...[144, 0, 0, 0, 0, 0, 0, 0],
    ...new TextEncoder().encode(json + " ".repeat(3)),
    ...[0x00, 0x00, 0x80, 0x3f], // 1.0f
    ...[0x00, 0x00, 0x00, 0xc0], // -2.0f
    ...[0xfe, 0xff], // -2 as i16
  ]);
  const actual = encodeSafetensors([
    { name: "a", dtype: "F32", shape: [2], data: new Float32Array([1, -2]) },
    { name: "b", dtype: "I16", shape: [1, 1], data: new Int16Array([-2]) },
  ], { format: "pt" });
  assert.deepEqual(actual, expected);
});

Deno.test("readFloat32 widens F16 and BF16 exactly, rounds F64, and rejects integer dtypes", async () => {
  const f64 = new Float64Array([0.1, 1 / 3, 1e300, -1e-320, 16777217]);
  const bytes = encodeSafetensors([
    { name: "f16", dtype: "F16", shape: [6], data: SAMPLES.F16 },
    { name: "bf16", dtype: "BF16", shape: [6], data: SAMPLES.BF16 },
    { name: "f64", dtype: "F64", shape: [5], data: f64 },
    { name: "f32", dtype: "F32", shape: [6], data: SAMPLES.F32 },
    { name: "i32", dtype: "I32", shape: [6], data: SAMPLES.I32 },
    { name: "mask", dtype: "BOOL", shape: [6], data: SAMPLES.BOOL },
  ]);
  await withTempDir(async (dir) => {
    const path = `${dir}/f.safetensors`;
    await Deno.writeFile(path, bytes);
    using file = await SafetensorsFile.open(path);
    const check = (actual: Float32Array, expected: ArrayLike<number>) => {
      assert.equal(actual.length, expected.length);
      for (let i = 0; i < actual.length; i++) {
        assert.ok(sameFloat(actual[i], expected[i]), `${i}: ${actual[i]} vs ${expected[i]}`);
      }
    };
    check(await file.readFloat32("f16"), [1.5, -0, 65504, -Infinity, NaN, 2 ** -24]);
    check(await file.readFloat32("bf16"), [
      1.5,
      -0,
      (2 - 2 ** -7) * 2 ** 127,
      -Infinity,
      NaN,
      2 ** -133,
    ]);
    check(await file.readFloat32("f64"), Array.from(f64, Math.fround));
    check(await file.readFloat32("f32"), SAMPLES.F32 as Float32Array);
    for (const [name, dtype] of [["i32", "I32"], ["mask", "BOOL"]]) {
      await assert.rejects(file.readFloat32(name), (e: unknown) => {
        assert.ok(e instanceof SafetensorsError);
        assert.match(e.message, new RegExp(`"${name}".*${dtype} is not a float type`));
        assert.equal(e.tensor, name);
        return true;
      });
    }
  });
});

Deno.test("f16ToF32 gives known values for zeros, subnormals, normals, infinities and NaN", () => {
  const known: Array<[number, number]> = [
    [0x0000, 0],
    [0x8000, -0],
    [0x0001, 2 ** -24],
    [0x8001, -(2 ** -24)],
    [0x03ff, 1023 * 2 ** -24],
    [0x0400, 2 ** -14],
    [0x3c00, 1],
    [0x3c01, 1 + 2 ** -10],
    [0xc000, -2],
    [0x3555, 0.333251953125],
    [0x7bff, 65504],
    [0x7c00, Infinity],
    [0xfc00, -Infinity],
    [0x7c01, NaN],
    [0x7e00, NaN],
    [0xfe00, NaN],
  ];
  for (const [bits, value] of known) {
    assert.ok(sameFloat(f16ToF32(bits), value), `0x${bits.toString(16)}`);
  }
});

Deno.test("bf16ToF32 gives known values and agrees with the top half of an f32 everywhere", () => {
  const known: Array<[number, number]> = [
    [0x0000, 0],
    [0x8000, -0],
    [0x0001, 2 ** -133],
    [0x007f, 127 * 2 ** -133],
    [0x0080, 2 ** -126],
    [0x3f80, 1],
    [0xc000, -2],
    [0x7f7f, (2 - 2 ** -7) * 2 ** 127],
    [0x7f80, Infinity],
    [0xff80, -Infinity],
    [0x7fc0, NaN],
    [0xff81, NaN],
  ];
  for (const [bits, value] of known) {
    assert.ok(sameFloat(bf16ToF32(bits), value), `0x${bits.toString(16)}`);
  }
  const all = new Uint16Array(65536).map((_, i) => i);
  const widened = widenHalf(all, "BF16");
  const f32 = new Float32Array(1);
  const u32 = new Uint32Array(f32.buffer);
  for (let i = 0; i < 65536; i++) {
    u32[0] = i * 65536;
    assert.ok(sameFloat(bf16ToF32(i), f32[0]), `0x${i.toString(16)}`);
    assert.ok(sameFloat(widened[i], f32[0]), `0x${i.toString(16)}`);
  }
});

Deno.test("open reads only the header: a 4 GiB sparse file opens and its last tensor reads", async () => {
  await withTempDir(async (dir) => {
    const big = 2 ** 30; // F32 elements, 4 GiB
    const json = JSON.stringify({
      big: { dtype: "F32", shape: [big], data_offsets: [0, 4 * big] },
      tail: { dtype: "F32", shape: [2], data_offsets: [4 * big, 4 * big + 8] },
    });
    const head = rawFile(json, 0);
    const path = `${dir}/sparse.safetensors`;
    await Deno.writeFile(path, head);
    await Deno.truncate(path, head.length + 4 * big + 8);
    const tail = new Float32Array([3.5, -7]);
    using handle = await Deno.open(path, { write: true });
    await handle.seek(head.length + 4 * big, Deno.SeekMode.Start);
    await handle.write(bytesOf(tail));
    using file = await SafetensorsFile.open(path);
    assert.equal(file.info("tail").begin, head.length + 4 * big);
    assert.deepEqual(await file.readFloat32("tail"), tail);
  });
});

Deno.test("concurrent reads on one file each get their own tensor", async () => {
  const tensors = Array.from({ length: 32 }, (_, i) => ({
    name: `t${i}`,
    dtype: "F32" as const,
    shape: [i + 1],
    data: new Float32Array(i + 1).fill(i),
  }));
  await withTempDir(async (dir) => {
    await writeSafetensors(`${dir}/c.safetensors`, tensors);
    using file = await SafetensorsFile.open(`${dir}/c.safetensors`);
    const read = await Promise.all(tensors.map((t) => file.readFloat32(t.name)));
    read.forEach((values, i) => assert.deepEqual(values, tensors[i].data));
  });
});

Deno.test("reading an unknown tensor, a closed file or a missing file throws SafetensorsError", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/u.safetensors`;
    await writeSafetensors(path, [{ name: "w", dtype: "U8", shape: [1], data: new Uint8Array(1) }]);
    const file = await SafetensorsFile.open(path);
    assert.throws(
      () => file.readBytes("nope"),
      /Tensor "nope" not found in safetensors file ".*u\.safetensors"$/,
    );
    file.close();
    file.close();
    assert.throws(() => file.readBytes("w"), /the file is closed$/);
    await assert.rejects(
      SafetensorsFile.open(`${dir}/absent.safetensors`),
      (e: unknown) =>
        e instanceof SafetensorsError && /^Cannot open safetensors file ".*absent/.test(e.message),
    );
  });
});

Deno.test("the writer rejects bad tensors and metadata and leaves the target untouched", async () => {
  const f32 = (n: number) => new Float32Array(n);
  const bad: Array<[string, TensorToWrite[], Record<string, string> | undefined, RegExp]> = [
    [
      "duplicate",
      [
        { name: "w", dtype: "F32", shape: [1], data: f32(1) },
        { name: "w", dtype: "F32", shape: [1], data: f32(1) },
      ],
      undefined,
      /tensor "w" is given twice/,
    ],
    [
      "length",
      [{ name: "w", dtype: "F32", shape: [2, 3], data: f32(5) }],
      undefined,
      /\(6 x F32 = 24 bytes\) but 20 bytes of data/,
    ],
    [
      "kind",
      [{ name: "w", dtype: "F16", shape: [2], data: f32(2) }],
      undefined,
      /dtype F16 but its data is a Float32Array/,
    ],
    [
      "reserved",
      [{ name: "__metadata__", dtype: "F32", shape: [1], data: f32(1) }],
      undefined,
      /is reserved/,
    ],
    [
      "dtype",
      [{ name: "w", dtype: "F8" as Dtype, shape: [1], data: new Uint8Array(1) }],
      undefined,
      /unknown dtype "F8"/,
    ],
    [
      "shape",
      [{ name: "w", dtype: "U8", shape: [-1], data: new Uint8Array(0) }],
      undefined,
      /shape \[-1\], not non-negative/,
    ],
    [
      "metadata",
      [],
      { epoch: 3 as unknown as string },
      /metadata "epoch" is a number, not a string/,
    ],
  ];
  for (const [label, tensors, metadata, pattern] of bad) {
    assert.throws(() => encodeSafetensors(tensors, metadata), (e: unknown) => {
      assert.ok(e instanceof SafetensorsError, label);
      assert.match(e.message, /^Cannot encode safetensors: /);
      assert.match(e.message, pattern);
      return true;
    });
  }
  await withTempDir(async (dir) => {
    const path = `${dir}/keep.safetensors`;
    await Deno.writeFile(path, new Uint8Array([1, 2, 3]));
    await assert.rejects(
      writeSafetensors(path, bad[0][1]),
      /^SafetensorsError: Cannot write ".*keep\.safetensors": tensor "w" is given twice$/,
    );
    assert.deepEqual(await Deno.readFile(path), new Uint8Array([1, 2, 3]));
  });
});

const T = "h.0.attn.c_attn.weight";
const U = "h.0.mlp.c_fc.bias";
const f32Entry = (shape: number[], begin: number, end: number) => ({
  dtype: "F32",
  shape,
  data_offsets: [begin, end],
});

interface MalformedCase {
  title: string;
  bytes: Uint8Array;
  phrase: string;
  tensor?: string;
}

const MALFORMED: MalformedCase[] = [
  {
    title: "file shorter than 8 bytes",
    bytes: new Uint8Array(5),
    phrase: "is 5 bytes, shorter than the 8-byte header length",
  },
  {
    title: "header length past the end",
    bytes: rawFile("{}", 0, { headerLength: 1000n }),
    phrase: "header length 1000 runs past the end of the file (10 bytes)",
  },
  {
    title: "header over 100 MB",
    bytes: rawFile("{}", 0, { headerLength: 200_000_000n }),
    phrase: "header length 200000000 exceeds the 100000000-byte limit",
  },
  {
    title: "header length beyond 2**53",
    bytes: rawFile("{}", 0, { headerLength: 2n ** 64n - 1n }),
    phrase: "header length 18446744073709551615 exceeds",
  },
  {
    title: "non-UTF-8 header",
    bytes: rawFile(new Uint8Array([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]), 0),
    phrase: "header is not valid UTF-8",
  },
  {
    title: "invalid JSON",
    bytes: rawFile(`{"${T}": {"dtype": "F32",`, 0),
    phrase: "header is not valid JSON",
  },
  {
    title: "JSON array",
    bytes: rawFile("[1, 2]", 0),
    phrase: "header JSON is an array, not an object",
  },
  {
    title: "JSON number",
    bytes: rawFile("42", 0),
    phrase: "header JSON is a number, not an object",
  },
  {
    title: "duplicate names",
    bytes: rawFile(
      `{"${T}":${JSON.stringify(f32Entry([1], 0, 4))}, "h.0.attn.c_attn.\\u0077eight":${
        JSON.stringify(f32Entry([1], 4, 8))
      }}`,
      8,
    ),
    phrase: `tensor "${T}" appears twice in the header`,
    tensor: T,
  },
  {
    title: "__metadata__ with a non-string value",
    bytes: rawFile({ __metadata__: { epoch: 3 } }, 0),
    phrase: '"__metadata__" entry "epoch" is a number, not a string',
  },
  {
    title: "__metadata__ not an object",
    bytes: rawFile({ __metadata__: ["pt"] }, 0),
    phrase: '"__metadata__" is an array, not an object of strings',
  },
  {
    title: "entry not an object",
    bytes: rawFile({ [T]: "F32" }, 0),
    phrase: `tensor "${T}" entry is a string, not an object`,
    tensor: T,
  },
  {
    title: "missing key",
    bytes: rawFile({ [T]: { dtype: "F32", shape: [1] } }, 4),
    phrase: `tensor "${T}" is missing key "data_offsets"`,
    tensor: T,
  },
  {
    title: "extra key",
    bytes: rawFile({ [T]: { ...f32Entry([1], 0, 4), offset: 0 } }, 4),
    phrase: `tensor "${T}" has unknown key "offset"`,
    tensor: T,
  },
  {
    title: "unknown dtype",
    bytes: rawFile({ [T]: { ...f32Entry([1], 0, 1), dtype: "F8_E4M3" } }, 1),
    phrase: `tensor "${T}" has unknown dtype "F8_E4M3"`,
    tensor: T,
  },
  {
    title: "shape not an array",
    bytes: rawFile({ [T]: f32Entry(4 as unknown as number[], 0, 16) }, 16),
    phrase: "has shape 4, which is not an array",
    tensor: T,
  },
  {
    title: "negative dimension",
    bytes: rawFile({ [T]: f32Entry([2, -1], 0, 0) }, 0),
    phrase: "has shape [2,-1]: dimension -1 is negative",
    tensor: T,
  },
  {
    title: "fractional dimension",
    bytes: rawFile({ [T]: f32Entry([1.5, 2], 0, 12) }, 12),
    phrase: "has shape [1.5,2]: dimension 1.5 is not an integer",
    tensor: T,
  },
  {
    title: "unsafe dimension",
    bytes: rawFile({ [T]: f32Entry([2 ** 60], 0, 8) }, 8),
    phrase: "is not a safe integer",
    tensor: T,
  },
  {
    title: "shape overflow",
    bytes: rawFile({ [T]: f32Entry([2 ** 40, 2 ** 40], 0, 8) }, 8),
    phrase: "has shape [1099511627776,1099511627776] whose byte size overflows",
    tensor: T,
  },
  {
    title: "data_offsets not two integers",
    bytes: rawFile(
      { [T]: f32Entry([1], 0, 4), [U]: { ...f32Entry([1], 4, 8), data_offsets: [4] } },
      8,
    ),
    phrase: "has data_offsets [4] (expected [begin, end]",
    tensor: U,
  },
  {
    title: "data_offsets begin after end",
    bytes: rawFile({ [T]: f32Entry([1], 8, 4) }, 8),
    phrase: "has data_offsets [8,4] with begin after end",
    tensor: T,
  },
  {
    title: "data_offsets wrong size for shape",
    bytes: rawFile({ [T]: f32Entry([3, 4], 0, 40) }, 40),
    phrase: `tensor "${T}" has shape [3,4] (12 x F32 = 48 bytes) but byte range [0, 40)`,
    tensor: T,
  },
  {
    title: "range starts out of bounds",
    bytes: rawFile({ [T]: f32Entry([1], 0, 4), [U]: f32Entry([1], 100, 104) }, 8),
    phrase: `tensor "${U}" byte range [100, 104) starts past the end of the data (8 bytes)`,
    tensor: U,
  },
  {
    title: "truncated data",
    bytes: rawFile({ [T]: f32Entry([1], 0, 4), [U]: f32Entry([4], 4, 20) }, 10),
    phrase: "ends past the data (10 bytes): the file is truncated",
    tensor: U,
  },
  {
    title: "overlapping ranges",
    bytes: rawFile({ [T]: f32Entry([2], 0, 8), [U]: f32Entry([2], 4, 12) }, 12),
    phrase: `tensors "${T}" [0, 8) and "${U}" [4, 12) overlap`,
    tensor: U,
  },
  {
    title: "hole between tensors",
    bytes: rawFile({ [T]: f32Entry([1], 0, 4), [U]: f32Entry([1], 8, 12) }, 12),
    phrase: `hole of 4 bytes between tensor "${T}" (ends at 4) and tensor "${U}" (begins at 8)`,
    tensor: U,
  },
  {
    title: "hole before the first tensor",
    bytes: rawFile({ [T]: f32Entry([1], 4, 8) }, 8),
    phrase: `hole of 4 bytes before the first tensor "${T}"`,
    tensor: T,
  },
  {
    title: "trailing bytes",
    bytes: rawFile({ [T]: f32Entry([1], 0, 4) }, 7),
    phrase: `3 trailing bytes after the last tensor "${T}"`,
    tensor: T,
  },
  {
    title: "trailing bytes without tensors",
    bytes: rawFile({ __metadata__: {} }, 2),
    phrase: "2 trailing bytes after a header with no tensors",
  },
];

Deno.test(`all ${MALFORMED.length} malformed files are rejected, each with its own message`, async () => {
  assert.equal(MALFORMED.length, 30);
  await withTempDir(async (dir) => {
    const messages: string[] = [];
    for (const [i, c] of MALFORMED.entries()) {
      const path = `${dir}/case-${String(i).padStart(2, "0")}.safetensors`;
      await Deno.writeFile(path, c.bytes);
      await assert.rejects(SafetensorsFile.open(path), (e: unknown) => {
        assert.ok(e instanceof SafetensorsError, `${c.title}: ${e}`);
        const m = e.message;
        assert.ok(m.startsWith(`Invalid safetensors file "${path}": `), `${c.title}: ${m}`);
        assert.ok(m.includes(c.phrase), `${c.title}: expected "${c.phrase}" in: ${m}`);
        assert.ok(!m.endsWith("."), `${c.title}: ${m}`);
        assert.equal(e.file, path);
        assert.equal(e.tensor, c.tensor, c.title);
        if (c.tensor !== undefined) assert.ok(m.includes(`"${c.tensor}"`), c.title);
        messages.push(m);
        return true;
      });
    }
    // Each phrase identifies its case: no other case's message contains it.
    for (const [i, c] of MALFORMED.entries()) {
      const others = messages.filter((m, j) => j !== i && m.includes(c.phrase));
      assert.deepEqual(others, [], c.title);
    }
    // Deno's resource sanitizer fails this test if a rejected open left its file open.
  });
});

async function writeJson(path: string, value: unknown): Promise<void> {
  await Deno.writeTextFile(path, JSON.stringify(value));
}

Deno.test("Checkpoint opens a single model.safetensors folder", async () => {
  await withTempDir(async (dir) => {
    await writeSafetensors(`${dir}/model.safetensors`, [
      { name: "wte.weight", dtype: "F16", shape: [2], data: new Float16Array([1, -2]) },
    ]);
    using ckpt = await Checkpoint.open(`${dir}/`);
    assert.deepEqual(ckpt.names(), ["wte.weight"]);
    assert.deepEqual(await ckpt.readFloat32("wte.weight"), new Float32Array([1, -2]));
    assert.equal(ckpt.info("wte.weight").dtype, "F16");
  });
});

Deno.test("Checkpoint reads a sharded folder through its index", async () => {
  await withTempDir(async (dir) => {
    await writeSafetensors(`${dir}/model-00001-of-00002.safetensors`, [
      { name: "a", dtype: "F32", shape: [2], data: new Float32Array([1, 2]) },
      { name: "b", dtype: "BF16", shape: [1], data: new Uint16Array([0x4040]) },
    ]);
    await writeSafetensors(`${dir}/model-00002-of-00002.safetensors`, [
      { name: "c", dtype: "I32", shape: [1], data: new Int32Array([-5]) },
    ]);
    // A single model.safetensors beside the index must be ignored.
    await Deno.writeFile(`${dir}/model.safetensors`, new Uint8Array(3));
    await writeJson(`${dir}/model.safetensors.index.json`, {
      metadata: { total_size: 14 },
      weight_map: {
        c: "model-00002-of-00002.safetensors",
        a: "model-00001-of-00002.safetensors",
        b: "model-00001-of-00002.safetensors",
      },
    });
    using ckpt = await Checkpoint.open(dir);
    assert.deepEqual(ckpt.names().sort(), ["a", "b", "c"]);
    assert.deepEqual(await ckpt.readFloat32("a"), new Float32Array([1, 2]));
    assert.deepEqual(await ckpt.readFloat32("b"), new Float32Array([3]));
    assert.deepEqual(await ckpt.readBytes("c"), bytesOf(new Int32Array([-5])));
    assert.ok(ckpt.fileOf("c").endsWith("model-00002-of-00002.safetensors"));
    assert.throws(() => ckpt.info("d"), /Tensor "d" not found in checkpoint "/);
  });
});

Deno.test("Checkpoint rejects folders whose index and shards disagree", async () => {
  const one = "model-00001-of-00002.safetensors";
  const two = "model-00002-of-00002.safetensors";
  const cases: Array<[string, Record<string, unknown>, RegExp]> = [
    [
      "mapped but missing",
      { a: one, b: one, c: two, d: two },
      /tensor "d" is mapped to shard "model-00002-of-00002.safetensors" but that shard does not contain it$/,
    ],
    [
      "not in the weight_map",
      { a: one, c: two },
      /tensor "b" in shard "model-00001-of-00002.safetensors" is not in the weight_map$/,
    ],
    [
      "in another shard",
      { a: one, b: two, c: two },
      /tensor "b" is in shard "model-00001-of-00002.safetensors" but the weight_map puts it in "model-00002-of-00002.safetensors"$/,
    ],
    [
      "outside the folder",
      { a: "../x.safetensors" },
      /tensor "a" maps to "..\/x.safetensors", which is outside the folder$/,
    ],
    ["non-string shard", { a: 1 }, /tensor "a" maps to a number, not a file name$/],
  ];
  await withTempDir(async (dir) => {
    await writeSafetensors(`${dir}/${one}`, [
      { name: "a", dtype: "U8", shape: [1], data: new Uint8Array(1) },
      { name: "b", dtype: "U8", shape: [1], data: new Uint8Array(1) },
    ]);
    await writeSafetensors(`${dir}/${two}`, [{
      name: "c",
      dtype: "U8",
      shape: [1],
      data: new Uint8Array(1),
    }]);
    const index = `${dir}/model.safetensors.index.json`;
    for (const [label, weightMap, pattern] of cases) {
      await writeJson(index, { weight_map: weightMap });
      await assert.rejects(Checkpoint.open(dir), (e: unknown) => {
        assert.ok(e instanceof SafetensorsError, label);
        assert.ok(e.message.startsWith(`Invalid sharded checkpoint "${index}": `), e.message);
        assert.match(e.message, pattern, label);
        return true;
      });
    }
    await Deno.writeTextFile(index, "{");
    await assert.rejects(Checkpoint.open(dir), /cannot read it as JSON/);
    await writeJson(index, { metadata: {} });
    await assert.rejects(Checkpoint.open(dir), /"weight_map" is missing, not an object$/);
  });
});

Deno.test("Checkpoint names the folder when it has neither weights file", async () => {
  await withTempDir(async (dir) => {
    await assert.rejects(
      Checkpoint.open(dir),
      (e: unknown) =>
        e instanceof SafetensorsError &&
        e.message ===
          `Model folder "${dir}" has neither model.safetensors nor model.safetensors.index.json`,
    );
  });
});
