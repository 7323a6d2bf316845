/**
 * Host wrapper of `lossacc.wgsl`: running totals of the weighted loss of micro-batches, kept on
 * the GPU so a training loop reads them every N steps instead of after every step.
 *
 * The totals are exact 32.32 fixed-point sums (signed, |total| < 2^31, resolution 2^-32 per
 * micro-batch added) of each micro-batch's f32 tree-reduced `sum_t w_t * loss_t` and `sum_t w_t`:
 * unlike an f32 running sum they do not drift over thousands of steps, and unlike a Kahan sum no
 * shader compiler can reassociate the compensation away. With the trainer's weights
 * (`mask / total mask of the optimizer step`) `loss / weight` is the mean loss per completion token
 * over the steps since the last reset.
 *
 * @module
 */

import { bindView, checkDistinct, checkSameSize } from "./dispatch.ts";
import type { Gpu, Kernel } from "./gpu.ts";
import { type BufferView, Tensor } from "./tensor.ts";
import { UniformStruct } from "./uniform_struct.ts";
import code from "./lossacc.wgsl" with { type: "text" };

const WG = 256;
const SIZES = new UniformStruct(
  "Sizes",
  { n: "u32", shift_losses: "u32", shift_weights: "u32", has_weights: "u32" },
  { wgsl: code },
);
/** u32 words of the accumulator. */
export const LOSSACC_WORDS = 8;

/** Inputs of {@link LossaccKernels.forward}. */
export interface LossaccInputs {
  /** Per-token losses of one micro-batch, e.g. `acts.losses` after `model.loss`; f32 [n]. */
  losses: BufferView;
  /** Per-token weights, f32 [n] (e.g. `acts.weights`); every weight is 1 when absent. */
  weights?: BufferView;
}

/** The totals since the last reset, as read back. */
export interface LossTotals {
  /** `sum w_t * loss_t` over the tokens of every finite micro-batch. */
  loss: number;
  /** `sum w_t` over the same tokens. */
  weight: number;
  /** Tokens with a nonzero weight, over every micro-batch. */
  tokens: number;
  /** Micro-batches added. */
  microBatches: number;
  /** Micro-batches whose sums were NaN, infinite or too large, left out of `loss` and `weight`. */
  nonFinite: number;
  /** `loss / weight`; NaN when any micro-batch was non-finite or nothing was weighted. */
  mean: number;
}

/** Decodes the accumulator's words (see `lossacc.wgsl`). */
export function decodeLossTotals(words: Uint32Array): LossTotals {
  const fixed = (at: number) => (words[at + 1] | 0) + words[at] / 2 ** 32;
  const loss = fixed(0);
  const weight = fixed(2);
  const nonFinite = words[6];
  return {
    loss,
    weight,
    tokens: words[4],
    microBatches: words[5],
    nonFinite,
    mean: nonFinite > 0 || weight === 0 ? NaN : loss / weight,
  };
}

/** The compiled accumulation kernel of one device. Methods only record work. */
export class LossaccKernels {
  private constructor(readonly gpu: Gpu, readonly kernel: Kernel) {}

  /** Compiles the kernel (cached by the device). */
  static async load(gpu: Gpu): Promise<LossaccKernels> {
    const kernel = await gpu.kernel({
      label: "lossacc_forward",
      code,
      entry: "lossacc_forward",
      bindings: ["storage", "read", "read", "uniform"],
      constants: { WG },
    });
    return new LossaccKernels(gpu, kernel);
  }

  /**
   * Records adding one micro-batch's weighted loss into `acc`.
   *
   * @param acc The accumulator, {@link LOSSACC_WORDS} u32 words (zeroed to reset).
   * @param inputs Losses and optional weights.
   * @throws {RangeError} On a short accumulator or losses and weights of different lengths.
   */
  forward(acc: Tensor, inputs: LossaccInputs): void {
    const { losses, weights } = inputs;
    if (acc.size < LOSSACC_WORDS) {
      throw new RangeError(`Loss accumulator has ${acc.size} words, needs ${LOSSACC_WORDS}`);
    }
    const label = "lossacc_forward";
    const n = checkSameSize(label, weights ? { losses, weights } : { losses });
    checkDistinct(label, { acc }, { losses, weights });
    const l = bindView(this.gpu, losses);
    const w = weights ? bindView(this.gpu, weights) : l;
    this.gpu.dispatch(this.kernel, [acc.buffer, l.binding, w.binding], {
      uniforms: SIZES.pack({
        n,
        shift_losses: l.shift,
        shift_weights: w.shift,
        has_weights: !!weights,
      }),
      workgroups: [1],
    });
  }
}

/**
 * A loss accumulator that owns its GPU words: `add` after each micro-batch's `model.loss`,
 * `read` every N steps, `reset` to start a new window.
 *
 * @example Two micro-batches, read once
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { Tensor } from "./kernels/tensor.ts";
 * import { LossAccumulator } from "./kernels/lossacc.ts";
 * using gpu = await Gpu.acquire();
 * using acc = await LossAccumulator.create(gpu);
 * using losses = Tensor.from(gpu, new Float32Array([2, 4]), [2]);
 * using weights = Tensor.from(gpu, new Float32Array([0.25, 0.25]), [2]);
 * acc.add(losses, { weights });
 * acc.add(losses, { weights });
 * console.log((await acc.read()).mean); // 3
 * ```
 */
export class LossAccumulator implements Disposable {
  private constructor(readonly kernels: LossaccKernels, readonly words: Tensor<"u32">) {}

  /** Compiles the kernel and allocates zeroed totals. */
  static async create(gpu: Gpu): Promise<LossAccumulator> {
    const kernels = await LossaccKernels.load(gpu);
    const words = Tensor.empty(gpu, [LOSSACC_WORDS], {
      dtype: "u32",
      persistent: true,
      label: "loss accumulator",
    });
    gpu.clear(words.buffer);
    return new LossAccumulator(kernels, words);
  }

  /** Records adding one micro-batch's losses (weighted by `options.weights`, else by 1). */
  add(losses: BufferView, options: { weights?: BufferView } = {}): void {
    this.kernels.forward(this.words, { losses, weights: options.weights });
  }

  /** Records zeroing the totals. */
  reset(): void {
    this.kernels.gpu.clear(this.words.buffer);
  }

  /** Reads the totals back (submits pending work and waits for it). */
  async read(): Promise<LossTotals> {
    return decodeLossTotals(await this.words.read());
  }

  [Symbol.dispose](): void {
    this.words[Symbol.dispose]();
  }
}
