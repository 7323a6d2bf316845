/**
 * Host wrapper of `reduce.wgsl`: the bias gradient of a linear layer, `dbias[n] += sum_m dout[m,
 * n]`, as blocked partial sums over chunks of rows and a second pass over the chunks, in a fixed
 * order (no atomics). A `dout` larger than one storage binding is reduced one window of rows at a
 * time.
 *
 * @module
 */

import { chunkRows, windows } from "./dispatch.ts";
import type { Gpu, Kernel } from "./gpu.ts";
import type { Tensor } from "./tensor.ts";
import { UniformStruct } from "./uniform_struct.ts";
import code from "./reduce.wgsl" with { type: "text" };

const WG = 64;
/** Rows one invocation of the first pass sums: enough work per thread, enough chunks to fill a GPU. */
const CHUNK_ROWS = 128;
const SIZES = new UniformStruct(
  "Sizes",
  { rows: "u32", cols: "u32", chunk_rows: "u32", chunks: "u32", shift: "u32" },
  { wgsl: code },
);

/** Options of {@link ReduceKernels.backward}. */
export interface ReduceBackwardOptions {
  /** Accumulated: `dbias[n] += sum_m dout[m, n]`; `[N]` f32. */
  dbias: Tensor;
  /** `[M, N]` f32, row-major (any leading shape whose size is a multiple of N). */
  dout: Tensor;
}

/**
 * The compiled column-sum kernels of one device. Methods only record work.
 *
 * @example The bias gradient of a 3 x 2 output gradient
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { Tensor } from "./kernels/tensor.ts";
 * import { ReduceKernels } from "./kernels/reduce.ts";
 * using gpu = await Gpu.acquire();
 * const reduce = await ReduceKernels.load(gpu);
 * using dout = Tensor.from(gpu, new Float32Array([1, 2, 3, 4, 5, 6]), [3, 2]);
 * using dbias = Tensor.from(gpu, new Float32Array([100, 0]), [2]);
 * reduce.backward({ dbias, dout });
 * console.log(await dbias.read()); // Float32Array [109, 12]
 * ```
 */
export class ReduceKernels {
  private constructor(readonly gpu: Gpu, readonly partial: Kernel, readonly finish: Kernel) {}

  /** Compiles the kernels (cached by the device). */
  static async load(gpu: Gpu): Promise<ReduceKernels> {
    const load = (entry: string) =>
      gpu.kernel({
        label: entry,
        code,
        entry,
        bindings: ["storage", "read", "uniform"],
        constants: { WG },
      });
    const [partial, finish] = await Promise.all([
      load("reduce_backward"),
      load("reduce_backward_finish"),
    ]);
    return new ReduceKernels(gpu, partial, finish);
  }

  /** Records `dbias[n] += sum_m dout[m, n]`. */
  backward(options: ReduceBackwardOptions): void {
    const { dbias, dout } = options;
    const cols = dbias.size;
    if (cols === 0 || dout.size % cols !== 0 || dbias.dtype !== "f32" || dout.dtype !== "f32") {
      throw new RangeError(
        `Cannot reduce "dout" [${dout.shape}] ${dout.dtype} into "dbias" [${dbias.shape}] ` +
          `${dbias.dtype}: need f32 and a size that is a multiple of ${cols}`,
      );
    }
    const rows = dout.size / cols;
    const { gpu } = this;
    const label = "reduce_backward";
    const chunk = chunkRows(gpu, rows, { width: cols, least: CHUNK_ROWS, label });
    const blocks = [...windows(gpu, rows, [dout], { widths: [cols], multiple: chunk, label })];
    const chunksPerWindow = Math.ceil((blocks[0]?.count ?? 0) / chunk);
    const partial = gpu.buffer(chunksPerWindow * cols * 4, { label: "reduce partial" });
    const groups = Math.ceil(cols / WG);
    for (const { count, bindings: [w], shifts: [shift] } of blocks) {
      const chunks = Math.ceil(count / chunk);
      const uniforms = SIZES.pack({ rows: count, cols, chunk_rows: chunk, chunks, shift });
      // Pooled buffers may be larger than asked for: bind only the bytes in use.
      const used = { buffer: partial, size: chunks * cols * 4 };
      gpu.dispatch(this.partial, [used, w], { uniforms, workgroups: [groups, chunks] });
      gpu.dispatch(this.finish, [dbias.buffer, used], { uniforms, workgroups: [groups] });
    }
    gpu.release(partial);
  }
}
