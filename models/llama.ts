/**
 * The Llama family (Llama, Mistral, Qwen2) on WebGPU, written llm.c-style: every layer's forward
 * in order, then the backward by hand in reverse, one kernel call a line. Token embedding,
 * per layer RMSNorm, q/k/v projections (biases for Qwen2 or `attention_bias`), RoPE on q and k,
 * grouped-query causal attention, o_proj, residual, RMSNorm, gate/up, SwiGLU, down, residual;
 * a final RMSNorm and the head (`lm_head`, or the tied `embed_tokens`). Weights are `nn.Linear`
 * `[out, in]`; frozen weights get no gradient buffers unless the whole model is trained, and
 * adapters hook into any of the seven linears of a layer.
 *
 * @module
 */

import { DecodeKernels } from "../kernels/decode.ts";
import type { Gpu } from "../kernels/gpu.ts";
import type { RopeTable } from "../kernels/rope.ts";
import { Tensor } from "../kernels/tensor.ts";
import { LlamaActivations, LlamaCache } from "./llama_activations.ts";
import {
  LLAMA_PEFT,
  type LlamaConfig,
  llamaConfigHash,
  type LlamaModelType,
  llamaSites,
  readLlamaConfig,
} from "./llama_config.ts";
import { readConfigJson } from "./config_file.ts";
import { LlamaOps } from "./llama_ops.ts";
import { saveLlamaFolder } from "./llama_save.ts";
import { llamaWeightNames, type LlamaWeights, planLlamaWeights } from "./llama_weights.ts";
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
import { checkBatchShape, type DecodeSlot, GpuModel, RowBatchCache } from "./_gpu_model.ts";
import {
  type PackedBase,
  streamWeights,
  type UploadOptions,
  uploadWeights,
  type WeightLoaded,
  type WeightReader,
} from "./_base_weights.ts";
import { Checkpoint, type Dtype } from "../formats/safetensors.ts";

/** Options of {@link Llama.load} and {@link Llama.fromReader}. */
export interface LlamaLoadOptions extends ModelOptions {
  /** Told about each weight once it is on the GPU (precision, GPU and host bytes). */
  onWeight?: (loaded: WeightLoaded) => void;
  /** The folder's `config.json` text, written back by `save`. */
  configJson?: string;
}

const EMBED = "embed_tokens.weight";
const LM_HEAD = "lm_head.weight";

/** Which weights may be packed: the adaptable linears, the embedding and an untied head. */
function uploadPlan(
  config: LlamaConfig,
): Pick<UploadOptions, "linears" | "embeddings" | "layout"> {
  return {
    linears: new Set(llamaSites(config).map((s) => `${s.linear}.weight`)),
    embeddings: new Set(config.tieWordEmbeddings ? [EMBED] : [EMBED, LM_HEAD]),
    layout: "linear",
  };
}

export { LlamaCache };

/**
 * A Llama-family model with its weights on the GPU.
 *
 * @example Logits of a prompt
 * ```ts
 * import { Gpu } from "../kernels/gpu.ts";
 * import { loadModel } from "./registry.ts";
 * using gpu = await Gpu.acquire();
 * using model = await loadModel(gpu, "fixtures/tiny-llama");
 * const acts = model.forward({ B: 1, T: 3, tokens: new Uint32Array([5, 6, 7]) });
 * console.log((await acts.logits.read()).length); // 3 * 300
 * ```
 */
export class Llama extends GpuModel<LlamaActivations> implements Model {
  /** Next-token logits. */
  readonly task = "causal-lm";
  /** PEFT names the modules `base_model.model.model.<module>`. */
  readonly peft: PeftNaming = LLAMA_PEFT;
  /** Hash of the architecture, for adapter files. */
  readonly configHash: string;
  /** Every adaptable site (the seven linears of each layer), in model order. */
  readonly sites: readonly LinearSite[];
  #linears: Set<string>;

  private constructor(
    gpu: Gpu,
    readonly config: LlamaConfig,
    /** @internal The compiled kernels. */
    readonly ops: LlamaOps,
    /** @internal The RoPE inverse frequencies. */
    readonly rope: RopeTable,
    params: Map<string, Tensor>,
    options: ModelOptions & { configJson?: string },
    base: PackedBase | null,
    /** @internal The batched-decoding kernels. */
    readonly decodeKernels: DecodeKernels,
  ) {
    super(gpu, ops, params, options, "linear", base);
    this.configHash = llamaConfigHash(config);
    this.sites = llamaSites(config);
    this.#linears = new Set(this.sites.map((s) => s.linear));
    this.configJson = options.configJson;
  }

  /** The `config.json` text the model was loaded with, written back by {@link save}. */
  readonly configJson?: string;

  /**
   * Loads a Hugging Face Llama, Mistral or Qwen2 folder (config.json, model.safetensors or
   * shards), streaming: see {@link fromReader}.
   *
   * @param gpu The device.
   * @param folder The model folder.
   * @param options `trainAll`, the base format, `onWeight` (told about each weight loaded), and
   * `modelType`, the type the caller expects.
   * @returns The model.
   * @throws {LlamaConfigError} On a bad `config.json`.
   * @throws {LlamaWeightsError} On a checkpoint that does not match it, before any weight is read.
   */
  static async load(
    gpu: Gpu,
    folder: string,
    options: LlamaLoadOptions & { modelType?: LlamaModelType } = {},
  ): Promise<Llama> {
    const [config, { json }] = await Promise.all([
      readLlamaConfig(folder, { modelType: options.modelType }),
      readConfigJson(folder),
    ]);
    using ckpt = await Checkpoint.open(folder);
    const configJson = JSON.stringify(json, null, 2) + "\n";
    return await Llama.fromReader(gpu, config, ckpt, { ...options, configJson });
  }

  /**
   * Loads a Llama-family model from a checkpoint one tensor at a time: the header is checked
   * first ({@link planLlamaWeights}), then each weight is read, put on the GPU (packed as
   * `baseFormat` says; `embed_tokens.weight` and an untied `lm_head.weight` kept 16-bit when
   * stored so and the base is not f32) and let go of before the next is read.
   *
   * @param gpu The device.
   * @param config The architecture the checkpoint must match.
   * @param reader The checkpoint, or a reader wrapping one.
   * @param options `trainAll`, the base format, `onWeight` (told about each weight loaded), and
   * `configJson`, the folder's `config.json` text for {@link save}.
   * @returns The model.
   * @throws {LlamaWeightsError} On a checkpoint that does not match the config.
   * @throws {RangeError} On a packed base with `trainAll`, or a weight that cannot be quantized.
   */
  static async fromReader(
    gpu: Gpu,
    config: LlamaConfig,
    reader: WeightReader,
    options: LlamaLoadOptions = {},
  ): Promise<Llama> {
    const plan = await planLlamaWeights(config, reader);
    const [ops, decode] = await Promise.all([LlamaOps.load(gpu), DecodeKernels.load(gpu)]);
    const rope = ops.rope.table(config.headDim, {
      theta: config.ropeTheta,
      scaling: config.ropeScaling,
    });
    try {
      const { params, packed } = await streamWeights(gpu, reader, plan, {
        ...uploadPlan(config),
        options,
        onWeight: options.onWeight,
      });
      return new Llama(gpu, config, ops, rope, params, options, packed, decode);
    } catch (error) {
      rope[Symbol.dispose]();
      throw error;
    }
  }

  /**
   * Uploads host weights (canonical names, `[out, in]` linears) and compiles the kernels. The
   * weights are packed as {@link fromReader} packs them, the stored dtypes saying which were
   * 16-bit.
   *
   * @param gpu The device.
   * @param weights From `loadLlamaWeights` or `initLlamaWeights`.
   * @param options `trainAll`, the base format; `configJson`, the folder's `config.json` text
   * for {@link save}; `storedDtypes`, the checkpoint's dtype of each weight (for `as-stored`).
   * @returns The model.
   * @throws {RangeError} On a packed base with `trainAll`, or a weight that cannot be quantized.
   */
  static async fromWeights(
    gpu: Gpu,
    weights: LlamaWeights,
    options: ModelOptions & {
      configJson?: string;
      storedDtypes?: ReadonlyMap<string, Dtype>;
    } = {},
  ): Promise<Llama> {
    const [ops, decode] = await Promise.all([LlamaOps.load(gpu), DecodeKernels.load(gpu)]);
    const { config } = weights;
    const rope = ops.rope.table(config.headDim, {
      theta: config.ropeTheta,
      scaling: config.ropeScaling,
    });
    try {
      const { params, packed } = await uploadWeights(gpu, weights.tensors, {
        ...uploadPlan(config),
        options,
        storedDtypes: options.storedDtypes,
      });
      return new Llama(gpu, config, ops, rope, params, options, packed, decode);
    } catch (error) {
      rope[Symbol.dispose]();
      throw error;
    }
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
    config: LlamaConfig,
    weights: { params: Map<string, Tensor>; packed: PackedBase | null },
    options: ModelOptions = {},
  ): Promise<Llama> {
    const [ops, decode] = await Promise.all([LlamaOps.load(gpu), DecodeKernels.load(gpu)]);
    const rope = ops.rope.table(config.headDim, {
      theta: config.ropeTheta,
      scaling: config.ropeScaling,
    });
    try {
      return new Llama(gpu, config, ops, rope, weights.params, options, weights.packed, decode);
    } catch (error) {
      rope[Symbol.dispose]();
      throw error;
    }
  }

  /** `llama`, `mistral` or `qwen2`. */
  get modelType(): string {
    return this.config.modelType;
  }

  /** Vocabulary size. */
  get outputs(): number {
    return this.config.vocabSize;
  }

  /** `max_position_embeddings`. */
  get maxPositions(): number {
    return this.config.maxPositionEmbeddings;
  }

  /** The first `eos_token_id` of the config. */
  get eosTokenId(): number | undefined {
    return this.config.eosTokenIds?.[0];
  }

  /** Sizes for a person. */
  summary(): ModelSummary {
    const c = this.config;
    return {
      modelType: c.modelType,
      layers: c.numHiddenLayers,
      width: c.hiddenSize,
      heads: c.numAttentionHeads,
      positions: c.maxPositionEmbeddings,
      outputs: c.vocabSize,
      parameters: this.parameterCount,
    };
  }

  /** A linear layer's weight (`linear`, `[out, in]`), or undefined when there is none. */
  linearWeight(linear: string): LinearWeight | undefined {
    if (!this.#linears.has(linear)) return undefined;
    return this.linearWeightOf(linear);
  }

  /** Checkpoint names to weight names (see `llamaWeightNames`). */
  weightNames(checkpointNames: readonly string[]): Map<string, string | null> {
    return llamaWeightNames(checkpointNames, this.config);
  }

  /** A decoding cache of `capacity` positions: per layer, keys and values `[capacity, KVH*hd]`. */
  newCache(capacity: number): LlamaCache {
    const { numHiddenLayers: L, numKeyValueHeads: KVH, headDim: hd } = this.config;
    const make = () =>
      Array.from(
        { length: L },
        () => Tensor.empty(this.gpu, [capacity, KVH * hd], { label: "kv cache" }),
      );
    return new LlamaCache(make(), make());
  }

  /**
   * A batched decoding cache of `rows` sequences of `capacity` positions: per layer, keys and
   * values `[rows * capacity, KVH*hd]`.
   */
  newBatchCache(rows: number, capacity: number): RowBatchCache<LlamaCache> {
    const { numHiddenLayers: L, numKeyValueHeads: KVH, headDim: hd } = this.config;
    checkBatchShape(rows, capacity, { gpu: this.gpu, width: KVH * hd });
    const make = () =>
      Array.from(
        { length: L },
        () => Tensor.empty(this.gpu, [rows * capacity, KVH * hd], { label: "batched kv cache" }),
      );
    const [k, v] = [make(), make()];
    return new RowBatchCache([...k, ...v], {
      rows,
      capacity,
      kernels: this.decodeKernels,
      view: (of) => new LlamaCache(k, v, of),
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
  ): LlamaActivations {
    const { acts, batch, rows, slots } = this.startDecode(tokens, cache, LlamaCache, {
      rows: options.rows,
      positions: this.maxPositions,
    });
    const view = batch.row(0);
    this.#decodeStep(acts, view, slots);
    this.endDecode(batch, rows);
    return acts;
  }

  /** Writes the weights as a Hugging Face folder (f32, `model.` prefix); refuses a packed base. */
  async save(outFolder: string, options: { tokenizerFrom?: string } = {}): Promise<void> {
    this.refusePackedSave();
    await saveLlamaFolder(this, outFolder, options);
  }

  /** A new activation arena for (B, T). */
  protected newArena(shape: { B: number; T: number }): LlamaActivations {
    return new LlamaActivations(this.gpu, this.config, shape);
  }

  /**
   * Records the forward up to the logits (`[B*T, logitsStride]`, V valid columns a row). With a
   * cache, the batch is the next `T` positions of one sequence (`B = 1`); its rotated keys and
   * values join the cache. A single new position goes through the batched decoding step, so
   * that one sequence and many decode alike.
   */
  forward(batch: TokenInput | LabelledInput, cache?: DecodingCache): LlamaActivations {
    const { acts, B, T, tokens, past, cache: kvCache } = this.startForward(
      batch,
      cache,
      LlamaCache,
      this.maxPositions,
    );
    if (kvCache && T === 1) {
      this.#decodeStep(acts, kvCache, [{ first: kvCache.origin, past }]);
      this.endForward(acts, tokens, kvCache);
      return acts;
    }
    const c = this.config;
    const [H, KVH, D] = [c.numAttentionHeads, c.numKeyValueHeads, c.hiddenSize];
    const [Q, KV] = [H * c.headDim, KVH * c.headDim];
    const { ops } = this;
    const rows = B * T;
    const origin = kvCache?.origin ?? 0;
    this.#blocks(acts, rows, (l, a) => {
      const at = `layers.${l}.`;
      const k = kvCache ? kvCache.k[l] : a.k;
      const v = kvCache ? kvCache.v[l] : a.v;
      this.linear(`${at}self_attn.q_proj`, { x: a.ln1, y: a.q, rows, inF: D, outF: Q });
      const kv = { x: a.ln1, rows, inF: D, outF: KV, rowOffset: origin + past };
      this.linear(`${at}self_attn.k_proj`, { ...kv, y: k });
      this.linear(`${at}self_attn.v_proj`, { ...kv, y: v });
      ops.rope.forward({ x: a.q, table: this.rope, heads: H, B, T, past });
      ops.rope.forward({
        x: { tensor: k, offset: (origin + past) * KV, ld: KV },
        table: this.rope,
        heads: KVH,
        B,
        T,
        past,
      });
      const tMax = kvCache ? kvCache.capacity : T;
      ops.attention.forward({
        out: a.atty,
        lse: a.lse,
        q: a.q,
        k: { tensor: k, offset: origin * KV, ld: KV },
        v: { tensor: v, offset: origin * KV, ld: KV },
        B,
        T,
        NH: H,
        KVH,
        past,
        tMax,
      });
    });
    this.endForward(acts, tokens, kvCache);
    return acts;
  }

  // One new token a row, row b at its own slot and position: q and k turn by each row's
  // position, the new keys and values are written into the slots, attention reads each slot.
  #decodeStep(acts: LlamaActivations, cache: LlamaCache, slots: DecodeSlot[]): void {
    const c = this.config;
    const [H, KVH, D] = [c.numAttentionHeads, c.numKeyValueHeads, c.hiddenSize];
    const [Q, KV] = [H * c.headDim, KVH * c.headDim];
    const B = slots.length;
    const decode = this.decodeKernels;
    const positions = slots.map((s) => s.past);
    const writes = slots.map((s, b) => ({ from: b, to: s.first + s.past }));
    const rows = slots.map((s) => ({ first: s.first, length: s.past + 1 }));
    this.#blocks(acts, B, (l, a) => {
      const at = `layers.${l}.`;
      this.linear(`${at}self_attn.q_proj`, { x: a.ln1, y: a.q, rows: B, inF: D, outF: Q });
      this.linear(`${at}self_attn.k_proj`, { x: a.ln1, y: a.k, rows: B, inF: D, outF: KV });
      this.linear(`${at}self_attn.v_proj`, { x: a.ln1, y: a.v, rows: B, inF: D, outF: KV });
      decode.rope({ x: { tensor: a.q }, table: this.rope, heads: H, positions });
      decode.rope({ x: { tensor: a.k }, table: this.rope, heads: KVH, positions });
      decode.copyRows({
        dst: { tensor: cache.k[l] },
        src: { tensor: a.k },
        pairs: writes,
        width: KV,
      });
      decode.copyRows({
        dst: { tensor: cache.v[l] },
        src: { tensor: a.v },
        pairs: writes,
        width: KV,
      });
      decode.attention({
        out: a.atty,
        lse: a.lse,
        q: { tensor: a.q },
        k: { tensor: cache.k[l] },
        v: { tensor: cache.v[l] },
        rows,
        NH: H,
        KVH,
      });
    });
  }

  // The layers from the embedding to the logits; `attend` records input_layernorm's output into
  // the layer's attention output `atty`.
  #blocks(
    acts: LlamaActivations,
    rows: number,
    attend: (l: number, a: LlamaActivations["layers"][number]) => void,
  ): void {
    const c = this.config;
    const { numHiddenLayers: L, hiddenSize: D, intermediateSize: I } = c;
    const [H, eps] = [c.numAttentionHeads, c.rmsNormEps];
    const Q = H * c.headDim;
    const { ops } = this;
    // Rotary models add no position embedding: the f32 lookup reads a zero table.
    this.embed(EMBED, { out: acts.encoded, tokens: acts.tokens, zeros: acts.zeroPos });
    for (let l = 0; l < L; l++) {
      const a = acts.layers[l];
      const residual = l === 0 ? acts.encoded : acts.layers[l - 1].residual3;
      const p = (name: string) => this.params.get(`layers.${l}.${name}`)!;
      const at = `layers.${l}.`;
      ops.rmsnorm.forward({
        out: a.ln1,
        rstd: a.rstd1,
        inp: residual,
        weight: p("input_layernorm.weight"),
        eps,
      });
      attend(l, a);
      this.linear(`${at}self_attn.o_proj`, { x: a.atty, y: a.attproj, rows, inF: Q, outF: D });
      ops.residual.forward({ out: a.residual2, a: residual, b: a.attproj });
      ops.rmsnorm.forward({
        out: a.ln2,
        rstd: a.rstd2,
        inp: a.residual2,
        weight: p("post_attention_layernorm.weight"),
        eps,
      });
      this.linear(`${at}mlp.gate_proj`, { x: a.ln2, y: a.gate, rows, inF: D, outF: I });
      this.linear(`${at}mlp.up_proj`, { x: a.ln2, y: a.up, rows, inF: D, outF: I });
      ops.swiglu.forward({ h: a.h, gate: a.gate, up: a.up, rows, cols: I });
      this.linear(`${at}mlp.down_proj`, { x: a.h, y: a.down, rows, inF: I, outF: D });
      ops.residual.forward({ out: a.residual3, a: a.residual2, b: a.down });
    }
    ops.rmsnorm.forward({
      out: acts.lnf,
      rstd: acts.rstdf,
      inp: acts.layers[L - 1].residual3,
      weight: this.params.get("norm.weight")!,
      eps,
    });
    // logits = lnf · headᵀ, the head [V, D] being lm_head or the tied embedding.
    this.head(this.#head(), {
      x: acts.lnf,
      logits: acts.logits,
      rows,
      ldLogits: acts.logitsStride,
    });
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
    const c = this.config;
    const { numHiddenLayers: L, hiddenSize: D, intermediateSize: I, vocabSize: V } = c;
    const [H, KVH] = [c.numAttentionHeads, c.numKeyValueHeads];
    const [Q, KV] = [H * c.headDim, KVH * c.headDim];
    const { ops, gpu } = this;
    const rows = B * T;
    const g = acts.grads();
    const dlogits = acts.logits; // d loss / d logits since loss({ backward: true })
    const lda = acts.logitsStride;
    this.headBackward(this.#head(), { dlogits, dx: g.dln, rows, ldLogits: lda });
    const dhead = this.grads?.get(this.#head());
    if (dhead) {
      ops.matmul.raw(
        { out: dhead.buffer, a: dlogits.buffer, b: acts.lnf.buffer },
        { m: V, n: D, k: rows, transA: true, lda, accumulate: true },
      );
    }
    gpu.clear(g.dresidual.buffer);
    this.#rmsnormBackward("norm", {
      dout: g.dln,
      inp: acts.layers[L - 1].residual3,
      rstd: acts.rstdf,
      dinp: g.dresidual,
    });
    for (let l = L - 1; l >= 0; l--) {
      const a = acts.layers[l];
      const residual = l === 0 ? acts.encoded : acts.layers[l - 1].residual3;
      const at = `layers.${l}.`;
      // residual3 = residual2 + down: dresidual is the gradient of both.
      this.linearBackward(`${at}mlp.down_proj`, {
        x: a.h,
        dy: g.dresidual,
        dx: g.dh,
        rows,
        inF: I,
        outF: D,
      });
      ops.swiglu.backward({
        dgate: g.dgate,
        dup: g.dup,
        dh: g.dh,
        gate: a.gate,
        up: a.up,
        rows,
        cols: I,
      });
      const mlp = { x: a.ln2, dx: g.dln, rows, inF: D, outF: I };
      this.linearBackward(`${at}mlp.gate_proj`, { ...mlp, dy: g.dgate });
      this.linearBackward(`${at}mlp.up_proj`, { ...mlp, dy: g.dup, accumulate: true });
      this.#rmsnormBackward(`${at}post_attention_layernorm`, {
        dout: g.dln,
        inp: a.residual2,
        rstd: a.rstd2,
        dinp: g.dresidual,
      });
      // residual2 = residual + attproj: dresidual now is the gradient of both.
      this.linearBackward(`${at}self_attn.o_proj`, {
        x: a.atty,
        dy: g.dresidual,
        dx: g.datty,
        rows,
        inF: Q,
        outF: D,
      });
      for (const t of [g.dq, g.dk, g.dv]) gpu.clear(t.buffer);
      ops.attention.backward({
        dq: g.dq,
        dk: g.dk,
        dv: g.dv,
        dout: g.datty,
        q: a.q,
        k: a.k,
        v: a.v,
        out: a.atty,
        lse: a.lse,
        B,
        T,
        NH: H,
        KVH,
      });
      ops.rope.backward({ x: g.dq, table: this.rope, heads: H, B, T });
      ops.rope.backward({ x: g.dk, table: this.rope, heads: KVH, B, T });
      const attn = { x: a.ln1, dx: g.dln, rows, inF: D };
      this.linearBackward(`${at}self_attn.q_proj`, { ...attn, dy: g.dq, outF: Q });
      this.linearBackward(`${at}self_attn.k_proj`, {
        ...attn,
        dy: g.dk,
        outF: KV,
        accumulate: true,
      });
      this.linearBackward(`${at}self_attn.v_proj`, {
        ...attn,
        dy: g.dv,
        outF: KV,
        accumulate: true,
      });
      this.#rmsnormBackward(`${at}input_layernorm`, {
        dout: g.dln,
        inp: residual,
        rstd: a.rstd1,
        dinp: g.dresidual,
      });
    }
    const dembed = this.grads?.get(EMBED);
    if (dembed) {
      ops.encoder.backward({ dwte: dembed, dwpe: g.dzeroPos, dout: g.dresidual, tokens });
    }
  }

  /** Frees the weights, their gradients, the activation arenas, scratch tensors, rope table. */
  override [Symbol.dispose](): void {
    super[Symbol.dispose]();
    this.rope[Symbol.dispose]();
  }

  /** The head's weight name: `lm_head.weight`, or the tied embedding's. */
  #head(): string {
    return this.config.tieWordEmbeddings ? EMBED : LM_HEAD;
  }

  // dinp += rmsnorm'(dout); frozen norm weights take their gradients in scratch buffers.
  #rmsnormBackward(
    name: string,
    o: { dinp: Tensor; dout: Tensor; inp: Tensor; rstd: Tensor },
  ): void {
    const weight = this.params.get(`${name}.weight`)!;
    this.ops.rmsnorm.backward({
      ...o,
      weight,
      dweight: this.gradOrScratch(`${name}.weight`),
    });
  }
}
