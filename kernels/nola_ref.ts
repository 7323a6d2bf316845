/**
 * Float64 CPU reference of `nola.wgsl` and of the low-rank adapter chain built on it. Unlike the
 * kernels, it materializes every basis matrix with `materializeBasis` (an independent path to the
 * same spec v1 values), so tests catch a kernel that regenerates the wrong element.
 *
 * @module
 */

import { BasisFactor, materializeBasis, type PhiloxKey } from "./basis_spec.ts";

/** Which bases a reference call sums over, as in `NolaKernels`. */
export interface NolaRefBasis {
  key: PhiloxKey;
  factor: 0 | 1;
  count: number;
  rows: number;
  cols: number;
  scale: number;
}

/**
 * `A0 + sum_{i<count} coeffs[i] * basis_i` in float64, or with `absolute` the sum of the terms'
 * absolute values (the size float32 rounding scales with, for tests whose sums may cancel).
 *
 * @param coeffs The `count` coefficients.
 * @param options Bases, shape, the optional A0 term, `absolute`.
 * @returns The `rows * cols` factor, row-major.
 */
export function nolaCombineRef(
  coeffs: ArrayLike<number>,
  options: NolaRefBasis & { withA0?: { scale: number }; absolute?: boolean },
): Float64Array {
  const { key, factor, count, rows, cols, scale } = options;
  const term = options.absolute ? Math.abs : (v: number) => v;
  const out = new Float64Array(rows * cols);
  if (options.withA0) {
    const a0 = materializeBasis(key, {
      factor: BasisFactor.A0,
      index: 0,
      rows,
      cols,
      scale: options.withA0.scale,
    });
    for (let e = 0; e < out.length; e++) out[e] = term(a0[e]);
  }
  for (let i = 0; i < count; i++) {
    const basis = materializeBasis(key, { factor, index: i, rows, cols, scale });
    for (let e = 0; e < out.length; e++) out[e] += term(coeffs[i] * basis[e]);
  }
  return out;
}

/**
 * Accumulates `dcoeffs[i] += <grad, basis_i>` in float64, or with `absolute` the sum of
 * `|grad[e] * basis_i[e]|`: the size a float32 dot product's rounding error scales with, for
 * tests whose inner products may cancel.
 *
 * @param dcoeffs The `count` coefficient gradients, updated in place.
 * @param options Bases, shape, `grad` (the gradient of the materialized factor), `absolute`.
 */
export function nolaGradientRef(
  dcoeffs: Float64Array,
  options: NolaRefBasis & { grad: ArrayLike<number>; absolute?: boolean },
): void {
  const { key, factor, count, rows, cols, scale, grad } = options;
  for (let i = 0; i < count; i++) {
    const basis = materializeBasis(key, { factor, index: i, rows, cols, scale });
    let sum = 0;
    if (options.absolute) {
      for (let e = 0; e < basis.length; e++) sum += Math.abs(grad[e] * basis[e]);
    } else {
      for (let e = 0; e < basis.length; e++) sum += grad[e] * basis[e];
    }
    dcoeffs[i] += sum;
  }
}

/** Sizes of a low-rank adapter on `rows` input rows. */
export interface LowRankRefSizes {
  rows: number;
  inFeatures: number;
  outFeatures: number;
  r: number;
  /** `lora_alpha / r`. */
  scale: number;
}

/**
 * The adapter's contribution `s * (x Aᵀ) Bᵀ` for x [rows, in], A [r, in], B [out, r].
 *
 * @param inputs `x`, `a`, `b`, dense row-major.
 * @param sizes Shapes and the scale.
 * @returns `[rows, out]`, to be added to the frozen layer's output.
 */
export function lowRankForwardRef(
  inputs: { x: ArrayLike<number>; a: ArrayLike<number>; b: ArrayLike<number> },
  sizes: LowRankRefSizes,
): Float64Array {
  const { x, a, b } = inputs;
  const { rows, outFeatures: nOut, r, scale } = sizes;
  const t = project(x, a, sizes);
  const y = new Float64Array(rows * nOut);
  for (let n = 0; n < rows; n++) {
    for (let o = 0; o < nOut; o++) {
      let sum = 0;
      for (let q = 0; q < r; q++) sum += t[n * r + q] * b[o * r + q];
      y[n * nOut + o] = scale * sum;
    }
  }
  return y;
}

/**
 * Gradients of `sum(dy ⊙ lowRankForwardRef(x))` with respect to A, B and x.
 *
 * @param inputs `x`, `a`, `b` and the output gradient `dy` [rows, out].
 * @param sizes Shapes and the scale.
 * @returns `da` [r, in], `db` [out, r], `dx` [rows, in].
 */
export function lowRankBackwardRef(
  inputs: {
    x: ArrayLike<number>;
    a: ArrayLike<number>;
    b: ArrayLike<number>;
    dy: ArrayLike<number>;
  },
  sizes: LowRankRefSizes,
): { da: Float64Array; db: Float64Array; dx: Float64Array } {
  const { x, a, b, dy } = inputs;
  const { rows, inFeatures: nIn, outFeatures: nOut, r, scale } = sizes;
  const t = project(x, a, sizes);
  const dt = new Float64Array(rows * r);
  const db = new Float64Array(nOut * r);
  for (let n = 0; n < rows; n++) {
    for (let o = 0; o < nOut; o++) {
      const g = scale * dy[n * nOut + o];
      for (let q = 0; q < r; q++) {
        db[o * r + q] += g * t[n * r + q];
        dt[n * r + q] += g * b[o * r + q];
      }
    }
  }
  const da = new Float64Array(r * nIn);
  const dx = new Float64Array(rows * nIn);
  for (let n = 0; n < rows; n++) {
    for (let q = 0; q < r; q++) {
      const g = dt[n * r + q];
      for (let c = 0; c < nIn; c++) {
        da[q * nIn + c] += g * x[n * nIn + c];
        dx[n * nIn + c] += g * a[q * nIn + c];
      }
    }
  }
  return { da, db, dx };
}

// t = x Aᵀ, [rows, r].
function project(
  x: ArrayLike<number>,
  a: ArrayLike<number>,
  sizes: LowRankRefSizes,
): Float64Array {
  const { rows, inFeatures: nIn, r } = sizes;
  const t = new Float64Array(rows * r);
  for (let n = 0; n < rows; n++) {
    for (let q = 0; q < r; q++) {
      let sum = 0;
      for (let c = 0; c < nIn; c++) sum += x[n * nIn + c] * a[q * nIn + c];
      t[n * r + q] = sum;
    }
  }
  return t;
}

/** A whole NOLA linear layer `y = x W + s x Aᵀ Bᵀ` with A and B combined from coefficients. */
export interface NolaChainRef {
  /** Input [rows, in]. */
  x: ArrayLike<number>;
  /** Frozen weight [in, out] (GPT-2 Conv1D layout). */
  w: ArrayLike<number>;
  /** Loss weights: L = sum(y ⊙ g), g [rows, out]. */
  g: ArrayLike<number>;
  key: PhiloxKey;
  k: number;
  l: number;
  /** `basisScale` of A_i, B_j and A0 (A0 only with `withA0`). */
  scales: { a: number; b: number; a0?: number };
}

/**
 * The loss `sum((x W + s x Aᵀ Bᵀ) ⊙ g)` of a NOLA layer and, analytically, its gradients with
 * respect to alpha and beta (through dA, dB and the basis inner products).
 *
 * @param coeffs `alpha` [k] and `beta` [l].
 * @param chain The layer, its inputs and sizes.
 * @returns The loss and `dalpha`, `dbeta`.
 */
export function nolaChainRef(
  coeffs: { alpha: ArrayLike<number>; beta: ArrayLike<number> },
  chain: NolaChainRef & LowRankRefSizes,
): { loss: number; dalpha: Float64Array; dbeta: Float64Array } {
  const { x, w, g, key, k, l, scales, rows, inFeatures: nIn, outFeatures: nOut, r } = chain;
  const a = nolaCombineRef(coeffs.alpha, {
    key,
    factor: 0,
    count: k,
    rows: r,
    cols: nIn,
    scale: scales.a,
    withA0: scales.a0 === undefined ? undefined : { scale: scales.a0 },
  });
  const b = nolaCombineRef(coeffs.beta, {
    key,
    factor: 1,
    count: l,
    rows: nOut,
    cols: r,
    scale: scales.b,
  });
  const y = lowRankForwardRef({ x, a, b }, chain);
  let loss = 0;
  for (let n = 0; n < rows; n++) {
    for (let o = 0; o < nOut; o++) {
      let frozen = 0;
      for (let c = 0; c < nIn; c++) frozen += x[n * nIn + c] * w[c * nOut + o];
      loss += (frozen + y[n * nOut + o]) * g[n * nOut + o];
    }
  }
  const { da, db } = lowRankBackwardRef({ x, a, b, dy: g }, chain);
  const dalpha = new Float64Array(k);
  const dbeta = new Float64Array(l);
  nolaGradientRef(dalpha, {
    key,
    factor: 0,
    count: k,
    rows: r,
    cols: nIn,
    scale: scales.a,
    grad: da,
  });
  nolaGradientRef(dbeta, {
    key,
    factor: 1,
    count: l,
    rows: nOut,
    cols: r,
    scale: scales.b,
    grad: db,
  });
  return { loss, dalpha, dbeta };
}
