/**
 * Host wrapper of `crossentropy.wgsl`: the fused softmax + cross-entropy loss of a language
 * model, with per-token weights (masking) and label smoothing. The backward writes the logits
 * gradient over the logits (llm.c style), so no second `[N, V]` buffer is needed. Logits larger
 * than one storage binding are processed one window of rows at a time.
 *
 * @module
 */

import { grid, windows } from "./dispatch.ts";
import type { Gpu, Kernel } from "./gpu.ts";
import type { Tensor } from "./tensor.ts";
import { UniformStruct } from "./uniform_struct.ts";
import code from "./crossentropy.wgsl" with { type: "text" };

/** Threads of the workgroup that handles one row (a power of two). */
const WG = 256;
const SIZES = new UniformStruct("Sizes", {
  rows: "u32",
  vocab: "u32",
  shift_logits: "u32",
  shift_losses: "u32",
  shift_targets: "u32",
  shift_weights: "u32",
  eps: "f32",
  stride: "u32",
}, { wgsl: code });

/** Options of {@link CrossEntropyKernels.forward}. */
export interface CrossEntropyForwardOptions {
  /** Written: `[N]` f32, the unweighted loss of every row (NaN where the target is >= V). */
  losses: Tensor;
  /**
   * `[..., S]` f32 with N rows in all; the first `vocab` columns of each row are the vocabulary
   * (S, the row stride, may be padded past it).
   */
  logits: Tensor;
  /** `[N]` u32 target token ids. */
  targets: Tensor;
  /** Vocabulary size, at most the last dimension of `logits`; default that dimension. */
  vocab?: number;
  /** Label smoothing in [0, 1): `torch.nn.functional.cross_entropy(label_smoothing=eps)`. */
  eps?: number;
}

/** Options of {@link CrossEntropyKernels.backward}. */
export interface CrossEntropyBackwardOptions extends CrossEntropyForwardOptions {
  /**
   * `[N]` f32: row r enters the total loss as `weights[r] * loss_r` (0 masks it; the caller sets
   * `mask / count` for a mean over unmasked tokens).
   */
  weights: Tensor;
}

/**
 * The compiled cross-entropy kernels of one device. Methods only record work.
 *
 * @example Loss and gradient of one row
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { Tensor } from "./kernels/tensor.ts";
 * import { CrossEntropyKernels } from "./kernels/crossentropy.ts";
 * using gpu = await Gpu.acquire();
 * const ce = await CrossEntropyKernels.load(gpu);
 * using logits = Tensor.from(gpu, new Float32Array([1, 2, 3]), [1, 3]);
 * using targets = Tensor.from(gpu, new Uint32Array([0]), [1]);
 * using weights = Tensor.from(gpu, new Float32Array([1]), [1]);
 * using losses = Tensor.empty(gpu, [1]);
 * ce.backward({ losses, logits, targets, weights, eps: 0.1 });
 * console.log(await losses.read()); // about [2.3076]
 * console.log(await logits.read()); // softmax - smoothed one-hot
 * ```
 */
export class CrossEntropyKernels {
  private constructor(
    readonly gpu: Gpu,
    readonly forwardKernel: Kernel,
    readonly backwardKernel: Kernel,
  ) {}

  /** Compiles the kernels (cached by the device). */
  static async load(gpu: Gpu): Promise<CrossEntropyKernels> {
    const load = (entry: string) =>
      gpu.kernel({
        label: entry,
        code,
        entry,
        bindings: ["storage", "storage", "read", "read", "uniform"],
        constants: { WG },
      });
    const [forward, backward] = await Promise.all([
      load("crossentropy_forward"),
      load("crossentropy_backward"),
    ]);
    return new CrossEntropyKernels(gpu, forward, backward);
  }

  /** Records the per-row losses only; the logits are left as they are (evaluation). */
  forward(options: CrossEntropyForwardOptions): void {
    this.#run(this.forwardKernel, options, options.targets);
  }

  /** Records the per-row losses and overwrites the logits with `d(sum_r w_r loss_r)/dlogits`. */
  backward(options: CrossEntropyBackwardOptions): void {
    this.#run(this.backwardKernel, options, options.weights);
  }

  #run(kernel: Kernel, options: CrossEntropyForwardOptions, weights: Tensor): void {
    const { losses, logits, targets, eps = 0 } = options;
    const stride = logits.shape.at(-1) ?? 1;
    const vocab = options.vocab ?? stride;
    const rows = losses.size;
    const label = kernel.key.label;
    if (!(Number.isInteger(vocab) && vocab >= 1 && vocab <= stride)) {
      throw new RangeError(
        `Cannot run ${label}: vocab ${vocab} must be from 1 to the logits' row length ${stride}`,
      );
    }
    if (logits.dtype !== "f32" || stride === 0 || logits.size !== rows * stride) {
      throw new RangeError(
        `Cannot run ${label}: "logits" [${logits.shape}] ${logits.dtype} does not hold ${rows} ` +
          `f32 rows (one per loss)`,
      );
    }
    for (
      const [name, t, dtype] of [["losses", losses, "f32"], ["targets", targets, "u32"], [
        "weights",
        weights,
        kernel === this.backwardKernel ? "f32" : "u32",
      ]] as const
    ) {
      if (t.size !== rows || t.dtype !== dtype) {
        throw new RangeError(
          `Cannot run ${label}: "${name}" [${t.shape}] ${t.dtype} must be [${rows}] ${dtype}`,
        );
      }
    }
    if (!(eps >= 0 && eps < 1)) {
      throw new RangeError(`Cannot run ${label}: label smoothing ${eps} is outside [0, 1)`);
    }
    const views = [losses, logits, targets, weights];
    const widths = [1, stride, 1, 1];
    for (const w of windows(this.gpu, rows, views, { widths, label })) {
      const [shift_losses, shift_logits, shift_targets, shift_weights] = w.shifts;
      this.gpu.dispatch(kernel, w.bindings, {
        uniforms: SIZES.pack({
          rows: w.count,
          vocab,
          shift_logits,
          shift_losses,
          shift_targets,
          shift_weights,
          eps,
          stride,
        }),
        // One workgroup a row.
        workgroups: grid(this.gpu, w.count),
      });
    }
  }
}
