/**
 * docs/adapter-format.md, checked: everything below the imports marked "from the doc" is written
 * from that page alone (safetensors parsing, settings resolution, GPT-2 sites, config hash,
 * quantization, bit packing, Philox bases), and must agree with the project's encoder and loader
 * bit for bit (and with its GPU factors to float32 rounding).
 */

import assert from "node:assert/strict";
import {
  type AdapterDescription,
  encodeAdapter,
  loadAdapter,
  type ModuleValues,
} from "../../adapters/adapter_file.ts";
import type { AttachConfig, ModulePlan } from "../../adapters/attach.ts";
import { packBits, quantize } from "../../formats/quantize.ts";
import { Gpt2 } from "../../models/gpt2.ts";
import { configHash, GPT2_SMALL, readGpt2Config } from "../../models/gpt2_config.ts";
import { freshSeed, GPU_TEST, randomArray, relativeError, testGpu } from "../_util.ts";

const FIXTURE = "fixtures/tiny-gpt2";
const fixtureJson = JSON.parse(await Deno.readTextFile(`${FIXTURE}/config.json`));
const projectHash = configHash(await readGpt2Config(FIXTURE));

// ---------------------------------------------------------------------------------------------
// From the doc.

type Json = Record<string, unknown>;
type Settings = { r: number; k: number; l: number; lora_alpha: number; seed: number; init: string };
type Site = { name: string; linear: string; in: number; out: number; offset: number };
type Quant = { bits: number; scheme: "symmetric" | "asymmetric" };

function fnv1a64(bytes: Uint8Array): bigint {
  let h = 0xcbf29ce484222325n;
  for (const b of bytes) h = ((h ^ BigInt(b)) * 0x100000001b3n) & 0xffffffffffffffffn;
  return h;
}

const utf8 = (s: string) => new TextEncoder().encode(s);
const hex16 = (h: bigint) => h.toString(16).padStart(16, "0");

/** Section 3, `checksum`: CRC-32 (reflected polynomial 0xEDB88320, as zlib), bit by bit. */
function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
  }
  return (c ^ 0xffffffff) >>> 0;
}

/** Section 3, `checksum`: the value of a whole file whose checksum digits are `0`s. */
function checksumOf(file: Uint8Array, n: number): string {
  const header = file.subarray(8, 8 + n);
  const value = JSON.parse(new TextDecoder().decode(header)).__metadata__.checksum as string;
  const quoted = utf8(`"${value}"`);
  const starts = [];
  for (let i = 0; i + quoted.length <= n; i++) {
    if (quoted.every((b, j) => header[i + j] === b)) starts.push(i);
  }
  assert.equal(starts.length, 1, "the quoted value appears once in the header");
  const zeroed = file.slice();
  const end = 8 + starts[0] + quoted.length - 1; // the closing quote
  zeroed.fill(0x30, end - 8, end);
  return `crc32:${crc32(zeroed).toString(16).padStart(8, "0")}`;
}

/** Section 8: the canonical GPT-2 JSON of a config.json (numbers as JavaScript writes them). */
function gpt2Hash(cfg: Json): string {
  const has = (k: string) => cfg[k] !== undefined;
  const C = cfg.n_embd as number;
  const fields: [string, unknown][] = [
    ["model_type", "gpt2"],
    ["n_layer", cfg.n_layer],
    ["n_head", cfg.n_head],
    ["n_embd", C],
    ["n_positions", has("n_positions") || !has("n_ctx") ? cfg.n_positions : cfg.n_ctx],
    ["vocab_size", cfg.vocab_size],
    ["n_inner", cfg.n_inner ?? 4 * C],
    ["layer_norm_epsilon", cfg.layer_norm_epsilon],
    ["activation_function", cfg.activation_function],
  ];
  const text = `{${fields.map(([k, v]) => `"${k}":${JSON.stringify(v)}`).join(",")}}`;
  return hex16(fnv1a64(utf8(text)));
}

/** Section 4: GPT-2's sites in model order. */
function gpt2Sites(cfg: Json): Site[] {
  const C = cfg.n_embd as number;
  const I = (cfg.n_inner as number | null) ?? 4 * C;
  const sites: Site[] = [];
  for (let i = 0; i < (cfg.n_layer as number); i++) {
    const attn = `h.${i}.attn.c_attn`;
    sites.push({ name: attn, linear: attn, in: C, out: 3 * C, offset: 0 });
    ["q", "k", "v"].forEach((p, j) =>
      sites.push({ name: `${attn}.${p}`, linear: attn, in: C, out: C, offset: j * C })
    );
    for (
      const [lin, fin, fout] of [["attn.c_proj", C, C], ["mlp.c_fc", C, I], ["mlp.c_proj", I, C]]
    ) {
      const name = `h.${i}.${lin}`;
      sites.push({ name, linear: name, in: fin as number, out: fout as number, offset: 0 });
    }
  }
  return sites;
}

/** Section 3: the layer-generic basis key. */
function sharedKey(name: string): string {
  const parts = name.split(".");
  const i = parts.findIndex((p) => /^[0-9]+$/.test(p));
  if (i >= 0) parts[i] = "*";
  return parts.join(".");
}

/** Section 6: round half to even. */
function rhe(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  return d < 0.5 ? f : d > 0.5 ? f + 1 : f % 2 === 0 ? f : f + 1;
}

/** Section 6, "values to codes". */
function quantizeDoc(x: Float32Array, { bits, scheme }: Quant) {
  const n = x.length;
  const codes: number[] = [];
  if (scheme === "asymmetric") {
    const T = 2 ** bits - 1;
    const zeroPoint = Math.fround(Math.min(...x));
    const scale = Math.fround((Math.max(...x) - zeroPoint) / T);
    for (const v of x) {
      codes.push(scale === 0 ? 0 : Math.min(T, Math.max(0, rhe((v - zeroPoint) / scale))));
    }
    return { codes, scale, zeroPoint };
  }
  if (bits === 1) {
    let sum = 0;
    for (const v of x) sum += Math.abs(v);
    for (const v of x) codes.push(v >= 0 ? 1 : 0);
    return { codes, scale: Math.fround(sum / n), zeroPoint: 0 };
  }
  const L = 2 ** (bits - 1) - 1;
  const m = Math.max(...[...x].map(Math.abs));
  for (const v of x) codes.push((m === 0 ? 0 : Math.min(L, Math.max(-L, rhe(v * (L / m))))) + L);
  return { codes, scale: Math.fround(m / L), zeroPoint: 0 };
}

/** Section 6, "codes to values". */
function dequantizeDoc(codes: number[], q: Quant, scale: number, zeroPoint: number): Float32Array {
  const L = 2 ** (q.bits - 1) - 1;
  return Float32Array.from(
    codes,
    (c) =>
      q.scheme === "asymmetric"
        ? c * scale + zeroPoint
        : q.bits === 1
        ? (c === 1 ? scale : -scale)
        : (c - L) * scale,
  );
}

/** Section 6, bit packing, through the little-endian integer V. */
function pack(codes: number[], bits: number): Uint8Array {
  let v = 0n;
  codes.forEach((c, i) => v |= BigInt(c) << BigInt(i * bits));
  const out = new Uint8Array(Math.ceil((codes.length * bits) / 8));
  for (let i = 0; i < out.length; i++) out[i] = Number((v >> BigInt(8 * i)) & 0xffn);
  return out;
}

function unpack(bytes: Uint8Array, bits: number, count: number): number[] {
  let v = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i]);
  const mask = (1n << BigInt(bits)) - 1n;
  return Array.from({ length: count }, (_, i) => Number((v >> BigInt(i * bits)) & mask));
}

/** Basis spec v1 (linked from section 7): Philox4x32-10 and the uniform mapping. */
function philox(counter: number[], key: [number, number]): number[] {
  let [c0, c1, c2, c3] = counter.map(BigInt);
  let [k0, k1] = key.map(BigInt);
  const M = 0xffffffffn;
  for (let round = 0; round < 10; round++) {
    if (round > 0) [k0, k1] = [(k0 + 0x9e3779b9n) & M, (k1 + 0xbb67ae85n) & M];
    const p0 = 0xd2511f53n * c0;
    const p1 = 0xcd9e8d57n * c2;
    [c0, c1, c2, c3] = [(p1 >> 32n) ^ c1 ^ k0, p1 & M, (p0 >> 32n) ^ c3 ^ k1, p0 & M];
  }
  return [c0, c1, c2, c3].map(Number);
}

function basis(key: [number, number], f: number, i: number, rows: number, cols: number, n: number) {
  const scale = Math.fround(1 / Math.sqrt(n));
  const out = new Float32Array(rows * cols);
  for (let e = 0; e < out.length; e += 4) {
    const words = philox([e / 4, i, f, 0], key);
    for (let j = 0; j < 4 && e + j < out.length; j++) {
      out[e + j] = ((2 * (words[j] >>> 8) - 2 ** 24) * 2 ** -24) * scale;
    }
  }
  return out;
}

interface DocModule extends Settings {
  name: string;
  site: Site;
  s: number;
  basisKey: string;
  alpha?: Float32Array;
  beta?: Float32Array;
  loraA?: Float32Array;
  loraB?: Float32Array;
}

/** Sections 2 to 6: parses a file into resolved modules and their stored values. */
function readDoc(
  bytes: Uint8Array,
  cfg: Json,
): { md: Record<string, string>; modules: DocModule[] } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = Number(view.getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))) as Json;
  const md = header.__metadata__ as Record<string, string>;
  if (md.checksum !== undefined) assert.equal(checksumOf(bytes, n), md.checksum, "checksum");
  const tensor = (name: string, dtype: string, shape: number[]) => {
    const t = header[name] as { dtype: string; shape: number[]; data_offsets: [number, number] };
    assert.deepEqual([t.dtype, t.shape], [dtype, shape], name);
    const [b, e] = t.data_offsets.map((o) => o + 8 + n);
    if (dtype === "U8") return bytes.slice(b, e);
    return Float32Array.from({ length: (e - b) / 4 }, (_, i) => view.getFloat32(b + 4 * i, true));
  };
  assert.equal(Object.keys(header).length - 1, expectedTensors(md), "tensor count");
  assert.equal(md.format, "nola-gpu-adapter/1");
  assert.equal(md.base_config_hash, gpt2Hash(cfg));
  const nola = md.method === "nola";
  if (nola) assert.equal(md.basis_spec, "philox4x32-10/v1");
  const sites = gpt2Sites(cfg);
  const targets = JSON.parse(md.targets) as string[];
  const overrides = JSON.parse(md.modules) as Record<string, Partial<Settings>>;
  assert.deepEqual(sites.map((s) => s.name).filter((s) => targets.includes(s)), targets);
  const bits = Number(md.quant_bits);
  const q = md.quant_scheme === "none" ? undefined : { bits, scheme: md.quant_scheme } as Quant;
  const scales = q && tensor("quant.scale", "F32", [2 * targets.length]) as Float32Array;
  const zps = q?.scheme === "asymmetric"
    ? tensor("quant.zero_point", "F32", [2 * targets.length]) as Float32Array
    : undefined;
  const modules = targets.map((name, m) => {
    const o = overrides[name] ?? {};
    const get = (k: keyof Settings) => o[k] ?? (k === "init" ? md.init : Number(md[k]));
    const set = Object.fromEntries(
      (["r", "k", "l", "lora_alpha", "seed", "init"] as const).map((k) => [k, get(k)]),
    ) as Settings;
    const site = sites.find((s) => s.name === name)!;
    const mod: DocModule = {
      name,
      site,
      ...set,
      s: set.lora_alpha / set.r,
      basisKey: md.share_basis === "true" ? sharedKey(name) : name,
    };
    if (!nola) {
      mod.loraA = tensor(`${name}.lora_A`, "F32", [set.r, site.in]) as Float32Array;
      mod.loraB = tensor(`${name}.lora_B`, "F32", [site.out, set.r]) as Float32Array;
      return mod;
    }
    for (const [slot, what, count] of [[0, "alpha", set.k], [1, "beta", set.l]] as const) {
      mod[what] = q
        ? dequantizeDoc(
          unpack(
            tensor(`${name}.${what}`, "U8", [Math.ceil((count * bits) / 8)]) as Uint8Array,
            bits,
            count,
          ),
          q,
          scales![2 * m + slot],
          zps?.[2 * m + slot] ?? 0,
        )
        : tensor(`${name}.${what}`, "F32", [count]) as Float32Array;
    }
    return mod;
  });
  return { md, modules };
}

function expectedTensors(md: Record<string, string>): number {
  const M = (JSON.parse(md.targets) as string[]).length;
  const tables = md.quant_scheme === "none" ? 0 : md.quant_scheme === "asymmetric" ? 2 : 1;
  return 2 * M + tables;
}

/** Section 7: A and B of a NOLA module, in float64. */
function rebuild(mod: DocModule): { A: Float64Array; B: Float64Array } {
  const { r, k, l, seed, site } = mod;
  const h = fnv1a64(utf8(`${seed}/${mod.basisKey}`));
  const key: [number, number] = [Number(h & 0xffffffffn), Number(h >> 32n)];
  const A = new Float64Array(r * site.in);
  if (mod.init === "official") A.set(basis(key, 2, 0, r, site.in, site.in));
  for (let i = 0; i < k; i++) {
    const Ai = basis(key, 0, i, r, site.in, k);
    for (let e = 0; e < A.length; e++) A[e] += mod.alpha![i] * Ai[e];
  }
  const B = new Float64Array(site.out * r);
  for (let j = 0; j < l; j++) {
    const Bj = basis(key, 1, j, site.out, r, l);
    for (let e = 0; e < B.length; e++) B[e] += mod.beta![j] * Bj[e];
  }
  return { A, B };
}

/** The writer of section 11's last paragraph: settings, quantization, packing, layout. */
function writeDoc(
  cfg: Json,
  top: Settings & { method: string; share_basis: boolean },
  modules: { name: string; settings: Partial<Settings>; values: ModuleValues }[],
  quant?: Quant,
): Uint8Array {
  const nola = top.method === "nola";
  const diffs: Record<string, Partial<Settings>> = {};
  for (const { name, settings } of modules) {
    const d: Json = {};
    for (const k of ["r", "k", "l", "lora_alpha", "seed", "init"] as const) {
      if (settings[k] !== undefined && settings[k] !== top[k]) d[k] = settings[k];
    }
    if (Object.keys(d).length > 0) diffs[name] = d as Partial<Settings>;
  }
  const md = {
    format: "nola-gpu-adapter/1",
    method: top.method,
    base_model: "tiny-gpt2",
    base_config_hash: gpt2Hash(cfg),
    targets: JSON.stringify(modules.map((m) => m.name)),
    r: String(top.r),
    lora_alpha: String(top.lora_alpha),
    k: String(nola ? top.k : 0),
    l: String(nola ? top.l : 0),
    seed: String(top.seed),
    init: nola ? top.init : "kaiming-uniform",
    basis_spec: "philox4x32-10/v1",
    share_basis: String(nola && top.share_basis),
    quant_bits: String(quant?.bits ?? 32),
    quant_scheme: quant?.scheme ?? "none",
    modules: JSON.stringify(diffs),
    checksum: "crc32:00000000",
  };
  const tensors: { name: string; dtype: string; shape: number[]; data: Uint8Array }[] = [];
  const f32 = (a: ArrayLike<number>) => new Uint8Array(Float32Array.from(a).buffer);
  const scales: number[] = [];
  const zps: number[] = [];
  for (const { name, settings, values } of modules) {
    if ("loraA" in values) {
      const r = settings.r ?? top.r;
      const site = gpt2Sites(cfg).find((s) => s.name === name)!;
      tensors.push({
        name: `${name}.lora_A`,
        dtype: "F32",
        shape: [r, site.in],
        data: f32(values.loraA),
      });
      tensors.push({
        name: `${name}.lora_B`,
        dtype: "F32",
        shape: [site.out, r],
        data: f32(values.loraB),
      });
      continue;
    }
    for (const what of ["alpha", "beta"] as const) {
      const x = values[what];
      if (!quant) {
        tensors.push({ name: `${name}.${what}`, dtype: "F32", shape: [x.length], data: f32(x) });
        continue;
      }
      const q = quantizeDoc(x, quant);
      const data = pack(q.codes, quant.bits);
      tensors.push({ name: `${name}.${what}`, dtype: "U8", shape: [data.length], data });
      scales.push(q.scale);
      zps.push(q.zeroPoint);
    }
  }
  if (quant) {
    tensors.push({ name: "quant.scale", dtype: "F32", shape: [scales.length], data: f32(scales) });
    if (quant.scheme === "asymmetric") {
      tensors.push({ name: "quant.zero_point", dtype: "F32", shape: [zps.length], data: f32(zps) });
    }
  }
  let offset = 0;
  const entries = [`"__metadata__":${JSON.stringify(md)}`];
  for (const t of tensors) {
    const entry = {
      dtype: t.dtype,
      shape: t.shape,
      data_offsets: [offset, offset + t.data.length],
    };
    entries.push(`${JSON.stringify(t.name)}:${JSON.stringify(entry)}`);
    offset += t.data.length;
  }
  let header = `{${entries.join(",")}}`;
  header += " ".repeat((8 - (utf8(header).length % 8)) % 8);
  const head = utf8(header);
  const out = new Uint8Array(8 + head.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true);
  out.set(head, 8);
  let at = 8 + head.length;
  for (const t of tensors) {
    out.set(t.data, at);
    at += t.data.length;
  }
  const digits = header.indexOf(`"crc32:00000000"`) + 7;
  out.set(utf8(checksumOf(out, head.length).slice(6)), 8 + digits);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Cases, described the doc's way (top-level settings plus per-module differences).

interface Case {
  label: string;
  top: Settings & { method: "nola" | "lora"; share_basis: boolean };
  targets: string[];
  overrides: Record<string, Partial<Settings>>;
  quant?: Quant;
}

const NOLA_TOP = { method: "nola" as const, r: 3, k: 7, l: 5, lora_alpha: 6, seed: -12 };
const CASES: Case[] = [
  {
    label: "NOLA F32, shared bases, overrides",
    top: { ...NOLA_TOP, init: "official", share_basis: true },
    targets: ["h.0.attn.c_attn.q", "h.0.attn.c_attn.v", "h.1.attn.c_attn.v", "h.1.mlp.c_fc"],
    overrides: {
      "h.0.attn.c_attn.v": { l: 9, lora_alpha: 0.5 },
      "h.1.mlp.c_fc": { r: 2, init: "uniform-coeffs", seed: 4 },
    },
  },
  ...([
    [1, "symmetric"],
    [3, "symmetric"],
    [4, "symmetric"],
    [8, "symmetric"],
    [1, "asymmetric"],
    [
      2,
      "asymmetric",
    ],
    [5, "asymmetric"],
    [7, "asymmetric"],
  ] as const).map(([bits, scheme]): Case => ({
    label: `NOLA ${bits}-bit ${scheme}`,
    top: {
      ...NOLA_TOP,
      seed: bits,
      init: bits % 2 ? "official" : "uniform-coeffs",
      share_basis: bits > 3,
    },
    targets: ["h.0.attn.c_attn", "h.0.mlp.c_proj", "h.1.attn.c_attn.k", "h.1.attn.c_proj"],
    overrides: { "h.0.mlp.c_proj": { k: 11, r: 1 }, "h.1.attn.c_attn.k": { l: 2, seed: 0 } },
    quant: { bits, scheme },
  })),
  {
    label: "LoRA",
    top: {
      method: "lora",
      r: 3,
      k: 0,
      l: 0,
      lora_alpha: 6,
      seed: 1,
      init: "kaiming-uniform",
      share_basis: false,
    },
    targets: ["h.0.attn.c_attn.k", "h.0.mlp.c_fc", "h.1.mlp.c_fc"],
    overrides: { "h.1.mlp.c_fc": { r: 1, seed: 4 } },
  },
];

/** The project's description of a case, with plans built from the doc's sites. */
function project(c: Case, seed: number) {
  const sites = gpt2Sites(fixtureJson);
  const nola = c.top.method === "nola";
  const modules: ModulePlan[] = c.targets.map((name) => {
    const s = { ...c.top, ...c.overrides[name] };
    const site = sites.find((x) => x.name === name)!;
    return {
      name,
      linear: site.linear,
      colOffset: site.offset,
      inFeatures: site.in,
      outFeatures: site.out,
      method: c.top.method,
      r: s.r,
      k: nola ? s.k : 0,
      l: nola ? s.l : 0,
      loraAlpha: s.lora_alpha,
      scale: s.lora_alpha / s.r,
      seed: s.seed,
      init: s.init as ModulePlan["init"],
      basisKey: nola && c.top.share_basis ? sharedKey(name) : name,
    };
  });
  const config: AttachConfig = {
    method: c.top.method,
    targets: c.targets,
    r: c.top.r,
    loraAlpha: c.top.lora_alpha,
    seed: c.top.seed,
    ...(nola
      ? { k: c.top.k, l: c.top.l, init: c.top.init as "official", shareBasis: c.top.share_basis }
      : {}),
  };
  const values = new Map<string, ModuleValues>(modules.map((m, i) => [
    m.name,
    nola ? { alpha: randomArray(m.k, seed + 4 * i), beta: randomArray(m.l, seed + 4 * i + 1) } : {
      loraA: randomArray(m.r * m.inFeatures, seed + 4 * i + 2),
      loraB: randomArray(m.outFeatures * m.r, seed + 4 * i + 3),
    },
  ]));
  const desc: AdapterDescription = {
    baseModel: "tiny-gpt2",
    baseConfigHash: projectHash,
    config,
    modules,
  };
  return { desc, values, modules };
}

// ---------------------------------------------------------------------------------------------

Deno.test("adapter-format.md: its worked numbers are what the code computes", () => {
  // Section 6: bit packing table, by the doc's rule and by packBits.
  const packs: [number[], number, string][] = [
    [[5, 2, 7, 0, 6], 3, "d5 61"],
    [[3, 10], 4, "a3"],
    [[9, 0, 14, 7, 1], 4, "09 7e 01"],
    [[1, 0, 1, 1, 0, 0, 1, 0, 1], 1, "4d 01"],
    [[31, 1, 16], 5, "3f 40"],
  ];
  const hex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join(" ");
  for (const [codes, bits, want] of packs) {
    assert.equal(hex(pack(codes, bits)), want);
    assert.equal(hex(packBits(Uint8Array.from(codes), bits)), want);
    assert.deepEqual(unpack(pack(codes, bits), bits, codes.length), codes);
  }
  // Section 6: quantization examples.
  const sym = quantize(Float32Array.from([1, 0.5, -0.5]), { bits: 4, scheme: "symmetric" });
  assert.deepEqual([...sym.codes], [14, 11, 3]);
  assert.deepEqual(quantizeDoc(Float32Array.from([1, 0.5, -0.5]), sym).codes, [14, 11, 3]);
  assert.equal(sym.scale, Math.fround(1 / 7));
  const asym = quantize(Float32Array.from([0.3, -0.7, 0.05, 0.7]), {
    bits: 3,
    scheme: "asymmetric",
  });
  assert.deepEqual([...asym.codes], [5, 0, 4, 7]);
  assert.deepEqual(
    [asym.scale, asym.zeroPoint, ...asym.dequantized].map((x) => x!.toPrecision(9)),
    ["0.200000003", "-0.699999988", "0.300000012", "-0.699999988", "0.100000024", "0.700000048"],
  );
  // Section 8: hashes.
  const small = {
    n_layer: 12,
    n_head: 12,
    n_embd: 768,
    n_positions: 1024,
    vocab_size: 50257,
    n_inner: null,
    layer_norm_epsilon: 1e-5,
    activation_function: "gelu_new",
  };
  assert.equal(gpt2Hash(small), "dbc5edec2355a3e5");
  assert.equal(configHash(GPT2_SMALL), "dbc5edec2355a3e5");
  assert.equal(gpt2Hash(fixtureJson), "abfd016cc7684d1b");
  assert.equal(projectHash, "abfd016cc7684d1b");
  // Section 10: the example file.
  const c: Case = {
    label: "section 10",
    top: {
      method: "nola",
      r: 2,
      k: 5,
      l: 4,
      lora_alpha: 4,
      seed: 42,
      init: "official",
      share_basis: true,
    },
    targets: ["h.0.attn.c_attn.v", "h.1.attn.c_attn.v"],
    overrides: { "h.1.attn.c_attn.v": { k: 3, seed: 7 } },
    quant: { bits: 3, scheme: "asymmetric" },
  };
  const { desc } = project(c, 0);
  const values = new Map([
    ["h.0.attn.c_attn.v", {
      alpha: Float32Array.from([0.5, -1, 0.25, 0.125, -0.0625]),
      beta: Float32Array.from([0.3, -0.7, 0.05, 0.7]),
    }],
    ["h.1.attn.c_attn.v", {
      alpha: Float32Array.from([1, 0.5, -0.5]),
      beta: Float32Array.from([0, 0.5, 1.5, 2.5]),
    }],
  ]);
  const { bytes } = encodeAdapter(desc, values, { quant: c.quant });
  assert.equal(bytes.length, 920);
  assert.equal(hex(bytes.subarray(0, 8)), "68 03 00 00 00 00 00 00");
  assert.equal(new TextDecoder().decode(bytes.subarray(8 + 867, 880)), "     ");
  assert.equal(new TextDecoder().decode(bytes.subarray(430, 444)), "crc32:e8783139");
  assert.equal(
    hex(bytes.subarray(880)),
    "87 4b 05 0f 2f 00 08 0f b7 6d 5b 3e cd cc 4c 3e b7 6d 5b 3e 6e db b6 3e " +
      "00 00 80 bf 33 33 33 bf 00 00 00 bf 00 00 00 00",
  );
  assert.deepEqual(
    bytes,
    writeDoc(
      fixtureJson,
      c.top,
      c.targets.map((name) => ({
        name,
        settings: { ...c.top, ...c.overrides[name] },
        values: values.get(name)!,
      })),
      c.quant,
    ),
  );
  const { md, modules } = readDoc(bytes, fixtureJson);
  assert.equal(md.modules, `{"h.1.attn.c_attn.v":{"k":3,"seed":7}}`);
  assert.equal(hex16(fnv1a64(utf8("42/h.*.attn.c_attn.v"))), "85fd61503d7a0a50");
  const want = [[0.06602446, 0.7563327, 0.5370574], [-0.3712942, -0.5539334, -1.467837]];
  for (const [i, mod] of modules.entries()) {
    const { A, B } = rebuild(mod);
    const dW = (o: number, j: number) => mod.s * (B[2 * o] * A[j] + B[2 * o + 1] * A[48 + j]);
    assert.deepEqual([0, 1, 2].map((j) => Number(dW(0, j).toPrecision(7))), want[i]);
  }
});

Deno.test("adapter-format.md: a reader written from it gets the loader's values", () => {
  const seed = freshSeed();
  for (const c of CASES) {
    const what = `${c.label}, seed ${seed}`;
    const { desc, values, modules } = project(c, seed);
    const enc = encodeAdapter(desc, values, { quant: c.quant });
    const read = readDoc(enc.bytes, fixtureJson);
    assert.deepEqual(read.modules.map((m) => m.name), modules.map((m) => m.name), what);
    for (const [i, m] of read.modules.entries()) {
      const plan = modules[i];
      assert.deepEqual(
        [m.r, m.k, m.l, m.lora_alpha, m.seed, m.init, m.basisKey, m.s],
        [plan.r, plan.k, plan.l, plan.loraAlpha, plan.seed, plan.init, plan.basisKey, plan.scale],
        `${what}: ${m.name} settings`,
      );
      const stored = enc.values.get(m.name)!;
      if ("alpha" in stored) {
        assert.deepEqual([m.alpha, m.beta], [stored.alpha, stored.beta], `${what}: ${m.name}`);
      } else {
        assert.deepEqual([m.loraA, m.loraB], [stored.loraA, stored.loraB], `${what}: ${m.name}`);
      }
    }
  }
});

Deno.test("adapter-format.md: a writer written from it produces encodeAdapter's bytes", () => {
  const seed = freshSeed();
  for (const c of CASES) {
    const { desc, values } = project(c, seed);
    const mine = writeDoc(
      fixtureJson,
      c.top,
      c.targets.map((name) => ({
        name,
        settings: { ...c.top, ...c.overrides[name] },
        values: values.get(name)!,
      })),
      c.quant,
    );
    assert.deepEqual(
      mine,
      encodeAdapter(desc, values, { quant: c.quant }).bytes,
      `${c.label}, seed ${seed}`,
    );
  }
});

Deno.test(
  "adapter-format.md: loadAdapter reads files written from it; its factors are the doc's A and B",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    await Deno.mkdir("out/tmp", { recursive: true });
    for (const c of CASES.filter((_, i) => i % 3 === 0 || i === CASES.length - 1)) {
      const what = `${c.label}, seed ${seed}`;
      const { values } = project(c, seed);
      const bytes = writeDoc(
        fixtureJson,
        c.top,
        c.targets.map((name) => ({
          name,
          settings: { ...c.top, ...c.overrides[name] },
          values: values.get(name)!,
        })),
        c.quant,
      );
      const path = await Deno.makeTempFile({ dir: "out/tmp", suffix: ".safetensors" });
      try {
        await Deno.writeFile(path, bytes);
        using model = await Gpt2.load(gpu, FIXTURE);
        using set = await loadAdapter(model, path, { maxRows: 4 });
        const doc = readDoc(bytes, fixtureJson).modules;
        assert.deepEqual(set.modules.map((m) => m.name), doc.map((m) => m.name), what);
        for (const [i, m] of set.modules.entries()) {
          const d = doc[i];
          assert.deepEqual(
            [m.colOffset, m.inFeatures, m.outFeatures, m.r],
            [d.site.offset, d.site.in, d.site.out, d.r],
          );
          const a = await m.adapter.a.read() as Float32Array;
          const b = await m.adapter.b.read() as Float32Array;
          if (d.loraA) {
            assert.deepEqual([a, b], [d.loraA, d.loraB], `${what}: ${m.name}`);
            continue;
          }
          assert.deepEqual(await m.nola!.alpha.read(), d.alpha, `${what}: ${m.name} alpha`);
          assert.deepEqual(await m.nola!.beta.read(), d.beta, `${what}: ${m.name} beta`);
          const { A, B } = rebuild(d);
          assert(relativeError(a, A) < 1e-5, `${what}: ${m.name} A ${relativeError(a, A)}`);
          assert(relativeError(b, B) < 1e-5, `${what}: ${m.name} B ${relativeError(b, B)}`);
        }
      } finally {
        await Deno.remove(path);
      }
    }
  },
);
