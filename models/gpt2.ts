/**
 * GPT-2 on WebGPU, written llm.c-style: every layer's forward in order, then the backward by hand
 * in reverse, one kernel call a line. Frozen weights get no gradient buffers unless the whole
 * model is trained; adapters hook into any linear layer by name.
 *
 * @module
 */

import { DecodeKernels } from "../kernels/decode.ts";
import type { Gpu } from "../kernels/gpu.ts";
import { Tensor } from "../kernels/tensor.ts";
import { Gpt2Activations } from "./gpt2_activations.ts";
import { configHash, type Gpt2Config, gpt2Sites } from "./gpt2_config.ts";
import { Gpt2Ops } from "./gpt2_ops.ts";
import { saveGpt2Folder } from "./gpt2_save.ts";
import { gpt2WeightNames, planGpt2Weights } from "./gpt2_weights.ts";
import { readGpt2Config } from "./gpt2_config.ts";
import type {
  BatchDecodingCache,
  DecodingCache,
  LabelledInput,
  LinearSite,
  LinearWeight,
  Model,
  ModelOptions,
  ModelSummary,
  PeftNaming,
  TokenInput,
} from "./model.ts";
import {
  checkBatchShape,
  type DecodeSlot,
  GpuModel,
  RowBatchCache,
  RowCache,
  type RowOfBatch,
} from "./_gpu_model.ts";
import {
  type PackedBase,
  streamWeights,
  type UploadOptions,
  uploadWeights,
  type WeightLoaded,
  type WeightReader,
} from "./_base_weights.ts";
import { Checkpoint, type Dtype } from "../formats/safetensors.ts";

/** The token embedding, which is also the head. */
const WTE = "wte.weight";

/** Options of {@link Gpt2.load} and {@link Gpt2.fromReader}. */
export interface Gpt2LoadOptions extends ModelOptions {
  /** Told about each weight once it is on the GPU (precision, GPU and host bytes). */
  onWeight?: (loaded: WeightLoaded) => void;
}

/** Which GPT-2 weights may be packed: the adaptable linears, and the tied embedding. */
function uploadPlan(config: Gpt2Config): Pick<UploadOptions, "linears" | "embeddings" | "layout"> {
  return {
    linears: new Set(gpt2Sites(config).map((s) => `${s.linear}.weight`)),
    embeddings: new Set([WTE]),
    layout: "conv1d",
  };
}

/**
 * GPT-2's decoding cache: each layer's `qkv` rows (`[capacity, 3C]`) for positions
 * `0 .. past-1` (from tensor row {@link RowCache.origin} for a row of a batched cache).
 */
export class Gpt2Cache extends RowCache {
  /**
   * Wraps per-layer tensors as an empty cache (use {@link Gpt2.newCache}).
   *
   * @param layers One `[capacity, 3C]` tensor a layer (`[rows * capacity, 3C]` for a batch).
   * @param of The batch and row, for a row of a batched cache.
   */
  constructor(readonly layers: Tensor[], of?: RowOfBatch) {
    super(layers, of);
  }
}

/**
 * GPT-2 with its weights on the GPU.
 *
 * @example Logits of a prompt
 * ```ts
 * import { Gpu } from "../kernels/gpu.ts";
 * import { Gpt2 } from "./gpt2.ts";
 * using gpu = await Gpu.acquire();
 * using model = await Gpt2.load(gpu, "fixtures/tiny-gpt2");
 * const acts = model.forward({ B: 1, T: 3, tokens: new Uint32Array([5, 6, 7]) });
 * console.log((await acts.logits.read()).length); // 3 * 300
 * ```
 */
export class Gpt2 extends GpuModel<Gpt2Activations> implements Model {
  /** `gpt2`. */
  readonly modelType = "gpt2";
  /** Next-token logits. */
  readonly task = "causal-lm";
  /** PEFT names GPT-2's modules `base_model.model.transformer.<module>`. */
  readonly peft: PeftNaming = { modulePrefix: "transformer.", taskType: "CAUSAL_LM" };
  /** Hash of the architecture, for adapter files. */
  readonly configHash: string;
  /** Every adaptable site, in model order. */
  readonly sites: readonly LinearSite[];
  #zeros: Tensor | null = null;
  private constructor(
    gpu: Gpu,
    readonly config: Gpt2Config,
    /** @internal The compiled kernels. */
    readonly ops: Gpt2Ops,
    params: Map<string, Tensor>,
    options: ModelOptions,
    base: PackedBase | null,
    /** @internal The batched-decoding kernels. */
    readonly decodeKernels: DecodeKernels,
  ) {
    super(gpu, ops, params, options, "conv1d", base);
    this.configHash = configHash(config);
    this.sites = gpt2Sites(config);
  }

  /**
   * Loads a Hugging Face GPT-2 folder (config.json, model.safetensors or shards), streaming:
   * see {@link fromReader}.
   *
   * @param gpu The device.
   * @param folder The model folder.
   * @param options `trainAll`, the base format, and `onWeight`, told about each weight loaded.
   * @returns The model.
   * @throws {Gpt2ConfigError} On a bad `config.json`.
   * @throws {Gpt2WeightsError} On a checkpoint that does not match it, before any weight is read.
   */
  static async load(gpu: Gpu, folder: string, options: Gpt2LoadOptions = {}): Promise<Gpt2> {
    const config = await readGpt2Config(folder);
    using ckpt = await Checkpoint.open(folder);
    return await Gpt2.fromReader(gpu, config, ckpt, options);
  }

  /**
   * Loads a GPT-2 from a checkpoint one tensor at a time: the header is checked first
   * ({@link planGpt2Weights}), then each weight is read, put on the GPU (packed as
   * `baseFormat` says; `wte.weight`, which is also the head, kept 16-bit when stored so and the
   * base is not f32) and let go of before the next is read.
   *
   * @param gpu The device.
   * @param config The architecture the checkpoint must match.
   * @param reader The checkpoint, or a reader wrapping one.
   * @param options `trainAll`, the base format, and `onWeight`, told about each weight loaded.
   * @returns The model.
   * @throws {Gpt2WeightsError} On a checkpoint that does not match the config.
   * @throws {RangeError} On a packed base with `trainAll`, or a weight that cannot be quantized.
   */
  static async fromReader(
    gpu: Gpu,
    config: Gpt2Config,
    reader: WeightReader,
    options: Gpt2LoadOptions = {},
  ): Promise<Gpt2> {
    const plan = await planGpt2Weights(config, reader);
    const [ops, decode] = await Promise.all([Gpt2Ops.load(gpu), DecodeKernels.load(gpu)]);
    const { params, packed } = await streamWeights(gpu, reader, plan, {
      ...uploadPlan(config),
      options,
      onWeight: options.onWeight,
    });
    return new Gpt2(gpu, config, ops, params, options, packed, decode);
  }

  /**
   * Uploads host weights (canonical names, GPT-2 layout) and compiles the kernels. The weights
   * are packed as {@link fromReader} packs them, the stored dtypes saying which were 16-bit.
   *
   * @param gpu The device.
   * @param weights The config and the host weights.
   * @param options `trainAll`, the base format; `storedDtypes`, the checkpoint's dtype of each
   * weight (for `as-stored`).
   * @returns The model.
   * @throws {RangeError} On a packed base with `trainAll`, or a weight that cannot be quantized.
   */
  static async fromWeights(
    gpu: Gpu,
    weights: { config: Gpt2Config; tensors: Map<string, { shape: number[]; data: Float32Array }> },
    options: ModelOptions & { storedDtypes?: ReadonlyMap<string, Dtype> } = {},
  ): Promise<Gpt2> {
    const [ops, decode] = await Promise.all([Gpt2Ops.load(gpu), DecodeKernels.load(gpu)]);
    const { params, packed } = await uploadWeights(gpu, weights.tensors, {
      ...uploadPlan(weights.config),
      options,
      storedDtypes: options.storedDtypes,
    });
    return new Gpt2(gpu, weights.config, ops, params, options, packed, decode);
  }

  /**
   * Wraps weights already on the GPU (drawn there by `models/random_base.ts`, say) and compiles
   * the kernels; the model owns the tensors from then on.
   *
   * @param gpu The device.
   * @param config The architecture.
   * @param weights Every f32 weight by canonical name, and the packed linear weights.
   * @param options `trainAll` and the base format the weights were made in.
   * @returns The model.
   * @throws {RangeError} On a packed base with `trainAll`.
   */
  static async fromGpuWeights(
    gpu: Gpu,
    config: Gpt2Config,
    weights: { params: Map<string, Tensor>; packed: PackedBase | null },
    options: ModelOptions = {},
  ): Promise<Gpt2> {
    const [ops, decode] = await Promise.all([Gpt2Ops.load(gpu), DecodeKernels.load(gpu)]);
    return new Gpt2(gpu, config, ops, weights.params, options, weights.packed, decode);
  }

  /** The weight `name` of block `layer` (e.g. `attn.c_attn.weight`). */
  param(layer: number, name: string): Tensor {
    return this.params.get(`h.${layer}.${name}`)!;
  }

  /** Vocabulary size. */
  get outputs(): number {
    return this.config.vocabSize;
  }

  /** Positions of the position embedding. */
  get maxPositions(): number {
    return this.config.nPositions;
  }

  /** `eos_token_id` of the config. */
  get eosTokenId(): number | undefined {
    return this.config.eosTokenId;
  }

  /** Sizes for a person. */
  summary(): ModelSummary {
    const c = this.config;
    return {
      modelType: this.modelType,
      layers: c.nLayer,
      width: c.nEmbd,
      heads: c.nHead,
      positions: c.nPositions,
      outputs: c.vocabSize,
      parameters: this.parameterCount,
    };
  }

  /** A linear layer's weight (`conv1d`, `[in, out]`), or undefined when there is none. */
  linearWeight(linear: string): LinearWeight | undefined {
    if (!this.sites.some((s) => s.name === linear && s.linear === linear)) return undefined;
    return this.linearWeightOf(linear);
  }

  /** Checkpoint names to weight names (see {@link gpt2WeightNames}). */
  weightNames(checkpointNames: readonly string[]): Map<string, string | null> {
    return gpt2WeightNames(checkpointNames);
  }

  /** A decoding cache of `capacity` positions. */
  newCache(capacity: number): Gpt2Cache {
    const { nLayer, nEmbd } = this.config;
    return new Gpt2Cache(
      Array.from(
        { length: nLayer },
        () => Tensor.empty(this.gpu, [capacity, 3 * nEmbd], { label: "kv cache" }),
      ),
    );
  }

  /**
   * A batched decoding cache of `rows` sequences of `capacity` positions: per layer, one
   * `[rows * capacity, 3C]` tensor of q|k|v rows.
   */
  newBatchCache(rows: number, capacity: number): RowBatchCache<Gpt2Cache> {
    const { nLayer, nEmbd } = this.config;
    checkBatchShape(rows, capacity, { gpu: this.gpu, width: 3 * nEmbd });
    const layers = Array.from(
      { length: nLayer },
      () => Tensor.empty(this.gpu, [rows * capacity, 3 * nEmbd], { label: "batched kv cache" }),
    );
    return new RowBatchCache(layers, {
      rows,
      capacity,
      kernels: this.decodeKernels,
      view: (of) => new Gpt2Cache(layers, of),
    });
  }

  /**
   * Records one decoding step of many sequences: token b is the next of cache row `rows[b]`, at
   * that row's own position (see `Model.decode`). Logits row b is its next-token logits.
   */
  decode(
    tokens: ArrayLike<number>,
    cache: BatchDecodingCache,
    options: { rows?: readonly number[] } = {},
  ): Gpt2Activations {
    const { acts, batch, rows, slots } = this.startDecode(tokens, cache, Gpt2Cache, {
      rows: options.rows,
      positions: this.config.nPositions,
    });
    this.#decodeStep(acts, batch.tensors, slots);
    this.endDecode(batch, rows);
    return acts;
  }

  /** Writes the weights as a Hugging Face GPT-2 folder (f32); refuses a packed base. */
  async save(outFolder: string, options: { tokenizerFrom?: string } = {}): Promise<void> {
    this.refusePackedSave();
    await saveGpt2Folder(this, outFolder, options);
  }

  /** A new activation arena for (B, T). */
  protected newArena(shape: { B: number; T: number }): Gpt2Activations {
    return new Gpt2Activations(this.gpu, this.config, shape);
  }

  /**
   * Records the forward up to the logits (`acts.logits`, `[B*T, acts.logitsStride]`, V valid
   * columns a row). With a cache, the batch is the next `T` positions of one sequence (`B = 1`)
   * and its keys and values join the cache; a single new position goes through the batched
   * decoding step, so that one sequence and many decode alike.
   */
  forward(batch: TokenInput | LabelledInput, cache?: DecodingCache): Gpt2Activations {
    const { acts, B, T, tokens, past, cache: kvCache } = this.startForward(
      batch,
      cache,
      Gpt2Cache,
      this.config.nPositions,
    );
    if (kvCache && T === 1) {
      this.#decodeStep(acts, kvCache.layers, [{ first: kvCache.origin, past }]);
      this.endForward(acts, tokens, kvCache);
      return acts;
    }
    const { nEmbd: C, nHead: NH } = this.config;
    const { ops } = this;
    const origin = kvCache?.origin ?? 0;
    this.embed(WTE, {
      out: acts.encoded,
      tokens: acts.tokens,
      wpe: this.params.get("wpe.weight")!,
      posOffset: past,
    });
    this.#blocks(acts, B * T, (l, a) => {
      const qkv = kvCache ? kvCache.layers[l] : a.qkv;
      const at = origin + past;
      this.linear(`h.${l}.attn.c_attn`, {
        x: a.ln1,
        y: qkv,
        rows: B * T,
        inF: C,
        outF: 3 * C,
        rowOffset: at,
      });
      // q | k | v are column blocks of the [rows, 3C] projection; the cache holds all three.
      const tMax = kvCache ? kvCache.capacity : T;
      ops.attention.forward({
        out: a.atty,
        lse: a.lse,
        q: { tensor: qkv, offset: at * 3 * C, ld: 3 * C },
        k: { tensor: qkv, offset: origin * 3 * C + C, ld: 3 * C },
        v: { tensor: qkv, offset: origin * 3 * C + 2 * C, ld: 3 * C },
        B,
        T,
        NH,
        past,
        tMax,
        qRows: tMax,
      });
    });
    this.endForward(acts, tokens, kvCache);
    return acts;
  }

  // One new token a row, row b at its own slot and position: the embedding adds each row's
  // position, the new q|k|v rows are written into the slots, and attention reads each slot only.
  #decodeStep(acts: Gpt2Activations, layers: readonly Tensor[], slots: DecodeSlot[]): void {
    const { nEmbd: C, nHead: NH } = this.config;
    const B = slots.length;
    const decode = this.decodeKernels;
    this.embed(WTE, { out: acts.encoded, tokens: acts.tokens, zeros: this.#zeroRow() });
    decode.copyRows({
      dst: { tensor: acts.encoded },
      src: { tensor: this.params.get("wpe.weight")! },
      pairs: slots.map((s, b) => ({ from: s.past, to: b })),
      width: C,
      accumulate: true,
    });
    const rows = slots.map((s) => ({ first: s.first, length: s.past + 1 }));
    const writes = slots.map((s, b) => ({ from: b, to: s.first + s.past }));
    this.#blocks(acts, B, (l, a) => {
      this.linear(`h.${l}.attn.c_attn`, { x: a.ln1, y: a.qkv, rows: B, inF: C, outF: 3 * C });
      decode.copyRows({
        dst: { tensor: layers[l] },
        src: { tensor: a.qkv },
        pairs: writes,
        width: 3 * C,
      });
      decode.attention({
        out: a.atty,
        lse: a.lse,
        q: { tensor: a.qkv, ld: 3 * C },
        k: { tensor: layers[l], offset: C, ld: 3 * C },
        v: { tensor: layers[l], offset: 2 * C, ld: 3 * C },
        rows,
        NH,
      });
    });
  }

  // The blocks from the embedding to the logits; `attend` records ln_1's output into the
  // layer's attention output `atty`.
  #blocks(
    acts: Gpt2Activations,
    rows: number,
    attend: (l: number, a: Gpt2Activations["layers"][number]) => void,
  ): void {
    const { nLayer: L, nEmbd: C, nInner, layerNormEpsilon: eps } = this.config;
    const { ops } = this;
    for (let l = 0; l < L; l++) {
      const a = acts.layers[l];
      const residual = l === 0 ? acts.encoded : acts.layers[l - 1].residual3;
      const p = (name: string) => this.param(l, name);
      ops.layernorm.forward({
        out: a.ln1,
        mean: a.ln1Mean,
        rstd: a.ln1Rstd,
        inp: residual,
        weight: p("ln_1.weight"),
        bias: p("ln_1.bias"),
        eps,
      });
      attend(l, a);
      this.linear(`h.${l}.attn.c_proj`, { x: a.atty, y: a.attproj, rows, inF: C, outF: C });
      ops.residual.forward({ out: a.residual2, a: residual, b: a.attproj });
      ops.layernorm.forward({
        out: a.ln2,
        mean: a.ln2Mean,
        rstd: a.ln2Rstd,
        inp: a.residual2,
        weight: p("ln_2.weight"),
        bias: p("ln_2.bias"),
        eps,
      });
      this.linear(`h.${l}.mlp.c_fc`, { x: a.ln2, y: a.fch, rows, inF: C, outF: nInner });
      ops.gelu.forward({ out: a.fchGelu, inp: a.fch });
      this.linear(`h.${l}.mlp.c_proj`, { x: a.fchGelu, y: a.fcproj, rows, inF: nInner, outF: C });
      ops.residual.forward({ out: a.residual3, a: a.residual2, b: a.fcproj });
    }
    ops.layernorm.forward({
      out: acts.lnf,
      mean: acts.lnfMean,
      rstd: acts.lnfRstd,
      inp: acts.layers[L - 1].residual3,
      weight: this.params.get("ln_f.weight")!,
      bias: this.params.get("ln_f.bias")!,
      eps,
    });
    // The LM head is tied to the token embedding: logits = lnf · wteᵀ.
    this.head(WTE, { x: acts.lnf, logits: acts.logits, rows, ldLogits: acts.logitsStride });
  }

  // A zero position row: the f32 embedding lookup of a decoding step reads it instead of wpe,
  // whose rows are added per row afterwards.
  #zeroRow(): Tensor {
    if (!this.#zeros) {
      this.#zeros = Tensor.empty(this.gpu, [1, this.config.nEmbd], {
        persistent: true,
        label: "decode zero position",
      });
      this.gpu.clear(this.#zeros.buffer);
    }
    return this.#zeros;
  }

  /** Frees the weights, arenas and scratch tensors. */
  override [Symbol.dispose](): void {
    super[Symbol.dispose]();
    this.#zeros?.[Symbol.dispose]();
  }

  /**
   * Records the backward of the last forward, whose logits {@link loss} turned into their
   * gradient: weight gradients accumulate into {@link grads} (when training all weights) and
   * adapters accumulate their own.
   */
  backward(): void {
    const { acts, tokens } = this.requireLast("backward");
    this.last = null;
    const { B, T } = acts.shape;
    const { nLayer: L, nEmbd: C, nHead: NH, nInner, vocabSize: V } = this.config;
    const { ops, gpu } = this;
    const rows = B * T;
    const g = acts.grads();
    const dlogits = acts.logits; // holds d loss / d logits since loss({ backward: true })
    const lda = acts.logitsStride;
    this.headBackward(WTE, { dlogits, dx: g.dln, rows, ldLogits: lda });
    const dwte = this.grads?.get(WTE);
    if (dwte) {
      ops.matmul.raw(
        { out: dwte.buffer, a: dlogits.buffer, b: acts.lnf.buffer },
        { m: V, n: C, k: rows, transA: true, lda, accumulate: true },
      );
    }
    gpu.clear(g.dresidual.buffer);
    this.#layernormBackward("ln_f", {
      dinp: g.dresidual,
      dout: g.dln,
      inp: acts.layers[L - 1].residual3,
      mean: acts.lnfMean,
      rstd: acts.lnfRstd,
    });
    for (let l = L - 1; l >= 0; l--) {
      const a = acts.layers[l];
      const residual = l === 0 ? acts.encoded : acts.layers[l - 1].residual3;
      // residual3 = residual2 + fcproj: dresidual is the gradient of both.
      this.linearBackward(`h.${l}.mlp.c_proj`, {
        x: a.fchGelu,
        dy: g.dresidual,
        dx: g.dfchGelu,
        rows,
        inF: nInner,
        outF: C,
      });
      gpu.clear(g.dfch.buffer);
      ops.gelu.backward({ dinp: g.dfch, inp: a.fch, dout: g.dfchGelu });
      this.linearBackward(`h.${l}.mlp.c_fc`, {
        x: a.ln2,
        dy: g.dfch,
        dx: g.dln,
        rows,
        inF: C,
        outF: nInner,
      });
      this.#layernormBackward(`h.${l}.ln_2`, {
        dinp: g.dresidual,
        dout: g.dln,
        inp: a.residual2,
        mean: a.ln2Mean,
        rstd: a.ln2Rstd,
      });
      // residual2 = residual + attproj: dresidual now is the gradient of both.
      this.linearBackward(`h.${l}.attn.c_proj`, {
        x: a.atty,
        dy: g.dresidual,
        dx: g.datty,
        rows,
        inF: C,
        outF: C,
      });
      gpu.clear(g.dqkv.buffer);
      ops.attention.backward({
        dq: { tensor: g.dqkv, ld: 3 * C },
        dk: { tensor: g.dqkv, offset: C, ld: 3 * C },
        dv: { tensor: g.dqkv, offset: 2 * C, ld: 3 * C },
        dout: g.datty,
        q: { tensor: a.qkv, ld: 3 * C },
        k: { tensor: a.qkv, offset: C, ld: 3 * C },
        v: { tensor: a.qkv, offset: 2 * C, ld: 3 * C },
        out: a.atty,
        lse: a.lse,
        B,
        T,
        NH,
      });
      this.linearBackward(`h.${l}.attn.c_attn`, {
        x: a.ln1,
        dy: g.dqkv,
        dx: g.dln,
        rows,
        inF: C,
        outF: 3 * C,
      });
      this.#layernormBackward(`h.${l}.ln_1`, {
        dinp: g.dresidual,
        dout: g.dln,
        inp: residual,
        mean: a.ln1Mean,
        rstd: a.ln1Rstd,
      });
    }
    if (this.grads) {
      ops.encoder.backward({
        dwte: this.grads.get("wte.weight")!,
        dwpe: this.grads.get("wpe.weight")!,
        dout: g.dresidual,
        tokens,
      });
    }
  }

  // dinp += layernorm'(dout); frozen layernorm weights take their gradients in scratch buffers.
  #layernormBackward(
    name: string,
    o: { dinp: Tensor; dout: Tensor; inp: Tensor; mean: Tensor; rstd: Tensor },
  ): void {
    const weight = this.params.get(`${name}.weight`)!;
    this.ops.layernorm.backward({
      dinp: o.dinp,
      dweight: this.gradOrScratch(`${name}.weight`),
      dbias: this.gradOrScratch(`${name}.bias`),
      dout: o.dout,
      inp: o.inp,
      weight,
      mean: o.mean,
      rstd: o.rstd,
    });
  }
}
