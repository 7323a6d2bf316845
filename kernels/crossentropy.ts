/**
 * Host wrapper of `crossentropy.wgsl`: the fused softmax + cross-entropy loss of a language
 * model, with per-token weights (masking) and label smoothing. The backward writes the logits
 * gradient over the logits (llm.c style), so no second `[N, V]` buffer is needed. Logits larger
 * than one storage binding are processed one window of rows at a time.
 *
 * @module
 */

import type { Gpu, Kernel } from "./gpu.ts";
import { type Tensor, window } from "./tensor.ts";
import code from "./crossentropy.wgsl" with { type: "text" };

/** Threads of the workgroup that handles one row (a power of two). */
const WG = 256;

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
    const { gpu } = this;
    const windowRows = Math.floor((gpu.maxBindingBytes - gpu.bindingAlignment) / (4 * stride));
    if (windowRows < 1) {
      throw new RangeError(
        `Cannot run ${label}: one row of ${vocab} logits is over the ${gpu.maxBindingBytes}-byte ` +
          `binding limit`,
      );
    }
    const max = gpu.device.limits.maxComputeWorkgroupsPerDimension;
    for (let begin = 0; begin < rows; begin += windowRows) {
      const count = Math.min(windowRows, rows - begin);
      const end = begin + count;
      const lossW = window(gpu, losses.buffer, { begin, end });
      const logitW = window(gpu, logits.buffer, { begin: begin * stride, end: end * stride });
      const targetW = window(gpu, targets.buffer, { begin, end });
      const weightW = window(gpu, weights.buffer, { begin, end });
      const windows = [lossW, logitW, targetW, weightW];
      const block = new ArrayBuffer(32);
      new Uint32Array(block).set([
        count,
        vocab,
        logitW.shift,
        lossW.shift,
        targetW.shift,
        weightW.shift,
      ]);
      new Float32Array(block)[6] = eps;
      new Uint32Array(block)[7] = stride;
      gpu.dispatch(kernel, windows.map((w) => w.binding), {
        uniforms: block,
        // One workgroup a row; counts past the per-dimension limit wrap into y.
        workgroups: count <= max ? [count, 1] : [max, Math.ceil(count / max)],
      });
    }
  }
}
