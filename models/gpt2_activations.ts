/**
 * GPT-2's activations and activation gradients for one (batch, sequence) shape, allocated once
 * (llm.c's `fill_in_activation_sizes`) and reused every step.
 *
 * @module
 */

import type { Gpu } from "../kernels/gpu.ts";
import { Tensor } from "../kernels/tensor.ts";
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
export class Gpt2Activations implements Disposable {
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
  /**
   * (B*T, logitsStride) logits, overwritten in place by the loss gradient. Rows are padded to a
   * multiple of 4 elements so the matmuls that read them can use vector loads; the padding
   * columns are zero and never read as vocabulary.
   */
  readonly logits: Tensor;
  /** Elements from one row of {@link logits} to the next: the vocabulary rounded up to 4. */
  readonly logitsStride: number;
  /** Unweighted per-token cross-entropy, in nats: (B*T). */
  readonly losses: Tensor;
  /** The input token ids: (B,T). */
  readonly tokens: Tensor<"u32">;
  /** The target ids of the last loss: (B*T). */
  readonly targets: Tensor<"u32">;
  /** Each token's weight in the total loss: (B*T). */
  readonly weights: Tensor<"f32">;
  #grads: ActivationGradients | null = null;
  #all: Tensor[] = [];

  /**
   * Allocates the forward activations for `shape`; the gradients are allocated by the first
   * {@linkcode grads} call.
   *
   * @param gpu The device.
   * @param config The architecture.
   * @param shape Batch `B` and sequence length `T`.
   */
  constructor(
    readonly gpu: Gpu,
    readonly config: Gpt2Config,
    readonly shape: { B: number; T: number },
  ) {
    const { B, T } = shape;
    const { nEmbd: C, nHead: NH, nInner, vocabSize: V, nLayer } = config;
    const BT = B * T;
    const f = (dims: number[]) => this.#track(Tensor.empty(gpu, dims, { persistent: true }));
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
    this.logitsStride = Math.ceil(V / 4) * 4;
    this.logits = f([BT, this.logitsStride]);
    gpu.clear(this.logits.buffer);
    this.losses = f([BT]);
    this.tokens = this.#track(Tensor.empty(gpu, [B, T], { dtype: "u32", persistent: true }));
    this.targets = this.#track(Tensor.empty(gpu, [BT], { dtype: "u32", persistent: true }));
    this.weights = this.#track(Tensor.empty(gpu, [BT], { dtype: "f32", persistent: true }));
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
    const f = (dims: number[]) => this.#track(Tensor.empty(this.gpu, dims, { persistent: true }));
    return this.#grads = {
      dresidual: f([B, T, C]),
      dln: f([B, T, C]),
      dqkv: f([B, T, 3 * C]),
      datty: f([B, T, C]),
      dfch: f([B, T, nInner]),
      dfchGelu: f([B, T, nInner]),
    };
  }

  /** Bytes allocated so far (activations, and gradients once used). */
  get bytes(): number {
    return this.#all.reduce((sum, t) => sum + t.byteLength, 0);
  }

  /** Frees every tensor allocated, gradients included. */
  [Symbol.dispose](): void {
    for (const t of this.#all.splice(0)) t[Symbol.dispose]();
  }

  #track<T extends Tensor>(t: T): T {
    this.#all.push(t);
    return t;
  }
}
