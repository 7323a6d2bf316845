// The safetensors writer; public through safetensors.ts.

import { writeFileAtomic } from "./atomic.ts";
import { dtypeBytes, isDtype } from "./dtype.ts";
import type { Dtype } from "./dtype.ts";
import { describeJson, formatShape, SafetensorsError } from "./_safetensors_header.ts";

/** Element arrays a tensor's data may be given as; a `Uint8Array` is taken as raw bytes. */
export type TensorData =
  | Uint8Array
  | Float64Array
  | Float32Array
  | Float16Array
  | Uint16Array
  | BigInt64Array
  | Int32Array
  | Int16Array
  | Int8Array;

/** One tensor to write. */
export interface TensorToWrite {
  /** The header key; any string except `__metadata__`. */
  name: string;
  /** The element type written in the header. */
  dtype: Dtype;
  /** The dimensions; their product times the dtype size must equal the data's byte length. */
  shape: readonly number[];
  /** The elements, row-major. A `Uint16Array` holds F16 or BF16 bit patterns. */
  data: TensorData;
}

// Which dtypes each kind of array may carry, so a Float32Array is never written as F16 bits.
const DATA_DTYPES: Array<[new (n: number) => ArrayBufferView, readonly Dtype[]]> = [
  [Uint8Array, ["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL"]],
  [Float64Array, ["F64"]],
  [Float32Array, ["F32"]],
  [Float16Array, ["F16"]],
  [Uint16Array, ["F16", "BF16"]],
  [BigInt64Array, ["I64"]],
  [Int32Array, ["I32"]],
  [Int16Array, ["I16"]],
  [Int8Array, ["I8"]],
];

/**
 * Encodes tensors as a safetensors file: header padded with spaces to a multiple of 8 bytes,
 * `__metadata__` first when given, data laid out in the given order.
 *
 * @param tensors The tensors, in the order their data is laid out.
 * @param metadata Optional string-to-string metadata.
 * @returns The whole file.
 * @throws {SafetensorsError} On a duplicate or reserved name, an unknown dtype, a bad shape, data
 * whose length does not match the shape, or non-string metadata.
 *
 * @example Encoding two tensors
 * ```ts
 * import { encodeSafetensors } from "./safetensors.ts";
 * const bytes = encodeSafetensors([
 *   { name: "a.alpha", dtype: "F32", shape: [2], data: new Float32Array([1, 2]) },
 *   { name: "a.beta", dtype: "I8", shape: [2, 2], data: new Int8Array([1, -1, 2, -2]) },
 * ], { method: "nola" });
 * ```
 */
export function encodeSafetensors(
  tensors: readonly TensorToWrite[],
  metadata?: Record<string, string>,
): Uint8Array {
  return encode(tensors, { metadata, file: undefined });
}

/**
 * Encodes tensors as {@linkcode encodeSafetensors} does and writes them to `path` atomically.
 *
 * @param path The file to create or replace.
 * @param tensors The tensors, in the order their data is laid out.
 * @param metadata Optional string-to-string metadata, written as `__metadata__`.
 * @returns Resolves once the file is in place.
 * @throws {SafetensorsError} On invalid tensors or metadata; the file is then left untouched.
 *
 * @example Saving an adapter
 * ```ts
 * import { writeSafetensors } from "./safetensors.ts";
 * await writeSafetensors("out/run/adapter.safetensors", [
 *   { name: "h.0.attn.c_attn.alpha", dtype: "F32", shape: [4], data: new Float32Array(4) },
 * ], { format_version: "1" });
 * ```
 */
export async function writeSafetensors(
  path: string,
  tensors: readonly TensorToWrite[],
  metadata?: Record<string, string>,
): Promise<void> {
  await writeFileAtomic(path, encode(tensors, { metadata, file: path }));
}

function encode(
  tensors: readonly TensorToWrite[],
  options: { metadata: Record<string, string> | undefined; file: string | undefined },
): Uint8Array {
  const { metadata, file } = options;
  const fail = (message: string, tensor?: string): never => {
    const where = file === undefined ? "Cannot encode safetensors" : `Cannot write "${file}"`;
    throw new SafetensorsError(`${where}: ${message}`, { file: file ?? "<memory>", tensor });
  };
  // Built by hand: JSON.stringify of one object would move integer-like names such as "0" first.
  const entries: string[] = [];
  if (metadata !== undefined) {
    if (typeof metadata !== "object" || metadata === null || Array.isArray(metadata)) {
      fail(`metadata is ${describeJson(metadata)}, not an object of strings`);
    }
    for (const [key, value] of Object.entries(metadata)) {
      if (typeof value !== "string") {
        fail(`metadata "${key}" is ${describeJson(value)}, not a string`);
      }
    }
    entries.push(`"__metadata__":${JSON.stringify(metadata)}`);
  }
  const names = new Set<string>();
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const { name, dtype, shape, data } of tensors) {
    const t = `tensor "${name}"`;
    if (name === "__metadata__") fail(`"__metadata__" is reserved and cannot name a tensor`, name);
    if (names.has(name)) fail(`${t} is given twice`, name);
    names.add(name);
    if (!isDtype(dtype)) fail(`${t} has unknown dtype ${JSON.stringify(dtype)}`, name);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      fail(`${t} has shape ${formatShape(shape)}, not non-negative integers`, name);
    }
    const allowed = DATA_DTYPES.find(([kind]) => data instanceof kind)?.[1];
    if (!allowed?.includes(dtype)) {
      fail(`${t} has dtype ${dtype} but its data is ${describeData(data)}`, name);
    }
    const elements = shape.reduce((a, b) => a * b, 1);
    const size = elements * dtypeBytes(dtype);
    if (size !== data.byteLength) {
      fail(
        `${t} has shape ${formatShape(shape)} (${elements} x ${dtype} = ${size} bytes) ` +
          `but ${data.byteLength} bytes of data`,
        name,
      );
    }
    const entry = { dtype, shape, data_offsets: [offset, offset + size] };
    entries.push(`${JSON.stringify(name)}:${JSON.stringify(entry)}`);
    chunks.push(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    offset += size;
  }
  const json = new TextEncoder().encode(`{${entries.join(",")}}`);
  const headerLength = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + headerLength + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLength), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + headerLength);
  let at = 8 + headerLength;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

function describeData(data: unknown): string {
  const name = (data as { constructor?: { name?: string } } | null)?.constructor?.name;
  return ArrayBuffer.isView(data) && name ? `a ${name}` : describeJson(data);
}
