/**
 * Quantization of NOLA coefficients during and after training.
 *
 * - Quantization-aware training ({@link QatHooks}): the optimizer owns float master copies of
 *   alpha and beta; before every step's combine the adapter's own alpha and beta are overwritten
 *   with `q(master)` (`kernels/fakequant.ts`, bit for bit the host's `quantize(...).dequantized`),
 *   so forward and backward run at the quantized point. The coefficient gradients computed there
 *   are applied to the masters unchanged: the straight-through estimator, `dq(x)/dx = 1`.
 * - Post-training quantization ({@link quantizeInPlace}): alpha and beta replaced by their
 *   dequantized quantized values, once, through the host quantizer.
 *
 * Either way the coefficients end on the grid `saveAdapter(..., { quant })` stores, and quantizing
 * a grid value again returns it, so a saved and reloaded adapter reproduces the model exactly.
 *
 * @module
 */

import type { AdapterParameter, AdapterSet, AttachedModule } from "../adapters/attach.ts";
import type { NolaFactors } from "../adapters/nola_factors.ts";
import { checkQuantOptions, quantize, type QuantOptions } from "../formats/quantize.ts";
import { FakequantKernels } from "../kernels/fakequant.ts";
import { Tensor } from "../kernels/tensor.ts";
import type { StepHooks } from "./trainer.ts";

/** One NOLA module under quantization-aware training: its coefficients and their masters. */
export interface QatModule {
  /** The adapted module. */
  name: string;
  /** @internal The module's coefficients (what combine reads). */
  nola: NolaFactors;
  /** Float master of alpha [k], what the optimizer updates. */
  alpha: Tensor;
  /** Float master of beta [l]. */
  beta: Tensor;
}

/**
 * Quantization-aware training of an adapter set's NOLA coefficients with a straight-through
 * estimator. Use it in place of the set: its {@link parameters} as the optimizer's parameters
 * (masters, with the set's own gradients) and the object itself as the trainer's hooks.
 *
 *     zeroGrads()        the set's gradients
 *     prepareStep()      alpha = q(master alpha), beta = q(master beta), then the set's combine
 *     forward/backward   at the quantized coefficients
 *     finishBackward()   d alpha, d beta at the quantized point
 *     optimizer          master -= f(d alpha)       (STE: the gradient passes q unchanged)
 *
 * LoRA modules of a mixed set train unquantized: their parameters pass through.
 *
 * @example 4-bit QAT with the trainer
 * ```ts
 * import { QatHooks } from "./train/qat.ts";
 * // set: an attached NOLA AdapterSet
 * using qat = await QatHooks.create(set, { bits: 4, scheme: "symmetric" });
 * // train({ ..., groups: [{ kind: "adamw", lr, params: qat.parameters() }], hooks: qat });
 * await qat.finalize(); // alpha, beta on the 4-bit grid; save with the same quant
 * ```
 */
export class QatHooks implements StepHooks, Disposable {
  #disposed = false;

  private constructor(
    readonly set: AdapterSet,
    readonly quant: QuantOptions,
    /** @internal */
    readonly kernels: FakequantKernels,
    /** The NOLA modules, in the set's order. */
    readonly modules: readonly QatModule[],
  ) {}

  /**
   * Allocates the masters as copies of the current coefficients and quantizes the coefficients
   * (so a forward right away already sees the grid).
   *
   * @param set An attached set with at least one NOLA module.
   * @param quant Bits and scheme, as they will be saved.
   * @returns The hooks; dispose them to free the masters.
   * @throws {RangeError} On invalid quantization options or a set without NOLA modules.
   */
  static async create(set: AdapterSet, quant: QuantOptions): Promise<QatHooks> {
    checkQuantOptions(quant);
    const nolaModules = set.modules.filter((m): m is AttachedModule & { nola: NolaFactors } =>
      m.nola !== undefined
    );
    if (nolaModules.length === 0) {
      throw new RangeError("Cannot train with quantized coefficients: the set has no NOLA module");
    }
    const gpu = set.model.gpu;
    const kernels = await FakequantKernels.load(gpu);
    const master = (t: Tensor, what: string) => {
      const copy = Tensor.empty(gpu, t.shape, { persistent: true, label: `${what}.master` });
      gpu.copy(t.buffer, copy.buffer, { size: t.byteLength });
      return copy;
    };
    const modules: QatModule[] = nolaModules.map(({ name, nola }) => ({
      name,
      nola,
      alpha: master(nola.alpha, `${name}.alpha`),
      beta: master(nola.beta, `${name}.beta`),
    }));
    const hooks = new QatHooks(set, { bits: quant.bits, scheme: quant.scheme }, kernels, modules);
    hooks.prepareStep();
    return hooks;
  }

  /**
   * What the optimizer updates: `<module>.alpha` / `<module>.beta` are the masters with the
   * set's gradient tensors (computed at the quantized point); LoRA parameters as the set's.
   */
  parameters(): AdapterParameter[] {
    const masters = new Map(this.modules.map((m) => [m.nola, m]));
    const own = this.set.parameters();
    return this.set.modules.flatMap((m) => {
      const q = m.nola && masters.get(m.nola);
      if (!q) return own.filter((p) => p.name.startsWith(`${m.name}.`));
      return [
        { name: `${m.name}.alpha`, param: q.alpha, grad: q.nola.dalpha },
        { name: `${m.name}.beta`, param: q.beta, grad: q.nola.dbeta },
      ];
    });
  }

  /** Records zeroing the set's gradients. */
  zeroGrads(): void {
    this.set.zeroGrads();
  }

  /** Records `alpha = q(master alpha)`, `beta = q(master beta)`, then the set's combine. */
  prepareStep(): void {
    this.#alive();
    for (const m of this.modules) {
      this.kernels.forward({ out: m.nola.alpha }, { x: m.alpha, ...this.quant });
      this.kernels.forward({ out: m.nola.beta }, { x: m.beta, ...this.quant });
    }
    this.set.prepareStep();
  }

  /** Records the set's coefficient gradients (at the quantized point). */
  finishBackward(): void {
    this.set.finishBackward();
  }

  /**
   * Leaves `q(master)` in every alpha and beta and recombines, so the model and a file saved
   * with the same quantization hold the same values. Checks on the host that quantizing them
   * again changes nothing; should it ever (a float rounding of the re-derived scale), the host's
   * fixed point is written instead, so saving stays exact.
   */
  async finalize(): Promise<void> {
    this.prepareStep();
    const gpu = this.set.model.gpu;
    gpu.flush();
    let rewritten = false;
    for (const m of this.modules) {
      for (const t of [m.nola.alpha, m.nola.beta]) {
        let values = (await t.read()) as Float32Array;
        let changed = false;
        for (let pass = 0; pass < 4; pass++) {
          const again = quantize(values, this.quant).dequantized;
          if (again.every((v, i) => Object.is(v, values[i]))) break;
          values = again;
          changed = true;
        }
        if (changed) {
          gpu.write(t.buffer, values);
          rewritten = true;
        }
      }
    }
    if (rewritten) this.set.prepareStep();
  }

  /** Frees the masters (the set keeps its coefficients). */
  [Symbol.dispose](): void {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const m of this.modules) {
      m.alpha[Symbol.dispose]();
      m.beta[Symbol.dispose]();
    }
  }

  #alive(): void {
    if (this.#disposed) throw new RangeError("QatHooks used after dispose");
  }
}

/** What {@link quantizeInPlace} changed in one NOLA module. */
export interface PtqStats {
  /** The adapted module. */
  name: string;
  /** Largest `|x - x'|` over alpha. */
  alphaMaxError: number;
  /** Largest `|x - x'|` over beta. */
  betaMaxError: number;
  /** The quantization step of alpha (symmetric: max|alpha| / (2^(bits-1) - 1)). */
  alphaScale: number;
  /** The quantization step of beta. */
  betaScale: number;
}

/**
 * Post-training quantization: replaces every NOLA module's alpha and beta by
 * `quantize(values, quant).dequantized` (read back, quantized on the host, written) and
 * recombines the factors, so the model computes what a file saved with `quant` will load.
 *
 * @param set The adapters (LoRA modules are left alone).
 * @param quant Bits and scheme.
 * @returns Per NOLA module, the largest change and the scales.
 * @throws {RangeError} On invalid options or a non-finite coefficient.
 *
 * @example
 * ```ts
 * import { quantizeInPlace } from "./train/qat.ts";
 * // set: a trained AdapterSet
 * const stats = await quantizeInPlace(set, { bits: 4, scheme: "symmetric" });
 * console.log(Math.max(...stats.map((s) => s.alphaMaxError)));
 * ```
 */
export async function quantizeInPlace(
  set: AdapterSet,
  quant: QuantOptions,
): Promise<PtqStats[]> {
  checkQuantOptions(quant);
  const gpu = set.model.gpu;
  gpu.flush();
  const stats: PtqStats[] = [];
  for (const { name, nola } of set.modules) {
    if (!nola) continue;
    const one = async (t: Tensor) => {
      const values = (await t.read()) as Float32Array;
      let q;
      try {
        q = quantize(values, quant);
      } catch (e) {
        throw new RangeError(`Cannot quantize "${t.buffer.label}": ${(e as Error).message}`);
      }
      let maxError = 0;
      for (let i = 0; i < values.length; i++) {
        maxError = Math.max(maxError, Math.abs(values[i] - q.dequantized[i]));
      }
      gpu.write(t.buffer, q.dequantized);
      return { maxError, scale: q.scale };
    };
    const a = await one(nola.alpha);
    const b = await one(nola.beta);
    stats.push({
      name,
      alphaMaxError: a.maxError,
      betaMaxError: b.maxError,
      alphaScale: a.scale,
      betaScale: b.scale,
    });
  }
  set.prepareStep();
  return stats;
}
