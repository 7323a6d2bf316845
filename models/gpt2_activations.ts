/**
 * GPT-2's activations and activation gradients for one (batch, sequence) shape, allocated once
 * (llm.c's `fill_in_activation_sizes`) and reused every step.
 *
 * @module
 */

import type { Gpu } from "../kernels/gpu.ts";
import type { Tensor } from "../kernels/tensor.ts";
import { TokenArena } from "./_gpu_model.ts";
import type { Gpt2Config } from "./gpt2_config.ts";

/** What one transformer block keeps from its forward for the backward. */
export interface LayerActivations {
  ln1: Tensor; // (B,T,C)
  ln1Mean: Tensor; // (B*T)
  ln1Rstd: Tensor; // (B*T)
  qkv: Tensor; // (B,T,3C)
  atty: Tensor; // (B,T,C)
  lse: Tensor; // (B,NH,T)
  attproj: Tensor; // (B,T,C)
  residual2: Tensor; // (B,T,C)
  ln2: Tensor; // (B,T,C)
  ln2Mean: Tensor; // (B*T)
  ln2Rstd: Tensor; // (B*T)
  fch: Tensor; // (B,T,4C)
  fchGelu: Tensor; // (B,T,4C)
  fcproj: Tensor; // (B,T,C)
  residual3: Tensor; // (B,T,C)
}

/** Gradients of activations, one buffer of each kind shared by every layer (as llm.c). */
export interface ActivationGradients {
  dresidual: Tensor; // (B,T,C) the residual stream's gradient, accumulated through the blocks
  dln: Tensor; // (B,T,C) gradient of ln1, ln2 or lnf output
  dqkv: Tensor; // (B,T,3C)
  datty: Tensor; // (B,T,C)
  dfch: Tensor; // (B,T,4C)
  dfchGelu: Tensor; // (B,T,4C)
}

/**
 * Every tensor one forward and backward of GPT-2 needs at batch `B` and sequence `T`.
 * Gradients are allocated on first use, so inference never pays for them.
 */
export class Gpt2Activations extends TokenArena {
  /** Token plus position embeddings, the residual stream into block 0: (B,T,C). */
  readonly encoded: Tensor;
  /**
   * What each block keeps from its forward for the backward.
   *
   * @internal
   */
  readonly layers: LayerActivations[];
  /** The final layer norm's output: (B,T,C). */
  readonly lnf: Tensor;
  /** The final layer norm's mean per position: (B*T). */
  readonly lnfMean: Tensor;
  /** The final layer norm's reciprocal standard deviation per position: (B*T). */
  readonly lnfRstd: Tensor;
  #grads: ActivationGradients | null = null;

  /**
   * Allocates the forward activations for `shape`; the gradients are allocated by the first
   * {@linkcode grads} call.
   *
   * @param gpu The device.
   * @param config The architecture.
   * @param shape Batch `B` and sequence length `T`.
   */
  constructor(
    gpu: Gpu,
    readonly config: Gpt2Config,
    shape: { B: number; T: number },
  ) {
    super(gpu, shape, config.vocabSize);
    const { B, T } = shape;
    const { nEmbd: C, nHead: NH, nInner, nLayer } = config;
    const BT = B * T;
    const f = (dims: number[]) => this.tensor(dims);
    this.encoded = f([B, T, C]);
    this.layers = Array.from({ length: nLayer }, () => ({
      ln1: f([B, T, C]),
      ln1Mean: f([BT]),
      ln1Rstd: f([BT]),
      qkv: f([B, T, 3 * C]),
      atty: f([B, T, C]),
      lse: f([B, NH, T]),
      attproj: f([B, T, C]),
      residual2: f([B, T, C]),
      ln2: f([B, T, C]),
      ln2Mean: f([BT]),
      ln2Rstd: f([BT]),
      fch: f([B, T, nInner]),
      fchGelu: f([B, T, nInner]),
      fcproj: f([B, T, C]),
      residual3: f([B, T, C]),
    }));
    this.lnf = f([B, T, C]);
    this.lnfMean = f([BT]);
    this.lnfRstd = f([BT]);
  }

  /**
   * The activation gradients, allocated on first call.
   *
   * @internal
   */
  grads(): ActivationGradients {
    if (this.#grads) return this.#grads;
    const { B, T } = this.shape;
    const { nEmbd: C, nInner } = this.config;
    const f = (dims: number[]) => this.tensor(dims);
    return this.#grads = {
      dresidual: f([B, T, C]),
      dln: f([B, T, C]),
      dqkv: f([B, T, 3 * C]),
      datty: f([B, T, C]),
      dfch: f([B, T, nInner]),
      dfchGelu: f([B, T, nInner]),
    };
  }
}
