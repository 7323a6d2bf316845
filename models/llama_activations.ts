/**
 * The Llama family's activations and activation gradients for one (batch, sequence) shape,
 * allocated once and reused every step, and its decoding cache (per-layer keys and values).
 *
 * @module
 */

import type { Gpu } from "../kernels/gpu.ts";
import type { Tensor } from "../kernels/tensor.ts";
import type { LlamaConfig } from "./llama_config.ts";
import { RowCache, type RowOfBatch, TokenArena } from "./_gpu_model.ts";

/** What one decoder layer keeps from its forward for the backward. */
export interface LlamaLayerActivations {
  ln1: Tensor; // (B*T, D) input_layernorm output
  rstd1: Tensor; // (B*T)
  q: Tensor; // (B*T, H*hd) rotated queries
  k: Tensor; // (B*T, KVH*hd) rotated keys (unused with a cache, which holds them)
  v: Tensor; // (B*T, KVH*hd)
  atty: Tensor; // (B*T, H*hd)
  lse: Tensor; // (B, H, T)
  attproj: Tensor; // (B*T, D)
  residual2: Tensor; // (B*T, D)
  ln2: Tensor; // (B*T, D) post_attention_layernorm output
  rstd2: Tensor; // (B*T)
  gate: Tensor; // (B*T, I)
  up: Tensor; // (B*T, I)
  h: Tensor; // (B*T, I) silu(gate) * up
  down: Tensor; // (B*T, D)
  residual3: Tensor; // (B*T, D)
}

/** Gradients of activations, one buffer of each kind shared by every layer (as llm.c). */
export interface LlamaActivationGradients {
  dresidual: Tensor; // (B*T, D)
  dln: Tensor; // (B*T, D)
  dq: Tensor; // (B*T, H*hd)
  dk: Tensor; // (B*T, KVH*hd)
  dv: Tensor; // (B*T, KVH*hd)
  datty: Tensor; // (B*T, H*hd)
  dh: Tensor; // (B*T, I)
  dgate: Tensor; // (B*T, I)
  dup: Tensor; // (B*T, I)
  /** (T, D) gradient of the zero position table the embedding kernel reads; never used. */
  dzeroPos: Tensor;
}

/**
 * Every tensor one forward and backward of a Llama-family model needs at batch `B` and sequence
 * `T`. Gradients are allocated on first use.
 */
export class LlamaActivations extends TokenArena {
  /** Token embeddings, the residual stream into layer 0: (B,T,D). */
  readonly encoded: Tensor;
  /**
   * Zeros `(T, D)`: the position table of the embedding kernel (rotary models add no position
   * embedding).
   */
  readonly zeroPos: Tensor;
  /**
   * What each layer keeps for the backward.
   *
   * @internal
   */
  readonly layers: LlamaLayerActivations[];
  /** The final norm's output: (B*T, D). */
  readonly lnf: Tensor;
  /** The final norm's reciprocal root mean square per position: (B*T). */
  readonly rstdf: Tensor;
  #grads: LlamaActivationGradients | null = null;

  /**
   * Allocates the forward activations for `shape`.
   *
   * @param gpu The device.
   * @param config The architecture.
   * @param shape Batch `B` and sequence length `T`.
   */
  constructor(
    gpu: Gpu,
    readonly config: LlamaConfig,
    shape: { B: number; T: number },
  ) {
    super(gpu, shape, config.vocabSize);
    const { B, T } = shape;
    const { hiddenSize: D, intermediateSize: I, headDim: hd } = config;
    const Q = config.numAttentionHeads * hd;
    const KV = config.numKeyValueHeads * hd;
    const BT = B * T;
    const f = (dims: number[]) => this.tensor(dims);
    this.encoded = f([B, T, D]);
    this.zeroPos = f([T, D]);
    gpu.clear(this.zeroPos.buffer);
    this.layers = Array.from({ length: config.numHiddenLayers }, () => ({
      ln1: f([BT, D]),
      rstd1: f([BT]),
      q: f([BT, Q]),
      k: f([BT, KV]),
      v: f([BT, KV]),
      atty: f([BT, Q]),
      lse: f([B, config.numAttentionHeads, T]),
      attproj: f([BT, D]),
      residual2: f([BT, D]),
      ln2: f([BT, D]),
      rstd2: f([BT]),
      gate: f([BT, I]),
      up: f([BT, I]),
      h: f([BT, I]),
      down: f([BT, D]),
      residual3: f([BT, D]),
    }));
    this.lnf = f([BT, D]);
    this.rstdf = f([BT]);
  }

  /**
   * The activation gradients, allocated on first call.
   *
   * @internal
   */
  grads(): LlamaActivationGradients {
    if (this.#grads) return this.#grads;
    const { B, T } = this.shape;
    const c = this.config;
    const [D, I] = [c.hiddenSize, c.intermediateSize];
    const Q = c.numAttentionHeads * c.headDim;
    const KV = c.numKeyValueHeads * c.headDim;
    const BT = B * T;
    const f = (dims: number[]) => this.tensor(dims);
    return this.#grads = {
      dresidual: f([B, T, D]),
      dln: f([BT, D]),
      dq: f([BT, Q]),
      dk: f([BT, KV]),
      dv: f([BT, KV]),
      datty: f([BT, Q]),
      dh: f([BT, I]),
      dgate: f([BT, I]),
      dup: f([BT, I]),
      dzeroPos: f([T, D]),
    };
  }
}

/**
 * A Llama-family decoding cache: each layer's rotated keys and values (`[capacity, KVH * hd]`
 * each) for positions `0 .. past-1`.
 */
export class LlamaCache extends RowCache {
  /**
   * Wraps per-layer tensors as an empty cache (use `Llama.newCache`).
   *
   * @param k One `[capacity, KVH * hd]` tensor a layer (`[rows * capacity, KVH * hd]` for a
   * batch).
   * @param v One tensor a layer, laid out like `k`.
   * @param of The batch and row, for a row of a batched cache.
   */
  constructor(readonly k: Tensor[], readonly v: Tensor[], of?: RowOfBatch) {
    super([...k, ...v], of);
  }
}
