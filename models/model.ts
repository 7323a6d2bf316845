/**
 * The model contract: what every model family offers the layers above `models/` (adapters,
 * training, evaluation, pipelines), so that none of them names a family.
 *
 * @module
 */

import type { MatrixView } from "../kernels/tensor.ts";

/** What a model calls on an adapted linear layer; it knows nothing of LoRA or NOLA. */
export interface LinearAdapter {
  /** The adapted module, e.g. `h.3.attn.c_attn.q`. */
  readonly name: string;
  /** Columns of the input x (the linear's input features). */
  readonly inFeatures: number;
  /** Output columns written, from the attachment's `colOffset`. */
  readonly outFeatures: number;
  /** Rank of A [r, in] and B [out, r]. */
  readonly r: number;
  /** `s = lora_alpha / r`. */
  readonly scale: number;
  /** y[:, colOffset : colOffset+out] += s * (x Aᵀ) Bᵀ for `rows` rows; saves x Aᵀ for the backward. */
  forward(x: MatrixView, y: MatrixView, rows: number): void;
  /** dB += s dyᵀ (x Aᵀ), dA += (s dy B)ᵀ x, dx += (s dy B) A, for the same rows. */
  backward(x: MatrixView, dy: MatrixView, dx: MatrixView | null, rows: number): void;
}
