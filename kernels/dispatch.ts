/**
 * Dispatch geometry every kernel wrapper shares: storage-binding windows over operands larger
 * than one binding (`maxStorageBufferBindingSize`), and 2-D grids for workgroup counts past
 * `maxComputeWorkgroupsPerDimension`, plus the operand checks that go with them.
 *
 * @module
 */

import type { BufferBinding, Gpu } from "./gpu.ts";
import { type BufferView, type Tensor, viewRange, type Window, window } from "./tensor.ts";

/** One window of {@link windows}: rows `[begin, begin + count)` of every view. */
export interface RowWindow {
  /** First row of the window. */
  begin: number;
  /** Rows in the window. */
  count: number;
  /** One binding per view, in the order given. */
  bindings: BufferBinding[];
  /** Per view: elements from its binding's start to row `begin` (offsets align down). */
  shifts: number[];
}

/** Options of {@link windows}. */
export interface WindowOptions {
  /** Elements one row covers in each view, in order; 1 for every view when absent. */
  widths?: readonly number[];
  /** Rows per window are a multiple of this, so a chunk of rows never straddles two; default 1. */
  multiple?: number;
  /** Names the kernel in errors. */
  label?: string;
}

/**
 * Rows of `width` elements that one storage binding holds wherever they start: a binding's
 * offset is aligned down, which costs up to one alignment of its bytes.
 *
 * @param gpu The device, for its binding size and alignment.
 * @param options `width`: elements a row (default 1); `label`: names the kernel in the error.
 * @returns At least 1.
 * @throws {RangeError} When one row does not fit in a binding.
 *
 * @example Rows of 768 floats in one binding
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { rowsPerBinding } from "./kernels/dispatch.ts";
 * using gpu = await Gpu.acquire({ maxBindingBytes: 1 << 20 });
 * console.log(rowsPerBinding(gpu, { width: 768 })); // 341 (less one alignment of bytes)
 * ```
 */
export function rowsPerBinding(gpu: Gpu, options: { width?: number; label?: string } = {}): number {
  const width = options.width ?? 1;
  const rows = Math.floor((gpu.maxBindingBytes - gpu.bindingAlignment) / (4 * width));
  if (rows < 1) {
    throw new RangeError(
      `Cannot run ${options.label ?? "kernel"}: one row of ${width} values is over the ` +
        `${gpu.maxBindingBytes}-byte binding limit`,
    );
  }
  return rows;
}

/**
 * Rows per chunk of a pass that sums a column over chunks of rows, one workgroup per chunk along
 * one grid dimension: at least `least`, enough that the chunks of one binding's worth of rows fit
 * in that dimension, and no more than one binding holds. Pass it as {@link windows}'s
 * `multiple` so no chunk straddles two windows.
 *
 * @param gpu The device, for its binding and workgroup limits.
 * @param rows Rows in all.
 * @param options `width`: elements a row; `least`: the smallest chunk; `label`: for errors.
 * @returns Rows per chunk.
 * @throws {RangeError} When one row does not fit in a binding.
 *
 * @example Chunks of a [300, 768] gradient
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { chunkRows } from "./kernels/dispatch.ts";
 * using gpu = await Gpu.acquire();
 * console.log(chunkRows(gpu, 300, { width: 768, least: 128 })); // 128
 * ```
 */
export function chunkRows(
  gpu: Gpu,
  rows: number,
  options: { width: number; least: number; label?: string },
): number {
  const perBinding = rowsPerBinding(gpu, options);
  const maxChunks = gpu.device.limits.maxComputeWorkgroupsPerDimension;
  return Math.min(
    perBinding,
    Math.max(options.least, Math.ceil(Math.min(rows, perBinding) / maxChunks)),
  );
}

/**
 * Splits `rows` rows of several views into windows that each fit in one storage binding per
 * view, in order. Row `r` of a view of width `w` is its elements `[r * w, (r + 1) * w)`. No rows,
 * no windows.
 *
 * @param gpu The device, for its binding size and alignment.
 * @param rows Rows every view holds.
 * @param views The operands, in binding order; a view may appear twice.
 * @param options Row widths, a row multiple, the kernel's name.
 * @returns The windows, first rows first.
 * @throws {RangeError} When `multiple` rows of the widest view do not fit in one binding, or a
 * view holds fewer than `rows` rows.
 *
 * @example Add two long vectors one window at a time
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { windows } from "./kernels/dispatch.ts";
 * import { Tensor } from "./kernels/tensor.ts";
 * using gpu = await Gpu.acquire({ maxBindingBytes: 4096 });
 * using a = Tensor.empty(gpu, [3000]);
 * using b = Tensor.empty(gpu, [3000]);
 * for (const w of windows(gpu, 3000, [a, b])) console.log(w.begin, w.count, w.shifts);
 * ```
 */
export function* windows(
  gpu: Gpu,
  rows: number,
  views: readonly BufferView[],
  options: WindowOptions = {},
): Generator<RowWindow> {
  const { multiple = 1, label = "kernel" } = options;
  const widths = options.widths ?? views.map(() => 1);
  if (widths.length !== views.length) {
    throw new RangeError(`Cannot run ${label}: ${widths.length} widths for ${views.length} views`);
  }
  const perBinding = rowsPerBinding(gpu, { width: Math.max(1, ...widths), label });
  const perWindow = Math.floor(perBinding / multiple) * multiple;
  if (!(perWindow >= 1)) {
    throw new RangeError(
      `Cannot run ${label}: ${multiple} rows are over the ${gpu.maxBindingBytes}-byte binding ` +
        `limit`,
    );
  }
  const ranges = views.map((view, k) => {
    const range = viewRange(view);
    if (range.size < rows * widths[k]) {
      throw new RangeError(
        `Cannot run ${label}: view ${k} holds ${range.size} elements, not ${rows} rows of ` +
          `${widths[k]}`,
      );
    }
    return range;
  });
  for (let begin = 0; begin < rows; begin += perWindow) {
    const count = Math.min(perWindow, rows - begin);
    const bound = ranges.map(({ tensor, offset }, k) =>
      window(gpu, tensor.buffer, {
        begin: offset + begin * widths[k],
        end: offset + (begin + count) * widths[k],
      })
    );
    yield {
      begin,
      count,
      bindings: bound.map((w) => w.binding),
      shifts: bound.map((w) => w.shift),
    };
  }
}

/**
 * The binding that covers all of `view`, and where the view starts inside it.
 *
 * @param gpu The device, for its binding size and alignment.
 * @param view A tensor or a part of one.
 * @returns The binding (its offset aligned down) and the view's shift inside it.
 * @throws {GpuError} When the view does not fit in one binding.
 *
 * @example Bind a slice of an arena
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { bindView } from "./kernels/dispatch.ts";
 * import { Tensor } from "./kernels/tensor.ts";
 * using gpu = await Gpu.acquire();
 * using arena = Tensor.empty(gpu, [1000]);
 * const { binding, shift } = bindView(gpu, { tensor: arena, offset: 77, size: 10 });
 * // The binding starts at or before byte 308, on the adapter's offset alignment.
 * console.log(binding.offset! + 4 * shift); // 308
 * ```
 */
export function bindView(gpu: Gpu, view: BufferView): Window {
  const { tensor, offset, size } = viewRange(view);
  return window(gpu, tensor.buffer, { begin: offset, end: offset + size });
}

/**
 * The workgroup grid `[x, y]` for `groups` workgroups: one row while they fit in a dimension,
 * else as many rows of the per-dimension maximum as needed. The kernel takes workgroup
 * `wid.x + wid.y * num_workgroups.x` and skips the overhang past `groups`.
 *
 * @param gpu The device, for `maxComputeWorkgroupsPerDimension`.
 * @param groups Workgroups wanted.
 * @param options `max`: a lower cap per dimension (tests use it to exercise the wrap).
 * @returns `[x, y]` with `x * y >= groups`; `[0, 1]` for none.
 *
 * @example 100 000 workgroups
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { grid } from "./kernels/dispatch.ts";
 * using gpu = await Gpu.acquire();
 * console.log(grid(gpu, 100_000)); // [65535, 2] on most adapters
 * ```
 */
export function grid(gpu: Gpu, groups: number, options: { max?: number } = {}): [number, number] {
  const limit = gpu.device.limits.maxComputeWorkgroupsPerDimension;
  const max = Math.min(limit, options.max ?? limit);
  return groups <= max ? [groups, 1] : [max, Math.ceil(groups / max)];
}

/**
 * Checks that a view holds `size` elements of `dtype`.
 *
 * @param label The kernel, for the message.
 * @param name The operand, for the message.
 * @param view The operand.
 * @param options `size`: elements it must hold; `dtype`: default `"f32"`.
 * @throws {RangeError} Naming the operand, on another size or dtype.
 *
 * @example Check a gradient
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { checkView } from "./kernels/dispatch.ts";
 * import { Tensor } from "./kernels/tensor.ts";
 * using gpu = await Gpu.acquire();
 * using grad = Tensor.empty(gpu, [3]);
 * checkView("adamw", "grad", grad, { size: 3 });
 * ```
 */
export function checkView(
  label: string,
  name: string,
  view: BufferView,
  options: { size: number; dtype?: Tensor["dtype"] },
): void {
  const { tensor, size } = viewRange(view);
  const dtype = options.dtype ?? "f32";
  if (size !== options.size) {
    throw new RangeError(
      `Cannot run ${label}: "${name}" has ${size} elements, expected ${options.size}`,
    );
  }
  if (tensor.dtype !== dtype) {
    throw new RangeError(`Cannot run ${label}: "${name}" is ${tensor.dtype}, not ${dtype}`);
  }
}

/**
 * Checks that every view holds f32 elements, as many as the first.
 *
 * @param label The kernel, for the message.
 * @param views Operands by name; the first sets the size.
 * @returns The element count they share (0 for no views).
 * @throws {RangeError} Naming the first operand of another size or dtype.
 *
 * @example Two operands of one size
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { checkSameSize } from "./kernels/dispatch.ts";
 * import { Tensor } from "./kernels/tensor.ts";
 * using gpu = await Gpu.acquire();
 * using a = Tensor.empty(gpu, [5]);
 * using b = Tensor.empty(gpu, [10]);
 * console.log(checkSameSize("residual_forward", { a, b: { tensor: b, offset: 5 } })); // 5
 * ```
 */
export function checkSameSize(label: string, views: Readonly<Record<string, BufferView>>): number {
  const all = Object.entries(views);
  const size = all.length ? viewRange(all[0][1]).size : 0;
  for (const [name, view] of all) checkView(label, name, view, { size });
  return size;
}

/**
 * Checks that no output lies in the same buffer as an input: WebGPU forbids binding one buffer
 * as written and as read in the same dispatch.
 *
 * @param label The kernel, for the message.
 * @param outputs Written operands by name.
 * @param inputs Read operands by name; absent ones are skipped.
 * @throws {RangeError} Naming the first output and input that share a buffer.
 *
 * @example An in-place update is refused
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { checkDistinct } from "./kernels/dispatch.ts";
 * import { Tensor } from "./kernels/tensor.ts";
 * using gpu = await Gpu.acquire();
 * using x = Tensor.empty(gpu, [4]);
 * try {
 *   checkDistinct("gelu_forward", { out: x }, { inp: x });
 * } catch (e) {
 *   console.log((e as Error).message); // ... output "out" and input "inp" share one buffer
 * }
 * ```
 */
export function checkDistinct(
  label: string,
  outputs: Readonly<Record<string, BufferView>>,
  inputs: Readonly<Record<string, BufferView | undefined>>,
): void {
  for (const [out, o] of Object.entries(outputs)) {
    for (const [inp, i] of Object.entries(inputs)) {
      if (i && viewRange(o).tensor.buffer === viewRange(i).tensor.buffer) {
        throw new RangeError(
          `Cannot run ${label}: output "${out}" and input "${inp}" share one buffer`,
        );
      }
    }
  }
}

/** A strided operand: rows `ld` elements apart, `width` of them used. */
export interface StridedView {
  view: BufferView;
  ld: number;
  width: number;
}

/**
 * Row windows over strided operands (column blocks of wider rows, as RoPE's q and k or SwiGLU's
 * gate and up): {@link windows} takes dense rows, whose last one would run `ld - width` elements
 * past the end of a column block; these bind exactly the span the rows use.
 *
 * @param gpu The device (its binding limits).
 * @param rows Rows in all.
 * @param views The operands, each with its row pitch and used width.
 * @param label Names the operation in errors.
 * @returns Windows: first row, row count, one binding and element shift per view.
 */
export function* stridedWindows(
  gpu: Gpu,
  rows: number,
  views: readonly StridedView[],
  label: string,
): Generator<{ begin: number; count: number; bindings: BufferBinding[]; shifts: number[] }> {
  const perWindow = rowsPerBinding(gpu, { width: Math.max(...views.map((v) => v.ld)), label });
  const ranges = views.map((v) => viewRange(v.view));
  for (let begin = 0; begin < rows; begin += perWindow) {
    const count = Math.min(perWindow, rows - begin);
    const bound = views.map((v, k) =>
      window(gpu, ranges[k].tensor.buffer, {
        begin: ranges[k].offset + begin * v.ld,
        end: ranges[k].offset + (begin + count - 1) * v.ld + v.width,
      })
    );
    yield {
      begin,
      count,
      bindings: bound.map((b) => b.binding),
      shifts: bound.map((b) => b.shift),
    };
  }
}

/** Workgroup sizes of the kernels that reduce one row a workgroup (the normalizations). */
export const ROW_WORKGROUPS = [32, 128] as const;
/** One of {@link ROW_WORKGROUPS}. */
export type RowWorkgroup = (typeof ROW_WORKGROUPS)[number];

/**
 * The workgroup size for reducing rows of `channels` values, one row a workgroup: 32 threads under
 * 512 channels, 128 from there. Each step of a tree reduction is a barrier, which a CPU rasterizer
 * pays per thread: on llvmpipe 128-channel rows normalized 3x faster with 32 threads.
 *
 * @param channels Values a row.
 * @returns The threads of the workgroup.
 */
export function rowWorkgroup(channels: number): RowWorkgroup {
  return channels < 512 ? 32 : 128;
}

/**
 * Compiles a row-reducing kernel once for each of {@link ROW_WORKGROUPS}.
 *
 * @param load Compiles the kernel at one workgroup size.
 * @returns The kernels by workgroup size; pick one with {@link rowWorkgroup}.
 */
export async function loadRowKernels<K>(
  load: (wg: RowWorkgroup) => Promise<K>,
): Promise<Record<RowWorkgroup, K>> {
  const kernels = await Promise.all(ROW_WORKGROUPS.map(load));
  return Object.fromEntries(ROW_WORKGROUPS.map((wg, i) => [wg, kernels[i]])) as Record<
    RowWorkgroup,
    K
  >;
}
