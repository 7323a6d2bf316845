/**
 * The model contract: what every model family offers the layers above `models/` (adapters,
 * training, evaluation, decoding, pipelines), so that none of them names a family.
 *
 * A family is resolved once, by the `model_type` of its `config.json` (see `registry.ts`); from
 * then on everything speaks to a {@link Model}:
 *
 * - its **adaptable sites** ({@link LinearSite}): the linear layers by Hugging Face module name,
 *   and named column slices of fused projections (GPT-2's `h.0.attn.c_attn.q`), which attach,
 *   merge, PEFT export and accounting read instead of lists of their own;
 * - each linear's weight and its **layout** ({@link WeightLayout}), for merging;
 * - **forward, loss and backward** over a batch of tokens (next-token loss) or of labelled inputs
 *   (classification loss), with adapters hooked into any linear;
 * - its own **decoding cache** ({@link DecodingCache}) for text families, so generation and beam
 *   search never know its layout;
 * - its **weights and gradients** by name for full fine-tuning, and a Hugging Face folder writer.
 *
 * @module
 */

import type { LabelledInput, TokenInput } from "../data/batches.ts";
import type { Gpu } from "../kernels/gpu.ts";
import type { Matmul } from "../kernels/matmul.ts";
import type { MatrixView, Tensor } from "../kernels/tensor.ts";
import type { PackedTensor } from "../kernels/packed_tensor.ts";
import { oneLine } from "../formats/one_line.ts";

export type { LabelledInput, TokenInput };

/** How a linear layer stores its weight: `conv1d` is `[in, out]` (GPT-2), `linear` `[out, in]`. */
export type WeightLayout = "conv1d" | "linear";

/** What a model's head computes: next-token logits, or one row of class logits an input. */
export type ModelTask = "causal-lm" | "classification";

/** An adaptable place in a model: a linear module, or a named column slice of one. */
export interface LinearSite {
  /** Hugging Face module name without the model's prefix, e.g. `h.3.attn.c_attn.q`. */
  name: string;
  /** The linear layer it lives in, e.g. `h.3.attn.c_attn`. */
  linear: string;
  /** First output feature of the linear the site covers (0 unless a slice). */
  colOffset: number;
  /** Input features of the linear. */
  inFeatures: number;
  /** Output features the site covers. */
  outFeatures: number;
}

/** A linear layer's weight as the model holds it. */
export interface LinearWeight {
  /** The f32 weight on the GPU, in the family's layout; null when the weight is {@link packed}. */
  weight: Tensor | null;
  /** The weight kept packed (16-bit, int8 or nf4, `[out, in]`), when the base is not f32. */
  packed?: PackedTensor;
  /**
   * Records unpacking a {@link packed} weight into a new f32 tensor in the family's layout (the
   * caller disposes it); absent when the weight is f32.
   */
  dequantize?: () => Tensor;
  /** `[in, out]` (`conv1d`) or `[out, in]` (`linear`). */
  layout: WeightLayout;
  /** Input features. */
  inFeatures: number;
  /** Output features (all of them, for a fused projection). */
  outFeatures: number;
}

/** An adapter on a linear layer, writing into a slice of its output features. */
export interface AttachedAdapter {
  /** The adapter. */
  adapter: LinearAdapter;
  /** First output feature of the linear the adapter adds to. */
  colOffset: number;
}

/** The targets of a loss over the rows of the last forward. */
export interface LossTargets {
  /** One target a loss row: next-token ids (`B * T`) or class labels (`B`). */
  targets: Uint32Array;
  /** One weight a loss row in the total loss; default `1 / rows` each (a mean). */
  weights?: Float32Array;
  /** Label smoothing in [0, 1). */
  labelSmoothing?: number;
}

/** What a forward leaves for the loss, the evaluator and the decoder. */
export interface Activations {
  /** Logits, one row a loss row (`B * T` for tokens, `B` for labelled inputs), padded rows. */
  readonly logits: Tensor;
  /** Elements from one logits row to the next (at least {@link Model.outputs}). */
  readonly logitsStride: number;
  /** Per-row losses of the last {@link Model.loss}. */
  readonly losses: Tensor;
  /** Per-row loss weights of the last training loss. */
  readonly weights: Tensor;
}

/**
 * A text family's incremental-decoding cache: what earlier positions left for later ones (keys
 * and values, in whatever layout the family uses). Generation and beam search only allocate,
 * extend (through {@link Model.forward}) and copy it.
 */
export interface DecodingCache extends Disposable {
  /** Positions already in the cache. */
  readonly past: number;
  /** Positions it can hold. */
  readonly capacity: number;
  /** Records copying another cache of the same model's contents (its first `past` positions). */
  copyFrom(source: DecodingCache): void;
}

/**
 * A classifier's head: the linear layer over the pooled features that gives the class logits,
 * `<name>.weight` `[classes, inFeatures]` and `<name>.bias` `[classes]` in {@link Model.params}.
 */
export interface ClassifierHead {
  /** The head's module name, e.g. `classifier` (Hugging Face ViT) or `head` (timm). */
  readonly name: string;
  /** Features into the head. */
  readonly inFeatures: number;
  /** Class names by id; their count is the head's outputs. */
  readonly labels: readonly string[];
}

/** A head's gradients, when it trains ({@link Model.replaceHead} with `trainable`). */
export interface HeadGradients {
  /** `[classes, inFeatures]`. */
  weight: Tensor;
  /** `[classes]`. */
  bias: Tensor;
}

/**
 * A text family's batched decoding cache: `rows` independent sequences, each with its own
 * length, for decoding many prompts (and beams) with one forward a step ({@link Model.decode}).
 * A row is filled by a forward of its prompt through {@link row}; rows are copied on the GPU,
 * without a readback.
 */
export interface BatchDecodingCache extends Disposable {
  /** Sequences it holds. */
  readonly rows: number;
  /** Positions each row can hold. */
  readonly capacity: number;
  /** Positions cached in each row. */
  readonly lengths: readonly number[];
  /**
   * Row `i` as a single-sequence cache: a {@link Model.forward} with it (`B = 1`) extends that
   * row, as with a cache of its own (prefilling a prompt). The view shares the batch's memory;
   * disposing it frees nothing.
   *
   * @throws {RangeError} If `i` is not a row.
   */
  row(i: number): DecodingCache;
  /**
   * Records, for every pair, row `to` := row `from` (its positions and length). No row may be
   * both a source and a target, nor a target twice.
   *
   * @throws {RangeError} On rows out of range, or a row both read and written.
   */
  copyRows(pairs: readonly { from: number; to: number }[]): void;
  /** Empties the given rows (all by default), for new prompts. */
  reset(rows?: readonly number[]): void;
}

/** What a model is, in numbers a person reads (the `load` stage prints it). */
export interface ModelSummary {
  /** The family's `model_type`, e.g. `gpt2`. */
  modelType: string;
  /** Transformer blocks. */
  layers: number;
  /** Hidden width. */
  width: number;
  /** Attention heads. */
  heads: number;
  /** Longest input sequence, in positions. */
  positions: number;
  /** Logits a row: the vocabulary, or the number of classes. */
  outputs: number;
  /** Number of weights. */
  parameters: number;
}

/** What accounting and adapter files need of a model, without its weights. */
export interface ModelShape {
  /** `fnv1a64` of the family's canonical config JSON, hex: adapter files must match it. */
  readonly configHash: string;
  /** Every adaptable site, in model order. */
  readonly sites: readonly LinearSite[];
}

/** How a family's modules are named in a PEFT adapter folder. */
export interface PeftNaming {
  /** Prefix of a module's name under PEFT's `base_model.model.`, e.g. `transformer.`. */
  modulePrefix: string;
  /** PEFT's `task_type`, e.g. `CAUSAL_LM`. */
  taskType: string;
}

/** A model's bytes on the GPU by kind ({@link Model.memory}). */
export interface ModelMemory {
  /** Every weight: f32 tensors and packed weights. */
  weights: number;
  /** Weight gradients (full fine-tuning). */
  gradients: number;
  /** Activation arenas allocated so far. */
  activations: number;
  /**
   * The weights' bytes by precision: `f32`, and `f16`, `bf16`, `int8` or `nf4` for linear
   * weights kept packed (their absmaxes included). Absent where a model does not report it.
   */
  weightsByPrecision?: Record<string, number>;
}

/** Options of loading or initialising a model. */
export interface ModelOptions {
  /** Give every weight a gradient buffer (full fine-tuning). Default false: weights are frozen. */
  trainAll?: boolean;
  /**
   * How the weights of adaptable linear layers are kept on the GPU: `f32` (default), `as-stored`
   * (f16/bf16 checkpoints stay 16-bit), `int8` or `nf4` (quantized on the GPU at load). With any
   * but `f32`, the token embedding and the head stay 16-bit where the checkpoint stores them so;
   * norms, biases and position embeddings stay f32. Anything but f32 is frozen: `trainAll`
   * refuses it.
   */
  baseFormat?: BaseWeightFormat;
  /** int8/nf4: values a quantization block, a power of two from 32 to 4096; default 64. */
  blockSize?: number;
  /** int8/nf4: store each block's absmax in a byte (QLoRA); default true for nf4, false for int8. */
  doubleQuant?: boolean;
}

/** The precision of a model's frozen linear weights ({@link ModelOptions.baseFormat}). */
export type BaseWeightFormat = "f32" | "as-stored" | "int8" | "nf4";

/**
 * A model on the GPU: the one type everything above `models/` speaks to.
 *
 * A training step, as the trainer records it:
 *
 *     model.forward(batch); model.loss({ targets, weights }, { backward: true }); model.backward();
 */
export interface Model extends ModelShape, Disposable {
  /** The family's `model_type`, e.g. `gpt2`. */
  readonly modelType: string;
  /** How PEFT names this model's modules. */
  readonly peft: PeftNaming;
  /** The device. */
  readonly gpu: Gpu;
  /** The device's matrix multiply, shared with the adapters. */
  readonly matmul: Matmul;
  /** What the head computes. */
  readonly task: ModelTask;
  /** Logits a row: vocabulary size or number of classes. */
  readonly outputs: number;
  /** Longest token sequence a forward (with its cache) may cover. */
  readonly maxPositions: number;
  /** Weights by name (the Hugging Face name without the model's prefix). */
  readonly params: Map<string, Tensor>;
  /** Gradients by the same names, present only when training all weights. */
  readonly grads: Map<string, Tensor> | null;
  /**
   * Weights kept packed outside {@link params}, by weight name: the linear weights of a packed
   * base, and a token embedding or head kept 16-bit. Absent or empty when every weight is f32.
   */
  readonly packed?: ReadonlyMap<string, PackedTensor>;
  /**
   * Records unpacking a weight of {@link packed} into a new f32 tensor in the model's shape of
   * it (the caller disposes it).
   */
  unpackWeight?(name: string): Tensor;
  /** Adapters by linear layer name, applied in order. */
  readonly adapters: Map<string, AttachedAdapter[]>;
  /** The end-of-sequence token id from the config, when it has one. */
  readonly eosTokenId?: number;
  /** Classification families: the head over the pooled features, and its classes. */
  readonly classifierHead?: ClassifierHead;
  /**
   * Classification families: replaces the head by one for `labels` holding `values` (weight
   * `[labels, classifierHead.inFeatures]` row-major, bias `[labels]`); with `trainable`, the backward
   * accumulates its gradients, returned (zeroed by {@link zeroGrads}). Arenas sized for the old
   * classes are freed.
   *
   * @throws {RangeError} On values of the wrong size or no labels.
   */
  replaceHead?(
    labels: readonly string[],
    values: { weight: Float32Array; bias: Float32Array },
    options?: { trainable?: boolean },
  ): HeadGradients | null;

  /** Sizes for a person. */
  summary(): ModelSummary;
  /** A linear layer's weight and layout, or undefined when `linear` is none. */
  linearWeight(linear: string): LinearWeight | undefined;
  /**
   * Adds an adapter to a linear layer; its output lands in features `colOffset ..
   * colOffset + adapter.outFeatures`.
   *
   * @throws {RangeError} If there is no such linear or the adapter does not fit it.
   */
  attach(linear: string, adapter: LinearAdapter, options?: { colOffset?: number }): void;
  /** Removes every adapter. */
  detachAll(): void;
  /**
   * Records the forward up to the logits. With a cache (text families, `B = 1`), the tokens are
   * the next positions of one sequence and join the cache.
   */
  forward(input: TokenInput | LabelledInput, cache?: DecodingCache): Activations;
  /**
   * Records the per-row losses of the last forward into `losses`; with `backward`, also turns the
   * logits into the gradient of the weighted total loss, for {@link backward}.
   */
  loss(targets: LossTargets, options?: { backward?: boolean }): Tensor;
  /** Records the backward of the last forward: weight and adapter gradients accumulate. */
  backward(): void;
  /** Records zeroing every weight gradient (nothing when the weights are frozen). */
  zeroGrads(): void;
  /**
   * A decoding cache for up to `capacity` positions.
   *
   * @throws {TypeError} If the model does not generate text.
   */
  newCache(capacity: number): DecodingCache;
  /**
   * A batched decoding cache of `rows` sequences of up to `capacity` positions each (text
   * families that decode in batches).
   *
   * @throws {RangeError} If `rows` or `capacity` is not a positive integer.
   */
  newBatchCache?(rows: number, capacity: number): BatchDecodingCache;
  /**
   * Records one decoding step of many sequences at once: token `b` is the next token of cache
   * row `rows[b]` (row b by default), at that row's own position; its keys and values join
   * that row, and its attention reads that row only. Logits row b is the row's next-token
   * logits. Every row must already hold at least the prompt's first position or be empty.
   *
   * @param tokens One token a decoded row.
   * @param cache The batched cache.
   * @param options `rows`: the cache row of each token, distinct.
   * @throws {RangeError} On a token outside the vocabulary, a row out of range, repeated or
   * full.
   */
  decode?(
    tokens: ArrayLike<number>,
    cache: BatchDecodingCache,
    options?: { rows?: readonly number[] },
  ): Activations;
  /** Bytes of weights, gradients and activations on the GPU. */
  memory(): ModelMemory;
  /**
   * Maps the tensor names of a checkpoint of this family to the model's weight names, so a merged
   * model is written in the checkpoint's own naming; `null` marks tensors that are not weights
   * (buffers), which are dropped.
   */
  weightNames(checkpointNames: readonly string[]): Map<string, string | null>;
  /**
   * Writes the model as a Hugging Face folder (`config.json`, `model.safetensors`, the tokenizer
   * files copied from `tokenizerFrom`).
   */
  save(outFolder: string, options?: { tokenizerFrom?: string }): Promise<void>;
}

/**
 * A model family: parses its config, names its weights and sites, and builds models. Registered
 * in `registry.ts` by `model_type`.
 */
export interface ModelFamily<Config = unknown> {
  /** The `model_type` of its Hugging Face configs, e.g. `gpt2`. */
  readonly modelType: string;
  /** Hugging Face `architectures` it loads, e.g. `GPT2LMHeadModel`. */
  readonly architectures: readonly string[];
  /**
   * Validates a parsed `config.json`.
   *
   * @throws {ModelConfigError} Naming the file and key.
   */
  parseConfig(json: unknown, source: string): Config;
  /** Hash of the architecture, and the adaptable sites, from a config alone. */
  shape(config: Config): ModelShape;
  /** Loads a Hugging Face folder whose config was parsed. */
  load(gpu: Gpu, folder: string, config: Config, options?: ModelOptions): Promise<Model>;
  /** A model of this config with freshly initialised weights (the family's usual init). */
  init(gpu: Gpu, config: Config, options?: ModelOptions & { seed?: number }): Promise<Model>;
}

/** A `config.json` that cannot be used, naming the file and the key. */
export class ModelConfigError extends Error {
  /** The file. */
  readonly file: string;
  /** The offending key, when one is. */
  readonly key?: string;

  /**
   * Makes the error.
   *
   * @param message The message; control characters (from the file) are escaped to keep it one line.
   * @param options The file, the key, and the cause.
   */
  constructor(message: string, options: { file: string; key?: string; cause?: unknown }) {
    super(oneLine(message), options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "ModelConfigError";
    this.file = options.file;
    if (options.key !== undefined) this.key = options.key;
  }
}

/** A checkpoint whose tensors do not fit its config, naming the file and the tensor. */
export class ModelWeightsError extends Error {
  /** The file. */
  readonly file: string;
  /** The offending tensor, when one is. */
  readonly tensor?: string;

  /**
   * Makes the error.
   *
   * @param message The message; control characters (from the file) are escaped to keep it one line.
   * @param options The file and the tensor.
   */
  constructor(message: string, options: { file: string; tensor?: string }) {
    super(oneLine(message));
    this.name = "ModelWeightsError";
    this.file = options.file;
    if (options.tensor !== undefined) this.tensor = options.tensor;
  }
}

/** What a model calls on an adapted linear layer; it knows nothing of LoRA or NOLA. */
export interface LinearAdapter {
  /** The adapted module, e.g. `h.3.attn.c_attn.q`. */
  readonly name: string;
  /** Columns of the input x (the linear's input features). */
  readonly inFeatures: number;
  /** Output columns written, from the attachment's `colOffset`. */
  readonly outFeatures: number;
  /** Rank of A [r, in] and B [out, r]. */
  readonly r: number;
  /** `s = lora_alpha / r`. */
  readonly scale: number;
  /** Most rows one forward may cover, when the adapter has such a limit (its scratch space). */
  readonly maxRows?: number;
  /** y[:, colOffset : colOffset+out] += s * (x Aᵀ) Bᵀ for `rows` rows; saves x Aᵀ for the backward. */
  forward(x: MatrixView, y: MatrixView, rows: number): void;
  /** dB += s dyᵀ (x Aᵀ), dA += (s dy B)ᵀ x, dx += (s dy B) A, for the same rows. */
  backward(x: MatrixView, dy: MatrixView, dx: MatrixView | null, rows: number): void;
}

/**
 * What every family's `attach` does: checks that an adapter fits a linear layer's features at
 * its column offset, then appends it to the layer's adapters (applied in order).
 *
 * @param model The adapters map and the linear-weight lookup of a model.
 * @param linear The linear layer, e.g. `h.0.attn.c_attn`.
 * @param adapter The adapter.
 * @param options `colOffset`: first output feature the adapter writes (default 0).
 * @throws {RangeError} If there is no such linear, or the adapter does not fit it.
 */
export function attachToLinear(
  model: Pick<Model, "adapters" | "linearWeight">,
  linear: string,
  adapter: LinearAdapter,
  options: { colOffset?: number } = {},
): void {
  const shape = model.linearWeight(linear);
  if (!shape) throw new RangeError(`Cannot attach adapter to "${linear}": module not found`);
  const colOffset = options.colOffset ?? 0;
  if (
    adapter.inFeatures !== shape.inFeatures ||
    colOffset < 0 || colOffset + adapter.outFeatures > shape.outFeatures
  ) {
    throw new RangeError(
      `Cannot attach adapter "${adapter.name}" to "${linear}": it maps ${adapter.inFeatures} -> ` +
        `${adapter.outFeatures} at column ${colOffset}, the module ${shape.inFeatures} -> ` +
        `${shape.outFeatures}`,
    );
  }
  const list = model.adapters.get(linear) ?? [];
  list.push({ adapter, colOffset });
  model.adapters.set(linear, list);
}
