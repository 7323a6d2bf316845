/**
 * Micro-batches for training and evaluation, and the project's seeded shuffle.
 *
 * A micro-batch is `{ B, T, tokens, targets, mask }` (the training conventions): row `b` holds one
 * {@linkcode Row} (`rows` from data/examples.ts) padded to `T` with the end-of-text id;
 * `targets[t] = tokens[t + 1]` inside the row, the end-of-text id past its end; `mask` is the row's
 * target mask, 0 on padding.
 *
 * **Shuffle.** Epoch `e` visits the rows in the order of {@linkcode permutation}`(n, seed, e)`:
 * a Fisher-Yates shuffle (from the last index down, `j` uniform in `[0, i]`) driven by
 * xoshiro128** seeded from the 32-bit words of `(seed, epoch)` (murmur3's `fmix32`, absorbed then
 * squeezed, see {@linkcode Random}), with unbiased integers by rejection.
 * Each epoch's order depends only on `(seed, epoch)`, so the state `{ epoch, position, seed, step }`
 * is all it takes to resume: restoring it gives exactly the batches an uninterrupted run gives.
 *
 * **Steps.** An optimizer step is `gradAccum` consecutive micro-batches of the stream; a step may
 * span the end of an epoch, so every step but possibly the last has the same number of
 * micro-batches. Training ends after `steps` optimizer steps (cycling epochs) or after `epochs`
 * epochs.
 *
 * **Drop-last.** With `dropLast: true` (the default) the `n mod B` rows left at the end of an
 * epoch are skipped (they are seen in other epochs, in another order), and with `epochs`, a last
 * step with fewer than `gradAccum` micro-batches is not returned. With `dropLast: false` the last
 * micro-batch of an epoch is padded with empty rows (mask 0; `B` never changes, so GPU buffers sized
 * for `(B, T)` serve every batch) and the last step may be short.
 *
 * @module
 */

import type { Row } from "./examples.ts";
import { permutation } from "./random.ts";

export { permutation, Random } from "./random.ts";

/** A model input of token ids: `B` rows of `T` positions. */
export interface TokenInput {
  /** Absent or `tokens`. */
  kind?: "tokens";
  /** Rows. */
  B: number;
  /** Positions per row. */
  T: number;
  /** Input token ids, `[B, T]` row-major. */
  tokens: Uint32Array;
}

/** A model input of `B` examples of real values each (an image's pixels, say). */
export interface LabelledInput {
  /** Always `labelled`. */
  kind: "labelled";
  /** Examples. */
  B: number;
  /** The shape of one example, e.g. `[3, 224, 224]`. */
  inputShape: readonly number[];
  /** `B` examples, row-major, one after the other. */
  inputs: Float32Array;
}

/** One micro-batch of token rows: next-token targets and the mask of those that count. */
export interface TokenBatch extends TokenInput {
  /** The next token at each position (the end-of-text id where masked). */
  targets: Uint32Array;
  /** 1 where the target counts towards the loss, 0 on prompts, boundaries and padding. */
  mask: Float32Array;
}

/** One micro-batch of labelled examples: one class label and one mask value an example. */
export interface LabelledBatch extends LabelledInput {
  /** `B` class labels. */
  targets: Uint32Array;
  /** 1 for a real example, 0 for padding. */
  mask: Float32Array;
}

/**
 * One micro-batch, as the model and trainer take it: one target and one mask value a loss row
 * (`B * T` rows for tokens, `B` for labelled examples).
 */
export type MicroBatch = TokenBatch | LabelledBatch;

/** A labelled example: its values (of the batches' `inputShape`) and class. */
export interface LabelledExample {
  /** The values, row-major. */
  input: Float32Array;
  /** The class, from 0. */
  label: number;
}

/**
 * The loss rows of a micro-batch: `B * T` for tokens, `B` for labelled examples.
 *
 * @param batch A micro-batch.
 * @returns Its number of loss rows.
 */
export function lossRows(batch: MicroBatch): number {
  return batch.kind === "labelled" ? batch.B : batch.B * batch.T;
}

/**
 * Lays labelled examples out as one micro-batch; missing examples (fewer than `B`) are padding.
 *
 * @param examples At most `B` examples of `inputShape` values each.
 * @param options `B` and the shape of one example.
 * @returns The micro-batch.
 * @throws {RangeError} If there are more than `B` examples or one has the wrong size or label.
 */
export function labelledBatch(
  examples: readonly LabelledExample[],
  options: { B: number; inputShape: readonly number[] },
): LabelledBatch {
  const { B, inputShape } = options;
  const size = inputShape.reduce((a, b) => a * b, 1);
  if (examples.length > B) {
    throw new RangeError(`Cannot batch ${examples.length} examples with B = ${B}`);
  }
  const inputs = new Float32Array(B * size);
  const targets = new Uint32Array(B);
  const mask = new Float32Array(B);
  examples.forEach((e, b) => {
    if (e.input.length !== size) {
      throw new RangeError(
        `Cannot batch an example of ${e.input.length} values as shape [${inputShape}]`,
      );
    }
    if (!Number.isInteger(e.label) || e.label < 0) {
      throw new RangeError(`Cannot batch label ${e.label}: expected a class index from 0`);
    }
    inputs.set(e.input, b * size);
    targets[b] = e.label;
    mask[b] = 1;
  });
  return { kind: "labelled", B, inputShape: [...inputShape], inputs, targets, mask };
}

/** Where a training stream stands; restoring it continues the exact same sequence of batches. */
export interface BatchState {
  /** The current epoch, from 0. */
  epoch: number;
  /** Rows of this epoch's order already consumed. */
  position: number;
  /** The shuffle seed. */
  seed: number;
  /** Optimizer steps already returned. */
  step: number;
}

/**
 * Lays rows out as one micro-batch; missing rows (fewer than `B`) are padding.
 *
 * @param rows At most `B` rows, each at most `T` tokens.
 * @param options `B`, `T`, and `eosId`, the id padding and masked targets take.
 * @returns The micro-batch.
 * @throws {RangeError} If there are more than `B` rows or a row is longer than `T`.
 */
export function microBatch(
  rows: readonly Row[],
  options: { B: number; T: number; eosId: number },
): TokenBatch {
  const { B, T, eosId } = options;
  if (rows.length > B) throw new RangeError(`Cannot batch ${rows.length} rows with B = ${B}`);
  const tokens = new Uint32Array(B * T).fill(eosId);
  const targets = new Uint32Array(B * T).fill(eosId);
  const mask = new Float32Array(B * T);
  rows.forEach((row, b) => {
    const n = row.tokens.length;
    if (n > T) throw new RangeError(`Cannot batch a row of ${n} tokens with T = ${T}`);
    tokens.set(row.tokens, b * T);
    targets.set(row.tokens.subarray(1), b * T);
    for (let t = 0; t < n; t++) mask[b * T + t] = row.mask[t];
  });
  return { B, T, tokens, targets, mask };
}

/** The micro-batch type of an item type: token rows give token batches. */
export type BatchOf<I> = I extends LabelledExample ? LabelledBatch : TokenBatch;

/** Where an item is drawn: its epoch and its index in the stream's rows. */
export interface TransformAt {
  /** The epoch, from 0. */
  epoch: number;
  /** The item's index in the rows given to the stream. */
  index: number;
}

/** Options of {@linkcode TrainBatches}. */
export interface TrainBatchesOptions {
  /** Rows (or examples) per micro-batch. */
  B: number;
  /** Token rows: positions per row. */
  T?: number;
  /** Token rows: the end-of-text id, for padding and masked targets. */
  eosId?: number;
  /** Labelled examples: the shape of one example. */
  inputShape?: readonly number[];
  /** The shuffle seed (ignored when `state` is given: the state carries its seed). */
  seed: number;
  /** Micro-batches per optimizer step (default 1). */
  gradAccum?: number;
  /** Epochs to run; give this or `steps`. */
  epochs?: number;
  /** Optimizer steps to run, cycling through epochs; give this or `epochs`. */
  steps?: number;
  /** Skip an epoch's last partial micro-batch and a last short step (default true). */
  dropLast?: boolean;
  /** Visit rows in order instead of shuffling (default true: shuffle). */
  shuffle?: boolean;
  /** Resume from this state. */
  state?: BatchState;
  /**
   * Makes the item a micro-batch holds from the stored one, given the epoch and the item's index
   * in `rows` (a training augmentation seeded by them stays resumable); it takes and returns the
   * stream's item type. Absent: the item as is.
   */
  transform?: (item: never, at: TransformAt) => unknown;
}

/**
 * The training stream: shuffled micro-batches grouped into optimizer steps.
 *
 * @example Two epochs, two micro-batches per step, resumable
 * ```ts
 * import { TrainBatches } from "./batches.ts";
 * import type { Row } from "./examples.ts";
 * declare const rows: Row[]; // from buildRows in data/examples.ts
 * const batches = new TrainBatches(rows, { B: 4, T: 64, eosId: 299, seed: 1, epochs: 2, gradAccum: 2 });
 * for (let step = batches.nextStep(); step; step = batches.nextStep()) {
 *   // train on step (an array of micro-batches); save batches.state() with the checkpoint
 * }
 * ```
 */
export class TrainBatches<I extends Row | LabelledExample = Row> {
  /** The number of optimizer steps the whole run takes. */
  readonly totalSteps: number;
  /** Micro-batches per epoch. */
  readonly microBatchesPerEpoch: number;
  readonly #rows: readonly I[];
  readonly #B: number;
  readonly #collate: (items: I[]) => BatchOf<I>;
  readonly #gradAccum: number;
  readonly #dropLast: boolean;
  readonly #shuffle: boolean;
  readonly #epochs?: number;
  readonly #transform?: (item: I, at: TransformAt) => I;
  #state: BatchState;
  #order?: { epoch: number; order: Uint32Array };

  /**
   * Makes a training stream over `rows`.
   *
   * @param rows The training rows (from data/examples.ts, with `T` and `eosId`), or labelled
   * examples (with `inputShape`).
   * @param options Sizes, seed, length of the run, and an optional state to resume.
   * @throws {RangeError} On empty data, sizes that are not positive integers, both or neither of
   * `epochs` and `steps`, or a state that does not fit the data.
   */
  constructor(rows: readonly I[], options: TrainBatchesOptions) {
    const { B, T, eosId, inputShape } = options;
    const gradAccum = options.gradAccum ?? 1;
    const sizes: [string, number | undefined][] = [["B", B], ["gradAccum", gradAccum]];
    if (!inputShape) sizes.push(["T", T]);
    for (const [name, value] of sizes) {
      if (!Number.isInteger(value) || value! < 1) {
        throw new RangeError(`Invalid ${name} ${value}: expected a positive integer`);
      }
    }
    if ((options.epochs === undefined) === (options.steps === undefined)) {
      throw new RangeError("Invalid batch options: give exactly one of epochs and steps");
    }
    const length = options.epochs ?? options.steps!;
    if (!Number.isInteger(length) || length < 1) {
      throw new RangeError(
        `Invalid ${
          options.epochs === undefined ? "steps" : "epochs"
        } ${length}: expected a positive integer`,
      );
    }
    const dropLast = options.dropLast ?? true;
    const perEpoch = dropLast ? Math.floor(rows.length / B) : Math.ceil(rows.length / B);
    if (perEpoch === 0) {
      throw new RangeError(
        `Cannot make batches: ${rows.length} rows make no full micro-batch of B = ${B}`,
      );
    }
    if (inputShape) {
      this.#collate = (items) =>
        labelledBatch(items as LabelledExample[], { B, inputShape }) as BatchOf<I>;
    } else {
      if (!Number.isInteger(eosId) || eosId! < 0) {
        throw new RangeError(`Invalid eosId ${eosId}: token rows need the end-of-text id`);
      }
      for (const row of rows as readonly Row[]) {
        if (row.tokens.length > T!) {
          throw new RangeError(`Cannot batch a row of ${row.tokens.length} tokens with T = ${T}`);
        }
      }
      this.#collate = (items) =>
        microBatch(items as Row[], { B, T: T!, eosId: eosId! }) as BatchOf<I>;
    }
    this.#rows = rows;
    this.#B = B;
    this.#gradAccum = gradAccum;
    this.#dropLast = dropLast;
    this.#shuffle = options.shuffle ?? true;
    this.#epochs = options.epochs;
    this.#transform = options.transform as ((item: I, at: TransformAt) => I) | undefined;
    this.microBatchesPerEpoch = perEpoch;
    if (options.epochs !== undefined) {
      const micro = options.epochs * perEpoch;
      this.totalSteps = dropLast ? Math.floor(micro / gradAccum) : Math.ceil(micro / gradAccum);
    } else {
      this.totalSteps = options.steps!;
    }
    this.#state = { epoch: 0, position: 0, seed: options.seed, step: 0 };
    if (options.state) this.restore(options.state);
  }

  /**
   * The stream's position.
   *
   * @returns A copy of the current state, to save with a checkpoint.
   */
  state(): BatchState {
    return { ...this.#state };
  }

  /**
   * Continues from a saved state.
   *
   * @param state A state from {@linkcode TrainBatches.state} on the same rows and options.
   * @throws {RangeError} If the state cannot belong to this data.
   */
  restore(state: BatchState): void {
    const { epoch, position, seed, step } = state;
    const ok = Number.isSafeInteger(seed) && Number.isInteger(epoch) && epoch >= 0 &&
      Number.isInteger(step) && step >= 0 && step <= this.totalSteps &&
      Number.isInteger(position) && position >= 0 && position < this.#rows.length;
    if (!ok) {
      throw new RangeError(
        `Cannot resume batches from ${
          JSON.stringify(state)
        }: it does not fit ${this.#rows.length} rows and ${this.totalSteps} steps`,
      );
    }
    this.#state = { epoch, position, seed, step };
  }

  /**
   * The micro-batches of the next optimizer step.
   *
   * @returns `gradAccum` micro-batches (fewer only for a last step without drop-last), or `null`
   * when the run is over.
   */
  nextStep(): BatchOf<I>[] | null {
    if (this.#state.step >= this.totalSteps) return null;
    const out: BatchOf<I>[] = [];
    while (out.length < this.#gradAccum && !this.#epochsDone()) out.push(this.#nextMicroBatch());
    if (out.length === 0) return null;
    this.#state.step++;
    return out;
  }

  #epochsDone(): boolean {
    return this.#epochs !== undefined && this.#state.epoch >= this.#epochs;
  }

  #nextMicroBatch(): BatchOf<I> {
    const n = this.#rows.length;
    const { epoch, position, seed } = this.#state;
    if (this.#order?.epoch !== epoch) {
      const order = this.#shuffle
        ? permutation(n, seed, epoch)
        : Uint32Array.from({ length: n }, (_, i) => i);
      this.#order = { epoch, order };
    }
    const end = Math.min(position + this.#B, n);
    const rows: I[] = [];
    for (let i = position; i < end; i++) {
      const index = this.#order.order[i];
      const row = this.#rows[index];
      rows.push(this.#transform ? this.#transform(row, { epoch, index }) : row);
    }
    const batch = this.#collate(rows);
    const remaining = n - end;
    if (remaining === 0 || (this.#dropLast && remaining < this.#B)) {
      this.#state.epoch++;
      this.#state.position = 0;
    } else {
      this.#state.position = end;
    }
    return batch;
  }
}

/**
 * Validation or test micro-batches: every row once, in order, the last micro-batch padded.
 *
 * @param rows The rows.
 * @param options `B`, `T`, `eosId` as for {@linkcode microBatch}.
 * @returns Micro-batches, `ceil(rows / B)` of them.
 */
export function* evalBatches(
  rows: readonly Row[],
  options: { B: number; T: number; eosId: number },
): Generator<TokenBatch> {
  for (let i = 0; i < rows.length; i += options.B) {
    yield microBatch(rows.slice(i, i + options.B), options);
  }
}

/**
 * Validation or test micro-batches of labelled examples: each once, in order, the last padded.
 *
 * @param examples The examples.
 * @param options `B` and the shape of one example, as for {@linkcode labelledBatch}.
 * @returns Micro-batches, `ceil(examples / B)` of them.
 */
export function* evalLabelledBatches(
  examples: readonly LabelledExample[],
  options: { B: number; inputShape: readonly number[] },
): Generator<LabelledBatch> {
  for (let i = 0; i < examples.length; i += options.B) {
    yield labelledBatch(examples.slice(i, i + options.B), options);
  }
}
