/**
 * Attaching NOLA or LoRA adapters to a model by target patterns, and the training-step protocol
 * of the attached set.
 *
 * Module names are the model's adaptable sites (`Model.sites`): its linear layers by Hugging Face
 * name, and named column slices of fused projections. For GPT-2 every linear of block `i` is
 * `h.{i}.attn.c_attn`, `h.{i}.attn.c_proj`, `h.{i}.mlp.c_fc` and `h.{i}.mlp.c_proj`, and the q, k
 * and v parts of `c_attn` are sites of their own, `h.{i}.attn.c_attn.q|k|v`. Two adapters may not
 * write the same columns of one linear (`h.0.attn.c_attn` and `h.0.attn.c_attn.q` together are an
 * error).
 *
 * Target patterns: a pattern matches a name when both have the same number of dotted components
 * and each pattern component matches the name's component at the same place, where `*` stands for
 * any run of characters other than `.` (possibly empty) and every other character for itself.
 * So `h.*.attn.c_attn.q` matches the q part of every block, `h.*.mlp.c_*` both MLP linears,
 * `h.1.attn.c_attn` the whole `c_attn` of block 1 (and not its q/k/v parts, which have one
 * component more). A pattern that matches nothing is an error naming the closest module names.
 *
 * The target `all-linear` is a shorthand for every whole linear layer: each site whose name is
 * its linear's (no column slices), so GPT-2's four linears of a block, or a Llama's seven
 * (`q_proj`, `k_proj`, `v_proj`, `o_proj`, `gate_proj`, `up_proj`, `down_proj`); the head is not
 * a site of any family, so it is never adapted. The target `mlp` is every whole linear of the
 * blocks' MLPs, NOLA-MLP's targets: a site with an `mlp` component (GPT-2 `h.*.mlp.c_fc|c_proj`,
 * Llama `model.layers.*.mlp.*`, timm ViT `blocks.*.mlp.fc1|fc2`) or Hugging Face ViT's
 * `encoder.layer.*.intermediate.dense` and `encoder.layer.*.output.dense` (not
 * `attention.output.dense`).
 *
 * @module
 */

import {
  moduleKey,
  philox4x32_10,
  sharedBasisKey,
  uniformFromWord,
} from "../kernels/basis_spec.ts";
import { LowRankLinear } from "./linear_adapter.ts";
import { NOLA_INITS, NolaFactors, type NolaInit } from "./nola_factors.ts";
import { NolaKernels } from "../kernels/nola.ts";
import type { Tensor } from "../kernels/tensor.ts";
import type { LinearSite, Model, ModelShape } from "../models/model.ts";
import { type AdapterHead, headTensors } from "./head.ts";

export type { LinearSite };

/** The target shorthand for every whole linear layer (see the module doc). */
export const ALL_LINEAR = "all-linear";

/** The target shorthand for the MLP's linear layers (see the module doc). */
export const MLP_TARGETS = "mlp";

// A whole linear of a block's MLP, by its Hugging Face name.
function isMlpLinear(site: LinearSite): boolean {
  if (site.name !== site.linear) return false;
  const parts = site.name.split(".");
  return parts.includes("mlp") || /(^|\.)layer\.\d+\.(intermediate|output)\.dense$/.test(site.name);
}

/** How the adapters are parameterized. */
export type AdapterMethod = "nola" | "lora";

/** Settings for the modules one pattern matches; absent fields keep the top-level values. */
export interface ModuleOverride {
  /** A target pattern (same syntax as {@link AttachConfig.targets}) over the targeted modules. */
  pattern: string;
  /** Rank for the matching modules. */
  r?: number;
  /** NOLA: number of A bases for the matching modules. */
  k?: number;
  /** NOLA: number of B bases for the matching modules. */
  l?: number;
  /** `loraAlpha` for the matching modules (output scale `loraAlpha / r`). */
  loraAlpha?: number;
  /** Seed for the matching modules (NOLA: bases; LoRA: A's init). */
  seed?: number;
  /** NOLA: the init of the matching modules. */
  init?: NolaInit;
}

/**
 * Which modules get adapters, and their hyper-parameters. `k`, `l`, `init` and `shareBasis` only
 * concern NOLA and are ignored with LoRA.
 */
export interface AttachConfig {
  /**
   * `nola` trains `k + l` coefficients per module; `lora` trains A and B; `none` attaches no
   * adapter (targets empty): only a classifier head trains, a linear probe (see `head.ts`).
   */
  method: AdapterMethod | "none";
  /** Target patterns; see the module doc. */
  targets: string[];
  /** Rank of A [r, in] and B [out, r]. */
  r: number;
  /** NOLA: number of A bases (required). */
  k?: number;
  /** NOLA: number of B bases; default `k`. */
  l?: number;
  /** The adapter output is scaled by `loraAlpha / r`. */
  loraAlpha: number;
  /** NOLA: the basis seed (spec v1); LoRA: the seed of A's init. */
  seed: number;
  /** NOLA: default `official` (A0 term, alpha = beta = 0). */
  init?: NolaInit;
  /** NOLA: the same bases in every layer (`sharedBasisKey`). Default false. */
  shareBasis?: boolean;
  /** Per-module settings, applied in order (a later match wins field by field). */
  overrides?: ModuleOverride[];
}

/** What one adapted module will be: where, which method, and its resolved hyper-parameters. */
export interface ModulePlan extends LinearSite {
  /** NOLA or LoRA. */
  method: AdapterMethod;
  /** Rank of A [r, in] and B [out, r], overrides applied. */
  r: number;
  /** NOLA: number of A bases; 0 for LoRA. */
  k: number;
  /** NOLA: number of B bases; 0 for LoRA. */
  l: number;
  /** Numerator of the output scale, overrides applied. */
  loraAlpha: number;
  /** `loraAlpha / r`. */
  scale: number;
  /** NOLA: the basis seed; LoRA: the seed of A's init. */
  seed: number;
  /** NOLA's init, or `kaiming-uniform` for LoRA. */
  init: NolaInit | "kaiming-uniform";
  /** NOLA: the name the bases are keyed by (the module name, or its shared key). */
  basisKey: string;
}

const CONFIG_KEYS = new Set([
  "method",
  "targets",
  "r",
  "k",
  "l",
  "loraAlpha",
  "seed",
  "init",
  "shareBasis",
  "overrides",
]);
const OVERRIDE_KEYS = new Set(["pattern", "r", "k", "l", "loraAlpha", "seed", "init"]);

const patternCache = new Map<string, RegExp[]>();

/**
 * Says whether a target pattern matches a module name (see the module doc for the syntax).
 *
 * @param pattern E.g. `h.*.attn.c_attn.q`.
 * @param name E.g. `h.3.attn.c_attn.q`.
 * @returns True on a match.
 * @throws {RangeError} If the pattern has an empty component or a character other than letters,
 *   digits, `_`, `-` and `*`.
 */
export function globMatch(pattern: string, name: string): boolean {
  let parts = patternCache.get(pattern);
  if (!parts) {
    if (!/^[A-Za-z0-9_*-]+(\.[A-Za-z0-9_*-]+)*$/.test(pattern)) {
      throw new RangeError(
        `Invalid target pattern "${pattern}": expected dotted components of letters, digits, ` +
          `"_", "-" and "*"`,
      );
    }
    parts = pattern.split(".").map((p) => new RegExp(`^${p.replaceAll("*", "[^.]*")}$`));
    patternCache.set(pattern, parts);
  }
  const names = name.split(".");
  return names.length === parts.length && parts.every((re, i) => re.test(names[i]));
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = row;
  }
  return prev[b.length];
}

/** The few names closest to `pattern` by edit distance, layer-generic forms included. */
function closest(pattern: string, names: string[]): string[] {
  const candidates = [...new Set([...names, ...names.map(sharedBasisKey)])];
  return candidates
    .map((name) => ({ name, d: editDistance(pattern, name) }))
    .sort((x, y) => x.d - y.d || x.name.localeCompare(y.name))
    .slice(0, 3)
    .map(({ name }) => `"${name}"`);
}

function checkInt(what: string, v: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min || v > max) {
    throw new RangeError(`Invalid adapter ${what} ${v}: must be an integer in [${min}, ${max}]`);
  }
  return v;
}

function checkSettings(where: string, s: Partial<ModuleOverride>): void {
  if (s.r !== undefined) checkInt(`${where}r`, s.r, 1);
  if (s.k !== undefined) checkInt(`${where}k`, s.k, 1, 2 ** 32 - 1);
  if (s.l !== undefined) checkInt(`${where}l`, s.l, 1, 2 ** 32 - 1);
  if (s.seed !== undefined) checkInt(`${where}seed`, s.seed, Number.MIN_SAFE_INTEGER);
  if (s.loraAlpha !== undefined && !Number.isFinite(s.loraAlpha)) {
    throw new RangeError(`Invalid adapter ${where}loraAlpha ${s.loraAlpha}: must be finite`);
  }
  if (s.init !== undefined && !NOLA_INITS.includes(s.init)) {
    throw new RangeError(
      `Invalid adapter ${where}init "${s.init}": expected one of ${NOLA_INITS.join(", ")}`,
    );
  }
}

/**
 * Resolves an attach config against a model shape, without touching a GPU: which modules get
 * adapters (in model order) and each one's hyper-parameters.
 *
 * @param model The model's shape: its adaptable sites (and config hash).
 * @param attach The attach config.
 * @returns One plan per adapted module.
 * @throws {RangeError} On an invalid setting or unknown key, a rank above a module's
 *   min(in, out), a pattern that matches nothing (the message lists the closest names), an
 *   override that matches no targeted module, or two targeted modules writing the same columns of
 *   one linear.
 *
 * @example GPT-2's q and v parts
 * ```ts
 * import { planAdapters } from "./adapters/attach.ts";
 * import { modelShape, readModelConfig } from "./models/registry.ts";
 * const shape = modelShape(await readModelConfig("fixtures/tiny-gpt2"));
 * const plan = planAdapters(shape, {
 *   method: "nola", targets: ["h.*.attn.c_attn.q", "h.*.attn.c_attn.v"], r: 8, k: 64,
 *   loraAlpha: 8, seed: 0,
 * });
 * console.log(plan.map((m) => m.name)); // h.0.attn.c_attn.q, h.0.attn.c_attn.v, h.1...
 * ```
 */
export function planAdapters(model: Pick<ModelShape, "sites">, attach: AttachConfig): ModulePlan[] {
  for (const key of Object.keys(attach)) {
    if (!CONFIG_KEYS.has(key)) throw new RangeError(`Unknown adapter setting "${key}"`);
  }
  const { method, targets } = attach;
  if (method === "none") {
    if (!Array.isArray(targets) || targets.length > 0) {
      throw new RangeError(`Method "none" attaches no adapter: its targets must be empty`);
    }
    return [];
  }
  if (method !== "nola" && method !== "lora") {
    throw new RangeError(`Unknown adapter method "${method}": expected "nola", "lora" or "none"`);
  }
  if (!Array.isArray(targets) || targets.length === 0) {
    throw new RangeError(`Adapter targets must be a non-empty list of patterns`);
  }
  checkSettings("", attach);
  checkInt("r", attach.r, 1);
  checkInt("seed", attach.seed, Number.MIN_SAFE_INTEGER);
  if (!Number.isFinite(attach.loraAlpha)) {
    throw new RangeError(`Invalid adapter loraAlpha ${attach.loraAlpha}: must be finite`);
  }
  if (method === "nola" && attach.k === undefined) {
    throw new RangeError(`NOLA adapters need k (the number of A bases)`);
  }
  const sites = model.sites;
  const names = sites.map((s) => s.name);
  const chosen = new Set<string>();
  for (const pattern of targets) {
    const hits = pattern === ALL_LINEAR
      ? sites.filter((s) => s.name === s.linear).map((s) => s.name)
      : pattern === MLP_TARGETS
      ? sites.filter(isMlpLinear).map((s) => s.name)
      : names.filter((n) => globMatch(pattern, n));
    if (hits.length === 0) {
      throw new RangeError(
        `Target "${pattern}" matches no module; closest: ${closest(pattern, names).join(", ")}`,
      );
    }
    hits.forEach((n) => chosen.add(n));
  }
  const targeted = sites.filter((s) => chosen.has(s.name));
  const settings = new Map(targeted.map((s) => [s.name, {} as Partial<ModuleOverride>]));
  for (const [i, o] of (attach.overrides ?? []).entries()) {
    for (const key of Object.keys(o)) {
      if (!OVERRIDE_KEYS.has(key)) {
        throw new RangeError(`Unknown setting "${key}" in adapter override ${i}`);
      }
    }
    checkSettings(`override "${o.pattern}" `, o);
    const hits = targeted.filter((s) => globMatch(o.pattern, s.name));
    if (hits.length === 0) {
      throw new RangeError(
        `Override "${o.pattern}" matches no targeted module; closest: ${
          closest(o.pattern, targeted.map((s) => s.name)).join(", ")
        }`,
      );
    }
    for (const s of hits) {
      const into = settings.get(s.name)!;
      for (const [key, value] of Object.entries(o)) {
        if (key !== "pattern" && value !== undefined) Object.assign(into, { [key]: value });
      }
    }
  }
  checkOverlaps(targeted);
  return targeted.map((site) => {
    const s = { ...attach, ...settings.get(site.name)! };
    // A rank above min(in, out) adds nothing, and A [r, in] would then outgrow the base weight: an
    // adapter file claiming r = 1e9 made attach ask the GPU for a 192 GB buffer.
    const most = Math.min(site.inFeatures, site.outFeatures);
    if (s.r > most) {
      throw new RangeError(
        `Invalid adapter r ${s.r} for "${site.name}": at most min(in, out) = ${most}`,
      );
    }
    const nola = method === "nola";
    const k = nola ? s.k! : 0;
    return {
      ...site,
      method,
      r: s.r,
      k,
      l: nola ? s.l ?? k : 0,
      loraAlpha: s.loraAlpha,
      scale: s.loraAlpha / s.r,
      seed: s.seed,
      init: nola ? s.init ?? "official" : "kaiming-uniform",
      basisKey: nola && attach.shareBasis ? sharedBasisKey(site.name) : site.name,
    };
  });
}

/** Throws if two sites (or a site and an existing adapter) write the same columns of a linear. */
function checkOverlaps(
  sites: LinearSite[],
  existing: { linear: string; colOffset: number; outFeatures: number; name: string }[] = [],
): void {
  const all = [...existing, ...sites];
  for (let i = 0; i < all.length; i++) {
    for (let j = i + 1; j < all.length; j++) {
      const [a, b] = [all[i], all[j]];
      if (
        a.linear === b.linear && a.colOffset < b.colOffset + b.outFeatures &&
        b.colOffset < a.colOffset + a.outFeatures
      ) {
        throw new RangeError(
          `Cannot attach adapters to both "${a.name}" and "${b.name}": they write the same ` +
            `columns of "${a.linear}"`,
        );
      }
    }
  }
}

/**
 * LoRA's initial A, PEFT's `kaiming_uniform_(a=sqrt(5))`: uniform in `[-1/sqrt(in), 1/sqrt(in))`.
 * Drawn with spec v1's generator and value mapping (key `moduleKey(seed, name)`, scale
 * `fround(1/sqrt(in))`) but from counter `(floor(e / 4), 0, 0, 1)`: counter word 3 is 0 in every
 * NOLA basis, so this stream never repeats a basis.
 *
 * @param seed The run's seed.
 * @param options Module name, rank and input features.
 * @returns A [r, in], row-major.
 */
export function loraInitA(
  seed: number,
  options: { name: string; r: number; inFeatures: number },
): Float32Array {
  const { name, r, inFeatures } = options;
  const key = moduleKey(seed, name);
  const scale = Math.fround(1 / Math.sqrt(inFeatures));
  const out = new Float32Array(r * inFeatures);
  for (let block = 0; 4 * block < out.length; block++) {
    const words = philox4x32_10([block, 0, 0, 1], key);
    for (let lane = 0; lane < 4 && 4 * block + lane < out.length; lane++) {
      out[4 * block + lane] = uniformFromWord(words[lane], scale);
    }
  }
  return out;
}

/** An attached module: its plan, its low-rank adapter and, for NOLA, its coefficients. */
export interface AttachedModule extends ModulePlan {
  /**
   * The low-rank adapter attached to the model, holding A, B and their gradients.
   *
   * @internal
   */
  adapter: LowRankLinear;
  /**
   * NOLA only: the coefficients, their gradients and the kernels that combine A and B.
   *
   * @internal
   */
  nola?: NolaFactors;
}

/** A trainable tensor and its gradient, by name (`<module>.alpha`, `<module>.lora_A`, ...). */
export interface AdapterParameter {
  /** `<module>.alpha`, `<module>.beta` (NOLA) or `<module>.lora_A`, `<module>.lora_B` (LoRA). */
  name: string;
  /** The values (f32, on the GPU). */
  param: Tensor;
  /** The gradient, same shape as `param`. */
  grad: Tensor;
}

/**
 * The adapters of one model, and the order a training step calls them in:
 *
 *     zeroGrads()                        // coefficient and factor gradients
 *     prepareStep()                      // NOLA: A, B from alpha, beta (once per step)
 *     for each micro-batch: model.forward, model.loss({ backward: true }), model.backward
 *     finishBackward()                   // NOLA: d alpha, d beta from the ACCUMULATED dA, dB
 *     optimizer on parameters()
 *
 * The base model's weights stay frozen: attaching allocates no gradient for them.
 *
 * @example One NOLA step on q and v
 * ```ts
 * import { AdapterSet } from "./adapters/attach.ts";
 * import { Gpu } from "./kernels/gpu.ts";
 * import { loadModel } from "./models/registry.ts";
 * using gpu = await Gpu.acquire();
 * using model = await loadModel(gpu, "fixtures/tiny-gpt2");
 * using set = await AdapterSet.attach(model, {
 *   method: "nola", targets: ["h.*.attn.c_attn.q", "h.*.attn.c_attn.v"], r: 4, k: 64,
 *   loraAlpha: 4, seed: 0,
 * }, { maxRows: 16 });
 * set.zeroGrads();
 * set.prepareStep();
 * model.forward({ B: 1, T: 3, tokens: new Uint32Array([1, 2, 3]) });
 * model.loss({ targets: new Uint32Array([2, 3, 4]) }, { backward: true });
 * model.backward();
 * set.finishBackward();
 * ```
 */
export class AdapterSet implements Disposable {
  #attached = true;
  #head: AdapterHead | null = null;

  private constructor(
    readonly model: Model,
    /** The config as given (a copy). */
    readonly config: AttachConfig,
    /** The adapted modules, in model order. */
    readonly modules: readonly AttachedModule[],
  ) {}

  /**
   * Plans ({@link planAdapters}), allocates and attaches the adapters. NOLA factors are combined
   * once, so a forward right after attaching already sees them.
   *
   * @param model The base model (frozen unless loaded with `trainAll`).
   * @param config Targets and hyper-parameters.
   * @param options `maxRows`: the most rows (batch x sequence) one forward may cover.
   * @returns The attached set; dispose it (or {@link detach}) to remove the adapters.
   * @throws {RangeError} As {@link planAdapters}, or if an adapter would write columns another
   *   adapter already attached to the model writes.
   */
  static async attach(
    model: Model,
    config: AttachConfig,
    options: { maxRows: number },
  ): Promise<AdapterSet> {
    const plans = planAdapters(model, config);
    const existing = [...model.adapters].flatMap(([linear, list]) =>
      list.map(({ adapter, colOffset }) => ({
        linear,
        colOffset,
        outFeatures: adapter.outFeatures,
        name: adapter.name,
      }))
    );
    checkOverlaps(plans, existing);
    const kernels = plans.some((p) => p.method === "nola")
      ? await NolaKernels.load(model.gpu)
      : undefined;
    const modules: AttachedModule[] = [];
    try {
      for (const plan of plans) {
        const adapter = LowRankLinear.create(model.matmul, {
          name: plan.name,
          inFeatures: plan.inFeatures,
          outFeatures: plan.outFeatures,
          r: plan.r,
          loraAlpha: plan.loraAlpha,
          maxRows: options.maxRows,
          a: plan.method === "lora" ? loraInitA(plan.seed, plan) : undefined,
        });
        const module: AttachedModule = { ...plan, adapter };
        modules.push(module);
        if (plan.method === "nola") {
          module.nola = NolaFactors.create(kernels!, {
            adapter,
            seed: plan.seed,
            basisKey: plan.basisKey,
            k: plan.k,
            l: plan.l,
            init: plan.init as NolaInit,
          });
          module.nola.combine();
        }
      }
    } catch (e) {
      for (const m of modules) disposeModule(m);
      throw e;
    }
    for (const m of modules) model.attach(m.linear, m.adapter, { colOffset: m.colOffset });
    return new AdapterSet(model, structuredClone(config), modules);
  }

  /**
   * The trainable tensors with their gradients: `<module>.alpha` / `<module>.beta` for NOLA,
   * `<module>.lora_A` / `<module>.lora_B` for LoRA.
   */
  parameters(): AdapterParameter[] {
    return [...this.#moduleParameters(), ...this.headParameters()];
  }

  /**
   * The classifier head the set owns (a new head, or the checkpoint's trained, or one loaded from
   * an adapter file): saved with the adapters, exported under PEFT's `modules_to_save`. Null when
   * the model's head is the checkpoint's, untouched.
   */
  get head(): AdapterHead | null {
    return this.#head;
  }

  /**
   * Makes the set own a head (see {@link head}); a trainable one joins {@link parameters}.
   *
   * @param head The head, already on the model (`adapters/head.ts`).
   */
  setHead(head: AdapterHead | null): void {
    this.#head = head;
  }

  /** A trainable head's weight and bias, as `head.<name>.weight` and `head.<name>.bias`. */
  headParameters(): AdapterParameter[] {
    const head = this.#head;
    if (!head?.grads) return [];
    const { weight, bias } = headTensors(this.model);
    return [
      { name: `head.${head.name}.weight`, param: weight, grad: head.grads.weight },
      { name: `head.${head.name}.bias`, param: bias, grad: head.grads.bias },
    ];
  }

  #moduleParameters(): AdapterParameter[] {
    return this.modules.flatMap(({ name, adapter, nola }) =>
      nola
        ? [
          { name: `${name}.alpha`, param: nola.alpha, grad: nola.dalpha },
          { name: `${name}.beta`, param: nola.beta, grad: nola.dbeta },
        ]
        : [
          { name: `${name}.lora_A`, param: adapter.a, grad: adapter.da },
          { name: `${name}.lora_B`, param: adapter.b, grad: adapter.db },
        ]
    );
  }

  /** Records the start of an optimizer step: NOLA combines A and B from the coefficients. */
  prepareStep(): void {
    for (const m of this.modules) m.nola?.combine();
  }

  /** Records the end of a step's backward: NOLA's coefficient gradients from dA and dB. */
  finishBackward(): void {
    for (const m of this.modules) m.nola?.coefficientGradients();
  }

  /** Records zeroing every gradient the set accumulates (coefficients and factors). */
  zeroGrads(): void {
    for (const m of this.modules) {
      if (m.nola) m.nola.zeroGradients();
      else m.adapter.zeroGradients();
    }
    const grads = this.#head?.grads;
    if (grads) {
      this.model.gpu.clear(grads.weight.buffer);
      this.model.gpu.clear(grads.bias.buffer);
    }
  }

  /** Bytes the set keeps on the GPU (factors, coefficients, gradients, saved activations). */
  get bytes(): number {
    return this.modules.reduce((s, m) => s + m.adapter.bytes + (m.nola?.bytes ?? 0), 0);
  }

  /** Removes the set's adapters from the model (others stay); the tensors stay until disposed. */
  detach(): void {
    if (!this.#attached) return;
    this.#attached = false;
    const ours = new Set<unknown>(this.modules.map((m) => m.adapter));
    for (const [linear, list] of [...this.model.adapters]) {
      const kept = list.filter((a) => !ours.has(a.adapter));
      if (kept.length > 0) this.model.adapters.set(linear, kept);
      else this.model.adapters.delete(linear);
    }
  }

  /** Detaches and frees every tensor of the set. */
  [Symbol.dispose](): void {
    this.detach();
    for (const m of this.modules) disposeModule(m);
  }
}

function disposeModule(m: AttachedModule): void {
  m.nola?.[Symbol.dispose]();
  m.adapter[Symbol.dispose]();
}
