/**
 * What every family's GPU model shares, whatever its layers: weights and their gradients by
 * name, adapters hooked into linear layers, activation arenas per (B, T), the loss over the
 * logits of the last forward, the decoding cache's bookkeeping, and the checks of a token batch.
 * A family writes only its forward and backward, in its own file, calling {@link GpuModel.linear}
 * and {@link GpuModel.linearBackward} for each linear layer.
 *
 * @module
 */

import type { CrossEntropyKernels } from "../kernels/crossentropy.ts";
import type { EncoderKernels } from "../kernels/encoder.ts";
import type { Gpu } from "../kernels/gpu.ts";
import type { Matmul } from "../kernels/matmul.ts";
import type { ReduceKernels } from "../kernels/reduce.ts";
import { Tensor } from "../kernels/tensor.ts";
import type { DecodeKernels } from "../kernels/decode.ts";
import {
  type AttachedAdapter,
  attachToLinear,
  type BatchDecodingCache,
  type DecodingCache,
  type LabelledInput,
  type LinearAdapter,
  type LinearWeight,
  type LossTargets,
  type ModelMemory,
  type ModelOptions,
  type TokenInput,
  type WeightLayout,
} from "./model.ts";
import { Arenas, modelMemory } from "./_arenas.ts";
import type { PackedBase } from "./_base_weights.ts";
import type { PackedTensor } from "../kernels/packed_tensor.ts";

/**
 * The tensors of one forward and backward at batch `B` and sequence `T`, allocated together and
 * freed together. Holds what every text family's loss needs: the token ids, the logits (rows
 * padded to a multiple of 4 elements for vector loads; the padding is zero and never read as
 * vocabulary), the per-token losses, targets and weights. A family's arena adds its layers'
 * tensors through {@link tensor}.
 */
export class TokenArena implements Disposable {
  /** (B*T, logitsStride) logits, overwritten in place by the loss gradient. */
  readonly logits: Tensor;
  /** Elements from one row of {@link logits} to the next: the vocabulary rounded up to 4. */
  readonly logitsStride: number;
  /** Unweighted per-token cross-entropy, in nats: (B*T). */
  readonly losses: Tensor;
  /** The input token ids: (B,T). */
  readonly tokens: Tensor<"u32">;
  /** The target ids of the last loss: (B*T). */
  readonly targets: Tensor<"u32">;
  /** Each token's weight in the total loss: (B*T). */
  readonly weights: Tensor<"f32">;
  #all: Tensor[] = [];

  /**
   * Allocates the loss tensors for `shape`.
   *
   * @param gpu The device.
   * @param shape Batch `B` and sequence length `T`.
   * @param vocab The logits per token.
   */
  constructor(
    readonly gpu: Gpu,
    readonly shape: { B: number; T: number },
    vocab: number,
  ) {
    const { B, T } = shape;
    this.logitsStride = Math.ceil(vocab / 4) * 4;
    this.logits = this.tensor([B * T, this.logitsStride]);
    gpu.clear(this.logits.buffer);
    this.losses = this.tensor([B * T]);
    this.tokens = this.#track(Tensor.empty(gpu, [B, T], { dtype: "u32", persistent: true }));
    this.targets = this.#track(Tensor.empty(gpu, [B * T], { dtype: "u32", persistent: true }));
    this.weights = this.#track(Tensor.empty(gpu, [B * T], { dtype: "f32", persistent: true }));
  }

  /**
   * A new f32 tensor of the arena (freed and counted with it).
   *
   * @param dims Its shape.
   * @returns The tensor, uninitialised.
   */
  tensor(dims: number[]): Tensor {
    return this.#track(Tensor.empty(this.gpu, dims, { persistent: true }));
  }

  /** Bytes allocated so far (activations, and gradients once used). */
  get bytes(): number {
    return this.#all.reduce((sum, t) => sum + t.byteLength, 0);
  }

  /** Frees every tensor allocated, gradients included. */
  [Symbol.dispose](): void {
    for (const t of this.#all.splice(0)) t[Symbol.dispose]();
  }

  #track<T extends Tensor>(t: T): T {
    this.#all.push(t);
    return t;
  }
}

/** Where a {@link RowCache} that is one row of a {@link RowBatchCache} lies. */
export interface RowOfBatch {
  /** The batch. */
  batch: RowBatchCache<RowCache>;
  /** The row. */
  row: number;
}

/**
 * A decoding cache made of per-layer tensors whose rows are positions (`[capacity, width]`
 * each): keys and values, or a layer's whole q|k|v projection. Copying copies the first `past`
 * rows of each tensor. A cache may also be one row of a {@link RowBatchCache}: then its
 * positions start at tensor row {@link origin} and its length is the batch's.
 */
export class RowCache implements DecodingCache {
  #past = 0;
  readonly #of: RowOfBatch | null;

  /**
   * Wraps the tensors as an empty cache.
   *
   * @param tensors All the cache's tensors, each `[capacity, width]`, the same capacity (for a
   * row of a batch: the batch's tensors).
   * @param of The batch and row this cache is a view of, if any.
   */
  constructor(readonly tensors: readonly Tensor[], of?: RowOfBatch) {
    this.#of = of ?? null;
  }

  /** Positions already in the cache. */
  get past(): number {
    return this.#of ? this.#of.batch.lengths[this.#of.row] : this.#past;
  }

  /** Positions the cache can hold. */
  get capacity(): number {
    return this.#of ? this.#of.batch.capacity : this.tensors[0]?.shape[0] ?? 0;
  }

  /** Tensor row of position 0 (the row's slot in a batch; 0 for a cache of its own). */
  get origin(): number {
    return this.#of ? this.#of.row * this.#of.batch.capacity : 0;
  }

  /**
   * Counts `n` more positions as cached (the forward wrote them).
   *
   * @internal
   */
  advance(n: number): void {
    if (this.#of) this.#of.batch.advance(this.#of.row, n);
    else this.#past += n;
  }

  /** Records copying another cache of the same model's first `past` positions into this one. */
  copyFrom(source: DecodingCache): void {
    if (
      !(source instanceof RowCache) || source.constructor !== this.constructor ||
      source.tensors.length !== this.tensors.length ||
      source.tensors.some((t, i) => t.shape[1] !== this.tensors[i].shape[1])
    ) {
      throw new TypeError("Cannot copy a decoding cache of another model");
    }
    if (source.past > this.capacity) {
      throw new RangeError(`Cannot copy ${source.past} positions into a cache of ${this.capacity}`);
    }
    if (source.tensors[0]?.buffer === this.tensors[0]?.buffer) {
      // Two rows of one batch: WebGPU cannot copy a buffer into itself.
      if (source === this) return;
      this.#of!.batch.copyRows([{ from: source.#of!.row, to: this.#of!.row }]);
      return;
    }
    source.tensors.forEach((src, i) => {
      const width = src.shape[1];
      const size = source.past * width * 4;
      if (size > 0) {
        src.gpu.copy(src.buffer, this.tensors[i].buffer, {
          size,
          sourceOffset: source.origin * width * 4,
          targetOffset: this.origin * width * 4,
        });
      }
    });
    if (this.#of) this.#of.batch.setLength(this.#of.row, source.past);
    else this.#past = source.past;
  }

  /** Frees the tensors (nothing for a row of a batch, whose batch owns them). */
  [Symbol.dispose](): void {
    if (this.#of) return;
    for (const t of this.tensors) t[Symbol.dispose]();
  }
}

/**
 * A batched decoding cache made of per-layer tensors of `rows * capacity` positions: row r's
 * positions are tensor rows `r * capacity ..`. Its rows are views of the family's
 * {@link RowCache} class, so a forward of a prompt with `row(r)` fills row r.
 *
 * @typeParam C The family's cache class.
 */
export class RowBatchCache<C extends RowCache> implements BatchDecodingCache {
  readonly #lengths: number[];
  readonly #views = new Map<number, C>();

  /**
   * Wraps the tensors as an empty batch.
   *
   * @param tensors Every tensor of the cache, each `[rows * capacity, width]`.
   * @param o Rows, capacity, the row-move kernel, and how to make the family's view of a row.
   */
  constructor(
    readonly tensors: readonly Tensor[],
    readonly o: {
      rows: number;
      capacity: number;
      kernels: DecodeKernels;
      view: (of: RowOfBatch) => C;
    },
  ) {
    this.#lengths = new Array(o.rows).fill(0);
  }

  /** Sequences it holds. */
  get rows(): number {
    return this.o.rows;
  }

  /** Positions each row can hold. */
  get capacity(): number {
    return this.o.capacity;
  }

  /** Positions cached in each row. */
  get lengths(): readonly number[] {
    return this.#lengths;
  }

  /** Row `i` as the family's single-sequence cache (a view sharing the batch's tensors). */
  row(i: number): C {
    this.#checkRow(i);
    let view = this.#views.get(i);
    if (!view) {
      view = this.o.view({ batch: this as RowBatchCache<RowCache>, row: i });
      this.#views.set(i, view);
    }
    return view;
  }

  /** Records row `to` := row `from` for every pair, on the GPU. */
  copyRows(pairs: readonly { from: number; to: number }[]): void {
    const sources = new Set<number>();
    const targets = new Set<number>();
    for (const { from, to } of pairs) {
      this.#checkRow(from);
      this.#checkRow(to);
      if (targets.has(to)) throw new RangeError(`Cannot copy two rows into row ${to}`);
      sources.add(from);
      targets.add(to);
    }
    for (const row of targets) {
      if (sources.has(row) && !pairs.some((p) => p.from === row && p.to === row)) {
        throw new RangeError(`Cannot copy rows: row ${row} is both read and written`);
      }
    }
    const cap = this.capacity;
    const moves = pairs.map(({ from, to }) => ({
      from: from * cap,
      to: to * cap,
      count: this.#lengths[from],
    }));
    for (const t of this.tensors) this.o.kernels.moveRows(t, { moves, width: t.shape[1] });
    const lengths = pairs.map(({ from }) => this.#lengths[from]);
    pairs.forEach(({ to }, i) => this.#lengths[to] = lengths[i]);
  }

  /** Empties the given rows (all by default). */
  reset(rows?: readonly number[]): void {
    for (const r of rows ?? this.#lengths.keys()) {
      this.#checkRow(r);
      this.#lengths[r] = 0;
    }
  }

  /**
   * Counts `n` more positions of row `row` as cached.
   *
   * @internal
   */
  advance(row: number, n: number): void {
    this.#lengths[row] += n;
  }

  /**
   * Sets the length of a row whose positions were written by a copy.
   *
   * @internal
   */
  setLength(row: number, n: number): void {
    this.#lengths[row] = n;
  }

  /** Frees the tensors. */
  [Symbol.dispose](): void {
    for (const t of this.tensors) t[Symbol.dispose]();
  }

  #checkRow(i: number): void {
    if (!(Number.isInteger(i) && i >= 0 && i < this.rows)) {
      throw new RangeError(`Row ${i} is not a row of a decoding batch of ${this.rows}`);
    }
  }
}

/**
 * Checks the shape of a batched decoding cache: each of its tensors must fit in one storage
 * binding, since the decoding kernels bind a layer's cache whole.
 *
 * @param rows Sequences.
 * @param capacity Positions a sequence.
 * @param o The device, and the widest tensor's floats a position.
 * @throws {RangeError} If either is not a positive integer, or a tensor would not fit.
 */
export function checkBatchShape(
  rows: number,
  capacity: number,
  o: { gpu: Gpu; width: number },
): void {
  for (const [name, n] of [["rows", rows], ["capacity", capacity]] as const) {
    if (!(Number.isSafeInteger(n) && n >= 1)) {
      throw new RangeError(`A batched decoding cache needs ${name} >= 1, got ${n}`);
    }
  }
  const bytes = rows * capacity * o.width * 4;
  if (bytes > o.gpu.maxBindingBytes) {
    const most = Math.floor(o.gpu.maxBindingBytes / (capacity * o.width * 4));
    throw new RangeError(
      `A batched decoding cache of ${rows} rows of ${capacity} positions needs ${bytes} bytes a ` +
        `layer, over this adapter's ${o.gpu.maxBindingBytes}-byte binding limit: decode at most ` +
        `${most} rows at once (maxRows) or fewer new tokens`,
    );
  }
}

/** One row of a decoding step: its cache tensor row of position 0, and positions cached. */
export interface DecodeSlot {
  /** Tensor row of the sequence's position 0. */
  first: number;
  /** Positions already cached: the new token's position. */
  past: number;
}

/** The kernels {@link GpuModel} itself calls. */
export interface SharedKernels {
  /** Linear layers and the head. */
  readonly matmul: Matmul;
  /** Bias gradients. */
  readonly reduce: ReduceKernels;
  /** The loss. */
  readonly crossentropy: CrossEntropyKernels;
  /** The token embedding from an f32 table; only families that embed tokens need it. */
  readonly encoder?: EncoderKernels;
}

/** One token-embedding lookup ({@link GpuModel.embed}). */
export interface EmbedCall {
  /** Written: `[B, T, C]`. */
  out: Tensor;
  /** `[B, T]` u32 token ids. */
  tokens: Tensor<"u32">;
  /** The `[P, C]` position embedding added, when the family has one. */
  wpe?: Tensor;
  /** Without `wpe`: a zero `[T, C]` table, which the f32 lookup reads instead. */
  zeros?: Tensor;
  /** Position of the first token (a decoding cache's `past`); default 0. */
  posOffset?: number;
}

/** The head's forward: `logits = x · Hᵀ` over `rows` rows, H `[V, C]`. */
export interface HeadCall {
  /** `[rows, C]`. */
  x: Tensor;
  /** Written: `[rows, ldLogits]`, V valid columns a row. */
  logits: Tensor;
  /** Rows. */
  rows: number;
  /** Row pitch of the logits. */
  ldLogits: number;
}

/** The head's backward to its input: `dx = dlogits · H`. */
export interface HeadBackwardCall {
  /** `[rows, ldLogits]`. */
  dlogits: Tensor;
  /** Written: `[rows, C]`. */
  dx: Tensor;
  /** Rows. */
  rows: number;
  /** Row pitch of the logits. */
  ldLogits: number;
}

/** One linear layer's forward: `y = x·W (+ b) (+ adapters)` over `rows` rows. */
export interface LinearCall {
  /** Input, `[rows, inF]`. */
  x: Tensor;
  /** Output, `[rows, outF]` from row `rowOffset`. */
  y: Tensor;
  /** Rows. */
  rows: number;
  /** Input features. */
  inF: number;
  /** Output features. */
  outF: number;
  /** First row of `y` written (a decoding cache's `past`). */
  rowOffset?: number;
}

/** One linear layer's backward. */
export interface LinearBackwardCall {
  /** The forward's input, `[rows, inF]`. */
  x: Tensor;
  /** Gradient of the output, `[rows, outF]`. */
  dy: Tensor;
  /** Gradient of the input, `[rows, inF]`: written, or added to with `accumulate`. */
  dx: Tensor;
  /** Rows. */
  rows: number;
  /** Input features. */
  inF: number;
  /** Output features. */
  outF: number;
  /** Add to what `dx` holds (a second linear reading the same input). */
  accumulate?: boolean;
}

/**
 * The part of a family's model that is the same for every family (see the module doc).
 *
 * @typeParam Acts The family's activation arena.
 */
export abstract class GpuModel<Acts extends TokenArena> implements Disposable {
  /** Weights by canonical name. */
  readonly params: Map<string, Tensor>;
  /** Gradients by the same names, present only when training all weights. */
  readonly grads: Map<string, Tensor> | null;
  /** Adapters by linear module name, applied in order. */
  readonly adapters = new Map<string, AttachedAdapter[]>();
  /**
   * Weights kept packed (`ModelOptions.baseFormat`), by weight name: linear weights `[out, in]`
   * whatever the family's layout, and a token embedding or head kept 16-bit, `[V, C]`; they are
   * not in {@link params}.
   */
  readonly packed: ReadonlyMap<string, PackedTensor>;
  /** The kernels reading packed weights, when any is. */
  readonly #base: PackedBase | null;
  /** The `model_type`. */
  abstract readonly modelType: string;
  /** The arenas of recent shapes. */
  protected readonly arenas = new Arenas<Acts>();
  /** The last forward without a cache, for the loss and the backward. */
  protected last: { acts: Acts; tokens: Uint32Array } | null = null;
  #scratch = new Map<string, Tensor>();
  readonly #kernels: SharedKernels;

  /**
   * Holds the weights (and their gradients when training all of them); the family's
   * constructor calls it.
   *
   * @param gpu The device.
   * @param kernels The family's kernels (those the base calls).
   * @param params The weights on the GPU.
   * @param options `trainAll` gives every weight a zeroed gradient.
   * @param layout How the family stores its linear weights.
   * @param base The packed weights and their kernels, when the base is not f32.
   * @throws {RangeError} On `trainAll` with packed weights (they have no gradient).
   */
  protected constructor(
    /** The device. */
    readonly gpu: Gpu,
    kernels: SharedKernels,
    params: Map<string, Tensor>,
    options: ModelOptions,
    /** How the family stores its linear weights. */
    readonly layout: WeightLayout,
    base: PackedBase | null = null,
  ) {
    if (options.trainAll && base && base.weights.size > 0) {
      throw new RangeError(
        `Cannot train all weights of a packed base (baseFormat "${options.baseFormat}"): full ` +
          `fine-tuning needs baseFormat "f32"`,
      );
    }
    this.params = params;
    this.#kernels = kernels;
    this.#base = base;
    this.packed = base?.weights ?? new Map();
    this.grads = options.trainAll
      ? new Map([...params].map(([name, t]) => {
        const g = Tensor.empty(gpu, t.shape, { persistent: true, label: `grad ${name}` });
        gpu.clear(g.buffer);
        return [name, g];
      }))
      : null;
  }

  /** A new arena for (B, T). */
  protected abstract newArena(shape: { B: number; T: number }): Acts;

  /** A linear layer's weight, or undefined when there is none. */
  abstract linearWeight(linear: string): LinearWeight | undefined;

  /** The device's matrix multiply. */
  get matmul(): Matmul {
    return this.#kernels.matmul;
  }

  /** Weights, counted (packed ones included). */
  get parameterCount(): number {
    const packed = [...this.packed.values()].reduce((s, t) => s + t.layout.rows * t.layout.cols, 0);
    return [...this.params.values()].reduce((s, t) => s + t.size, packed);
  }

  /**
   * Records unpacking a packed weight (a linear's, or a 16-bit embedding or head) into a new f32
   * tensor in the model's shape of it: linear weights in the family's layout, tables `[V, C]`.
   *
   * @param name The weight name, a key of {@link packed}.
   * @returns The tensor; the caller disposes it.
   * @throws {RangeError} When the weight is not packed.
   */
  unpackWeight(name: string): Tensor {
    const packed = this.packed.get(name);
    if (!packed) {
      throw new RangeError(`Cannot unpack "${name}": the model keeps no such packed weight`);
    }
    const linear = name.endsWith(".weight") ? this.linearWeight(name.slice(0, -7)) : undefined;
    if (linear?.packed === packed) return linear.dequantize!();
    return this.#base!.quant.dequantize(packed);
  }

  /**
   * The weight of a linear layer as {@link Model.linearWeight} returns it: the f32 tensor, or the
   * packed one with a way to unpack it.
   *
   * @param linear The linear layer's name.
   * @returns The weight and its sizes, or undefined when the model has no `<linear>.weight`.
   */
  protected linearWeightOf(linear: string): LinearWeight | undefined {
    const name = `${linear}.weight`;
    const conv = this.layout === "conv1d";
    const weight = this.params.get(name);
    if (weight) {
      const [inFeatures, outFeatures] = conv
        ? [weight.shape[0], weight.shape[1]]
        : [weight.shape[1], weight.shape[0]];
      return { weight, layout: this.layout, inFeatures, outFeatures };
    }
    const packed = this.packed.get(name);
    if (!packed) return undefined;
    const quant = this.#base!.quant;
    return {
      weight: null,
      packed,
      layout: this.layout,
      inFeatures: packed.layout.cols,
      outFeatures: packed.layout.rows,
      dequantize: () => quant.dequantize(packed, { transposed: conv }),
    };
  }

  /**
   * The activation arena for one (B, T), allocated on first use; the few most recently used
   * shapes are kept (training, evaluation, a prompt, single-token steps).
   */
  activations(B: number, T: number): Acts {
    return this.arenas.get({ B, T }, {
      make: () => this.newArena({ B, T }),
      pinned: this.last?.acts,
    });
  }

  /**
   * Adds an adapter to a linear module. Its output lands in features `colOffset ..
   * colOffset + adapter.outFeatures` of the module's output (e.g. the q or v part of a fused
   * projection).
   */
  attach(module: string, adapter: LinearAdapter, options: { colOffset?: number } = {}): void {
    attachToLinear(this, module, adapter, options);
  }

  /** Removes every adapter. */
  detachAll(): void {
    this.adapters.clear();
  }

  /**
   * Bytes on the GPU: weights (f32 and packed together), weight gradients, activation arenas,
   * and the weights' bytes by precision (`f32`, and `f16`, `bf16`, `int8`, `nf4` for packed
   * weights: linear weights with their absmaxes, and a token embedding or head kept 16-bit).
   */
  memory(): ModelMemory {
    const base = modelMemory(this.params, this.grads, this.arenas);
    const byPrecision: Record<string, number> = { f32: base.weights };
    for (const t of this.packed.values()) {
      byPrecision[t.layout.format] = (byPrecision[t.layout.format] ?? 0) + t.byteLength;
    }
    const weights = Object.values(byPrecision).reduce((s, n) => s + n, 0);
    return { ...base, weights, weightsByPrecision: byPrecision };
  }

  /**
   * Throws when linear weights are kept packed: a folder written from {@link params} alone would
   * lack them.
   *
   * @throws {TypeError} In one line, saying how to write the weights instead.
   */
  protected refusePackedSave(): void {
    const first = this.packed.values().next().value;
    if (!first) return;
    throw new TypeError(
      `Cannot save ${this.modelType} with its linear weights kept ${first.layout.format} ` +
        `("${first.label}"): write a merged copy with writeMergedFolder (the merge stage), which ` +
        `unpacks them, or load the model with baseFormat "f32"`,
    );
  }

  /** Records zeroing every weight gradient. */
  zeroGrads(): void {
    for (const g of this.grads?.values() ?? []) this.gpu.clear(g.buffer);
  }

  /**
   * Records the per-token losses of the last forward into its `losses`; with `backward`, also
   * replaces the logits by the gradient of the weighted total loss (needed by the backward).
   */
  loss(targets: LossTargets, options: { backward?: boolean } = {}): Tensor {
    const { acts } = this.requireLast("loss");
    const n = acts.shape.B * acts.shape.T;
    if (targets.targets.length !== n) {
      throw new RangeError(`Got ${targets.targets.length} targets for ${n} tokens`);
    }
    this.gpu.write(acts.targets.buffer, targets.targets);
    const common = {
      losses: acts.losses,
      logits: acts.logits,
      targets: acts.targets,
      eps: targets.labelSmoothing ?? 0,
      vocab: this.outputs,
    };
    if (!options.backward) {
      this.#kernels.crossentropy.forward(common);
      return acts.losses;
    }
    const weights = targets.weights ?? new Float32Array(n).fill(1 / n);
    if (weights.length !== n) throw new RangeError(`Got ${weights.length} weights for ${n} tokens`);
    this.gpu.write(acts.weights.buffer, weights);
    this.#kernels.crossentropy.backward({ ...common, weights: acts.weights });
    return acts.losses;
  }

  /** The logits a token (the vocabulary). */
  abstract get outputs(): number;

  /** Frees the weights, their gradients, the activation arenas and scratch tensors. */
  [Symbol.dispose](): void {
    this.arenas[Symbol.dispose]();
    for (const t of this.params.values()) t[Symbol.dispose]();
    for (const t of this.packed.values()) t[Symbol.dispose]();
    for (const t of this.grads?.values() ?? []) t[Symbol.dispose]();
    for (const t of this.#scratch.values()) t[Symbol.dispose]();
  }

  /**
   * Checks a token batch against the model and the cache, and writes its ids into the arena.
   *
   * @param batch The input.
   * @param cache The decoding cache, if any; it must be an instance of `cacheClass`.
   * @param cacheClass The family's cache class.
   * @param positions The model's positions.
   * @returns The arena, the batch's shape and the positions already cached.
   */
  protected startForward<C extends DecodingCache>(
    batch: TokenInput | LabelledInput,
    cache: DecodingCache | undefined,
    cacheClass: abstract new (...args: never[]) => C,
    positions: number,
  ): { acts: Acts; B: number; T: number; tokens: Uint32Array; past: number; cache?: C } {
    if (batch.kind === "labelled") {
      throw new TypeError(`${this.modelType} takes token batches, not labelled inputs`);
    }
    if (cache && !(cache instanceof cacheClass)) {
      throw new TypeError(`Cannot run ${this.modelType} with another model's decoding cache`);
    }
    const { B, T, tokens } = batch;
    const past = cache?.past ?? 0;
    if (tokens.length !== B * T) {
      throw new RangeError(`Batch has ${tokens.length} tokens, expected B*T = ${B * T}`);
    }
    if (past + T > positions) {
      throw new RangeError(
        `Sequence of ${past + T} tokens is longer than the model's ${positions}`,
      );
    }
    if (cache && B !== 1) throw new RangeError(`Generation with a cache takes B = 1, got ${B}`);
    if (cache && past + T > cache.capacity) {
      throw new RangeError(`Cache of ${cache.capacity} positions cannot take ${past + T}`);
    }
    const V = this.outputs;
    const bad = tokens.findIndex((t) => t >= V);
    if (bad >= 0) throw new RangeError(`Token ${tokens[bad]} at ${bad} is not below vocab ${V}`);
    const acts = this.activations(B, T);
    this.gpu.write(acts.tokens.buffer, tokens);
    return { acts, B, T, tokens, past, cache: cache as C | undefined };
  }

  /**
   * Checks one decoding step of a batch (one token a row) against the model and the cache, and
   * writes the ids into the `(B, 1)` arena.
   *
   * @param tokens One token a decoded row.
   * @param cache The batched cache; it must be the family's (`cacheClass` rows).
   * @param cacheClass The family's single-sequence cache class.
   * @param options `rows`: the cache row of each token (0 .. B-1 by default); `positions`: the
   * model's positions.
   * @returns The arena, the cache and each decoded row's slot.
   */
  protected startDecode<C extends RowCache>(
    tokens: ArrayLike<number>,
    cache: BatchDecodingCache,
    cacheClass: abstract new (...args: never[]) => C,
    options: { rows?: readonly number[]; positions: number },
  ): { acts: Acts; batch: RowBatchCache<C>; rows: readonly number[]; slots: DecodeSlot[] } {
    if (!(cache instanceof RowBatchCache) || !(cache.row(0) instanceof cacheClass)) {
      throw new TypeError(`Cannot decode ${this.modelType} with another model's decoding cache`);
    }
    const B = tokens.length;
    if (B === 0) throw new RangeError("Cannot decode a step of no rows");
    const rows = options.rows ?? Array.from({ length: B }, (_, b) => b);
    if (rows.length !== B) {
      throw new RangeError(`Got ${B} tokens for ${rows.length} rows of the decoding cache`);
    }
    const seen = new Set<number>();
    const V = this.outputs;
    const ids = new Uint32Array(B);
    const slots = rows.map((row, b) => {
      if (!(Number.isInteger(row) && row >= 0 && row < cache.rows) || seen.has(row)) {
        throw new RangeError(
          `Token ${b} goes to row ${row}, which is ${
            seen.has(row) ? "taken twice" : "not a row"
          } ` +
            `of a decoding batch of ${cache.rows}`,
        );
      }
      seen.add(row);
      const past = cache.lengths[row];
      if (past + 1 > cache.capacity || past + 1 > options.positions) {
        throw new RangeError(
          `Row ${row} holds ${past} positions: one more is past its capacity ${cache.capacity} ` +
            `or the model's ${options.positions} positions`,
        );
      }
      const id = tokens[b];
      if (!(Number.isInteger(id) && id >= 0 && id < V)) {
        throw new RangeError(`Token ${id} at ${b} is not below vocab ${V}`);
      }
      ids[b] = id;
      return { first: row * cache.capacity, past };
    });
    const acts = this.activations(B, 1);
    this.gpu.write(acts.tokens.buffer, ids);
    return { acts, batch: cache as RowBatchCache<C>, rows, slots };
  }

  /** Ends a decoding step: each decoded row holds one more position. */
  protected endDecode(batch: RowBatchCache<RowCache>, rows: readonly number[]): void {
    for (const row of rows) batch.advance(row, 1);
    this.last = null;
  }

  /** Ends a forward: advances the cache, or keeps the arena for the loss and the backward. */
  protected endForward(acts: Acts, tokens: Uint32Array, cache?: RowCache): void {
    if (cache) cache.advance(acts.shape.T);
    this.last = cache ? null : { acts, tokens };
  }

  /** The last forward without a cache; the backward takes it. */
  protected requireLast(what: string): { acts: Acts; tokens: Uint32Array } {
    if (!this.last) {
      throw new Error(`Cannot compute the ${what}: run forward (without a cache) first`);
    }
    return this.last;
  }

  /**
   * Records the token embedding from the table `name`, f32 or kept 16-bit, plus the position
   * embedding when there is one.
   */
  protected embed(name: string, o: EmbedCall): void {
    const table = this.packed.get(name);
    if (!table) {
      const encoder = this.#kernels.encoder;
      if (!encoder) throw new TypeError(`${this.modelType} has no token embedding kernels`);
      encoder.forward({
        out: o.out,
        tokens: o.tokens,
        wte: this.params.get(name)!,
        wpe: (o.wpe ?? o.zeros)!,
        posOffset: o.wpe ? o.posOffset : 0,
      });
      return;
    }
    const kernels = this.#base?.embedding;
    if (!kernels) {
      throw new RangeError(
        `Cannot embed tokens from "${name}" kept ${table.layout.format}: the model was built ` +
          `without the 16-bit embedding kernels (PackedBase.embedding)`,
      );
    }
    kernels.forward({ out: o.out, tokens: o.tokens, table, wpe: o.wpe, posOffset: o.posOffset });
  }

  /** Records the head's logits `x · Hᵀ`, H being the f32 or 16-bit weight `name`, `[V, C]`. */
  protected head(name: string, o: HeadCall): void {
    const packed = this.packed.get(name);
    if (packed) {
      this.#base!.qmatmul.forwardRaw(packed, { out: o.logits.buffer, inp: o.x.buffer }, {
        m: o.rows,
        ldOut: o.ldLogits,
      });
      return;
    }
    const w = this.params.get(name)!;
    this.#kernels.matmul.raw(
      { out: o.logits.buffer, a: o.x.buffer, b: w.buffer },
      { m: o.rows, n: w.shape[0], k: w.shape[1], transB: true, ldc: o.ldLogits },
    );
  }

  /** Records the head's backward to its input, `dx = dlogits · H` (H frozen or not). */
  protected headBackward(name: string, o: HeadBackwardCall): void {
    const packed = this.packed.get(name);
    if (packed) {
      this.#base!.qmatmul.backwardRaw(packed, { out: o.dx.buffer, inp: o.dlogits.buffer }, {
        m: o.rows,
        ldInp: o.ldLogits,
      });
      return;
    }
    const w = this.params.get(name)!;
    this.#kernels.matmul.raw(
      { out: o.dx.buffer, a: o.dlogits.buffer, b: w.buffer },
      { m: o.rows, n: w.shape[1], k: w.shape[0], lda: o.ldLogits },
    );
  }

  /**
   * Records `y = x·W (+ b) (+ adapters)`, whatever the layout the weight is stored in
   * (`conv1d` `[in, out]`, or `linear` `[out, in]`).
   */
  protected linear(module: string, o: LinearCall): void {
    const offsetC = (o.rowOffset ?? 0) * o.outF;
    const packed = this.packed.get(`${module}.weight`);
    if (packed) {
      this.#base!.qmatmul.forwardRaw(
        packed,
        { out: o.y.buffer, inp: o.x.buffer, bias: this.params.get(`${module}.bias`)?.buffer },
        { m: o.rows, offsetOut: offsetC },
      );
    } else {
      this.#kernels.matmul.raw(
        {
          out: o.y.buffer,
          a: o.x.buffer,
          b: this.params.get(`${module}.weight`)!.buffer,
          bias: this.params.get(`${module}.bias`)?.buffer,
        },
        { m: o.rows, n: o.outF, k: o.inF, transB: this.layout === "linear", offsetC },
      );
    }
    for (const { adapter, colOffset } of this.adapters.get(module) ?? []) {
      adapter.forward(
        { tensor: o.x, ld: o.inF },
        { tensor: o.y, ld: o.outF, offset: offsetC + colOffset },
        o.rows,
      );
    }
  }

  /**
   * Records `dx (+)= dy·Wᵀ (+ adapters)`; when training all weights, also `dW += xᵀ·dy` (in the
   * weight's layout) and `db += colsum(dy)`.
   */
  protected linearBackward(module: string, o: LinearBackwardCall): void {
    const stored = this.layout === "linear"; // [out, in]
    const packed = this.packed.get(`${module}.weight`);
    if (packed) {
      this.#base!.qmatmul.backwardRaw(packed, { out: o.dx.buffer, inp: o.dy.buffer }, {
        m: o.rows,
        accumulate: o.accumulate ?? false,
      });
    } else {
      this.#kernels.matmul.raw(
        { out: o.dx.buffer, a: o.dy.buffer, b: this.params.get(`${module}.weight`)!.buffer },
        { m: o.rows, n: o.inF, k: o.outF, transB: !stored, accumulate: o.accumulate ?? false },
      );
    }
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
    this.#kernels.matmul.raw(
      stored
        ? { out: dw.buffer, a: o.dy.buffer, b: o.x.buffer }
        : { out: dw.buffer, a: o.x.buffer, b: o.dy.buffer },
      stored
        ? { m: o.outF, n: o.inF, k: o.rows, transA: true, accumulate: true }
        : { m: o.inF, n: o.outF, k: o.rows, transA: true, accumulate: true },
    );
    const db = this.grads!.get(`${module}.bias`);
    if (db) this.#kernels.reduce.backward({ dbias: db, dout: o.dy });
  }

  /**
   * The gradient buffer of a norm weight: its real gradient when training all weights, else a
   * scratch tensor the kernel may write and nobody reads.
   */
  protected gradOrScratch(name: string): Tensor {
    const real = this.grads?.get(name);
    if (real) return real;
    let t = this.#scratch.get(name);
    if (!t) {
      const like = this.params.get(name)!;
      t = Tensor.empty(this.gpu, like.shape, { persistent: true, label: `scratch ${name}` });
      this.#scratch.set(name, t);
    }
    return t;
  }
}
