/**
 * Host wrapper of `layernorm.wgsl`: layer normalization over the last dimension, saving the
 * per-row mean and reciprocal standard deviation for the backward, whose weight and bias
 * gradients are deterministic chunked sums over rows. Activations larger than one storage
 * binding are processed one window of rows at a time.
 *
 * @module
 */

import type { Gpu, Kernel } from "./gpu.ts";
import { type Tensor, window } from "./tensor.ts";
import code from "./layernorm.wgsl" with { type: "text" };

/** Threads of the workgroup that normalizes one row (a power of two). */
const WG = 128;
/** Threads (channels) of a workgroup of the parameter-gradient passes. */
const PARAM_WG = 64;
/** Rows one invocation of the parameter-gradient pass sums. */
const CHUNK_ROWS = 128;

/** Options of {@link LayerNormKernels.forward}. */
export interface LayerNormForwardOptions {
  /** Written: `[..., C]` f32, same shape as `inp`. */
  out: Tensor;
  /** Written: `[rows]` f32, the mean of every row (rows = inp.size / C). */
  mean: Tensor;
  /** Written: `[rows]` f32, `1 / sqrt(var + eps)` of every row. */
  rstd: Tensor;
  /** `[..., C]` f32, e.g. `[B, T, C]`. */
  inp: Tensor;
  /** `[C]` f32. */
  weight: Tensor;
  /** `[C]` f32. */
  bias: Tensor;
  /** Added to the variance; 1e-5 (GPT-2's) when absent. */
  eps?: number;
}

/** Options of {@link LayerNormKernels.backward}. */
export interface LayerNormBackwardOptions {
  /** Accumulated: `[..., C]` f32. */
  dinp: Tensor;
  /** Accumulated: `[C]` f32, summed over all rows. */
  dweight: Tensor;
  /** Accumulated: `[C]` f32, summed over all rows. */
  dbias: Tensor;
  /** `[..., C]` f32, the gradient of `out`. */
  dout: Tensor;
  /** The forward's input, weight, and saved mean and rstd. */
  inp: Tensor;
  weight: Tensor;
  mean: Tensor;
  rstd: Tensor;
}

/**
 * The compiled layer-norm kernels of one device. Methods only record work.
 *
 * @example Normalize two rows of three
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { Tensor } from "./kernels/tensor.ts";
 * import { LayerNormKernels } from "./kernels/layernorm.ts";
 * using gpu = await Gpu.acquire();
 * const ln = await LayerNormKernels.load(gpu);
 * using inp = Tensor.from(gpu, new Float32Array([1, 2, 3, 0, 0, 6]), [2, 3]);
 * using weight = Tensor.from(gpu, new Float32Array([1, 1, 1]), [3]);
 * using bias = Tensor.from(gpu, new Float32Array([0, 0, 0]), [3]);
 * using out = Tensor.empty(gpu, [2, 3]);
 * using mean = Tensor.empty(gpu, [2]);
 * using rstd = Tensor.empty(gpu, [2]);
 * ln.forward({ out, mean, rstd, inp, weight, bias });
 * console.log(await out.read()); // about [-1.22, 0, 1.22, -0.71, -0.71, 1.41]
 * ```
 */
export class LayerNormKernels {
  private constructor(
    readonly gpu: Gpu,
    readonly kernels: Record<"forward" | "backward" | "params" | "finish", Kernel>,
  ) {}

  /** Compiles the kernels (cached by the device). */
  static async load(gpu: Gpu): Promise<LayerNormKernels> {
    const load = (entry: string, wg: number, bindings: ("storage" | "read" | "uniform")[]) =>
      gpu.kernel({ label: entry, code, entry, bindings, constants: { WG: wg } });
    const s = "storage", r = "read", u = "uniform";
    const [forward, backward, params, finish] = await Promise.all([
      load("layernorm_forward", WG, [s, s, s, r, r, r, u]),
      load("layernorm_backward", WG, [s, r, r, r, r, r, u]),
      load("layernorm_backward_params", PARAM_WG, [s, r, r, r, r, u]),
      load("layernorm_backward_finish", PARAM_WG, [s, s, r, u]),
    ]);
    return new LayerNormKernels(gpu, { forward, backward, params, finish });
  }

  /** Records `out = (inp - mean) * rstd * weight + bias` row by row, saving `mean` and `rstd`. */
  forward(options: LayerNormForwardOptions): void {
    const { out, mean, rstd, inp, weight, bias, eps = 1e-5 } = options;
    const { rows, channels } = this.#check("layernorm_forward", { out, inp, mean, rstd }, {
      weight,
      bias,
    });
    if (!(eps >= 0)) throw new RangeError(`Cannot run layernorm_forward: eps ${eps} is negative`);
    for (const win of this.#windows(rows, channels)) {
      const b = this.#bind(win, { inp, out, mean, rstd, eps });
      this.gpu.dispatch(this.kernels.forward, [
        b.out,
        b.mean,
        b.rstd,
        b.inp,
        weight.buffer,
        bias.buffer,
      ], { uniforms: b.uniforms, workgroups: this.#rowGrid(win.count) });
    }
  }

  /** Records `dinp += ...`, `dweight += sum_rows dout * norm`, `dbias += sum_rows dout`. */
  backward(options: LayerNormBackwardOptions): void {
    const { dinp, dweight, dbias, dout, inp, weight, mean, rstd } = options;
    const { rows, channels } = this.#check("layernorm_backward", { dinp, dout, inp, mean, rstd }, {
      weight,
      dweight,
      dbias,
    });
    const { gpu } = this;
    const windows = [...this.#windows(rows, channels)];
    const chunksPerWindow = Math.max(...windows.map((w) => Math.ceil(w.count / w.chunkRows)), 0);
    const partialBytes = chunksPerWindow * 2 * channels * 4;
    if (partialBytes > gpu.maxBindingBytes) {
      throw new RangeError(
        `Cannot run layernorm_backward: ${channels} channels need more than one binding`,
      );
    }
    const partial = gpu.buffer(partialBytes, { label: "layernorm partial" });
    const groups = Math.ceil(channels / PARAM_WG);
    for (const win of windows) {
      const b = this.#bind(win, { inp, out: dinp, mean, rstd, dout, eps: 0 });
      gpu.dispatch(this.kernels.backward, [b.out, b.inp, weight.buffer, b.mean, b.rstd, b.dout], {
        uniforms: b.uniforms,
        workgroups: this.#rowGrid(win.count),
      });
      const chunks = Math.ceil(win.count / win.chunkRows);
      // Pooled buffers may be larger than asked for: bind only the bytes in use.
      const used = { buffer: partial, size: chunks * 2 * channels * 4 };
      gpu.dispatch(this.kernels.params, [used, b.inp, b.mean, b.rstd, b.dout], {
        uniforms: b.uniforms,
        workgroups: [groups, chunks],
      });
      gpu.dispatch(this.kernels.finish, [dweight.buffer, dbias.buffer, used], {
        uniforms: b.uniforms,
        workgroups: [groups],
      });
    }
    gpu.release(partial);
  }

  #check(
    label: string,
    rowTensors: Record<string, Tensor>,
    channelTensors: Record<string, Tensor>,
  ): { rows: number; channels: number } {
    const channels = Object.values(channelTensors)[0].size;
    const inp = rowTensors.inp;
    const rows = channels > 0 ? inp.size / channels : NaN;
    for (const [name, t] of Object.entries({ ...rowTensors, ...channelTensors })) {
      const want = name === "mean" || name === "rstd"
        ? rows
        : name in channelTensors
        ? channels
        : rows * channels;
      if (t.dtype !== "f32" || t.size !== want || !Number.isInteger(rows)) {
        throw new RangeError(
          `Cannot run ${label}: "${name}" [${t.shape}] ${t.dtype} must hold ${want} f32 values ` +
            `(${Number.isInteger(rows) ? rows : "?"} rows of ${channels} channels)`,
        );
      }
    }
    return { rows, channels };
  }

  *#windows(rows: number, channels: number) {
    const { gpu } = this;
    const windowRows = Math.floor((gpu.maxBindingBytes - gpu.bindingAlignment) / (4 * channels));
    if (windowRows < 1) {
      throw new RangeError(
        `Cannot normalize rows of ${channels} values: one row is over the ` +
          `${gpu.maxBindingBytes}-byte binding limit`,
      );
    }
    const maxChunks = gpu.device.limits.maxComputeWorkgroupsPerDimension;
    const chunkRows = Math.min(
      windowRows,
      Math.max(CHUNK_ROWS, Math.ceil(Math.min(rows, windowRows) / maxChunks)),
    );
    // Whole chunks per window, so a chunk never straddles two windows.
    const rowsPerWindow = Math.floor(windowRows / chunkRows) * chunkRows;
    for (let begin = 0; begin < rows; begin += rowsPerWindow) {
      yield { begin, count: Math.min(rowsPerWindow, rows - begin), channels, chunkRows };
    }
  }

  #bind(
    win: { begin: number; count: number; channels: number; chunkRows: number },
    tensors: { inp: Tensor; out: Tensor; mean: Tensor; rstd: Tensor; dout?: Tensor; eps: number },
  ) {
    const { begin, count, channels } = win;
    const rowRange = { begin: begin * channels, end: (begin + count) * channels };
    const inp = window(this.gpu, tensors.inp.buffer, rowRange);
    const out = window(this.gpu, tensors.out.buffer, rowRange);
    const mean = window(this.gpu, tensors.mean.buffer, { begin, end: begin + count });
    const rstd = window(this.gpu, tensors.rstd.buffer, { begin, end: begin + count });
    const dout = tensors.dout ? window(this.gpu, tensors.dout.buffer, rowRange) : inp;
    const block = new ArrayBuffer(48);
    new Uint32Array(block).set([
      count,
      channels,
      win.chunkRows,
      Math.ceil(count / win.chunkRows),
      inp.shift,
      out.shift,
      mean.shift,
      rstd.shift,
      dout.shift,
    ]);
    new Float32Array(block)[9] = tensors.eps;
    return {
      inp: inp.binding,
      out: out.binding,
      mean: mean.binding,
      rstd: rstd.binding,
      dout: dout.binding,
      uniforms: block,
    };
  }

  // One workgroup a row; counts past the per-dimension limit wrap into y.
  #rowGrid(count: number): [number, number] {
    const max = this.gpu.device.limits.maxComputeWorkgroupsPerDimension;
    return count <= max ? [count, 1] : [max, Math.ceil(count / max)];
  }
}
