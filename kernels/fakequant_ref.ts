/**
 * CPU reference of `fakequant.wgsl`: the host quantizer itself, since the kernel's contract is
 * to reproduce {@link quantize}'s dequantized values bit for bit (there is no looser float64
 * reference to compare against).
 *
 * @module
 */

import { quantize, type QuantOptions } from "../formats/quantize.ts";

/** What {@link fakequantRef} returns. */
export interface FakequantRef {
  /** `dequantize(quantize(values))`. */
  out: Float32Array;
  /** The per-tensor scale. */
  scale: number;
  /** The zero point (asymmetric), 0 for the symmetric scheme. */
  zeroPoint: number;
}

/**
 * Fake-quantizes `values` on the host.
 *
 * @param values The tensor (finite).
 * @param options Bits and scheme.
 * @returns The dequantized values, scale and zero point.
 *
 * @example
 * ```ts
 * import { fakequantRef } from "./kernels/fakequant_ref.ts";
 * fakequantRef(new Float32Array([0.5, -1]), { bits: 2, scheme: "symmetric" }).out; // [1, -1]
 * ```
 */
export function fakequantRef(values: Float32Array, options: QuantOptions): FakequantRef {
  const q = quantize(values, options);
  return { out: q.dequantized, scale: q.scale, zeroPoint: q.zeroPoint ?? 0 };
}
