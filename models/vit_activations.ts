/**
 * A ViT's activations and activation gradients for one batch size, allocated once and reused
 * every step. The loss rows are the examples: the arena is a {@link TokenArena} of shape
 * `(B, 1)` whose logits are `[B, classes]` (rows padded to 4).
 *
 * @module
 */

import type { Gpu } from "../kernels/gpu.ts";
import type { Tensor } from "../kernels/tensor.ts";
import { TokenArena } from "./_gpu_model.ts";
import { type VitConfig, vitPatches, vitTokens } from "./vit_config.ts";

/** What one block keeps from its forward for the backward; `rows` is `B * (N + 1)`. */
export interface VitLayerActivations {
  ln1: Tensor; // (rows, D)
  ln1Mean: Tensor; // (rows)
  ln1Rstd: Tensor; // (rows)
  qkv: Tensor[]; // HF: q, k, v (rows, D) each; timm: one (rows, 3D)
  atty: Tensor; // (rows, D)
  lse: Tensor; // (B, NH, N + 1)
  attproj: Tensor; // (rows, D)
  residual2: Tensor; // (rows, D)
  ln2: Tensor; // (rows, D)
  ln2Mean: Tensor; // (rows)
  ln2Rstd: Tensor; // (rows)
  fch: Tensor; // (rows, I)
  fchGelu: Tensor; // (rows, I)
  fcproj: Tensor; // (rows, D)
  residual3: Tensor; // (rows, D)
}

/** Gradients of activations, one buffer of each kind shared by every block. */
export interface VitActivationGradients {
  dresidual: Tensor; // (rows, D) the residual stream's gradient
  dln: Tensor; // (rows, D) gradient of a norm's output
  dqkv: Tensor[]; // like qkv
  datty: Tensor; // (rows, D)
  dfch: Tensor; // (rows, I)
  dfchGelu: Tensor; // (rows, I)
  dlnf: Tensor; // (B, D) gradient of the final norm's output (class rows)
  dcls: Tensor; // (B, D) gradient of the gathered class rows
  dpatches: Tensor; // (B * N, D) gradient of the embedded patches
}

/** Every tensor one forward and backward of a ViT needs at batch size `B`. */
export class VitActivations extends TokenArena {
  /** Examples. */
  readonly B: number;
  /** The images, `(B, C, H, W)`. */
  readonly pixels: Tensor;
  /** The patches as rows, `(B * N, C * P * P)`. */
  readonly cols: Tensor;
  /** The embedded patches, `(B * N, D)`. */
  readonly patches: Tensor;
  /** The tokens into block 0: class token and patches plus positions, `(B * (N + 1), D)`. */
  readonly encoded: Tensor;
  /**
   * What each block keeps from its forward.
   *
   * @internal
   */
  readonly layers: VitLayerActivations[];
  /** The class token's row of each example after the last block, `(B, D)`. */
  readonly cls: Tensor;
  /** The final norm of those rows, `(B, D)`. */
  readonly lnf: Tensor;
  /** Their means, `(B)`. */
  readonly lnfMean: Tensor;
  /** Their reciprocal standard deviations, `(B)`. */
  readonly lnfRstd: Tensor;
  /** `B` ones: the head bias's gradient is their product with the logits' gradient. */
  readonly ones: Tensor;
  #grads: VitActivationGradients | null = null;

  /**
   * Allocates the forward activations for `B` images; the gradients come with the first
   * {@linkcode grads} call.
   *
   * @param gpu The device.
   * @param config The architecture.
   * @param B Examples.
   */
  constructor(gpu: Gpu, readonly config: VitConfig, B: number) {
    super(gpu, { B, T: 1 }, config.numLabels);
    this.B = B;
    const { hiddenSize: D, intermediateSize: I, numHeads: NH, numChannels: C } = config;
    const { imageHeight: H, imageWidth: W, patchSize: P } = config;
    const N = vitPatches(config);
    const T = vitTokens(config);
    const rows = B * T;
    const f = (dims: number[]) => this.tensor(dims);
    this.pixels = f([B, C, H, W]);
    this.cols = f([B * N, C * P * P]);
    this.patches = f([B * N, D]);
    this.encoded = f([rows, D]);
    this.layers = Array.from({ length: config.numLayers }, () => ({
      ln1: f([rows, D]),
      ln1Mean: f([rows]),
      ln1Rstd: f([rows]),
      qkv: config.layout === "hf" ? [f([rows, D]), f([rows, D]), f([rows, D])] : [f([rows, 3 * D])],
      atty: f([rows, D]),
      lse: f([B, NH, T]),
      attproj: f([rows, D]),
      residual2: f([rows, D]),
      ln2: f([rows, D]),
      ln2Mean: f([rows]),
      ln2Rstd: f([rows]),
      fch: f([rows, I]),
      fchGelu: f([rows, I]),
      fcproj: f([rows, D]),
      residual3: f([rows, D]),
    }));
    this.cls = f([B, D]);
    this.lnf = f([B, D]);
    this.lnfMean = f([B]);
    this.lnfRstd = f([B]);
    this.ones = f([B]);
    gpu.write(this.ones.buffer, new Float32Array(B).fill(1));
  }

  /**
   * The activation gradients, allocated on first call.
   *
   * @internal
   */
  grads(): VitActivationGradients {
    if (this.#grads) return this.#grads;
    const { B, config } = this;
    const { hiddenSize: D, intermediateSize: I } = config;
    const rows = B * vitTokens(config);
    const f = (dims: number[]) => this.tensor(dims);
    return this.#grads = {
      dresidual: f([rows, D]),
      dln: f([rows, D]),
      dqkv: config.layout === "hf"
        ? [f([rows, D]), f([rows, D]), f([rows, D])]
        : [f([rows, 3 * D])],
      datty: f([rows, D]),
      dfch: f([rows, I]),
      dfchGelu: f([rows, I]),
      dlnf: f([B, D]),
      dcls: f([B, D]),
      dpatches: f([B * vitPatches(config), D]),
    };
  }
}
