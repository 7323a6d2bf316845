/**
 * Host wrapper of `rmsnorm.wgsl`: RMS normalization over the last dimension as Hugging Face's
 * `LlamaRMSNorm` computes it (`weight * (x / sqrt(mean(x^2) + eps))`, in f32), saving the per-row
 * reciprocal root mean square for the backward, whose weight gradient is a deterministic chunked
 * sum over rows. Activations larger than one storage binding are processed one window of rows at
 * a time.
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
import code from "./rmsnorm.wgsl" with { type: "text" };

/** Threads (channels) of a workgroup of the weight-gradient passes. */
const PARAM_WG = 64;
/** Rows one invocation of the weight-gradient pass sums. */
const CHUNK_ROWS = 128;
const SIZES = new UniformStruct("Sizes", {
  rows: "u32",
  channels: "u32",
  chunk_rows: "u32",
  chunks: "u32",
  shift_inp: "u32",
  shift_out: "u32",
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
  rstd: BufferBinding;
  dout: BufferBinding;
  uniforms: ArrayBuffer;
}

/** Options of {@link RmsNormKernels.forward}. */
export interface RmsNormForwardOptions {
  /** Written: `[..., C]` f32, same shape as `inp`. */
  out: Tensor;
  /** Written: `[rows]` f32, `1 / sqrt(mean(x^2) + eps)` of every row (rows = inp.size / C). */
  rstd: Tensor;
  /** `[..., C]` f32, e.g. `[B, T, C]`. */
  inp: Tensor;
  /** `[C]` f32. */
  weight: Tensor;
  /** Added to the mean square; 1e-6 (`LlamaRMSNorm`'s default) when absent. */
  eps?: number;
}

/** Options of {@link RmsNormKernels.backward}. */
export interface RmsNormBackwardOptions {
  /** Accumulated: `[..., C]` f32 (the residual stream's gradient flows through it). */
  dinp: Tensor;
  /** Accumulated: `[C]` f32, summed over all rows. */
  dweight: Tensor;
  /** `[..., C]` f32, the gradient of `out`. */
  dout: Tensor;
  /** The forward's input and weight, and its saved rstd. */
  inp: Tensor;
  weight: Tensor;
  rstd: Tensor;
}

/**
 * The compiled RMSNorm kernels of one device. Methods only record work.
 *
 * @example Normalize two rows of three
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { Tensor } from "./kernels/tensor.ts";
 * import { RmsNormKernels } from "./kernels/rmsnorm.ts";
 * using gpu = await Gpu.acquire();
 * const norm = await RmsNormKernels.load(gpu);
 * using inp = Tensor.from(gpu, new Float32Array([1, 2, 3, 0, 0, 6]), [2, 3]);
 * using weight = Tensor.from(gpu, new Float32Array([1, 1, 1]), [3]);
 * using out = Tensor.empty(gpu, [2, 3]);
 * using rstd = Tensor.empty(gpu, [2]);
 * norm.forward({ out, rstd, inp, weight });
 * console.log(await out.read()); // about [0.46, 0.93, 1.39, 0, 0, 1.73]
 * ```
 */
export class RmsNormKernels {
  private constructor(
    readonly gpu: Gpu,
    readonly kernels:
      & Record<"forward" | "backward", Record<RowWorkgroup, Kernel>>
      & Record<"params" | "finish", Kernel>,
  ) {}

  /** Compiles the kernels (cached by the device). */
  static async load(gpu: Gpu): Promise<RmsNormKernels> {
    const load = (entry: string, wg: number, bindings: ("storage" | "read" | "uniform")[]) =>
      gpu.kernel({ label: entry, code, entry, bindings, constants: { WG: wg } });
    const s = "storage", r = "read", u = "uniform";
    const bySize = (entry: string, bindings: ("storage" | "read" | "uniform")[]) =>
      loadRowKernels((wg) => load(entry, wg, bindings));
    const [forward, backward, params, finish] = await Promise.all([
      bySize("rmsnorm_forward", [s, s, r, r, u]),
      bySize("rmsnorm_backward", [s, r, r, r, r, u]),
      load("rmsnorm_backward_params", PARAM_WG, [s, r, r, r, u]),
      load("rmsnorm_backward_finish", PARAM_WG, [s, r, u]),
    ]);
    return new RmsNormKernels(gpu, { forward, backward, params, finish });
  }

  /** Records `out = weight * (inp * rstd)` row by row, saving `rstd`. */
  forward(options: RmsNormForwardOptions): void {
    const { out, rstd, inp, weight, eps = 1e-6 } = options;
    const label = "rmsnorm_forward";
    const { rows, channels } = this.#check(label, { out, inp, rstd }, { weight });
    if (!(eps >= 0)) throw new RangeError(`Cannot run ${label}: eps ${eps} is negative`);
    for (const b of this.#blocks(label, { rows, channels, inp, out, rstd, eps })) {
      const kernel = this.kernels.forward[rowWorkgroup(channels)];
      this.gpu.dispatch(kernel, [b.out, b.rstd, b.inp, weight.buffer], {
        uniforms: b.uniforms,
        workgroups: grid(this.gpu, b.count),
      });
    }
  }

  /** Records `dinp += ...` and `dweight += sum_rows dout * inp * rstd`. */
  backward(options: RmsNormBackwardOptions): void {
    const { dinp, dweight, dout, inp, weight, rstd } = options;
    const label = "rmsnorm_backward";
    const { rows, channels } = this.#check(label, { dinp, dout, inp, rstd }, { weight, dweight });
    const { gpu } = this;
    const blocks = [...this.#blocks(label, { rows, channels, inp, out: dinp, rstd, dout })];
    const partialBytes = Math.max(...blocks.map((b) => b.chunks), 0) * channels * 4;
    if (partialBytes > gpu.maxBindingBytes) {
      throw new RangeError(`Cannot run ${label}: ${channels} channels need more than one binding`);
    }
    const partial = gpu.buffer(partialBytes, { label: "rmsnorm partial" });
    const groups = Math.ceil(channels / PARAM_WG);
    for (const b of blocks) {
      const kernel = this.kernels.backward[rowWorkgroup(channels)];
      gpu.dispatch(kernel, [b.out, b.inp, weight.buffer, b.rstd, b.dout], {
        uniforms: b.uniforms,
        workgroups: grid(gpu, b.count),
      });
      // Pooled buffers may be larger than asked for: bind only the bytes in use.
      const used = { buffer: partial, size: b.chunks * channels * 4 };
      gpu.dispatch(this.kernels.params, [used, b.inp, b.rstd, b.dout], {
        uniforms: b.uniforms,
        workgroups: [groups, b.chunks],
      });
      gpu.dispatch(this.kernels.finish, [dweight.buffer, used], {
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
      const want = name === "rstd" ? rows : name in channelTensors ? channels : rows * channels;
      if (t.dtype !== "f32" || t.size !== want || !Number.isInteger(rows)) {
        throw new RangeError(
          `Cannot run ${label}: "${name}" [${t.shape}] ${t.dtype} must hold ${want} f32 values ` +
            `(${Number.isInteger(rows) ? rows : "?"} rows of ${channels} channels)`,
        );
      }
    }
    return { rows, channels };
  }

  // Windows of whole chunks of rows (a chunk is what one invocation of the weight pass sums).
  *#blocks(
    label: string,
    t: {
      rows: number;
      channels: number;
      inp: Tensor;
      out: Tensor;
      rstd: Tensor;
      dout?: Tensor;
      eps?: number;
    },
  ): Generator<RowBlock> {
    const { rows, channels: C } = t;
    const chunk = chunkRows(this.gpu, rows, { width: C, least: CHUNK_ROWS, label });
    const views = [t.inp, t.out, t.rstd, t.dout ?? t.inp];
    const widths = [C, C, 1, C];
    for (const w of windows(this.gpu, rows, views, { widths, multiple: chunk, label })) {
      const [inp, out, rstd, dout] = w.bindings;
      const [shift_inp, shift_out, shift_rstd, shift_dout] = w.shifts;
      const chunks = Math.ceil(w.count / chunk);
      const uniforms = SIZES.pack({
        rows: w.count,
        channels: C,
        chunk_rows: chunk,
        chunks,
        shift_inp,
        shift_out,
        shift_rstd,
        shift_dout,
        eps: t.eps ?? 0,
      });
      yield { count: w.count, chunks, inp, out, rstd, dout, uniforms };
    }
  }
}
