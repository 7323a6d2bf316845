/**
 * Host wrapper of `layernorm.wgsl`: layer normalization over the last dimension, saving the
 * per-row mean and reciprocal standard deviation for the backward, whose weight and bias
 * gradients are deterministic chunked sums over rows. Activations larger than one storage
 * binding are processed one window of rows at a time.
 *
 * @module
 */

import {
  chunkRows,
  grid,
  loadRowKernels,
  type RowWorkgroup,
  rowWorkgroup,
  windows,
} from "./dispatch.ts";
import type { BufferBinding, Gpu, Kernel } from "./gpu.ts";
import type { Tensor } from "./tensor.ts";
import { UniformStruct } from "./uniform_struct.ts";
import code from "./layernorm.wgsl" with { type: "text" };

/** Threads (channels) of a workgroup of the parameter-gradient passes. */
const PARAM_WG = 64;
/** Rows one invocation of the parameter-gradient pass sums. */
const CHUNK_ROWS = 128;
const SIZES = new UniformStruct("Sizes", {
  rows: "u32",
  channels: "u32",
  chunk_rows: "u32",
  chunks: "u32",
  shift_inp: "u32",
  shift_out: "u32",
  shift_mean: "u32",
  shift_rstd: "u32",
  shift_dout: "u32",
  eps: "f32",
}, { wgsl: code });

/** One window of rows: its bindings by operand, its row count and its uniform block. */
interface RowBlock {
  count: number;
  chunks: number;
  inp: BufferBinding;
  out: BufferBinding;
  mean: BufferBinding;
  rstd: BufferBinding;
  dout: BufferBinding;
  uniforms: ArrayBuffer;
}

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
    readonly kernels:
      & Record<"forward" | "backward", Record<RowWorkgroup, Kernel>>
      & Record<"params" | "finish", Kernel>,
  ) {}

  /** Compiles the kernels (cached by the device). */
  static async load(gpu: Gpu): Promise<LayerNormKernels> {
    const load = (entry: string, wg: number, bindings: ("storage" | "read" | "uniform")[]) =>
      gpu.kernel({ label: entry, code, entry, bindings, constants: { WG: wg } });
    const s = "storage", r = "read", u = "uniform";
    const bySize = (entry: string, bindings: ("storage" | "read" | "uniform")[]) =>
      loadRowKernels((wg) => load(entry, wg, bindings));
    const [forward, backward, params, finish] = await Promise.all([
      bySize("layernorm_forward", [s, s, s, r, r, r, u]),
      bySize("layernorm_backward", [s, r, r, r, r, r, u]),
      load("layernorm_backward_params", PARAM_WG, [s, r, r, r, r, u]),
      load("layernorm_backward_finish", PARAM_WG, [s, s, r, u]),
    ]);
    return new LayerNormKernels(gpu, { forward, backward, params, finish });
  }

  /** Records `out = (inp - mean) * rstd * weight + bias` row by row, saving `mean` and `rstd`. */
  forward(options: LayerNormForwardOptions): void {
    const { out, mean, rstd, inp, weight, bias, eps = 1e-5 } = options;
    const label = "layernorm_forward";
    const { rows, channels } = this.#check(label, { out, inp, mean, rstd }, { weight, bias });
    if (!(eps >= 0)) throw new RangeError(`Cannot run ${label}: eps ${eps} is negative`);
    for (const b of this.#blocks(label, { rows, channels, inp, out, mean, rstd, eps })) {
      this.gpu.dispatch(this.kernels.forward[rowWorkgroup(channels)], [
        b.out,
        b.mean,
        b.rstd,
        b.inp,
        weight.buffer,
        bias.buffer,
      ], { uniforms: b.uniforms, workgroups: grid(this.gpu, b.count) });
    }
  }

  /** Records `dinp += ...`, `dweight += sum_rows dout * norm`, `dbias += sum_rows dout`. */
  backward(options: LayerNormBackwardOptions): void {
    const { dinp, dweight, dbias, dout, inp, weight, mean, rstd } = options;
    const label = "layernorm_backward";
    const { rows, channels } = this.#check(label, { dinp, dout, inp, mean, rstd }, {
      weight,
      dweight,
      dbias,
    });
    const { gpu } = this;
    const blocks = [...this.#blocks(label, { rows, channels, inp, out: dinp, mean, rstd, dout })];
    const partialBytes = Math.max(...blocks.map((b) => b.chunks), 0) * 2 * channels * 4;
    if (partialBytes > gpu.maxBindingBytes) {
      throw new RangeError(`Cannot run ${label}: ${channels} channels need more than one binding`);
    }
    const partial = gpu.buffer(partialBytes, { label: "layernorm partial" });
    const groups = Math.ceil(channels / PARAM_WG);
    for (const b of blocks) {
      const kernel = this.kernels.backward[rowWorkgroup(channels)];
      gpu.dispatch(kernel, [b.out, b.inp, weight.buffer, b.mean, b.rstd, b.dout], {
        uniforms: b.uniforms,
        workgroups: grid(gpu, b.count),
      });
      // Pooled buffers may be larger than asked for: bind only the bytes in use.
      const used = { buffer: partial, size: b.chunks * 2 * channels * 4 };
      gpu.dispatch(this.kernels.params, [used, b.inp, b.mean, b.rstd, b.dout], {
        uniforms: b.uniforms,
        workgroups: [groups, b.chunks],
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

  // Windows of whole chunks of rows (a chunk is what one invocation of the parameter pass sums).
  *#blocks(
    label: string,
    t: {
      rows: number;
      channels: number;
      inp: Tensor;
      out: Tensor;
      mean: Tensor;
      rstd: Tensor;
      dout?: Tensor;
      eps?: number;
    },
  ): Generator<RowBlock> {
    const { rows, channels: C } = t;
    const chunk = chunkRows(this.gpu, rows, { width: C, least: CHUNK_ROWS, label });
    const views = [t.inp, t.out, t.mean, t.rstd, t.dout ?? t.inp];
    const widths = [C, C, 1, 1, C];
    for (const w of windows(this.gpu, rows, views, { widths, multiple: chunk, label })) {
      const [inp, out, mean, rstd, dout] = w.bindings;
      const [shift_inp, shift_out, shift_mean, shift_rstd, shift_dout] = w.shifts;
      const chunks = Math.ceil(w.count / chunk);
      const uniforms = SIZES.pack({
        rows: w.count,
        channels: C,
        chunk_rows: chunk,
        chunks,
        shift_inp,
        shift_out,
        shift_mean,
        shift_rstd,
        shift_dout,
        eps: t.eps ?? 0,
      });
      yield { count: w.count, chunks, inp, out, mean, rstd, dout, uniforms };
    }
  }
}
