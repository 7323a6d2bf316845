/**
 * The low-rank adapter inside a frozen linear layer, `y += s * (x Aᵀ) Bᵀ` with `s = lora_alpha / r`,
 * shared by LoRA (which trains A and B directly) and NOLA (which fills A and B from its
 * coefficients once per optimizer step, see `nola_factors.ts`).
 *
 * @module
 */

import type { Matmul, MatmulLayout } from "../kernels/matmul.ts";
import { type MatrixView, Tensor } from "../kernels/tensor.ts";
import type { LinearAdapter } from "../models/model.ts";

export type { LinearAdapter, MatrixView };

/** Options of {@link LowRankLinear.create}. */
export interface LowRankLinearOptions {
  /** The adapted module, e.g. `h.3.attn.c_attn.q`; names errors and GPU objects. */
  name: string;
  inFeatures: number;
  outFeatures: number;
  r: number;
  /** `lora_alpha`; the adapter's output is scaled by `lora_alpha / r`. */
  loraAlpha: number;
  /** Most rows one forward may cover (batch x sequence): sizes the saved `x Aᵀ`. */
  maxRows: number;
  /** Initial A [r, in], row-major; zeros when absent. */
  a?: Float32Array;
  /** Initial B [out, r], row-major; zeros when absent. */
  b?: Float32Array;
}

/**
 * A rank-r adapter on the GPU: factors A [r, in] and B [out, r], their accumulated gradients
 * dA and dB, and the saved projection `t = x Aᵀ` [maxRows, r] the backward needs.
 *
 * @example Add a LoRA adapter's output to the q columns of a c_attn output
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { Matmul } from "./kernels/matmul.ts";
 * import { Tensor } from "./kernels/tensor.ts";
 * import { LowRankLinear } from "./adapters/linear_adapter.ts";
 * using gpu = await Gpu.acquire();
 * const matmul = await Matmul.load(gpu);
 * const C = 64;
 * using q = LowRankLinear.create(matmul, {
 *   name: "h.0.attn.c_attn.q", inFeatures: C, outFeatures: C, r: 8, loraAlpha: 16, maxRows: 4,
 * });
 * using x = Tensor.from(gpu, new Float32Array(4 * C).fill(1), [4, C]);
 * using y = Tensor.from(gpu, new Float32Array(4 * 3 * C), [4, 3 * C]);
 * q.forward({ tensor: x, ld: C }, { tensor: y, offset: 0, ld: 3 * C }, 4);
 * ```
 */
export class LowRankLinear implements LinearAdapter, Disposable {
  readonly scale: number;
  #savedRows = -1;

  private constructor(
    readonly matmul: Matmul,
    readonly name: string,
    readonly inFeatures: number,
    readonly outFeatures: number,
    readonly r: number,
    readonly maxRows: number,
    /** A [r, in]. */
    readonly a: Tensor,
    /** B [out, r]. */
    readonly b: Tensor,
    /** dA [r, in], accumulated by {@link backward}. */
    readonly da: Tensor,
    /** dB [out, r], accumulated by {@link backward}. */
    readonly db: Tensor,
    /** x Aᵀ of the last forward, [maxRows, r]. */
    readonly t: Tensor,
    /** s dy B of the backward, [maxRows, r]. */
    readonly dt: Tensor,
    loraAlpha: number,
  ) {
    this.scale = loraAlpha / r;
  }

  /**
   * Allocates the adapter's tensors (persistent; gradients zeroed).
   *
   * @param matmul The loaded matrix multiply of the device.
   * @param options Name, sizes, `lora_alpha`, row capacity and optional initial factors.
   * @returns The adapter.
   */
  static create(matmul: Matmul, options: LowRankLinearOptions): LowRankLinear {
    const { gpu } = matmul;
    const { name, inFeatures, outFeatures, r, maxRows, loraAlpha } = options;
    const sizes = { inFeatures, outFeatures, r, maxRows };
    for (const [what, v] of Object.entries(sizes)) {
      if (!Number.isSafeInteger(v) || v < 1) {
        throw new RangeError(`Cannot create adapter "${name}": ${what} ${v} must be >= 1`);
      }
    }
    if (!Number.isFinite(loraAlpha)) {
      throw new RangeError(`Cannot create adapter "${name}": lora_alpha ${loraAlpha}`);
    }
    const tensor = (shape: number[], what: string, init?: Float32Array) => {
      const label = `${name}.${what}`;
      const size = shape[0] * shape[1];
      if (init && init.length !== size) {
        throw new RangeError(
          `Cannot create adapter "${name}": ${what} has ${init.length} values, expected ${size}`,
        );
      }
      const t = Tensor.empty(gpu, shape, { persistent: true, label });
      gpu.write(t.buffer, init ?? new Float32Array(size));
      return t;
    };
    return new LowRankLinear(
      matmul,
      name,
      inFeatures,
      outFeatures,
      r,
      maxRows,
      tensor([r, inFeatures], "lora_A", options.a),
      tensor([outFeatures, r], "lora_B", options.b),
      tensor([r, inFeatures], "lora_A.grad"),
      tensor([outFeatures, r], "lora_B.grad"),
      tensor([maxRows, r], "xA"),
      tensor([maxRows, r], "dxA"),
      loraAlpha,
    );
  }

  /** Records `y[:, off : off + out] += s (x Aᵀ) Bᵀ` and saves `x Aᵀ` for the backward. */
  forward(x: MatrixView, y: MatrixView, rows: number): void {
    this.#checkRows(rows, "forward");
    this.#checkView(x, rows, this.inFeatures, "x");
    this.#checkView(y, rows, this.outFeatures, "y");
    this.#savedRows = rows;
    if (rows === 0) return;
    const { r } = this;
    // t = x Aᵀ: [rows, in] · [r, in]ᵀ
    this.#mm(this.t.buffer, x.tensor.buffer, this.a.buffer, {
      m: rows,
      n: r,
      k: this.inFeatures,
      transB: true,
      lda: x.ld,
      offsetA: x.offset ?? 0,
    });
    // y += s t Bᵀ: [rows, r] · [out, r]ᵀ into the column slice
    this.#mm(y.tensor.buffer, this.t.buffer, this.b.buffer, {
      m: rows,
      n: this.outFeatures,
      k: r,
      transB: true,
      ldc: y.ld,
      offsetC: y.offset ?? 0,
      alpha: this.scale,
      accumulate: true,
    });
  }

  /**
   * Records the backward of the last {@link forward} (same `x` and `rows`): accumulates dA, dB
   * and, when `dx` is given, dx.
   */
  backward(x: MatrixView, dy: MatrixView, dx: MatrixView | null, rows: number): void {
    this.#checkRows(rows, "backward");
    if (rows !== this.#savedRows) {
      throw new RangeError(
        `Cannot run backward of adapter "${this.name}" on ${rows} rows: the last forward ` +
          (this.#savedRows < 0 ? "never ran" : `covered ${this.#savedRows}`),
      );
    }
    this.#checkView(x, rows, this.inFeatures, "x");
    this.#checkView(dy, rows, this.outFeatures, "dy");
    if (dx) this.#checkView(dx, rows, this.inFeatures, "dx");
    if (rows === 0) return;
    const { r, inFeatures, outFeatures, scale } = this;
    const dyOffset = dy.offset ?? 0;
    // dB += s dyᵀ t: [rows, out]ᵀ · [rows, r]
    this.#mm(this.db.buffer, dy.tensor.buffer, this.t.buffer, {
      m: outFeatures,
      n: r,
      k: rows,
      transA: true,
      lda: dy.ld,
      offsetA: dyOffset,
      alpha: scale,
      accumulate: true,
    });
    // dt = s dy B: [rows, out] · [out, r]
    this.#mm(this.dt.buffer, dy.tensor.buffer, this.b.buffer, {
      m: rows,
      n: r,
      k: outFeatures,
      lda: dy.ld,
      offsetA: dyOffset,
      alpha: scale,
    });
    // dA += dtᵀ x: [rows, r]ᵀ · [rows, in]
    this.#mm(this.da.buffer, this.dt.buffer, x.tensor.buffer, {
      m: r,
      n: inFeatures,
      k: rows,
      transA: true,
      ldb: x.ld,
      offsetB: x.offset ?? 0,
      accumulate: true,
    });
    if (!dx) return;
    // dx += dt A: [rows, r] · [r, in]
    this.#mm(dx.tensor.buffer, this.dt.buffer, this.a.buffer, {
      m: rows,
      n: inFeatures,
      k: r,
      ldc: dx.ld,
      offsetC: dx.offset ?? 0,
      accumulate: true,
    });
  }

  /** Records zeroing dA and dB (gradients accumulate; the training step clears them). */
  zeroGradients(): void {
    const encoder = this.matmul.gpu.encoder();
    encoder.clearBuffer(this.da.buffer, 0, this.da.byteLength);
    encoder.clearBuffer(this.db.buffer, 0, this.db.byteLength);
  }

  /** Frees the adapter's GPU memory. */
  /** Bytes of every tensor the adapter owns (factors, their gradients, saved activations). */
  get bytes(): number {
    return [this.a, this.b, this.da, this.db, this.t, this.dt].reduce(
      (s, t) => s + t.byteLength,
      0,
    );
  }

  [Symbol.dispose](): void {
    for (const t of [this.a, this.b, this.da, this.db, this.t, this.dt]) t[Symbol.dispose]();
  }

  #mm(out: GPUBuffer, a: GPUBuffer, b: GPUBuffer, layout: MatmulLayout): void {
    this.matmul.raw({ out, a, b }, { variant: this.matmul.variant, ...layout });
  }

  #checkRows(rows: number, what: string): void {
    if (!Number.isSafeInteger(rows) || rows < 0 || rows > this.maxRows) {
      throw new RangeError(
        `Cannot run ${what} of adapter "${this.name}" on ${rows} rows: must be in ` +
          `[0, ${this.maxRows}]`,
      );
    }
  }

  #checkView(view: MatrixView, rows: number, cols: number, what: string): void {
    const offset = view.offset ?? 0;
    const where = `adapter "${this.name}"`;
    if (view.tensor.dtype !== "f32") {
      throw new RangeError(`Cannot use ${what} of ${where}: ${view.tensor.dtype}, not f32`);
    }
    if (!Number.isSafeInteger(view.ld) || view.ld < cols) {
      throw new RangeError(
        `Cannot use ${what} of ${where}: leading dimension ${view.ld} is below ${cols} columns`,
      );
    }
    if (!Number.isSafeInteger(offset) || offset < 0) {
      throw new RangeError(`Cannot use ${what} of ${where}: offset ${offset}`);
    }
    const end = rows === 0 ? offset : offset + (rows - 1) * view.ld + cols;
    if (end > view.tensor.size) {
      throw new RangeError(
        `Cannot use ${what} of ${where}: ${rows} rows of ${cols} at offset ${offset} with ` +
          `leading dimension ${view.ld} need ${end} elements, tensor "${view.tensor.buffer.label}" ` +
          `has ${view.tensor.size}`,
      );
    }
  }
}
