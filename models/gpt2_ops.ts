/**
 * Every kernel family GPT-2 runs, compiled together once per device.
 *
 * @module
 */

import { AttentionKernels } from "../kernels/attention.ts";
import { CrossEntropyKernels } from "../kernels/crossentropy.ts";
import { EncoderKernels } from "../kernels/encoder.ts";
import { GeluKernels } from "../kernels/gelu.ts";
import type { Gpu } from "../kernels/gpu.ts";
import { LayerNormKernels } from "../kernels/layernorm.ts";
import { Matmul } from "../kernels/matmul.ts";
import { ReduceKernels } from "../kernels/reduce.ts";
import { ResidualKernels } from "../kernels/residual.ts";

/** The compiled kernels of a GPT-2 forward and backward. */
export class Gpt2Ops {
  private constructor(
    readonly matmul: Matmul,
    readonly encoder: EncoderKernels,
    readonly layernorm: LayerNormKernels,
    readonly attention: AttentionKernels,
    readonly gelu: GeluKernels,
    readonly residual: ResidualKernels,
    readonly reduce: ReduceKernels,
    readonly crossentropy: CrossEntropyKernels,
  ) {}

  /** Compiles (or fetches from the device's cache) every kernel. */
  static async load(gpu: Gpu): Promise<Gpt2Ops> {
    const loaded = await Promise.all([
      Matmul.load(gpu),
      EncoderKernels.load(gpu),
      LayerNormKernels.load(gpu),
      AttentionKernels.load(gpu),
      GeluKernels.load(gpu),
      ResidualKernels.load(gpu),
      ReduceKernels.load(gpu),
      CrossEntropyKernels.load(gpu),
    ]);
    return new Gpt2Ops(...loaded);
  }
}
