/**
 * GPU tensors: a buffer with a shape and a dtype that hands its memory back when disposed.
 *
 * @module
 */

import { type BufferBinding, type Gpu, GpuError } from "./gpu.ts";

/** Element types a tensor may hold on the GPU (half types are widened to f32 on upload). */
export type DType = "f32" | "u32" | "i32";

/** The host array of each dtype. */
export type HostArray<D extends DType = DType> = D extends "f32" ? Float32Array
  : D extends "u32" ? Uint32Array
  : Int32Array;

/** The dtype of a host array. */
export type DTypeOf<A> = A extends Float32Array ? "f32" : A extends Uint32Array ? "u32" : "i32";

const ARRAYS = { f32: Float32Array, u32: Uint32Array, i32: Int32Array } as const;

/** Number of elements of a shape. */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw new RangeError(`Invalid shape [${shape}]`);
    n *= d;
  }
  return n;
}

/** Options of {@link Tensor.empty} and {@link Tensor.from}. */
export interface TensorOptions<D extends DType = DType> {
  dtype?: D;
  /** Exact-size buffer outside the pool, for weights that live as long as the model. */
  persistent?: boolean;
  label?: string;
}

/**
 * A GPU buffer with a shape and a dtype. Pooled tensors go back to the pool on dispose, after the
 * work already recorded on them has been submitted.
 *
 * @example Upload, read back, free
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { Tensor } from "./kernels/tensor.ts";
 * using gpu = await Gpu.acquire();
 * using t = Tensor.from(gpu, new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]);
 * console.log(await t.read()); // Float32Array [1, 2, 3, 4, 5, 6]
 * ```
 */
export class Tensor<D extends DType = DType> implements Disposable {
  #disposed = false;

  private constructor(
    readonly gpu: Gpu,
    readonly buffer: GPUBuffer,
    readonly shape: readonly number[],
    readonly dtype: D,
    readonly persistent: boolean,
  ) {}

  /** A tensor with unspecified contents. */
  static empty<D extends DType = "f32">(
    gpu: Gpu,
    shape: readonly number[],
    options: TensorOptions<D> = {},
  ): Tensor<D> {
    const dtype = (options.dtype ?? "f32") as D;
    const buffer = gpu.buffer(numel(shape) * 4, options);
    return new Tensor(gpu, buffer, [...shape], dtype, options.persistent ?? false);
  }

  /** A tensor holding `data`, whose length must match `shape`. */
  static from<A extends Float32Array | Uint32Array | Int32Array>(
    gpu: Gpu,
    data: A,
    shape: readonly number[],
    options: Omit<TensorOptions, "dtype"> = {},
  ): Tensor<DTypeOf<A>> {
    const dtype =
      (data instanceof Float32Array
        ? "f32"
        : data instanceof Uint32Array
        ? "u32"
        : "i32") as DTypeOf<A>;
    if (data.length !== numel(shape)) {
      throw new RangeError(
        `Cannot upload ${data.length} values${options.label ? ` to "${options.label}"` : ""} ` +
          `as shape [${shape}] (${numel(shape)} values)`,
      );
    }
    const tensor = Tensor.empty(gpu, shape, { ...options, dtype });
    gpu.write(tensor.buffer, data);
    return tensor;
  }

  /** Number of elements. */
  get size(): number {
    return numel(this.shape);
  }

  /** Bytes of the elements (the buffer may be larger). */
  get byteLength(): number {
    return this.size * 4;
  }

  /** Copies the elements to the host. */
  async read(): Promise<HostArray<D>> {
    this.#alive();
    const bytes = await this.gpu.read(this.buffer, { byteLength: this.byteLength });
    return new ARRAYS[this.dtype](bytes) as HostArray<D>;
  }

  /** Fills the tensor with `value` (its bit pattern for the tensor's dtype). */
  fill(value: number): void {
    this.#alive();
    const data = new ARRAYS[this.dtype](this.size);
    data.fill(value);
    this.gpu.write(this.buffer, data);
  }

  /** Returns the memory to the pool (or destroys a persistent buffer) after pending work. */
  [Symbol.dispose](): void {
    if (this.#disposed) return;
    this.#disposed = true;
    if (this.persistent) {
      this.gpu.flush();
      this.buffer.destroy();
    } else this.gpu.release(this.buffer);
  }

  #alive(): void {
    if (this.#disposed) throw new GpuError(`Tensor "${this.buffer.label}" used after dispose`);
  }
}

/** A binding covering elements [begin, end) of a buffer, and where `begin` lies inside it. */
export interface Window {
  binding: BufferBinding;
  /** Elements between the window's start and `begin` (the binding offset is aligned down). */
  shift: number;
}

/**
 * The storage binding that covers elements [begin, end) of `buffer`, its offset aligned down to
 * the adapter's binding alignment; throws if it cannot fit in one binding.
 */
export function window(gpu: Gpu, buffer: GPUBuffer, range: { begin: number; end: number }): Window {
  const beginByte = range.begin * 4;
  const offset = Math.floor(beginByte / gpu.bindingAlignment) * gpu.bindingAlignment;
  const size = Math.max(range.end * 4 - offset, 4);
  if (size > gpu.maxBindingBytes) {
    throw new GpuError(
      `Cannot bind ${size} bytes of "${buffer.label}": over the ${gpu.maxBindingBytes}-byte limit`,
    );
  }
  return { binding: { buffer, offset, size }, shift: (beginByte - offset) / 4 };
}

/**
 * Where a kernel operand lies: a whole tensor, or part of one. A part is `size` elements from
 * element `offset` (a slice of an arena), or, with `ld`, a matrix whose rows start `ld` elements
 * apart (a column block of a wider matrix). WebGPU forbids binding one buffer as written and as
 * read in the same dispatch, so an output may not lie in the same tensor as an input.
 *
 * @example A tensor, a slice of it, and the q columns of a `[T, 3C]` qkv as a matrix
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { type BufferView, Tensor } from "./kernels/tensor.ts";
 * using gpu = await Gpu.acquire();
 * using qkv = Tensor.empty(gpu, [5, 24]);
 * const views: BufferView[] = [qkv, { tensor: qkv, offset: 3, size: 7 }, { tensor: qkv, ld: 24 }];
 * ```
 */
export type BufferView = Tensor | {
  /** The tensor the view lies in. */
  tensor: Tensor;
  /** First element of the view in the tensor; default 0. */
  offset?: number;
  /** Elements in the view; default to the end of the tensor. */
  size?: number;
  /** Elements from one row to the next, when the view is read as a matrix. */
  ld?: number;
};

/**
 * A {@link BufferView} read as a matrix, its row pitch given: what the linear-adapter hook of the
 * model contract takes (`{ tensor, ld, offset? }`).
 */
export type MatrixView = Extract<BufferView, { tensor: Tensor }> & { ld: number };

/** The elements a view covers: its tensor, first element and element count. */
export interface ViewRange {
  tensor: Tensor;
  offset: number;
  size: number;
}

/**
 * The tensor, first element and element count of `view`, checked to lie inside the tensor.
 *
 * @param view A tensor or a part of one.
 * @returns Where the view's elements lie.
 * @throws {RangeError} When the view is not a whole number of elements inside its tensor.
 *
 * @example The range of a slice
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { Tensor, viewRange } from "./kernels/tensor.ts";
 * using gpu = await Gpu.acquire();
 * using t = Tensor.empty(gpu, [10]);
 * console.log(viewRange({ tensor: t, offset: 4 }).size); // 6
 * ```
 */
export function viewRange(view: BufferView): ViewRange {
  if (view instanceof Tensor) return { tensor: view, offset: 0, size: view.size };
  const { tensor } = view;
  const offset = view.offset ?? 0;
  const size = view.size ?? tensor.size - offset;
  if (
    !Number.isSafeInteger(offset) || !Number.isSafeInteger(size) || offset < 0 || size < 0 ||
    offset + size > tensor.size
  ) {
    throw new RangeError(
      `View of ${size} elements from element ${offset} lies outside tensor ` +
        `"${tensor.buffer.label}" of ${tensor.size}`,
    );
  }
  return { tensor, offset, size };
}
