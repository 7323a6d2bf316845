/**
 * GPT-2 on WebGPU, written llm.c-style: every layer's forward in order, then the backward by hand
 * in reverse, one kernel call a line. Frozen weights get no gradient buffers unless the whole
 * model is trained; adapters hook into any linear layer by name.
 *
 * @module
 */

import type { Gpu } from "../kernels/gpu.ts";
import type { Matmul } from "../kernels/matmul.ts";
import { Tensor } from "../kernels/tensor.ts";
import { Gpt2Activations } from "./gpt2_activations.ts";
import { configHash, type Gpt2Config, gpt2Sites } from "./gpt2_config.ts";
import { Gpt2Ops } from "./gpt2_ops.ts";
import { saveGpt2Folder } from "./gpt2_save.ts";
import { gpt2WeightNames, loadGpt2Weights } from "./gpt2_weights.ts";
import type {
  AttachedAdapter,
  DecodingCache,
  LabelledInput,
  LinearAdapter,
  LinearSite,
  LinearWeight,
  LossTargets,
  Model,
  ModelOptions,
  ModelSummary,
  PeftNaming,
  TokenInput,
} from "./model.ts";
import { attachToLinear } from "./model.ts";
import { Arenas, modelMemory } from "./_arenas.ts";

/**
 * GPT-2's decoding cache: each layer's `qkv` rows (`[capacity, 3C]`) for positions
 * `0 .. past-1`.
 */
export class Gpt2Cache implements DecodingCache {
  #past = 0;

  /**
   * Wraps per-layer tensors as an empty cache (use {@link Gpt2.newCache}).
   *
   * @param layers One `[capacity, 3C]` tensor a layer.
   */
  constructor(readonly layers: Tensor[]) {}

  /** Positions already in the cache. */
  get past(): number {
    return this.#past;
  }

  /** Positions the cache can hold. */
  get capacity(): number {
    return this.layers[0]?.shape[0] ?? 0;
  }

  /**
   * Counts `n` more positions as cached (the forward wrote them).
   *
   * @internal
   */
  advance(n: number): void {
    this.#past += n;
  }

  /** Records copying another GPT-2 cache's first `past` positions into this one. */
  copyFrom(source: DecodingCache): void {
    if (!(source instanceof Gpt2Cache) || source.layers.length !== this.layers.length) {
      throw new TypeError("Cannot copy a decoding cache of another model");
    }
    if (source.past > this.capacity) {
      throw new RangeError(`Cannot copy ${source.past} positions into a cache of ${this.capacity}`);
    }
    const rowBytes = this.layers[0].shape[1] * 4;
    source.layers.forEach((src, l) => {
      if (source.past > 0) {
        src.gpu.copy(src.buffer, this.layers[l].buffer, { size: source.past * rowBytes });
      }
    });
    this.#past = source.past;
  }

  /** Frees the layers' tensors. */
  [Symbol.dispose](): void {
    for (const t of this.layers) t[Symbol.dispose]();
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
export class Gpt2 implements Model {
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
  /** Weights by Hugging Face name (no `transformer.` prefix). */
  readonly params: Map<string, Tensor>;
  /** Gradients by the same names, present only when training all weights. */
  readonly grads: Map<string, Tensor> | null;
  /** Adapters by linear module name (e.g. `h.0.attn.c_attn`), applied in order. */
  readonly adapters = new Map<string, AttachedAdapter[]>();
  #arenas = new Arenas<Gpt2Activations>();
  #last: { acts: Gpt2Activations; tokens: Uint32Array } | null = null;

  private constructor(
    readonly gpu: Gpu,
    readonly config: Gpt2Config,
    /**
     * The compiled kernels of every layer op, shared by all shapes.
     *
     * @internal
     */
    readonly ops: Gpt2Ops,
    params: Map<string, Tensor>,
    options: ModelOptions,
  ) {
    this.params = params;
    this.configHash = configHash(config);
    this.sites = gpt2Sites(config);
    this.grads = options.trainAll
      ? new Map([...params].map(([name, t]) => {
        const g = Tensor.empty(gpu, t.shape, { persistent: true, label: `grad ${name}` });
        gpu.clear(g.buffer);
        return [name, g];
      }))
      : null;
  }

  /** Loads a Hugging Face GPT-2 folder (config.json, model.safetensors or shards). */
  static async load(gpu: Gpu, folder: string, options: ModelOptions = {}): Promise<Gpt2> {
    return Gpt2.fromWeights(gpu, await loadGpt2Weights(folder), options);
  }

  /** Uploads host weights (canonical names, GPT-2 layout) and compiles the kernels. */
  static async fromWeights(
    gpu: Gpu,
    weights: { config: Gpt2Config; tensors: Map<string, { shape: number[]; data: Float32Array }> },
    options: ModelOptions = {},
  ): Promise<Gpt2> {
    const ops = await Gpt2Ops.load(gpu);
    const params = new Map<string, Tensor>();
    for (const [name, { shape, data }] of weights.tensors) {
      params.set(name, Tensor.from(gpu, data, shape, { persistent: true, label: name }));
    }
    return new Gpt2(gpu, weights.config, ops, params, options);
  }

  /** The weight `name` of block `layer` (e.g. `attn.c_attn.weight`). */
  param(layer: number, name: string): Tensor {
    return this.params.get(`h.${layer}.${name}`)!;
  }

  /** The device's matrix multiply. */
  get matmul(): Matmul {
    return this.ops.matmul;
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
      parameters: [...this.params.values()].reduce((s, t) => s + t.size, 0),
    };
  }

  /** A linear layer's weight (`conv1d`, `[in, out]`), or undefined when there is none. */
  linearWeight(linear: string): LinearWeight | undefined {
    const weight = this.params.get(`${linear}.weight`);
    if (!weight || !this.sites.some((s) => s.name === linear && s.linear === linear)) {
      return undefined;
    }
    return { weight, layout: "conv1d", inFeatures: weight.shape[0], outFeatures: weight.shape[1] };
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

  /** Writes the weights as a Hugging Face GPT-2 folder (f32). */
  save(outFolder: string, options: { tokenizerFrom?: string } = {}): Promise<void> {
    return saveGpt2Folder(this, outFolder, options);
  }

  /**
   * Adds an adapter to a linear module (`h.{i}.attn.c_attn`, ...). Its output lands in columns
   * `colOffset .. colOffset + adapter.outFeatures` of the module's output (e.g. the q or v part
   * of `c_attn`).
   */
  attach(module: string, adapter: LinearAdapter, options: { colOffset?: number } = {}): void {
    attachToLinear(this, module, adapter, options);
  }

  /** Removes every adapter. */
  detachAll(): void {
    this.adapters.clear();
  }

  /**
   * The activation arena for one (B, T), allocated on first use; the few most recently used
   * shapes are kept (training, evaluation, a prompt, single-token steps).
   */
  activations(B: number, T: number): Gpt2Activations {
    return this.#arenas.get({ B, T }, {
      make: () => new Gpt2Activations(this.gpu, this.config, { B, T }),
      pinned: this.#last?.acts,
    });
  }

  /** Bytes of weights, weight gradients and activation arenas on the GPU. */
  memory(): { weights: number; gradients: number; activations: number } {
    return modelMemory(this.params, this.grads, this.#arenas);
  }

  /**
   * Records the forward up to the logits (`acts.logits`, `[B*T, acts.logitsStride]`, V valid
   * columns a row). With a cache, the batch is
   * the next `T` positions of one sequence (`B = 1`) and its keys and values join the cache.
   */
  forward(batch: TokenInput | LabelledInput, cache?: DecodingCache): Gpt2Activations {
    if (batch.kind === "labelled") {
      throw new TypeError("GPT-2 takes token batches, not labelled inputs");
    }
    if (cache && !(cache instanceof Gpt2Cache)) {
      throw new TypeError("Cannot run GPT-2 with another model's decoding cache");
    }
    const { B, T, tokens } = batch;
    const { nLayer: L, nEmbd: C, nHead: NH, nInner, vocabSize: V, layerNormEpsilon: eps } =
      this.config;
    const past = cache?.past ?? 0;
    if (tokens.length !== B * T) {
      throw new RangeError(`Batch has ${tokens.length} tokens, expected B*T = ${B * T}`);
    }
    if (past + T > this.config.nPositions) {
      throw new RangeError(
        `Sequence of ${past + T} tokens is longer than the model's ${this.config.nPositions}`,
      );
    }
    if (cache && B !== 1) throw new RangeError(`Generation with a cache takes B = 1, got ${B}`);
    if (cache && past + T > cache.capacity) {
      throw new RangeError(`Cache of ${cache.capacity} positions cannot take ${past + T}`);
    }
    const bad = tokens.findIndex((t) => t >= V);
    if (bad >= 0) throw new RangeError(`Token ${tokens[bad]} at ${bad} is not below vocab ${V}`);
    const { ops, gpu } = this;
    const acts = this.activations(B, T);
    const rows = B * T;
    gpu.write(acts.tokens.buffer, tokens);
    ops.encoder.forward({
      out: acts.encoded,
      tokens: acts.tokens,
      wte: this.params.get("wte.weight")!,
      wpe: this.params.get("wpe.weight")!,
      posOffset: past,
    });
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
      const qkv = cache ? cache.layers[l] : a.qkv;
      this.#linear(`h.${l}.attn.c_attn`, {
        x: a.ln1,
        y: qkv,
        rows,
        inF: C,
        outF: 3 * C,
        rowOffset: past,
      });
      // q | k | v are column blocks of the [rows, 3C] projection; the cache holds all three.
      const tMax = cache ? qkv.shape[0] : T;
      ops.attention.forward({
        out: a.atty,
        lse: a.lse,
        q: { tensor: qkv, offset: past * 3 * C, ld: 3 * C },
        k: { tensor: qkv, offset: C, ld: 3 * C },
        v: { tensor: qkv, offset: 2 * C, ld: 3 * C },
        B,
        T,
        NH,
        past,
        tMax,
        qRows: tMax,
      });
      this.#linear(`h.${l}.attn.c_proj`, { x: a.atty, y: a.attproj, rows, inF: C, outF: C });
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
      this.#linear(`h.${l}.mlp.c_fc`, { x: a.ln2, y: a.fch, rows, inF: C, outF: nInner });
      ops.gelu.forward({ out: a.fchGelu, inp: a.fch });
      this.#linear(`h.${l}.mlp.c_proj`, { x: a.fchGelu, y: a.fcproj, rows, inF: nInner, outF: C });
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
    ops.matmul.raw(
      { out: acts.logits.buffer, a: acts.lnf.buffer, b: this.params.get("wte.weight")!.buffer },
      { m: rows, n: V, k: C, transB: true, ldc: acts.logitsStride },
    );
    if (cache) cache.advance(T);
    this.#last = cache ? null : { acts, tokens };
    return acts;
  }

  /**
   * Records the per-token losses of the last forward into `acts.losses`; with `backward`, also
   * replaces the logits by the gradient of the weighted total loss (needed by {@link backward}).
   */
  loss(targets: LossTargets, options: { backward?: boolean } = {}): Tensor {
    const last = this.#requireLast("loss");
    const { acts } = last;
    const n = acts.shape.B * acts.shape.T;
    if (targets.targets.length !== n) {
      throw new RangeError(`Got ${targets.targets.length} targets for ${n} tokens`);
    }
    this.gpu.write(acts.targets.buffer, targets.targets);
    const eps = targets.labelSmoothing ?? 0;
    const common = {
      losses: acts.losses,
      logits: acts.logits,
      targets: acts.targets,
      eps,
      vocab: this.config.vocabSize,
    };
    if (!options.backward) {
      this.ops.crossentropy.forward(common);
      return acts.losses;
    }
    const weights = targets.weights ?? new Float32Array(n).fill(1 / n);
    if (weights.length !== n) throw new RangeError(`Got ${weights.length} weights for ${n} tokens`);
    this.gpu.write(acts.weights.buffer, weights);
    this.ops.crossentropy.backward({ ...common, weights: acts.weights });
    return acts.losses;
  }

  /**
   * Records the backward of the last forward, whose logits {@link loss} turned into their
   * gradient: weight gradients accumulate into {@link grads} (when training all weights) and
   * adapters accumulate their own.
   */
  backward(): void {
    const { acts, tokens } = this.#requireLast("backward");
    this.#last = null;
    const { B, T } = acts.shape;
    const { nLayer: L, nEmbd: C, nHead: NH, nInner, vocabSize: V } = this.config;
    const { ops, gpu } = this;
    const rows = B * T;
    const g = acts.grads();
    const wte = this.params.get("wte.weight")!;
    const dlogits = acts.logits; // holds d loss / d logits since loss({ backward: true })
    const lda = acts.logitsStride;
    ops.matmul.raw({ out: g.dln.buffer, a: dlogits.buffer, b: wte.buffer }, {
      m: rows,
      n: C,
      k: V,
      lda,
    });
    const dwte = this.grads?.get("wte.weight");
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
      this.#linearBackward(`h.${l}.mlp.c_proj`, {
        x: a.fchGelu,
        dy: g.dresidual,
        dx: g.dfchGelu,
        rows,
        inF: nInner,
        outF: C,
      });
      gpu.clear(g.dfch.buffer);
      ops.gelu.backward({ dinp: g.dfch, inp: a.fch, dout: g.dfchGelu });
      this.#linearBackward(`h.${l}.mlp.c_fc`, {
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
      this.#linearBackward(`h.${l}.attn.c_proj`, {
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
      this.#linearBackward(`h.${l}.attn.c_attn`, {
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

  /** Records zeroing every weight gradient. */
  zeroGrads(): void {
    for (const g of this.grads?.values() ?? []) this.gpu.clear(g.buffer);
  }

  /** Frees the weights, their gradients, the activation arenas and scratch tensors. */
  [Symbol.dispose](): void {
    this.#arenas[Symbol.dispose]();
    for (const t of this.params.values()) t[Symbol.dispose]();
    for (const t of this.grads?.values() ?? []) t[Symbol.dispose]();
    for (const t of this.#scratchTensors.values()) t[Symbol.dispose]();
  }

  // y = x W + b (+ adapters), W stored [in, out] (Conv1D). With rowOffset, y's rows start there.
  #linear(
    module: string,
    o: { x: Tensor; y: Tensor; rows: number; inF: number; outF: number; rowOffset?: number },
  ): void {
    const offsetC = (o.rowOffset ?? 0) * o.outF;
    this.ops.matmul.raw(
      {
        out: o.y.buffer,
        a: o.x.buffer,
        b: this.params.get(`${module}.weight`)!.buffer,
        bias: this.params.get(`${module}.bias`)!.buffer,
      },
      { m: o.rows, n: o.outF, k: o.inF, offsetC },
    );
    for (const { adapter, colOffset } of this.adapters.get(module) ?? []) {
      adapter.forward(
        { tensor: o.x, ld: o.inF },
        { tensor: o.y, ld: o.outF, offset: offsetC + colOffset },
        o.rows,
      );
    }
  }

  // dx = dy Wᵀ (+ adapters); dW += xᵀ dy and db += colsum(dy) when training all weights.
  #linearBackward(
    module: string,
    o: { x: Tensor; dy: Tensor; dx: Tensor; rows: number; inF: number; outF: number },
  ): void {
    const w = this.params.get(`${module}.weight`)!;
    this.ops.matmul.raw(
      { out: o.dx.buffer, a: o.dy.buffer, b: w.buffer },
      { m: o.rows, n: o.inF, k: o.outF, transB: true },
    );
    for (const { adapter, colOffset } of this.adapters.get(module) ?? []) {
      adapter.backward(
        { tensor: o.x, ld: o.inF },
        { tensor: o.dy, ld: o.outF, offset: colOffset },
        { tensor: o.dx, ld: o.inF },
        o.rows,
      );
    }
    const dw = this.grads?.get(`${module}.weight`);
    if (!dw) return;
    this.ops.matmul.raw(
      { out: dw.buffer, a: o.x.buffer, b: o.dy.buffer },
      { m: o.inF, n: o.outF, k: o.rows, transA: true, accumulate: true },
    );
    const db = this.grads!.get(`${module}.bias`)!;
    this.ops.reduce.backward({ dbias: db, dout: o.dy });
  }

  // dinp += layernorm'(dout); frozen layernorm weights take their gradients in scratch buffers.
  #layernormBackward(
    name: string,
    o: { dinp: Tensor; dout: Tensor; inp: Tensor; mean: Tensor; rstd: Tensor },
  ): void {
    const weight = this.params.get(`${name}.weight`)!;
    this.ops.layernorm.backward({
      dinp: o.dinp,
      dweight: this.grads?.get(`${name}.weight`) ?? this.#scratch(`${name}.weight`, weight),
      dbias: this.grads?.get(`${name}.bias`) ?? this.#scratch(`${name}.bias`, weight),
      dout: o.dout,
      inp: o.inp,
      weight,
      mean: o.mean,
      rstd: o.rstd,
    });
  }

  #scratchTensors = new Map<string, Tensor>();
  #scratch(name: string, like: Tensor): Tensor {
    let t = this.#scratchTensors.get(name);
    if (!t) {
      t = Tensor.empty(this.gpu, like.shape, { persistent: true, label: `scratch ${name}` });
      this.#scratchTensors.set(name, t);
    }
    return t;
  }

  #requireLast(what: string): { acts: Gpt2Activations; tokens: Uint32Array } {
    if (!this.#last) {
      throw new Error(`Cannot compute the ${what}: run forward (without a cache) first`);
    }
    return this.#last;
  }
}
