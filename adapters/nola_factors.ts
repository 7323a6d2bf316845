/**
 * NOLA's trained state for one adapted module: the coefficients `alpha` [k] and `beta` [l], their
 * gradients, and the rule that turns them into the low-rank factors of a {@link LowRankLinear}:
 * `A = A0 + sum_i alpha_i A_i`, `B = sum_j beta_j B_j`, bases regenerated from the seed (spec v1).
 *
 * @module
 */

import { BasisFactor, basisScale, moduleKey, type PhiloxKey } from "../kernels/basis_spec.ts";
import type { LowRankLinear } from "./linear_adapter.ts";
import type { NolaKernels } from "../kernels/nola.ts";
import { Tensor } from "../kernels/tensor.ts";

/**
 * How the coefficients start. `official` (the authors' GPT-2 and LLaMA code): a fixed A0 term and
 * alpha = beta = 0, so dW = 0 and the gradient flows through beta. `uniform-coeffs` (their first
 * release and ViT code): no A0, alpha_i = 1/k, beta_j = 1/l, so dW starts non-zero.
 */
export type NolaInit = "official" | "uniform-coeffs";

/** The named inits, for validating configuration. */
export const NOLA_INITS: readonly NolaInit[] = ["official", "uniform-coeffs"];

/** Options of {@link NolaFactors.create}. */
export interface NolaFactorsOptions {
  /** The adapter whose A and B this module fills and whose dA, dB it reads. */
  adapter: LowRankLinear;
  /** The run's seed. */
  seed: number;
  /** The module name, or its `sharedBasisKey` when bases are shared across layers. */
  basisKey: string;
  /** Number of A bases. */
  k: number;
  /** Number of B bases. */
  l: number;
  /** Default `official`. */
  init?: NolaInit;
}

/**
 * The coefficients of one NOLA module and the two once-per-step operations on them.
 * Per optimizer step: {@link zeroGradients}, forward/backward of the adapter (accumulating dA,
 * dB over micro-batches), {@link coefficientGradients}, the optimizer on alpha and beta, then
 * {@link combine} for the next step's A and B.
 *
 * @example Fill an adapter's factors from the official init
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { Matmul } from "./kernels/matmul.ts";
 * import { NolaKernels } from "./kernels/nola.ts";
 * import { LowRankLinear } from "./adapters/linear_adapter.ts";
 * import { NolaFactors } from "./adapters/nola_factors.ts";
 * using gpu = await Gpu.acquire();
 * const adapter = LowRankLinear.create(await Matmul.load(gpu), {
 *   name: "h.0.attn.c_attn.q", inFeatures: 768, outFeatures: 768, r: 8, loraAlpha: 8,
 *   maxRows: 1024,
 * });
 * using nola = NolaFactors.create(await NolaKernels.load(gpu), {
 *   adapter, seed: 0, basisKey: "h.0.attn.c_attn.q", k: 1024, l: 1024,
 * });
 * nola.combine();
 * ```
 */
export class NolaFactors implements Disposable {
  private constructor(
    readonly kernels: NolaKernels,
    readonly adapter: LowRankLinear,
    readonly key: PhiloxKey,
    readonly k: number,
    readonly l: number,
    readonly init: NolaInit,
    /** `basisScale` of A_i, B_j and, with the official init, A0. */
    readonly scales: { a: number; b: number; a0?: number },
    /** alpha [k]. */
    readonly alpha: Tensor,
    /** beta [l]. */
    readonly beta: Tensor,
    /** d loss / d alpha [k], accumulated. */
    readonly dalpha: Tensor,
    /** d loss / d beta [l], accumulated. */
    readonly dbeta: Tensor,
  ) {}

  /**
   * Allocates and initializes the coefficients (persistent; gradients zeroed). Records nothing:
   * call {@link combine} to fill the adapter's factors.
   *
   * @param kernels The loaded NOLA kernels of the adapter's device.
   * @param options Adapter, seed, basis key, k, l and init.
   * @returns The module's coefficients.
   */
  static create(kernels: NolaKernels, options: NolaFactorsOptions): NolaFactors {
    const { adapter, k, l, seed, basisKey } = options;
    const init = options.init ?? "official";
    const where = `NOLA module "${adapter.name}"`;
    if (!NOLA_INITS.includes(init)) {
      throw new RangeError(
        `Unknown init "${init}" for ${where}: expected one of ${NOLA_INITS.join(", ")}`,
      );
    }
    for (const [name, v] of [["k", k], ["l", l]] as const) {
      if (!Number.isSafeInteger(v) || v < 1 || v >= 2 ** 32) {
        throw new RangeError(`Invalid ${name} ${v} for ${where}: must be a positive integer`);
      }
    }
    if (kernels.gpu !== adapter.matmul.gpu) {
      throw new RangeError(`Cannot attach ${where}: kernels and adapter are on different devices`);
    }
    const sizes = { k, l, inFeatures: adapter.inFeatures };
    const scales = {
      a: basisScale(BasisFactor.A, sizes),
      b: basisScale(BasisFactor.B, sizes),
      a0: init === "official" ? basisScale(BasisFactor.A0, sizes) : undefined,
    };
    const tensor = (n: number, what: string, value: number) =>
      Tensor.from(kernels.gpu, new Float32Array(n).fill(value), [n], {
        persistent: true,
        label: `${adapter.name}.${what}`,
      });
    const uniform = init === "uniform-coeffs";
    return new NolaFactors(
      kernels,
      adapter,
      moduleKey(seed, basisKey),
      k,
      l,
      init,
      scales,
      tensor(k, "alpha", uniform ? 1 / k : 0),
      tensor(l, "beta", uniform ? 1 / l : 0),
      tensor(k, "alpha.grad", 0),
      tensor(l, "beta.grad", 0),
    );
  }

  /** Records `A = A0 + sum alpha_i A_i` and `B = sum beta_j B_j` into the adapter's factors. */
  combine(): void {
    const { adapter, key, scales } = this;
    this.kernels.combine({
      out: adapter.a,
      coeffs: this.alpha,
      key,
      factor: BasisFactor.A,
      count: this.k,
      rows: adapter.r,
      cols: adapter.inFeatures,
      scale: scales.a,
      withA0: scales.a0 === undefined ? undefined : { scale: scales.a0 },
    });
    this.kernels.combine({
      out: adapter.b,
      coeffs: this.beta,
      key,
      factor: BasisFactor.B,
      count: this.l,
      rows: adapter.outFeatures,
      cols: adapter.r,
      scale: scales.b,
    });
  }

  /** Records `dalpha_i += <dA, A_i>` and `dbeta_j += <dB, B_j>` from the adapter's dA and dB. */
  coefficientGradients(): void {
    const { adapter, key, scales } = this;
    this.kernels.gradient({
      dcoeffs: this.dalpha,
      grad: adapter.da,
      key,
      factor: BasisFactor.A,
      count: this.k,
      rows: adapter.r,
      cols: adapter.inFeatures,
      scale: scales.a,
    });
    this.kernels.gradient({
      dcoeffs: this.dbeta,
      grad: adapter.db,
      key,
      factor: BasisFactor.B,
      count: this.l,
      rows: adapter.outFeatures,
      cols: adapter.r,
      scale: scales.b,
    });
  }

  /** Records zeroing dalpha, dbeta and the adapter's dA, dB (intermediates of NOLA's chain). */
  zeroGradients(): void {
    const encoder = this.kernels.gpu.encoder();
    encoder.clearBuffer(this.dalpha.buffer, 0, this.dalpha.byteLength);
    encoder.clearBuffer(this.dbeta.buffer, 0, this.dbeta.byteLength);
    this.adapter.zeroGradients();
  }

  /** Frees the coefficient tensors (not the adapter, which has its own owner). */
  /** Bytes of the coefficients and their gradients. */
  get bytes(): number {
    return [this.alpha, this.beta, this.dalpha, this.dbeta].reduce((s, t) => s + t.byteLength, 0);
  }

  [Symbol.dispose](): void {
    for (const t of [this.alpha, this.beta, this.dalpha, this.dbeta]) t[Symbol.dispose]();
  }
}
