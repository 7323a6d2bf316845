/**
 * Every kernel family a ViT runs, compiled together once per device.
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
import { PatchKernels } from "../kernels/patches.ts";
import { ReduceKernels } from "../kernels/reduce.ts";
import { ResidualKernels } from "../kernels/residual.ts";

/** The compiled kernels of a ViT forward and backward. */
export class VitOps {
  private constructor(
    readonly matmul: Matmul,
    readonly patches: PatchKernels,
    readonly layernorm: LayerNormKernels,
    readonly attention: AttentionKernels,
    readonly gelu: GeluKernels,
    readonly residual: ResidualKernels,
    readonly reduce: ReduceKernels,
    readonly crossentropy: CrossEntropyKernels,
    /** The base's token lookup, which a ViT never calls (it embeds patches). */
    readonly encoder: EncoderKernels,
  ) {}

  /**
   * Compiles (or fetches from the device's cache) every kernel.
   *
   * @param gpu The device.
   * @returns The kernels.
   */
  static async load(gpu: Gpu): Promise<VitOps> {
    const loaded = await Promise.all([
      Matmul.load(gpu),
      PatchKernels.load(gpu),
      LayerNormKernels.load(gpu),
      AttentionKernels.load(gpu, { causal: false }),
      GeluKernels.load(gpu, { variant: "erf" }),
      ResidualKernels.load(gpu),
      ReduceKernels.load(gpu),
      CrossEntropyKernels.load(gpu),
      EncoderKernels.load(gpu),
    ]);
    return new VitOps(...loaded);
  }
}
