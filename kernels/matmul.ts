/**
 * Host wrapper of `matmul.wgsl`: batched `C = alpha * op(A)·op(B) (+ bias) (+ C)` in f32 with
 * per-operand batch strides, any sizes, and operands larger than one storage binding (split into
 * chunks that each fit).
 *
 * @module
 */

import { align, type BufferBinding, type Gpu, type Kernel } from "./gpu.ts";
import { Tensor, window } from "./tensor.ts";
import { UniformStruct } from "./uniform_struct.ts";
import MATMUL_WGSL from "./matmul.wgsl" with { type: "text" };

/**
 * The kernels of `matmul.wgsl`: 4x4 registers with scalar loads (any layout), 8x8 or 16x32
 * registers with vec4 loads (aligned layouts; others fall back to `blocked`), or shared memory.
 */
export type MatmulVariant = "blocked" | "vec4" | "wide" | "tiled";

/** Every variant, in the order "auto" measures them. */
export const MATMUL_VARIANTS: readonly MatmulVariant[] = ["blocked", "vec4", "wide", "tiled"];

/** Options of {@link Matmul.run}. */
export interface MatmulOptions {
  /** Multiply by Aᵀ: `a` is stored [K, M] (or [batch, K, M]). */
  transA?: boolean;
  /** Multiply by Bᵀ: `b` is stored [N, K] (or [batch, N, K]). */
  transB?: boolean;
  /** [N], added to every row of the product. */
  bias?: Tensor;
  /** Adds the product to what `out` holds. */
  accumulate?: boolean;
  /** Scales the product (not the bias or the accumulated values). Default 1. */
  alpha?: number;
  /** Where to write; allocated when absent. */
  out?: Tensor;
  /** Overrides the variant chosen at load. */
  variant?: MatmulVariant;
}

/** Buffers of {@link Matmul.raw}. */
export interface MatmulBuffers {
  out: GPUBuffer;
  a: GPUBuffer;
  b: GPUBuffer;
  bias?: GPUBuffer;
}

/**
 * Sizes and element layout of {@link Matmul.raw}: op(A) is M x K, op(B) is K x N, C is M x N,
 * each item of a batch `stride*` elements after the previous one (0 broadcasts an operand).
 */
export interface MatmulLayout {
  m: number;
  n: number;
  k: number;
  batch?: number;
  transA?: boolean;
  transB?: boolean;
  /** Row pitch of A as stored; default K (or M when transposed). */
  lda?: number;
  /** Row pitch of B as stored; default N (or K when transposed). */
  ldb?: number;
  /** Row pitch of C; default N. */
  ldc?: number;
  strideA?: number;
  strideB?: number;
  strideC?: number;
  offsetA?: number;
  offsetB?: number;
  offsetC?: number;
  offsetBias?: number;
  alpha?: number;
  accumulate?: boolean;
  variant?: MatmulVariant;
}

const FLAG_TRANS_A = 1;
const FLAG_TRANS_B = 2;
const FLAG_BIAS = 4;
const FLAG_ACCUMULATE = 8;
const MAX_GROUPS = 65535;
const CACHE_FILE = "out/cache/matmul-variant.json";
const PARAMS = new UniformStruct("Params", {
  m: "u32",
  n: "u32",
  k: "u32",
  flags: "u32",
  lda: "u32",
  ldb: "u32",
  ldc: "u32",
  alpha: "f32",
  stride_a: "u32",
  stride_b: "u32",
  stride_c: "u32",
  off_bias: "u32",
  off_a: "u32",
  off_b: "u32",
  off_c: "u32",
  pad: "u32",
}, { wgsl: MATMUL_WGSL });
const chosenVariants = new Map<string, MatmulVariant>();

/** Fewest output columns the `wide` variant is used for; narrower products take `vec4`. */
const WIDE_MIN_COLUMNS = 512;

/** Workgroup shapes and the C tile each workgroup covers. */
const GEOMETRY = {
  blocked: { constants: { WG_X: 8, WG_Y: 1 }, rows: 4, cols: 32 },
  vec4: { constants: { WG_X: 8, WG_Y: 1 }, rows: 8, cols: 64 },
  wide: { constants: { WG_X: 8, WG_Y: 1 }, rows: 16, cols: 256 },
  tiled: { constants: {}, rows: 64, cols: 64 },
} as const;

/** Entry points by variant and layout (`nt` = A·Bᵀ); a missing layout falls back to vec4. */
const ENTRIES: Record<MatmulVariant, Partial<Record<"nn" | "nt" | "tn" | "tt", string>>> = {
  blocked: { nn: "matmul_blocked" },
  vec4: {
    nn: "matmul_vec4_nn",
    nt: "matmul_vec4_nt",
    tn: "matmul_vec4_tn",
    tt: "matmul_vec4_tt",
  },
  wide: { nn: "matmul_wide_nn", nt: "matmul_wide_nt", tn: "matmul_wide_tn" },
  tiled: { nn: "matmul_tiled" },
};

/** One rectangular piece of the problem: batch, rows, columns and K ranges, half open. */
interface Chunk {
  z: [number, number];
  i: [number, number];
  j: [number, number];
  p: [number, number];
  accumulate: boolean;
  bias: boolean;
}

/** The layout with every default filled in and checked. */
type Resolved = Required<Omit<MatmulLayout, "variant">> & { variant: MatmulVariant };

/** One operand's element range over a chunk: a base offset and (extent, stride) per dimension. */
interface Span {
  buffer: GPUBuffer;
  base: number;
  dims: { axis: keyof Omit<Chunk, "accumulate" | "bias">; stride: number }[];
}

/**
 * Matrix multiply on the GPU. Pipelines are compiled by {@link Matmul.load}, so recording is
 * synchronous.
 *
 * @example Multiply two matrices
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { Matmul } from "./kernels/matmul.ts";
 * import { Tensor } from "./kernels/tensor.ts";
 * using gpu = await Gpu.acquire();
 * const matmul = await Matmul.load(gpu);
 * using a = Tensor.from(gpu, new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]);
 * using b = Tensor.from(gpu, new Float32Array([1, 0, 0, 1, 1, 1]), [3, 2]);
 * using c = matmul.run(a, b);
 * console.log(await c.read()); // Float32Array [4, 5, 10, 11]
 * ```
 */
export class Matmul {
  private constructor(
    readonly gpu: Gpu,
    readonly variant: MatmulVariant,
    /**
     * The compiled kernels of the variant, by name.
     *
     * @internal
     */
    readonly kernels: ReadonlyMap<string, Kernel>,
  ) {}

  /**
   * Compiles every variant and picks the one to use: the given one, or with `"auto"` (the
   * default) the fastest on this adapter, measured once and cached by adapter description (and
   * kernel source) in memory and in `out/cache/matmul-variant.json` when writable.
   */
  static async load(
    gpu: Gpu,
    options: { variant?: MatmulVariant | "auto" } = {},
  ): Promise<Matmul> {
    const kernels = new Map<string, Kernel>();
    const entries = MATMUL_VARIANTS.flatMap((variant) =>
      Object.values(ENTRIES[variant]).map((entry) => [entry, variant] as const)
    );
    await Promise.all(entries.map(async ([entry, variant]) => {
      kernels.set(
        entry,
        await gpu.kernel({
          label: entry,
          code: MATMUL_WGSL,
          entry,
          bindings: ["storage", "read", "read", "read", "uniform"],
          constants: GEOMETRY[variant].constants,
        }),
      );
    }));
    const requested = options.variant ?? "auto";
    if (requested !== "auto") {
      if (!MATMUL_VARIANTS.includes(requested)) {
        throw new RangeError(
          `Unknown matmul variant "${requested}": expected one of ${MATMUL_VARIANTS.join(", ")}`,
        );
      }
      return new Matmul(gpu, requested, kernels);
    }
    const fallback = new Matmul(gpu, "blocked", kernels);
    const variant = chosenVariants.get(gpu.adapterName) ?? await readCachedVariant(gpu) ??
      await measureFastest(fallback);
    chosenVariants.set(gpu.adapterName, variant);
    return new Matmul(gpu, variant, kernels);
  }

  /**
   * Records `out = alpha * op(a)·op(b) (+ bias) (+ out)`. 2-D operands multiply as matrices; a
   * 3-D operand [batch, ...] makes it batched, and a 2-D one (or batch 1) is shared by every
   * item. Records only: nothing is submitted.
   *
   * @param a [M, K], or [K, M] with `transA`, optionally with a leading batch dimension
   * @param b [K, N], or [N, K] with `transB`, optionally with a leading batch dimension
   * @param options transposes, bias, accumulate, alpha, output tensor
   * @returns `options.out`, or a new [M, N] (or [batch, M, N]) tensor
   */
  run(a: Tensor, b: Tensor, options: MatmulOptions = {}): Tensor {
    const { transA = false, transB = false } = options;
    for (const [name, t] of [["A", a], ["B", b], ["bias", options.bias], ["out", options.out]]) {
      if (t && (t as Tensor).dtype !== "f32") {
        throw new TypeError(`Cannot multiply: ${name} is ${(t as Tensor).dtype}, expected f32`);
      }
    }
    const describe = (t: Tensor, trans: boolean) => `[${t.shape}]${trans ? "ᵀ" : ""}`;
    const what = `Cannot multiply ${describe(a, transA)} by ${describe(b, transB)}`;
    if (a.shape.length < 2 || a.shape.length > 3 || b.shape.length < 2 || b.shape.length > 3) {
      throw new RangeError(`${what}: operands must be 2-D or 3-D`);
    }
    const [batchA, rowsA, colsA] = a.shape.length === 3 ? a.shape : [1, ...a.shape];
    const [batchB, rowsB, colsB] = b.shape.length === 3 ? b.shape : [1, ...b.shape];
    const [m, kA] = transA ? [colsA, rowsA] : [rowsA, colsA];
    const [kB, n] = transB ? [colsB, rowsB] : [rowsB, colsB];
    if (kA !== kB) throw new RangeError(`${what}: inner sizes ${kA} and ${kB} differ`);
    if (batchA !== batchB && batchA !== 1 && batchB !== 1) {
      throw new RangeError(`${what}: batch sizes ${batchA} and ${batchB} differ`);
    }
    const batch = Math.max(batchA, batchB);
    const batched = a.shape.length === 3 || b.shape.length === 3;
    const shape = batched ? [batch, m, n] : [m, n];
    if (options.bias && (options.bias.shape.length !== 1 || options.bias.shape[0] !== n)) {
      throw new RangeError(`${what}: bias has shape [${options.bias.shape}], expected [${n}]`);
    }
    const out = options.out;
    if (out && out.size !== batch * m * n) {
      throw new RangeError(`${what}: out has shape [${out.shape}], expected [${shape}]`);
    }
    const result = out ?? Tensor.empty(this.gpu, shape, { label: "matmul out" });
    this.raw({ out: result.buffer, a: a.buffer, b: b.buffer, bias: options.bias?.buffer }, {
      m,
      n,
      k: kA,
      batch,
      transA,
      transB,
      strideA: batchA === 1 ? 0 : m * kA,
      strideB: batchB === 1 ? 0 : kA * n,
      alpha: options.alpha,
      accumulate: options.accumulate,
      variant: options.variant,
    });
    return result;
  }

  /**
   * Records the product on raw buffers with an explicit element layout, for callers whose
   * operands are views into bigger buffers. Operands larger than one binding are split.
   *
   * @param buffers output, A, B and optional bias buffers (the output may alias none of them)
   * @param layout sizes, leading dimensions, batch strides, offsets, flags
   *
   * @internal
   */
  raw(buffers: MatmulBuffers, layout: MatmulLayout): void {
    const r = resolve(buffers, { ...layout, variant: layout.variant ?? this.variant });
    const spans = spansOf(buffers, r);
    this.#split(r, spans, {
      z: [0, r.batch],
      i: [0, r.m],
      j: [0, r.n],
      p: [0, r.k],
      accumulate: r.accumulate,
      bias: buffers.bias !== undefined,
    });
  }

  #split(r: Resolved, spans: Span[], chunk: Chunk): void {
    const geometry = GEOMETRY[r.variant];
    const groups = {
      z: extent(chunk.z),
      i: Math.ceil(extent(chunk.i) / Math.min(geometry.rows, GEOMETRY.blocked.rows)),
      j: Math.ceil(extent(chunk.j) / Math.min(geometry.cols, GEOMETRY.blocked.cols)),
    };
    let worst: { axis: keyof typeof groups | "p"; weight: number } | null = null;
    for (const [axis, count] of Object.entries(groups) as [keyof typeof groups, number][]) {
      if (count > MAX_GROUPS && (!worst || count > worst.weight)) worst = { axis, weight: count };
    }
    if (!worst) {
      for (const span of spans) {
        const bytes = windowBytes(this.gpu, span, chunk);
        if (bytes <= this.gpu.maxBindingBytes) continue;
        for (const { axis, stride } of span.dims) {
          const weight = (extent(chunk[axis]) - 1) * stride;
          if (weight > 0 && (!worst || weight > worst.weight)) worst = { axis, weight };
        }
      }
    }
    if (!worst) return this.#dispatch(r, spans, chunk);
    const [lo, hi] = chunk[worst.axis];
    const size = hi - lo;
    const half = size > 128 ? align(Math.ceil(size / 2), 64) : Math.ceil(size / 2);
    const first = { ...chunk, [worst.axis]: [lo, lo + half] };
    const second = { ...chunk, [worst.axis]: [lo + half, hi] };
    this.#split(r, spans, first);
    // K chunks after the first add to what the first wrote, and the bias is added once.
    if (worst.axis === "p") Object.assign(second, { accumulate: true, bias: false });
    this.#split(r, spans, second);
  }

  #dispatch(r: Resolved, spans: Span[], chunk: Chunk): void {
    const [spanA, spanB, spanC, spanBias] = spans;
    const bind = (span: Span, vec4: boolean) => bindSpan(this.gpu, span, chunk, vec4);
    const layout = `${r.transA ? "t" : "n"}${r.transB ? "t" : "n"}` as const;
    let variant: MatmulVariant = r.variant;
    // A 16 x 256 tile on a few rows (decoding, small batches) or under 512 columns (a layer of a
    // small model, an adapter's rank-r factor) wastes much of its work: on llvmpipe vec4's 8 x 64
    // tile took 1.3-3.5x less time at 1024 rows and 8-384 columns, wide 1.1-1.3x less from 512.
    if (
      variant === "wide" &&
      (!ENTRIES.wide[layout] || extent(chunk.i) <= 8 || extent(chunk.j) < WIDE_MIN_COLUMNS)
    ) {
      variant = "vec4";
    }
    let vec4 = (variant === "vec4" || variant === "wide") && r.lda % 4 === 0 &&
      r.ldb % 4 === 0 && (extent(chunk.z) === 1 || (r.strideA % 4 === 0 && r.strideB % 4 === 0));
    let a = vec4 ? bind(spanA, true) : null;
    let b = vec4 ? bind(spanB, true) : null;
    if (!a || !b || a.shift % 4 !== 0 || b.shift % 4 !== 0) {
      vec4 = false;
      a = bind(spanA, false)!;
      b = bind(spanB, false)!;
    }
    if (!vec4 && (variant === "vec4" || variant === "wide")) variant = "blocked";
    const entry = ENTRIES[variant][layout] ?? ENTRIES[variant].nn!;
    const c = bind(spanC, false)!;
    const bias = chunk.bias && spanBias ? bind(spanBias, false)! : a;
    const m = extent(chunk.i);
    const n = extent(chunk.j);
    const uniforms = PARAMS.pack({
      m,
      n,
      k: extent(chunk.p),
      flags: (r.transA ? FLAG_TRANS_A : 0) | (r.transB ? FLAG_TRANS_B : 0) |
        (chunk.bias && spanBias ? FLAG_BIAS : 0) | (chunk.accumulate ? FLAG_ACCUMULATE : 0),
      lda: r.lda,
      ldb: r.ldb,
      ldc: r.ldc,
      alpha: r.alpha,
      stride_a: r.strideA,
      stride_b: r.strideB,
      stride_c: r.strideC,
      off_bias: bias.shift,
      off_a: a.shift,
      off_b: b.shift,
      off_c: c.shift,
      pad: 0,
    });
    const geometry = GEOMETRY[variant];
    this.gpu.dispatch(this.kernels.get(entry)!, [c.binding, a.binding, b.binding, bias.binding], {
      uniforms,
      workgroups: [
        Math.ceil(n / geometry.cols),
        Math.ceil(m / geometry.rows),
        extent(chunk.z),
      ],
    });
  }
}

function extent([lo, hi]: [number, number]): number {
  return hi - lo;
}

function resolve(buffers: MatmulBuffers, layout: MatmulLayout): Resolved {
  const { m, n, k, transA = false, transB = false } = layout;
  const r: Resolved = {
    m,
    n,
    k,
    batch: layout.batch ?? 1,
    transA,
    transB,
    lda: layout.lda ?? (transA ? m : k),
    ldb: layout.ldb ?? (transB ? k : n),
    ldc: layout.ldc ?? n,
    strideA: layout.strideA ?? m * k,
    strideB: layout.strideB ?? k * n,
    strideC: layout.strideC ?? m * n,
    offsetA: layout.offsetA ?? 0,
    offsetB: layout.offsetB ?? 0,
    offsetC: layout.offsetC ?? 0,
    offsetBias: layout.offsetBias ?? 0,
    alpha: layout.alpha ?? 1,
    accumulate: layout.accumulate ?? false,
    variant: layout.variant ?? "blocked",
  };
  for (const name of ["m", "n", "k", "batch"] as const) {
    if (!Number.isSafeInteger(r[name]) || r[name] < 1) {
      throw new RangeError(`Cannot multiply: ${name} is ${r[name]}, expected an integer >= 1`);
    }
  }
  for (
    const name of [
      "lda",
      "ldb",
      "ldc",
      "strideA",
      "strideB",
      "strideC",
      "offsetA",
      "offsetB",
      "offsetC",
      "offsetBias",
    ] as const
  ) {
    if (!Number.isSafeInteger(r[name]) || r[name] < 0 || r[name] >= 2 ** 32) {
      throw new RangeError(`Cannot multiply: ${name} is ${r[name]}, expected a u32`);
    }
  }
  const minLda = transA ? m : k;
  const minLdb = transB ? k : n;
  if (r.lda < minLda) throw new RangeError(`Cannot multiply: lda ${r.lda} is below ${minLda}`);
  if (r.ldb < minLdb) throw new RangeError(`Cannot multiply: ldb ${r.ldb} is below ${minLdb}`);
  if (r.ldc < n) throw new RangeError(`Cannot multiply: ldc ${r.ldc} is below N = ${n}`);
  if (!Number.isFinite(r.alpha)) throw new RangeError(`Cannot multiply: alpha is ${r.alpha}`);
  if (!MATMUL_VARIANTS.includes(r.variant)) {
    throw new RangeError(`Unknown matmul variant "${r.variant}"`);
  }
  const { out, a, b, bias } = buffers;
  if (out === a || out === b || out === bias) {
    throw new RangeError("Cannot multiply: the output buffer is also an input");
  }
  return r;
}

function spansOf(buffers: MatmulBuffers, r: Resolved): Span[] {
  const spans: Span[] = [
    {
      buffer: buffers.a,
      base: r.offsetA,
      dims: [
        { axis: "z", stride: r.strideA },
        { axis: "i", stride: r.transA ? 1 : r.lda },
        { axis: "p", stride: r.transA ? r.lda : 1 },
      ],
    },
    {
      buffer: buffers.b,
      base: r.offsetB,
      dims: [
        { axis: "z", stride: r.strideB },
        { axis: "p", stride: r.transB ? 1 : r.ldb },
        { axis: "j", stride: r.transB ? r.ldb : 1 },
      ],
    },
    {
      buffer: buffers.out,
      base: r.offsetC,
      dims: [{ axis: "z", stride: r.strideC }, { axis: "i", stride: r.ldc }, {
        axis: "j",
        stride: 1,
      }],
    },
  ];
  if (buffers.bias) {
    spans.push({ buffer: buffers.bias, base: r.offsetBias, dims: [{ axis: "j", stride: 1 }] });
  }
  const whole: Chunk = {
    z: [0, r.batch],
    i: [0, r.m],
    j: [0, r.n],
    p: [0, r.k],
    accumulate: false,
    bias: false,
  };
  for (const [index, span] of spans.entries()) {
    const [, last] = range(span, whole);
    const held = Math.floor(span.buffer.size / 4);
    if (last >= held) {
      const name = ["A", "B", "out", "bias"][index];
      throw new RangeError(
        `Cannot multiply: ${name} needs elements up to ${last} but its buffer holds ${held}`,
      );
    }
  }
  return spans;
}

/** First and last element of `span` that `chunk` touches. */
function range(span: Span, chunk: Chunk): [number, number] {
  let first = span.base;
  let last = span.base;
  for (const { axis, stride } of span.dims) {
    first += chunk[axis][0] * stride;
    last += (chunk[axis][1] - 1) * stride;
  }
  return [first, last];
}

/** Bytes of the binding that covers `span` over `chunk`, with room for vec4 rounding. */
function windowBytes(gpu: Gpu, span: Span, chunk: Chunk): number {
  const [first, last] = range(span, chunk);
  const offset = Math.floor((first * 4) / gpu.bindingAlignment) * gpu.bindingAlignment;
  return align((last + 1) * 4, 16) - offset;
}

/** The window binding `span` over `chunk`; with `vec4`, null unless it can be read as vec4s. */
function bindSpan(
  gpu: Gpu,
  span: Span,
  chunk: Chunk,
  vec4: boolean,
): { binding: BufferBinding; shift: number } | null {
  const [first, last] = range(span, chunk);
  const w = window(gpu, span.buffer, { begin: first, end: last + 1 });
  if (!vec4) return w;
  const size = align(w.binding.size!, 16);
  if (w.binding.offset! + size > span.buffer.size || size > gpu.maxBindingBytes) return null;
  return { binding: { ...w.binding, size }, shift: w.shift };
}

/** The cache key: the adapter, and the kernel source, so that changed kernels are measured again. */
function cacheKey(gpu: Gpu): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < MATMUL_WGSL.length; i++) {
    h = Math.imul(h ^ MATMUL_WGSL.charCodeAt(i), 0x01000193);
  }
  return `${gpu.adapterName} #${(h >>> 0).toString(16)}`;
}

async function readCachedVariant(gpu: Gpu): Promise<MatmulVariant | undefined> {
  try {
    const cached = JSON.parse(await Deno.readTextFile(CACHE_FILE))[cacheKey(gpu)];
    return MATMUL_VARIANTS.includes(cached) ? cached : undefined;
  } catch {
    // No cache yet, or no permission to read it: measure instead.
    return undefined;
  }
}

/**
 * Times every variant on a mid-sized A·B (after a warm-up run that also compiles it on CPU
 * drivers), best of three interleaved rounds, and records the fastest.
 */
async function measureFastest(matmul: Matmul): Promise<MatmulVariant> {
  const { gpu } = matmul;
  const size = 256;
  using a = Tensor.from(gpu, new Float32Array(size * size).fill(0.5), [size, size]);
  using b = Tensor.from(gpu, new Float32Array(size * size).fill(0.25), [size, size]);
  using out = Tensor.empty(gpu, [size, size]);
  const best = new Map<MatmulVariant, number>();
  for (let round = 0; round < 4; round++) {
    for (const variant of MATMUL_VARIANTS) {
      const { ms } = await gpu.time(() => matmul.run(a, b, { out, variant }));
      if (round > 0) best.set(variant, Math.min(best.get(variant) ?? Infinity, ms));
    }
  }
  const [fastest] = [...best].sort(([, x], [, y]) => x - y)[0];
  await writeCachedVariant(cacheKey(gpu), fastest);
  return fastest;
}

async function writeCachedVariant(key: string, variant: MatmulVariant): Promise<void> {
  try {
    let cache: Record<string, string> = {};
    try {
      cache = JSON.parse(await Deno.readTextFile(CACHE_FILE));
    } catch {
      // Missing or unreadable: start a new one.
    }
    cache[key] = variant;
    await Deno.mkdir("out/cache", { recursive: true });
    const temp = `${CACHE_FILE}.${Deno.pid}.tmp`;
    await Deno.writeTextFile(temp, JSON.stringify(cache, null, 2) + "\n");
    await Deno.rename(temp, CACHE_FILE);
  } catch {
    // A read-only tree or no write permission: the choice stays cached in memory only.
  }
}
