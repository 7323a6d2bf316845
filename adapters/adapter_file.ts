/**
 * Adapter files: one safetensors file per adapter set (DESIGN.md section 5).
 *
 * Tensors, in module order:
 *
 * - NOLA, unquantized: `<module>.alpha` F32 [k] and `<module>.beta` F32 [l].
 * - NOLA, quantized to b bits: `<module>.alpha` U8 [ceil(k b / 8)] and `<module>.beta` U8
 *   [ceil(l b / 8)], codes packed as `packBits` describes (the counts k and l come from the
 *   metadata); then, once for the file, `quant.scale` F32 [2M] holding, for module m in `targets`
 *   order, the scale of its alpha at 2m and of its beta at 2m + 1, and for the asymmetric scheme
 *   `quant.zero_point` F32 [2M] laid out the same way. (One table rather than two tiny tensors
 *   per module: each header entry costs about 90 bytes, which would make a 4-bit GPT-2 q/v
 *   adapter a third larger.)
 * - LoRA: `<module>.lora_A` F32 [r, in] and `<module>.lora_B` F32 [out, r].
 * - A classifier head the set owns (a new head for the task's classes, or the checkpoint's
 *   trained; `adapters/head.ts`), last: `head.<name>.weight` F32 [classes, in] and
 *   `head.<name>.bias` F32 [classes], where `<name>` is the head's module (`classifier`, timm
 *   `head`).
 *
 * `__metadata__`: `format` (`nola-gpu-adapter/1`), `method`, `base_model`, `base_config_hash`
 * (`configHash`), `targets` (JSON list of module names), `r`, `lora_alpha`, `k`, `l`, `seed`,
 * `init`, `basis_spec`, `share_basis`, `quant_bits`, `quant_scheme` (`32` and `none` when stored
 * as F32) and `modules`, a JSON object giving, for each module whose `r`, `k`, `l`,
 * `lora_alpha`, `seed` or `init` differs from the top-level value, those fields; last,
 * `checksum`, the CRC-32 of the whole file (`formats/checksum.ts`), optional on read so that files
 * written before it still load. LoRA files carry `k` = `l` = `0` and `init` = `kaiming-uniform`.
 * With a head, `head` (its module name) and `id2label` (JSON object of id to class name, as
 * Hugging Face configs write it) come before `checksum`. Method `none` (a head and no adapter: a
 * linear probe) has empty `targets`, `k` = `l` = `0`.
 * A module's input and output features and column offset are not stored: its name and the base's
 * config hash fix them.
 *
 * @module
 */

import {
  type AdapterMethod,
  AdapterSet,
  type AttachConfig,
  type ModuleOverride,
  type ModulePlan,
  planAdapters,
} from "./attach.ts";
import { BASIS_SPEC } from "../kernels/basis_spec.ts";
import type { NolaInit } from "./nola_factors.ts";
import {
  checkQuantOptions,
  dequantize,
  packBits,
  quantize,
  type QuantOptions,
  type QuantScheme,
  unpackBits,
} from "../formats/quantize.ts";
import { writeFileAtomic } from "../formats/atomic.ts";
import { oneLine } from "../formats/one_line.ts";
import {
  CHECKSUM_KEY,
  CHECKSUM_PLACEHOLDER,
  sealChecksum,
  verifyChecksum,
} from "../formats/checksum.ts";
import { encodeSafetensors, SafetensorsFile, type TensorToWrite } from "../formats/safetensors.ts";
import type { Dtype } from "../formats/safetensors.ts";
import type { Model } from "../models/model.ts";
import { headTensors, restoreHead } from "./head.ts";

/** The `format` this version writes and reads. */
export const ADAPTER_FORMAT = "nola-gpu-adapter/1";

/** What an adapter file describes, without the trained values. */
export interface AdapterDescription {
  /** The base model's name, e.g. `gpt2`. */
  baseModel: string;
  /** `configHash` of the base's architecture. */
  baseConfigHash: string;
  /** The attach config: its top-level settings become the file's top-level metadata. */
  config: AttachConfig;
  /** The adapted modules, as `planAdapters` resolved them. */
  modules: ModulePlan[];
  /** A classifier head stored with the adapters. */
  head?: { name: string; labels: readonly string[]; inFeatures: number };
}

/** A head's values: weight `[classes, in]` row-major and bias `[classes]`. */
export interface HeadValues {
  /** `[classes, in]`, row-major. */
  weight: Float32Array;
  /** `[classes]`. */
  bias: Float32Array;
}

/** One module's trained values: NOLA's coefficients or LoRA's factors (row-major). */
export type ModuleValues =
  | { alpha: Float32Array; beta: Float32Array }
  | { loraA: Float32Array; loraB: Float32Array };

/** A file in memory, and the values a loader will get back from it. */
export interface EncodedAdapter {
  bytes: Uint8Array;
  /** Per module: the stored values (for NOLA quantized files, the dequantized coefficients). */
  values: Map<string, ModuleValues>;
}

/** An adapter file that cannot be written or cannot be loaded into a model. */
export class AdapterFileError extends Error {
  /** The file, as the caller named it (`<memory>` when encoding). */
  readonly file: string;

  /**
   * Creates the error.
   *
   * @param message The whole message, naming the file.
   * @param options The file and an optional cause.
   */
  constructor(message: string, options: { file: string; cause?: unknown }) {
    // Messages quote metadata values, which may hold line breaks.
    super(oneLine(message), options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "AdapterFileError";
    this.file = options.file;
  }
}

const PER_MODULE: ReadonlyArray<[keyof ModulePlan, string]> = [
  ["r", "r"],
  ["k", "k"],
  ["l", "l"],
  ["loraAlpha", "lora_alpha"],
  ["seed", "seed"],
  ["init", "init"],
];

function globals(config: AttachConfig) {
  const nola = config.method === "nola";
  return {
    r: config.r,
    k: nola ? config.k ?? 0 : 0,
    l: nola ? config.l ?? config.k ?? 0 : 0,
    loraAlpha: config.loraAlpha,
    seed: config.seed,
    init: nola ? config.init ?? "official" : "kaiming-uniform",
  } as Record<string, number | string>;
}

function metadataOf(desc: AdapterDescription, quant?: QuantOptions): Record<string, string> {
  const { config } = desc;
  const top = globals(config);
  const modules: Record<string, Record<string, number | string>> = {};
  for (const m of desc.modules) {
    const diff: Record<string, number | string> = {};
    for (const [field, key] of PER_MODULE) {
      if (m[field] !== top[field]) diff[key] = m[field] as number | string;
    }
    if (Object.keys(diff).length > 0) modules[m.name] = diff;
  }
  return {
    format: ADAPTER_FORMAT,
    method: config.method,
    base_model: desc.baseModel,
    base_config_hash: desc.baseConfigHash,
    targets: JSON.stringify(desc.modules.map((m) => m.name)),
    r: String(top.r),
    lora_alpha: String(top.loraAlpha),
    k: String(top.k),
    l: String(top.l),
    seed: String(top.seed),
    init: String(top.init),
    basis_spec: BASIS_SPEC,
    share_basis: String(config.method === "nola" && config.shareBasis === true),
    quant_bits: quant ? String(quant.bits) : "32",
    quant_scheme: quant ? quant.scheme : "none",
    modules: JSON.stringify(modules),
    ...(desc.head
      ? {
        head: desc.head.name,
        id2label: JSON.stringify(Object.fromEntries(desc.head.labels.map((l, i) => [i, l]))),
      }
      : {}),
    // Same length as the sealed value, so adapterFileSize can count the placeholder.
    [CHECKSUM_KEY]: CHECKSUM_PLACEHOLDER,
  };
}

type Spec = { name: string; dtype: Dtype; shape: number[] };

function specsOf(desc: AdapterDescription, quant?: QuantOptions): Spec[] {
  const specs: Spec[] = [];
  const coeffs = (n: number): [Dtype, number[]] =>
    quant ? ["U8", [Math.ceil((n * quant.bits) / 8)]] : ["F32", [n]];
  for (const m of desc.modules) {
    if (m.method === "nola") {
      for (const [what, n] of [["alpha", m.k], ["beta", m.l]] as const) {
        const [dtype, shape] = coeffs(n);
        specs.push({ name: `${m.name}.${what}`, dtype, shape });
      }
    } else {
      specs.push({ name: `${m.name}.lora_A`, dtype: "F32", shape: [m.r, m.inFeatures] });
      specs.push({ name: `${m.name}.lora_B`, dtype: "F32", shape: [m.outFeatures, m.r] });
    }
  }
  if (quant) {
    const n = 2 * desc.modules.length;
    specs.push({ name: "quant.scale", dtype: "F32", shape: [n] });
    if (quant.scheme === "asymmetric") {
      specs.push({ name: "quant.zero_point", dtype: "F32", shape: [n] });
    }
  }
  if (desc.head) {
    const { name, labels, inFeatures } = desc.head;
    specs.push({ name: `head.${name}.weight`, dtype: "F32", shape: [labels.length, inFeatures] });
    specs.push({ name: `head.${name}.bias`, dtype: "F32", shape: [labels.length] });
  }
  return specs;
}

function checkQuantFor(desc: AdapterDescription, quant: QuantOptions | undefined): void {
  if (!quant) return;
  checkQuantOptions(quant);
  if (desc.config.method !== "nola") {
    throw new RangeError(
      `Cannot quantize a ${
        desc.config.method === "lora" ? "LoRA" : "head-only"
      } adapter: quantization applies to NOLA only`,
    );
  }
}

/**
 * The exact size in bytes of the file {@link encodeAdapter} would write, computed from the
 * header alone (no tensor data is built, so any model size is cheap).
 *
 * @param desc What the file describes.
 * @param options Optional quantization.
 * @returns The file size.
 */
export function adapterFileSize(desc: AdapterDescription, options: { quant?: QuantOptions } = {}) {
  checkQuantFor(desc, options.quant);
  // Mirrors the safetensors writer: metadata first, then the entries, padded to 8 bytes.
  const entries = [`"__metadata__":${JSON.stringify(metadataOf(desc, options.quant))}`];
  let offset = 0;
  for (const { name, dtype, shape } of specsOf(desc, options.quant)) {
    const size = shape.reduce((a, b) => a * b, 1) * (dtype === "U8" ? 1 : 4);
    entries.push(
      `${JSON.stringify(name)}:${
        JSON.stringify({ dtype, shape, data_offsets: [offset, offset + size] })
      }`,
    );
    offset += size;
  }
  const header = new TextEncoder().encode(`{${entries.join(",")}}`).length;
  return 8 + Math.ceil(header / 8) * 8 + offset;
}

/**
 * Encodes an adapter file from plain data (no GPU involved).
 *
 * @param desc What the file describes.
 * @param values Each module's values, by name.
 * @param options Optional quantization of NOLA coefficients; `head`, the values of the head
 * `desc.head` describes.
 * @returns The file's bytes and the values a loader will read back.
 * @throws {RangeError} On missing or mis-sized values, or quantization of a LoRA adapter.
 *
 * @example A 4-bit NOLA file from synthetic coefficients
 * ```ts
 * import { planAdapters } from "./adapters/attach.ts";
 * import { encodeAdapter } from "./adapters/adapter_file.ts";
 * import { modelShape, readModelConfig } from "./models/registry.ts";
 * const base = modelShape(await readModelConfig("fixtures/tiny-gpt2"));
 * const config = { method: "nola" as const, targets: ["h.*.attn.c_attn.q"], r: 4, k: 8,
 *   loraAlpha: 4, seed: 0 };
 * const modules = planAdapters(base, config);
 * const values = new Map(modules.map((m) => [m.name,
 *   { alpha: new Float32Array(8).fill(0.1), beta: new Float32Array(8).fill(-0.1) }]));
 * const { bytes } = encodeAdapter({ baseModel: "tiny", baseConfigHash: base.configHash, config,
 *   modules }, values, { quant: { bits: 4, scheme: "symmetric" } });
 * ```
 */
export function encodeAdapter(
  desc: AdapterDescription,
  values: Map<string, ModuleValues>,
  options: { quant?: QuantOptions; head?: HeadValues } = {},
): EncodedAdapter {
  const { quant } = options;
  checkQuantFor(desc, quant);
  const tensors: TensorToWrite[] = [];
  const stored = new Map<string, ModuleValues>();
  const scales: number[] = [];
  const zeroPoints: number[] = [];
  const specs = specsOf(desc, quant);
  const data = (v: Float32Array | undefined, n: number, name: string): Float32Array => {
    if (!(v instanceof Float32Array) || v.length !== n) {
      throw new RangeError(`Cannot encode adapter: "${name}" needs ${n} values, got ${v?.length}`);
    }
    return v;
  };
  for (const m of desc.modules) {
    const v = values.get(m.name) as Partial<
      Record<"alpha" | "beta" | "loraA" | "loraB", Float32Array>
    >;
    if (!v) throw new RangeError(`Cannot encode adapter: no values for module "${m.name}"`);
    if (m.method === "lora") {
      const a = data(v.loraA, m.r * m.inFeatures, `${m.name}.lora_A`);
      const b = data(v.loraB, m.outFeatures * m.r, `${m.name}.lora_B`);
      tensors.push({ ...specs[tensors.length], data: a }, {
        ...specs[tensors.length + 1],
        data: b,
      });
      stored.set(m.name, { loraA: a, loraB: b });
      continue;
    }
    const out: Float32Array[] = [];
    for (const [what, n] of [["alpha", m.k], ["beta", m.l]] as const) {
      const x = data(v[what], n, `${m.name}.${what}`);
      if (!quant) {
        tensors.push({ ...specs[tensors.length], data: x });
        out.push(x);
        continue;
      }
      const q = quantize(x, quant);
      tensors.push({ ...specs[tensors.length], data: packBits(q.codes, quant.bits) });
      scales.push(q.scale);
      zeroPoints.push(q.zeroPoint ?? 0);
      out.push(q.dequantized);
    }
    stored.set(m.name, { alpha: out[0], beta: out[1] });
  }
  if (quant) {
    tensors.push({ ...specs[tensors.length], data: Float32Array.from(scales) });
    if (quant.scheme === "asymmetric") {
      tensors.push({ ...specs[tensors.length], data: Float32Array.from(zeroPoints) });
    }
  }
  if (desc.head) {
    const { name, labels, inFeatures } = desc.head;
    const head = options.head;
    const w = data(head?.weight, labels.length * inFeatures, `head.${name}.weight`);
    const b = data(head?.bias, labels.length, `head.${name}.bias`);
    tensors.push({ ...specs[tensors.length], data: w }, { ...specs[tensors.length + 1], data: b });
  }
  const bytes = sealChecksum(encodeSafetensors(tensors, metadataOf(desc, quant)));
  return { bytes, values: stored };
}

/**
 * Saves an attached set's trained values to one safetensors file, atomically.
 *
 * @param set The adapters (their current coefficients or factors are read from the GPU).
 * @param path The file to create or replace.
 * @param options The base model's name and optional quantization (NOLA only).
 * @returns The file size and the values a loader will read back.
 * @throws {AdapterFileError} If the disk is full (or another I/O error Deno has no class for);
 * the file that was at `path` before is then left as it was.
 */
export async function saveAdapter(
  set: AdapterSet,
  path: string,
  options: { baseModel: string; quant?: QuantOptions },
): Promise<{ size: number; values: Map<string, ModuleValues> }> {
  const values = new Map<string, ModuleValues>();
  set.model.gpu.flush();
  for (const m of set.modules) {
    values.set(
      m.name,
      m.nola
        ? { alpha: await read(m.nola.alpha), beta: await read(m.nola.beta) }
        : { loraA: await read(m.adapter.a), loraB: await read(m.adapter.b) },
    );
  }
  const modules = set.modules.map(({ adapter: _a, nola: _n, ...plan }) => plan);
  const head = set.head;
  let headValues: HeadValues | undefined;
  if (head) {
    const t = headTensors(set.model);
    headValues = { weight: await read(t.weight), bias: await read(t.bias) };
  }
  const desc: AdapterDescription = {
    baseModel: options.baseModel,
    baseConfigHash: set.model.configHash,
    config: set.config,
    modules,
    ...(head
      ? { head: { name: head.name, labels: head.labels, inFeatures: head.inFeatures } }
      : {}),
  };
  const encoded = encodeAdapter(desc, values, { quant: options.quant, head: headValues });
  try {
    await writeFileAtomic(path, encoded.bytes);
  } catch (e) {
    // Deno raises an OS error it has no class for (ENOSPC, EIO) as a plain Error with a code and
    // a message that does not name the file; its own classes already say which file.
    if (!(e instanceof Error) || e.constructor !== Error || !("code" in e)) throw e;
    throw new AdapterFileError(`Cannot save adapter "${path}": ${e.message}`, {
      file: path,
      cause: e,
    });
  }
  return { size: encoded.bytes.length, values: encoded.values };
}

async function read(t: { read(): Promise<unknown> }): Promise<Float32Array> {
  return (await t.read()) as Float32Array;
}

const fileFailure = (path: string) => (message: string): never => {
  throw new AdapterFileError(`Cannot load adapter "${path}": ${message}`, { file: path });
};

/**
 * Reads an adapter file and attaches it to a model: checks the file's checksum (when it has one),
 * the format version, the method (when `options.method` is given), the basis spec, the base's
 * config hash, the module names and every tensor's dtype and shape, then attaches the adapters and
 * fills their coefficients (dequantized, for quantized files) or factors.
 *
 * @param model The base model the adapter was trained on.
 * @param path The adapter file.
 * @param options `maxRows` as {@link AdapterSet.attach}; `method` to refuse the other method;
 * `trainHead` to keep training the file's head (default: frozen).
 * @returns The attached set, its NOLA factors combined.
 * @throws {AdapterFileError} With the reason the file does not fit the model, or its checksum
 * does not match its bytes (damaged after it was written).
 * @throws {SafetensorsError} If the file is not a valid safetensors file (a truncated one is not).
 *
 * @example
 * ```ts
 * import { loadAdapter } from "./adapters/adapter_file.ts";
 * import { Gpu } from "./kernels/gpu.ts";
 * import { loadModel } from "./models/registry.ts";
 * using gpu = await Gpu.acquire();
 * using model = await loadModel(gpu, "fixtures/tiny-gpt2");
 * using set = await loadAdapter(model, "out/run/adapter.safetensors", { maxRows: 64 });
 * ```
 */
export async function loadAdapter(
  model: Model,
  path: string,
  options: { maxRows: number; method?: AdapterMethod | "none"; trainHead?: boolean },
): Promise<AdapterSet> {
  const fail = fileFailure(path);
  using file = await SafetensorsFile.open(path);
  const { problem } = await verifyChecksum(file);
  if (problem) fail(problem);
  const md = file.metadata;
  const get = (key: string): string => md[key] ?? fail(`metadata "${key}" is missing`);
  if (get("format") !== ADAPTER_FORMAT) {
    fail(`format "${md.format}" is not supported (this version reads "${ADAPTER_FORMAT}")`);
  }
  const method = get("method") as AdapterMethod | "none";
  if (method !== "nola" && method !== "lora" && method !== "none") {
    fail(`method "${method}" is unknown`);
  }
  if (options.method !== undefined && method !== options.method) {
    fail(`it is a ${method} adapter, expected ${options.method}`);
  }
  const nola = method === "nola";
  if (nola && get("basis_spec") !== BASIS_SPEC) {
    fail(`basis_spec "${md.basis_spec}" is unknown (this version generates "${BASIS_SPEC}")`);
  }
  const hash = model.configHash;
  if (get("base_config_hash") !== hash) {
    fail(
      `base config hash ${md.base_config_hash} does not match the model's ${hash} ` +
        `(trained on "${md.base_model}", another architecture)`,
    );
  }
  const json = (key: string): unknown => {
    try {
      return JSON.parse(get(key));
    } catch {
      return fail(`metadata "${key}" is not JSON`);
    }
  };
  const targets = json("targets");
  if (!Array.isArray(targets) || !targets.every((t) => typeof t === "string")) {
    return fail(`metadata "targets" is not a list of module names`);
  }
  const known = new Set(model.sites.map((m) => m.name));
  const unknown = targets.find((t) => !known.has(t));
  if (unknown !== undefined) fail(`module "${unknown}" is not in the model`);
  const num = (key: string, from: Record<string, unknown> = md): number => {
    const v = Number(from[key]);
    return Number.isFinite(v) ? v : fail(`"${key}" is ${JSON.stringify(from[key])}, not a number`);
  };
  const quantBits = num("quant_bits");
  const quantScheme = get("quant_scheme");
  let quant: QuantOptions | undefined;
  if (quantScheme !== "none" || quantBits !== 32) {
    quant = { bits: quantBits, scheme: quantScheme as QuantScheme };
    try {
      checkQuantOptions(quant);
    } catch (e) {
      fail((e as Error).message);
    }
    if (!nola) fail(`a LoRA adapter cannot be quantized`);
  }
  const overrides: ModuleOverride[] = [];
  const perModule = json("modules");
  const isObject = (v: unknown): v is Record<string, unknown> =>
    typeof v === "object" && v !== null && !Array.isArray(v);
  if (perModule !== null && !isObject(perModule)) {
    fail(`metadata "modules" is not an object of per-module settings`);
  }
  for (const [name, diff] of Object.entries(perModule ?? {})) {
    if (!isObject(diff)) fail(`metadata "modules" gives module "${name}" no object of settings`);
    const o: ModuleOverride = { pattern: name };
    for (const [field, key] of PER_MODULE) {
      if (!(key in diff)) continue;
      Object.assign(o, { [field]: key === "init" ? diff[key] : num(key, diff) });
    }
    overrides.push(o);
  }
  const config: AttachConfig = {
    method,
    targets,
    r: num("r"),
    loraAlpha: num("lora_alpha"),
    seed: num("seed"),
    ...(nola
      ? {
        k: num("k"),
        l: num("l"),
        init: get("init") as NolaInit,
        shareBasis: get("share_basis") === "true",
      }
      : {}),
    ...(overrides.length > 0 ? { overrides } : {}),
  };
  let modules: ModulePlan[];
  try {
    modules = planAdapters(model, config);
  } catch (e) {
    return fail((e as Error).message);
  }
  const head = md.head === undefined ? undefined : fileHead(model, md, fail);
  const desc = {
    baseModel: get("base_model"),
    baseConfigHash: hash,
    config,
    modules,
    ...(head ? { head } : {}),
  };
  const specs = specsOf(desc, quant);
  const expected = new Set(specs.map((s) => s.name));
  const extra = file.names().find((n) => !expected.has(n));
  if (extra !== undefined) fail(`tensor "${extra}" belongs to no module of the adapter`);
  for (const { name, dtype, shape } of specs) {
    const info = file.tensors.get(name) ?? fail(`tensor "${name}" is missing`);
    if (info.dtype !== dtype || info.shape.join() !== shape.join()) {
      fail(
        `tensor "${name}" is ${info.dtype} [${info.shape}], the model needs ${dtype} [${shape}]`,
      );
    }
  }
  const scales = quant ? await file.readFloat32("quant.scale") : undefined;
  const zeroPoints = quant?.scheme === "asymmetric"
    ? await file.readFloat32("quant.zero_point")
    : undefined;
  // Scale slots follow the file's `targets` order, which another writer may not keep in model order.
  if (new Set(targets).size !== targets.length) fail(`metadata "targets" names a module twice`);
  const slotOf = new Map((targets as string[]).map((t, i) => [t, i]));
  const values = new Map<string, ModuleValues>();
  for (const m of modules) {
    const i = slotOf.get(m.name)!;
    if (!nola) {
      values.set(m.name, {
        loraA: await file.readFloat32(`${m.name}.lora_A`),
        loraB: await file.readFloat32(`${m.name}.lora_B`),
      });
      continue;
    }
    const coeffs = async (what: "alpha" | "beta", n: number, slot: number) => {
      const name = `${m.name}.${what}`;
      if (!quant) return await file.readFloat32(name);
      const codes = unpackBits(await file.readBytes(name), quant.bits, n);
      const q = { ...quant, scale: scales![slot], zeroPoint: zeroPoints?.[slot] };
      try {
        return dequantize(codes, q);
      } catch (e) {
        return fail(`tensor "${name}": ${(e as Error).message}`);
      }
    };
    values.set(m.name, {
      alpha: await coeffs("alpha", m.k, 2 * i),
      beta: await coeffs("beta", m.l, 2 * i + 1),
    });
  }
  const headValues = head && {
    weight: await file.readFloat32(`head.${head.name}.weight`),
    bias: await file.readFloat32(`head.${head.name}.bias`),
  };
  const set = await AdapterSet.attach(model, config, { maxRows: options.maxRows });
  if (head && headValues) {
    set.setHead(
      restoreHead(model, {
        labels: head.labels,
        values: headValues,
        trainable: options.trainHead,
        source: `adapter file "${path}"`,
      }),
    );
  }
  const { gpu } = model;
  for (const m of set.modules) {
    const v = values.get(m.name)!;
    if ("alpha" in v) {
      gpu.write(m.nola!.alpha.buffer, v.alpha);
      gpu.write(m.nola!.beta.buffer, v.beta);
    } else {
      gpu.write(m.adapter.a.buffer, v.loraA);
      gpu.write(m.adapter.b.buffer, v.loraB);
    }
  }
  set.prepareStep();
  return set;
}

// The head an adapter file's metadata describes, checked against the model's head.
function fileHead(
  model: Model,
  md: Record<string, string>,
  fail: (message: string) => never,
): { name: string; labels: string[]; inFeatures: number } {
  const own = model.classifierHead;
  if (!own || !model.replaceHead) {
    return fail(
      `it carries a classifier head "${md.head}", and the ${model.modelType} model has none`,
    );
  }
  if (md.head !== own.name) {
    fail(`its head "${md.head}" is not the model's head "${own.name}"`);
  }
  let map: unknown;
  try {
    map = JSON.parse(md.id2label ?? "");
  } catch {
    return fail(`metadata "id2label" is missing or not JSON`);
  }
  if (typeof map !== "object" || map === null || Array.isArray(map)) {
    return fail(`metadata "id2label" is not an object of id to class name`);
  }
  const entries = Object.entries(map);
  const labels: string[] = [];
  for (const [id, name] of entries) {
    const i = Number(id);
    if (!Number.isInteger(i) || i < 0 || i >= entries.length || String(i) !== id) {
      fail(`metadata "id2label" has id "${id}"; ids must be 0 to ${entries.length - 1}`);
    }
    if (typeof name !== "string") fail(`metadata "id2label" maps "${id}" to a non-string`);
    labels[i] = name as string;
  }
  if (labels.length === 0) fail(`metadata "id2label" is empty`);
  return { name: own.name, labels, inFeatures: own.inFeatures };
}
