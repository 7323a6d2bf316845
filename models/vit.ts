/**
 * A Vision Transformer image classifier on WebGPU, written llm.c-style: every layer's forward in
 * order, then the backward by hand in reverse, one kernel call a line. Weights keep the names of
 * the layout they were loaded from (Hugging Face's or timm's, see `vit_names.ts`); adapters hook
 * into any linear layer by those names.
 *
 * The forward over `B` images `[C, H, W]`: patches unfolded into rows and multiplied by the
 * patch embedding's conv weight, the class token prepended and the position embeddings added,
 * pre-norm blocks (`x += proj(attn(LN(x)))`, `x += fc2(gelu(fc1(LN(x))))`, attention over every
 * token, the exact GELU), then the class token's row of each image, normed, through the head.
 * The final norm runs on those `B` rows only: the other tokens' are never used.
 *
 * @module
 */

import type { Gpu } from "../kernels/gpu.ts";
import type { Tensor } from "../kernels/tensor.ts";
import type { Dtype } from "../formats/safetensors.ts";
import { Tensor as GpuTensor } from "../kernels/tensor.ts";
import type {
  ClassifierHead,
  DecodingCache,
  HeadGradients,
  LabelledInput,
  LinearSite,
  LinearWeight,
  Model,
  ModelOptions,
  ModelSummary,
  PeftNaming,
  TokenInput,
} from "./model.ts";
import { VitActivations } from "./vit_activations.ts";
import {
  readVitConfig,
  type VitConfig,
  vitConfigHash,
  vitPatches,
  vitTokens,
} from "./vit_config.ts";
import { vitNames, vitSites } from "./vit_names.ts";
import { VitOps } from "./vit_ops.ts";
import { saveVitFolder } from "./vit_save.ts";
import { planVitWeights, vitWeightNames, withZeroHead } from "./vit_weights.ts";
import { GpuModel } from "./_gpu_model.ts";
import {
  type PackedBase,
  streamWeights,
  uploadWeights,
  type WeightLoaded,
  type WeightReader,
} from "./_base_weights.ts";
import { Checkpoint } from "../formats/safetensors.ts";

/** Options of {@link Vit.load} and {@link Vit.fromReader}. */
export interface VitLoadOptions extends ModelOptions {
  /** Called once each weight is on the GPU, in load order. */
  onWeight?: (loaded: WeightLoaded) => void;
}

/**
 * A ViT classifier with its weights on the GPU.
 *
 * @example Class logits of two images
 * ```ts
 * import { Gpu } from "../kernels/gpu.ts";
 * import { Vit } from "./vit.ts";
 * using gpu = await Gpu.acquire();
 * using model = await Vit.load(gpu, "fixtures/tiny-vit");
 * const inputs = new Float32Array(2 * 3 * 12 * 12).fill(0.5);
 * const acts = model.forward({ kind: "labelled", B: 2, inputShape: [3, 12, 12], inputs });
 * console.log((await acts.logits.read()).length); // 2 rows of 5 classes, padded to 8
 * ```
 */
export class Vit extends GpuModel<VitActivations> implements Model {
  /** `vit`. */
  readonly modelType = "vit";
  /** Class logits, one row an image. */
  readonly task = "classification";
  /**
   * PEFT names the modules of Hugging Face's `ViTForImageClassification`
   * `base_model.model.vit.<module>` (timm's: `base_model.model.<module>`); PEFT has no task type
   * for image classification, so none is written.
   */
  readonly peft: PeftNaming;
  /** Hash of the architecture, for adapter files. */
  readonly configHash: string;
  /** Every adaptable site, in model order. */
  readonly sites: readonly LinearSite[];
  readonly #linears: ReadonlySet<string>;
  #config: VitConfig;
  #headGrads: HeadGradients | null = null;

  private constructor(
    gpu: Gpu,
    config: VitConfig,
    /** @internal The compiled kernels. */
    readonly ops: VitOps,
    params: Map<string, Tensor>,
    options: ModelOptions,
    base: PackedBase | null,
  ) {
    super(gpu, ops, params, options, "linear", base);
    this.#config = config;
    this.configHash = vitConfigHash(config);
    this.sites = vitSites(config);
    this.#linears = new Set(this.sites.map((s) => s.linear));
    this.peft = {
      modulePrefix: config.layout === "hf" ? "vit." : "",
      taskType: "",
    };
  }

  /**
   * Loads a Hugging Face or timm ViT folder (`config.json`, `model.safetensors` or shards), one
   * tensor at a time.
   *
   * @param gpu The device.
   * @param folder The folder.
   * @param options `trainAll`, the base format, `onWeight`.
   * @returns The model.
   */
  static async load(gpu: Gpu, folder: string, options: VitLoadOptions = {}): Promise<Vit> {
    const config = await readVitConfig(folder);
    using ckpt = await Checkpoint.open(folder);
    return await Vit.fromReader(gpu, config, ckpt, options);
  }

  /**
   * Loads a ViT from a checkpoint one tensor at a time: the header is checked first
   * ({@link planVitWeights}), then each weight is read, put on the GPU (linear weights packed as
   * `baseFormat` says) and let go of before the next is read. A checkpoint without a head gets a
   * zero head of the config's classes.
   *
   * @param gpu The device.
   * @param config The architecture the checkpoint must match.
   * @param reader The checkpoint, or a reader wrapping one.
   * @param options `trainAll`, the base format, and `onWeight`, told about each weight loaded.
   * @returns The model.
   * @throws {VitWeightsError} On a checkpoint that does not match the config.
   * @throws {RangeError} On a packed base with `trainAll`, or a weight that cannot be quantized.
   */
  static async fromReader(
    gpu: Gpu,
    config: VitConfig,
    reader: WeightReader,
    options: VitLoadOptions = {},
  ): Promise<Vit> {
    const { plan } = await planVitWeights(config, reader);
    const ops = await VitOps.load(gpu);
    const { params, packed } = await streamWeights(gpu, withZeroHead(reader, plan), plan, {
      linears: new Set(vitSites(config).map((s) => `${s.linear}.weight`)),
      layout: "linear",
      options,
      onWeight: options.onWeight,
    });
    return new Vit(gpu, config, ops, params, options, packed);
  }

  /**
   * Uploads host weights (the layout's names) and compiles the kernels.
   *
   * @param gpu The device.
   * @param weights The config and the host weights.
   * @param options `trainAll`, the base format; `storedDtypes`, each weight's dtype in the
   * checkpoint (for `as-stored`).
   * @returns The model.
   * @throws {RangeError} On a packed base with `trainAll`, or a weight that cannot be quantized.
   */
  static async fromWeights(
    gpu: Gpu,
    weights: { config: VitConfig; tensors: Map<string, { shape: number[]; data: Float32Array }> },
    options: ModelOptions & { storedDtypes?: ReadonlyMap<string, Dtype> } = {},
  ): Promise<Vit> {
    const { config } = weights;
    if (config.numLabels < 1) {
      throw new RangeError(`Cannot build a ViT classifier with ${config.numLabels} classes`);
    }
    const ops = await VitOps.load(gpu);
    const linears = new Set(vitSites(config).map((s) => `${s.linear}.weight`));
    const { params, packed } = await uploadWeights(gpu, weights.tensors, {
      linears,
      layout: "linear",
      options,
      storedDtypes: options.storedDtypes,
    });
    return new Vit(gpu, config, ops, params, options, packed);
  }

  /**
   * The architecture; after {@link replaceHead}, with the new head's classes (the
   * {@link configHash} stays the base's, which adapter files are checked against).
   */
  get config(): VitConfig {
    return this.#config;
  }

  /** The head over the class token: `classifier` (Hugging Face) or `head` (timm). */
  get classifierHead(): ClassifierHead {
    const c = this.#config;
    return { name: vitNames(c.layout).head, inFeatures: c.hiddenSize, labels: c.labels };
  }

  /**
   * Replaces the head by one for `labels` (a new task's classes) holding `values`; with
   * `trainable`, the backward accumulates its gradients into the tensors returned, which
   * {@link zeroGrads} zeroes. When every weight trains, the new head's gradients join
   * {@link grads} instead.
   *
   * @param labels Class names by id.
   * @param values Weight `[labels, hiddenSize]` row-major and bias `[labels]`.
   * @param options `trainable`.
   * @returns The head's gradients, or null when it is frozen.
   * @throws {RangeError} On no labels or values of the wrong size.
   */
  replaceHead(
    labels: readonly string[],
    values: { weight: Float32Array; bias: Float32Array },
    options: { trainable?: boolean } = {},
  ): HeadGradients | null {
    const c = this.#config;
    const L = labels.length;
    const D = c.hiddenSize;
    if (L < 1) throw new RangeError("Cannot give a ViT a head without classes");
    if (values.weight.length !== L * D || values.bias.length !== L) {
      throw new RangeError(
        `A head for ${L} classes over ${D} features takes a weight of ${L * D} values and a ` +
          `bias of ${L}, got ${values.weight.length} and ${values.bias.length}`,
      );
    }
    const name = vitNames(c.layout).head;
    // Work already recorded may read the old head and arenas: submit it before freeing them.
    this.gpu.flush();
    this.arenas[Symbol.dispose]();
    this.last = null;
    for (const t of [this.#headGrads?.weight, this.#headGrads?.bias]) t?.[Symbol.dispose]();
    this.#headGrads = null;
    const put = (map: Map<string, GpuTensor>, key: string, t: GpuTensor) => {
      map.get(key)?.[Symbol.dispose]();
      map.set(key, t);
    };
    const upload = (data: Float32Array, shape: number[], label: string) =>
      GpuTensor.from(this.gpu, data, shape, { persistent: true, label });
    const zeros = (shape: number[], label: string) => {
      const t = GpuTensor.empty(this.gpu, shape, { persistent: true, label });
      this.gpu.clear(t.buffer);
      return t;
    };
    put(this.params, `${name}.weight`, upload(values.weight, [L, D], `${name}.weight`));
    put(this.params, `${name}.bias`, upload(values.bias, [L], `${name}.bias`));
    this.#config = { ...c, numLabels: L, labels: [...labels] };
    if (this.grads) {
      put(this.grads, `${name}.weight`, zeros([L, D], `grad ${name}.weight`));
      put(this.grads, `${name}.bias`, zeros([L], `grad ${name}.bias`));
      return { weight: this.grads.get(`${name}.weight`)!, bias: this.grads.get(`${name}.bias`)! };
    }
    if (!options.trainable) return null;
    this.#headGrads = {
      weight: zeros([L, D], `grad ${name}.weight`),
      bias: zeros([L], `grad ${name}.bias`),
    };
    return this.#headGrads;
  }

  /** Records zeroing every weight gradient, a trainable head's included. */
  override zeroGrads(): void {
    super.zeroGrads();
    if (this.#headGrads) {
      this.gpu.clear(this.#headGrads.weight.buffer);
      this.gpu.clear(this.#headGrads.bias.buffer);
    }
  }

  /** Frees the weights, gradients, arenas and a trainable head's gradients. */
  override [Symbol.dispose](): void {
    super[Symbol.dispose]();
    this.#headGrads?.weight[Symbol.dispose]();
    this.#headGrads?.bias[Symbol.dispose]();
    this.#headGrads = null;
  }

  /** Number of classes. */
  get outputs(): number {
    return this.config.numLabels;
  }

  /** Tokens a forward runs over (the patches and the class token). */
  get maxPositions(): number {
    return vitTokens(this.config);
  }

  /** Sizes for a person; `positions` are the tokens of an image. */
  summary(): ModelSummary {
    const c = this.config;
    return {
      modelType: this.modelType,
      layers: c.numLayers,
      width: c.hiddenSize,
      heads: c.numHeads,
      positions: vitTokens(c),
      outputs: c.numLabels,
      parameters: this.parameterCount,
    };
  }

  /** A linear layer's weight (`linear`, `[out, in]`), or undefined when there is none. */
  linearWeight(linear: string): LinearWeight | undefined {
    if (!this.#linears.has(linear)) return undefined;
    return this.linearWeightOf(linear);
  }

  /** Checkpoint names to weight names (see {@link vitWeightNames}). */
  weightNames(checkpointNames: readonly string[]): Map<string, string | null> {
    return vitWeightNames(checkpointNames);
  }

  /**
   * A ViT has no decoding cache.
   *
   * @throws {TypeError} Always.
   */
  newCache(_capacity: number): DecodingCache {
    throw new TypeError("A ViT classifies images and does not generate text: it has no cache");
  }

  /**
   * Writes the weights (f32) as a folder of the layout they were loaded in; refuses a packed
   * base. `tokenizerFrom` names the source folder, whose `preprocessor_config.json` is copied.
   */
  async save(outFolder: string, options: { tokenizerFrom?: string } = {}): Promise<void> {
    this.refusePackedSave();
    await saveVitFolder(this, outFolder, { source: options.tokenizerFrom });
  }

  /** A new activation arena for `B` images (`T` is always 1: one loss row an image). */
  protected newArena(shape: { B: number; T: number }): VitActivations {
    return new VitActivations(this.gpu, this.config, shape.B);
  }

  /**
   * Records the forward up to the class logits (`acts.logits`, `[B, acts.logitsStride]`, the
   * classes first in each row).
   *
   * @param batch `B` images of `inputShape` `[C, H, W]`, the config's.
   * @param cache Must be absent.
   * @returns The arena.
   * @throws {TypeError} On token input or a cache.
   * @throws {RangeError} On images of another shape, or inputs of the wrong length.
   */
  forward(batch: TokenInput | LabelledInput, cache?: DecodingCache): VitActivations {
    const acts = this.#start(batch, cache);
    const c = this.config;
    const { hiddenSize: D, numHeads: NH, intermediateSize: I, layerNormEps: eps } = c;
    const { ops } = this;
    const B = acts.B;
    const N = vitPatches(c);
    const T = N + 1;
    const rows = B * T;
    const names = vitNames(c.layout);
    const p = (name: string) => this.params.get(name)!;
    const K = c.numChannels * c.patchSize * c.patchSize;
    ops.patches.unfold({
      out: acts.cols,
      inp: acts.pixels,
      B,
      C: c.numChannels,
      H: c.imageHeight,
      W: c.imageWidth,
      P: c.patchSize,
    });
    ops.matmul.raw({
      out: acts.patches.buffer,
      a: acts.cols.buffer,
      b: p(`${names.patch}.weight`).buffer,
      bias: p(`${names.patch}.bias`).buffer,
    }, { m: B * N, n: D, k: K, transB: true });
    ops.patches.tokensForward({
      out: acts.encoded,
      patches: acts.patches,
      cls: p(names.cls),
      pos: p(names.pos),
      B,
      N,
      D,
    });
    for (let l = 0; l < c.numLayers; l++) {
      const a = acts.layers[l];
      const n = names.block(l);
      const residual = l === 0 ? acts.encoded : acts.layers[l - 1].residual3;
      ops.layernorm.forward({
        out: a.ln1,
        mean: a.ln1Mean,
        rstd: a.ln1Rstd,
        inp: residual,
        weight: p(`${n.norm1}.weight`),
        bias: p(`${n.norm1}.bias`),
        eps,
      });
      const outF = n.qkv.length === 1 ? 3 * D : D;
      n.qkv.forEach((m, j) => this.linear(m, { x: a.ln1, y: a.qkv[j], rows, inF: D, outF }));
      ops.attention.forward({ out: a.atty, lse: a.lse, ...qkvViews(a.qkv, D), B, T, NH });
      this.linear(n.proj, { x: a.atty, y: a.attproj, rows, inF: D, outF: D });
      ops.residual.forward({ out: a.residual2, a: residual, b: a.attproj });
      ops.layernorm.forward({
        out: a.ln2,
        mean: a.ln2Mean,
        rstd: a.ln2Rstd,
        inp: a.residual2,
        weight: p(`${n.norm2}.weight`),
        bias: p(`${n.norm2}.bias`),
        eps,
      });
      this.linear(n.fc1, { x: a.ln2, y: a.fch, rows, inF: D, outF: I });
      ops.gelu.forward({ out: a.fchGelu, inp: a.fch });
      this.linear(n.fc2, { x: a.fchGelu, y: a.fcproj, rows, inF: I, outF: D });
      ops.residual.forward({ out: a.residual3, a: a.residual2, b: a.fcproj });
    }
    const last = c.numLayers === 0 ? acts.encoded : acts.layers[c.numLayers - 1].residual3;
    ops.patches.classRowsForward({ out: acts.cls, x: last, B, N, D });
    ops.layernorm.forward({
      out: acts.lnf,
      mean: acts.lnfMean,
      rstd: acts.lnfRstd,
      inp: acts.cls,
      weight: p(`${names.norm}.weight`),
      bias: p(`${names.norm}.bias`),
      eps,
    });
    // The head writes rows of logitsStride (the classes rounded up to 4) for the loss kernel.
    ops.matmul.raw({
      out: acts.logits.buffer,
      a: acts.lnf.buffer,
      b: p(`${names.head}.weight`).buffer,
      bias: p(`${names.head}.bias`).buffer,
    }, { m: B, n: c.numLabels, k: D, transB: true, ldc: acts.logitsStride });
    this.endForward(acts, new Uint32Array(0));
    return acts;
  }

  /**
   * Records the backward of the last forward, whose logits {@link loss} turned into their
   * gradient: weight gradients accumulate into {@link grads} (when training all weights) and
   * adapters accumulate their own.
   */
  backward(): void {
    const { acts } = this.requireLast("backward");
    this.last = null;
    const c = this.config;
    const { hiddenSize: D, numHeads: NH, intermediateSize: I, numLabels: L } = c;
    const { ops, gpu } = this;
    const B = acts.B;
    const N = vitPatches(c);
    const T = N + 1;
    const rows = B * T;
    const names = vitNames(c.layout);
    const g = acts.grads();
    const dlogits = acts.logits; // d loss / d logits since loss({ backward: true })
    const lda = acts.logitsStride;
    const head = this.params.get(`${names.head}.weight`)!;
    ops.matmul.raw({ out: g.dlnf.buffer, a: dlogits.buffer, b: head.buffer }, {
      m: B,
      n: D,
      k: L,
      lda,
    });
    const dhead = this.#headGrads?.weight ?? this.grads?.get(`${names.head}.weight`);
    const dbias = this.#headGrads?.bias ?? this.grads?.get(`${names.head}.bias`);
    if (dhead && dbias) {
      ops.matmul.raw({ out: dhead.buffer, a: dlogits.buffer, b: acts.lnf.buffer }, {
        m: L,
        n: D,
        k: B,
        transA: true,
        lda,
        accumulate: true,
      });
      // The bias gradient is the column sum of the strided logits: onesᵀ · dlogits.
      ops.matmul.raw(
        {
          out: dbias.buffer,
          a: acts.ones.buffer,
          b: dlogits.buffer,
        },
        { m: 1, n: L, k: B, ldb: lda, accumulate: true },
      );
    }
    gpu.clear(g.dcls.buffer);
    this.#layernormBackward(names.norm, {
      dinp: g.dcls,
      dout: g.dlnf,
      inp: acts.cls,
      mean: acts.lnfMean,
      rstd: acts.lnfRstd,
    });
    gpu.clear(g.dresidual.buffer);
    ops.patches.classRowsBackward({ dx: g.dresidual, dout: g.dcls, B, N, D });
    for (let l = c.numLayers - 1; l >= 0; l--) {
      const a = acts.layers[l];
      const n = names.block(l);
      const residual = l === 0 ? acts.encoded : acts.layers[l - 1].residual3;
      // residual3 = residual2 + fcproj: dresidual is the gradient of both.
      this.linearBackward(n.fc2, {
        x: a.fchGelu,
        dy: g.dresidual,
        dx: g.dfchGelu,
        rows,
        inF: I,
        outF: D,
      });
      gpu.clear(g.dfch.buffer);
      ops.gelu.backward({ dinp: g.dfch, inp: a.fch, dout: g.dfchGelu });
      this.linearBackward(n.fc1, { x: a.ln2, dy: g.dfch, dx: g.dln, rows, inF: D, outF: I });
      this.#layernormBackward(n.norm2, {
        dinp: g.dresidual,
        dout: g.dln,
        inp: a.residual2,
        mean: a.ln2Mean,
        rstd: a.ln2Rstd,
      });
      // residual2 = residual + attproj: dresidual now is the gradient of both.
      this.linearBackward(n.proj, {
        x: a.atty,
        dy: g.dresidual,
        dx: g.datty,
        rows,
        inF: D,
        outF: D,
      });
      for (const t of g.dqkv) gpu.clear(t.buffer);
      const d = qkvViews(g.dqkv, D);
      ops.attention.backward({
        dq: d.q,
        dk: d.k,
        dv: d.v,
        dout: g.datty,
        ...qkvViews(a.qkv, D),
        out: a.atty,
        lse: a.lse,
        B,
        T,
        NH,
      });
      const outF = n.qkv.length === 1 ? 3 * D : D;
      n.qkv.forEach((m, j) =>
        this.linearBackward(m, {
          x: a.ln1,
          dy: g.dqkv[j],
          dx: g.dln,
          rows,
          inF: D,
          outF,
          accumulate: j > 0,
        })
      );
      this.#layernormBackward(n.norm1, {
        dinp: g.dresidual,
        dout: g.dln,
        inp: residual,
        mean: a.ln1Mean,
        rstd: a.ln1Rstd,
      });
    }
    if (!this.grads) return;
    // dresidual is now the gradient of the tokens into block 0.
    ops.patches.tokensBackwardParams({
      dpos: this.grads.get(names.pos)!,
      dcls: this.grads.get(names.cls)!,
      dout: g.dresidual,
      B,
      N,
      D,
    });
    ops.patches.tokensBackward({ dpatches: g.dpatches, dout: g.dresidual, B, N, D });
    const K = c.numChannels * c.patchSize * c.patchSize;
    ops.matmul.raw(
      {
        out: this.grads.get(`${names.patch}.weight`)!.buffer,
        a: g.dpatches.buffer,
        b: acts.cols.buffer,
      },
      { m: D, n: K, k: B * N, transA: true, accumulate: true },
    );
    ops.reduce.backward({ dbias: this.grads.get(`${names.patch}.bias`)!, dout: g.dpatches });
  }

  // Checks a labelled batch against the config and writes its pixels into the arena.
  #start(batch: TokenInput | LabelledInput, cache?: DecodingCache): VitActivations {
    if (batch.kind !== "labelled") {
      throw new TypeError("A ViT takes labelled image batches, not token batches");
    }
    if (cache) throw new TypeError("A ViT has no decoding cache");
    const c = this.config;
    const want = [c.numChannels, c.imageHeight, c.imageWidth];
    const { B, inputShape, inputs } = batch;
    if (inputShape.length !== 3 || inputShape.some((d, i) => d !== want[i])) {
      throw new RangeError(
        `Images of shape [${inputShape.join(", ")}] do not fit this ViT: it takes ` +
          `[${want.join(", ")}] (resize and crop them to ${c.imageHeight}x${c.imageWidth})`,
      );
    }
    if (!Number.isSafeInteger(B) || B < 1) {
      throw new RangeError(`Batch size must be positive, got ${B}`);
    }
    const size = want[0] * want[1] * want[2];
    if (inputs.length !== B * size) {
      throw new RangeError(
        `Batch has ${inputs.length} values, expected B * C * H * W = ${B * size}`,
      );
    }
    const acts = this.activations(B, 1);
    this.gpu.write(acts.pixels.buffer, inputs);
    return acts;
  }

  // dinp += layernorm'(dout); frozen norm weights take their gradients in scratch buffers.
  #layernormBackward(
    name: string,
    o: { dinp: Tensor; dout: Tensor; inp: Tensor; mean: Tensor; rstd: Tensor },
  ): void {
    this.ops.layernorm.backward({
      dinp: o.dinp,
      dweight: this.gradOrScratch(`${name}.weight`),
      dbias: this.gradOrScratch(`${name}.bias`),
      dout: o.dout,
      inp: o.inp,
      weight: this.params.get(`${name}.weight`)!,
      mean: o.mean,
      rstd: o.rstd,
    });
  }
}

// q, k, v as the attention kernels read them: three tensors, or column blocks of one fused one.
function qkvViews(t: Tensor[], D: number) {
  if (t.length === 3) return { q: t[0], k: t[1], v: t[2] };
  const ld = 3 * D;
  return {
    q: { tensor: t[0], ld },
    k: { tensor: t[0], offset: D, ld },
    v: { tensor: t[0], offset: 2 * D, ld },
  };
}
