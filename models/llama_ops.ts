/**
 * Every kernel family the Llama family runs, compiled together once per device.
 *
 * @module
 */

import { AttentionKernels } from "../kernels/attention.ts";
import { CrossEntropyKernels } from "../kernels/crossentropy.ts";
import { EncoderKernels } from "../kernels/encoder.ts";
import type { Gpu } from "../kernels/gpu.ts";
import { Matmul } from "../kernels/matmul.ts";
import { ReduceKernels } from "../kernels/reduce.ts";
import { ResidualKernels } from "../kernels/residual.ts";
import { RmsNormKernels } from "../kernels/rmsnorm.ts";
import { RopeKernels } from "../kernels/rope.ts";
import { SwigluKernels } from "../kernels/swiglu.ts";

/** The compiled kernels of a Llama-family forward and backward. */
export class LlamaOps {
  private constructor(
    readonly matmul: Matmul,
    readonly encoder: EncoderKernels,
    readonly rmsnorm: RmsNormKernels,
    readonly rope: RopeKernels,
    readonly attention: AttentionKernels,
    readonly swiglu: SwigluKernels,
    readonly residual: ResidualKernels,
    readonly reduce: ReduceKernels,
    readonly crossentropy: CrossEntropyKernels,
  ) {}

  /** Compiles (or fetches from the device's cache) every kernel. */
  static async load(gpu: Gpu): Promise<LlamaOps> {
    const loaded = await Promise.all([
      Matmul.load(gpu),
      EncoderKernels.load(gpu),
      RmsNormKernels.load(gpu),
      RopeKernels.load(gpu),
      AttentionKernels.load(gpu),
      SwigluKernels.load(gpu),
      ResidualKernels.load(gpu),
      ReduceKernels.load(gpu),
      CrossEntropyKernels.load(gpu),
    ]);
    return new LlamaOps(...loaded);
  }
}
