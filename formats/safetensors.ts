/**
 * A strict safetensors reader and writer, and sharded Hugging Face checkpoints.
 *
 * Layout: an 8-byte little-endian u64 header length N, N bytes of UTF-8 JSON header, then the
 * tensor data, whose ranges the header gives relative to the end of the header. Reading opens the
 * header only and fetches each tensor by its byte range. Typed arrays are in host order, which is
 * little-endian on every platform Deno runs on, so data bytes are copied as they are.
 *
 * @module
 */

import { isAbsolute, join } from "node:path";
import { widenHalf } from "./dtype.ts";
import {
  describeJson,
  MAX_HEADER_BYTES,
  parseHeader,
  SafetensorsError,
} from "./_safetensors_header.ts";
import type { TensorInfo } from "./_safetensors_header.ts";

export { bf16ToF32, dtypeBytes, DTYPES, f16ToF32, isDtype, widenHalf } from "./dtype.ts";
export type { Dtype } from "./dtype.ts";
export { MAX_HEADER_BYTES, SafetensorsError } from "./_safetensors_header.ts";
export type { TensorInfo } from "./_safetensors_header.ts";
export { encodeSafetensors, writeSafetensors } from "./_safetensors_writer.ts";
export type { TensorData, TensorToWrite } from "./_safetensors_writer.ts";

/**
 * An open safetensors file: header validated, tensors read on demand by byte range.
 *
 * @example Reading one tensor
 * ```ts
 * import { SafetensorsFile } from "./safetensors.ts";
 * using file = await SafetensorsFile.open("model.safetensors");
 * const wte = await file.readFloat32("wte.weight"); // F16, BF16 and F64 are widened or rounded
 * console.log(file.tensors.get("wte.weight")?.shape, wte.length);
 * ```
 */
export class SafetensorsFile implements Disposable {
  /** The path the file was opened with. */
  readonly path: string;
  /** The header's `__metadata__`, or `{}` when it has none. */
  readonly metadata: Record<string, string>;
  /** Every tensor, in header order. */
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  #file: Deno.FsFile | undefined;
  // Reads seek a shared handle, so they run one at a time.
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(path: string, file: Deno.FsFile, header: ReturnType<typeof parseHeader>) {
    this.path = path;
    this.#file = file;
    this.metadata = header.metadata;
    this.tensors = header.tensors;
  }

  /**
   * Opens a file and validates its header without reading the tensor data.
   *
   * @param path The `.safetensors` file.
   * @returns The open file; close it or declare it with `using`.
   * @throws {SafetensorsError} If the file cannot be opened or its header is invalid.
   */
  static async open(path: string): Promise<SafetensorsFile> {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { read: true });
    } catch (e) {
      throw new SafetensorsError(`Cannot open safetensors file "${path}": ${messageOf(e)}`, {
        file: path,
        cause: e,
      });
    }
    try {
      const info = await file.stat();
      if (info.isDirectory) {
        throw new SafetensorsError(
          `Cannot open safetensors file "${path}": it is a folder, not a file`,
          { file: path },
        );
      }
      const size = info.size;
      const invalid = (message: string) =>
        new SafetensorsError(`Invalid safetensors file "${path}": ${message}`, { file: path });
      if (size < 8) throw invalid(`file is ${size} bytes, shorter than the 8-byte header length`);
      const lengthField = await readAt(file, 0, { length: 8, path });
      const headerLength = new DataView(lengthField.buffer).getBigUint64(0, true);
      if (headerLength > BigInt(MAX_HEADER_BYTES)) {
        throw invalid(`header length ${headerLength} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
      }
      const length = Number(headerLength);
      if (8 + length > size) {
        throw invalid(`header length ${length} runs past the end of the file (${size} bytes)`);
      }
      const header = await readAt(file, 8, { length, path });
      const parsed = parseHeader(header, {
        file: path,
        dataStart: 8 + length,
        dataLength: size - 8 - length,
      });
      return new SafetensorsFile(path, file, parsed);
    } catch (e) {
      file.close();
      throw e;
    }
  }

  /** The tensor names, in header order. */
  names(): string[] {
    return [...this.tensors.keys()];
  }

  /**
   * Where a tensor lies and what it holds.
   *
   * @param name A tensor name.
   * @returns Its dtype, shape and absolute byte range.
   * @throws {SafetensorsError} If the file has no such tensor.
   */
  info(name: string): TensorInfo {
    const info = this.tensors.get(name);
    if (info === undefined) {
      throw new SafetensorsError(
        `Tensor "${name}" not found in safetensors file "${this.path}"`,
        { file: this.path, tensor: name },
      );
    }
    return info;
  }

  /**
   * Reads a tensor's raw little-endian bytes, and only those.
   *
   * @param name A tensor name.
   * @returns A new array of exactly the tensor's bytes.
   * @throws {SafetensorsError} If there is no such tensor, the file is closed, or it shrank.
   */
  readBytes(name: string): Promise<Uint8Array> {
    const info = this.info(name);
    const file = this.#file;
    if (file === undefined) {
      throw new SafetensorsError(
        `Cannot read tensor "${name}" from safetensors file "${this.path}": the file is closed`,
        { file: this.path, tensor: name },
      );
    }
    const read = this.#queue.then(() =>
      readAt(file, info.begin, { length: info.end - info.begin, path: this.path, tensor: name })
    );
    this.#queue = read.catch(() => {});
    return read;
  }

  /**
   * Reads a float tensor as f32: F32 as it is, F16 and BF16 widened exactly, F64 rounded to
   * nearest.
   *
   * @param name A tensor name.
   * @returns The values, row-major.
   * @throws {SafetensorsError} If the tensor holds integers or booleans, or cannot be read.
   */
  async readFloat32(name: string): Promise<Float32Array> {
    const { dtype } = this.info(name);
    if (dtype !== "F32" && dtype !== "F16" && dtype !== "BF16" && dtype !== "F64") {
      throw new SafetensorsError(
        `Cannot read tensor "${name}" of safetensors file "${this.path}" as f32: its dtype ` +
          `${dtype} is not a float type (use readBytes)`,
        { file: this.path, tensor: name },
      );
    }
    // readBytes returns a fresh buffer at offset 0, so every typed view below is aligned.
    const { buffer } = await this.readBytes(name);
    if (dtype === "F32") return new Float32Array(buffer);
    if (dtype === "F64") return Float32Array.from(new Float64Array(buffer));
    return widenHalf(new Uint16Array(buffer), dtype);
  }

  /** Closes the file; later reads throw. Closing twice is harmless. */
  close(): void {
    this.#file?.close();
    this.#file = undefined;
  }

  /** Same as {@linkcode SafetensorsFile.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

async function readAt(
  file: Deno.FsFile,
  offset: number,
  options: { length: number; path: string; tensor?: string },
): Promise<Uint8Array> {
  const out = new Uint8Array(options.length);
  await file.seek(offset, Deno.SeekMode.Start);
  let filled = 0;
  while (filled < out.length) {
    const n = await file.read(out.subarray(filled));
    if (n === null) {
      const what = options.tensor === undefined ? "" : ` while reading tensor "${options.tensor}"`;
      throw new SafetensorsError(
        `Invalid safetensors file "${options.path}": the file ended at byte ${
          offset + filled
        }${what} (was it changed after opening?)`,
        { file: options.path, tensor: options.tensor },
      );
    }
    filled += n;
  }
  return out;
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

const INDEX_FILE = "model.safetensors.index.json";
const SINGLE_FILE = "model.safetensors";

/**
 * The weights of a Hugging Face model folder: `model.safetensors`, or shards listed by
 * `model.safetensors.index.json`, each shard opened once and checked against the index.
 *
 * @example Reading a weight wherever it lives
 * ```ts
 * import { Checkpoint } from "./safetensors.ts";
 * using ckpt = await Checkpoint.open("models/gpt2");
 * const w = await ckpt.readFloat32(ckpt.names()[0]);
 * ```
 */
export class Checkpoint implements Disposable {
  /** The model folder. */
  readonly folder: string;
  readonly #files: SafetensorsFile[];
  readonly #owner: Map<string, SafetensorsFile>;

  private constructor(
    folder: string,
    files: SafetensorsFile[],
    owner: Map<string, SafetensorsFile>,
  ) {
    this.folder = folder;
    this.#files = files;
    this.#owner = owner;
  }

  /**
   * Opens a model folder's weights.
   *
   * @param folder A folder with `model.safetensors.index.json` or `model.safetensors`.
   * @returns The open checkpoint; close it or declare it with `using`.
   * @throws {SafetensorsError} If the folder has neither file, the index is invalid, a shard is
   * invalid, or the index and the shards disagree.
   */
  static async open(folder: string): Promise<Checkpoint> {
    const indexPath = join(folder, INDEX_FILE);
    if (await isFile(indexPath)) return await Checkpoint.#openSharded(folder, indexPath);
    // Not isFile: a folder named model.safetensors is refused by name rather than overlooked.
    if (await exists(join(folder, SINGLE_FILE))) {
      const file = await SafetensorsFile.open(join(folder, SINGLE_FILE));
      return new Checkpoint(folder, [file], new Map(file.names().map((n) => [n, file])));
    }
    throw new SafetensorsError(
      `Model folder "${folder}" has neither ${SINGLE_FILE} nor ${INDEX_FILE}`,
      { file: folder },
    );
  }

  static async #openSharded(folder: string, indexPath: string): Promise<Checkpoint> {
    const invalid = (message: string, tensor?: string) =>
      new SafetensorsError(`Invalid sharded checkpoint "${indexPath}": ${message}`, {
        file: indexPath,
        tensor,
      });
    let index: unknown;
    try {
      index = JSON.parse(await Deno.readTextFile(indexPath));
    } catch (e) {
      throw invalid(`cannot read it as JSON (${messageOf(e)})`);
    }
    const weightMap = (index as { weight_map?: unknown } | null)?.weight_map;
    if (typeof weightMap !== "object" || weightMap === null || Array.isArray(weightMap)) {
      throw invalid(`"weight_map" is ${describeJson(weightMap)}, not an object`);
    }
    const shardOf = new Map<string, string>();
    for (const [name, shard] of Object.entries(weightMap as Record<string, unknown>)) {
      if (typeof shard !== "string") {
        throw invalid(`tensor "${name}" maps to ${describeJson(shard)}, not a file name`, name);
      }
      // The index comes with downloaded models, so it must not point outside the folder.
      if (shard === "" || isAbsolute(shard) || shard.split(/[\\/]/).includes("..")) {
        throw invalid(`tensor "${name}" maps to "${shard}", which is outside the folder`, name);
      }
      shardOf.set(name, shard);
    }

    const shards = new Map<string, SafetensorsFile>();
    try {
      for (const shard of new Set(shardOf.values())) {
        shards.set(shard, await SafetensorsFile.open(join(folder, shard)));
      }
      const owner = new Map<string, SafetensorsFile>();
      for (const [shard, file] of shards) {
        for (const name of file.names()) {
          const mapped = shardOf.get(name);
          if (mapped === undefined) {
            throw invalid(`tensor "${name}" in shard "${shard}" is not in the weight_map`, name);
          }
          if (mapped !== shard) {
            throw invalid(
              `tensor "${name}" is in shard "${shard}" but the weight_map puts it in "${mapped}"`,
              name,
            );
          }
          owner.set(name, file);
        }
      }
      for (const [name, shard] of shardOf) {
        if (!owner.has(name)) {
          throw invalid(
            `tensor "${name}" is mapped to shard "${shard}" but that shard does not contain it`,
            name,
          );
        }
      }
      return new Checkpoint(folder, [...shards.values()], owner);
    } catch (e) {
      for (const file of shards.values()) file.close();
      throw e;
    }
  }

  /** Every tensor name; shard by shard, each in header order. */
  names(): string[] {
    return [...this.#owner.keys()];
  }

  /**
   * Where a tensor lies; `begin` and `end` are offsets within its shard.
   *
   * @param name A tensor name.
   * @returns Its dtype, shape and byte range.
   * @throws {SafetensorsError} If no shard holds it.
   */
  info(name: string): TensorInfo {
    return this.#file(name).info(name);
  }

  /**
   * The shard file that holds a tensor.
   *
   * @param name A tensor name.
   * @returns The shard's path.
   */
  fileOf(name: string): string {
    return this.#file(name).path;
  }

  /** Reads a tensor's raw bytes, as {@linkcode SafetensorsFile.readBytes} does. */
  readBytes(name: string): Promise<Uint8Array> {
    return this.#file(name).readBytes(name);
  }

  /** Reads a float tensor as f32, as {@linkcode SafetensorsFile.readFloat32} does. */
  readFloat32(name: string): Promise<Float32Array> {
    return this.#file(name).readFloat32(name);
  }

  /** Closes every shard. */
  close(): void {
    for (const file of this.#files) file.close();
  }

  /** Same as {@linkcode Checkpoint.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  #file(name: string): SafetensorsFile {
    const file = this.#owner.get(name);
    if (file === undefined) {
      throw new SafetensorsError(`Tensor "${name}" not found in checkpoint "${this.folder}"`, {
        file: this.folder,
        tensor: name,
      });
    }
    return file;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}
