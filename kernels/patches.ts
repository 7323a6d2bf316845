/**
 * Host wrapper of `patches.wgsl`: the token layout of a vision transformer. Images are cut into
 * patches laid out as the rows of a matrix (so the patch embedding, a convolution with kernel
 * and stride P, is one matrix product with the conv weight read as `[D, C * P * P]`), the class
 * token is prepended and the position embeddings added, and the class token's row of each
 * example is gathered for the head; each with its backward.
 *
 * Every operand must fit in one storage binding (the images of one micro-batch do).
 *
 * @module
 */

import { bindView, checkDistinct, checkView, grid } from "./dispatch.ts";
import type { Gpu, Kernel } from "./gpu.ts";
import type { BufferView } from "./tensor.ts";
import { UniformStruct } from "./uniform_struct.ts";
import code from "./patches.wgsl" with { type: "text" };

const WG = 256;
const SIZES = new UniformStruct("Sizes", {
  B: "u32",
  C: "u32",
  H: "u32",
  W: "u32",
  P: "u32",
  gw: "u32",
  N: "u32",
  D: "u32",
  total: "u32",
  s0: "u32",
  s1: "u32",
  s2: "u32",
  s3: "u32",
}, { wgsl: code });

/** Images cut into patches: `B` images `[C, H, W]`, `P x P` patches. */
export interface PatchGeometry {
  /** Images. */
  B: number;
  /** Channels. */
  C: number;
  /** Height in pixels. */
  H: number;
  /** Width in pixels. */
  W: number;
  /** Patch side in pixels. */
  P: number;
}

/** Patches an image has: `floor(H / P) * floor(W / P)` (the convolution drops a remainder). */
export function patchCount(g: Pick<PatchGeometry, "H" | "W" | "P">): number {
  return Math.floor(g.H / g.P) * Math.floor(g.W / g.P);
}

/** Options of {@link PatchKernels.unfold}. */
export interface UnfoldOptions extends PatchGeometry {
  /** Written: `[B * N, C * P * P]`, row `b * N + n` patch `n` of image `b`. */
  out: BufferView;
  /** The images, `[B, C, H, W]`. */
  inp: BufferView;
}

/** Sizes of the token sequence: `B` examples of `N` patches and a class token, `D` features. */
export interface TokenSizes {
  /** Examples. */
  B: number;
  /** Patches an example (the tokens are `N + 1`). */
  N: number;
  /** Features a token. */
  D: number;
}

/** Options of {@link PatchKernels.tokensForward}. */
export interface TokensForwardOptions extends TokenSizes {
  /** Written: `[B, N + 1, D]`. */
  out: BufferView;
  /** The embedded patches, `[B * N, D]`. */
  patches: BufferView;
  /** The class token, `[D]`. */
  cls: BufferView;
  /** The position embeddings, `[N + 1, D]`. */
  pos: BufferView;
}

/** Options of {@link PatchKernels.tokensBackward}. */
export interface TokensBackwardOptions extends TokenSizes {
  /** Written: `[B * N, D]`, the gradient of the embedded patches. */
  dpatches: BufferView;
  /** Gradient of the tokens, `[B, N + 1, D]`. */
  dout: BufferView;
}

/** Options of {@link PatchKernels.tokensBackwardParams}. */
export interface TokensBackwardParamsOptions extends TokenSizes {
  /** Accumulated: `[N + 1, D]`, the sum over the batch of `dout`. */
  dpos: BufferView;
  /** Accumulated: `[D]`, the sum over the batch of `dout`'s class-token rows. */
  dcls: BufferView;
  /** Gradient of the tokens, `[B, N + 1, D]`. */
  dout: BufferView;
}

/** Options of {@link PatchKernels.classRowsForward}. */
export interface ClassRowsForwardOptions extends TokenSizes {
  /** Written: `[B, D]`, row 0 (the class token) of each example. */
  out: BufferView;
  /** The tokens, `[B, N + 1, D]`. */
  x: BufferView;
}

/** Options of {@link PatchKernels.classRowsBackward}. */
export interface ClassRowsBackwardOptions extends TokenSizes {
  /** Accumulated into its rows 0: `[B, N + 1, D]`; the other rows are left alone. */
  dx: BufferView;
  /** Gradient of the gathered rows, `[B, D]`. */
  dout: BufferView;
}

/**
 * The compiled patch and token kernels of one device. Methods only record work.
 *
 * @example Two 4x4 RGB images in 2x2 patches, as the rows a patch embedding multiplies
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { Tensor } from "./kernels/tensor.ts";
 * import { PatchKernels } from "./kernels/patches.ts";
 * using gpu = await Gpu.acquire();
 * const patches = await PatchKernels.load(gpu);
 * const g = { B: 2, C: 3, H: 4, W: 4, P: 2 };
 * using inp = Tensor.from(gpu, new Float32Array(2 * 3 * 16).fill(0.5), [2, 3, 4, 4]);
 * using out = Tensor.empty(gpu, [2 * 4, 3 * 2 * 2]);
 * patches.unfold({ out, inp, ...g });
 * ```
 */
export class PatchKernels {
  private constructor(readonly gpu: Gpu, readonly kernels: Readonly<Record<string, Kernel>>) {}

  /**
   * Compiles the kernels (cached by the device).
   *
   * @param gpu The device.
   * @returns The kernels.
   */
  static async load(gpu: Gpu): Promise<PatchKernels> {
    const entries: Record<string, number[]> = {
      unfold_forward: [1, 1],
      tokens_forward: [1, 3],
      tokens_backward: [1, 1],
      tokens_backward_params: [2, 1],
      class_rows_forward: [1, 1],
      class_rows_backward: [1, 1],
    };
    const loaded = await Promise.all(
      Object.entries(entries).map(([entry, [outs, ins]]) =>
        gpu.kernel({
          label: entry,
          code,
          entry,
          bindings: [
            ...Array<"storage">(outs).fill("storage"),
            ...Array<"read">(ins).fill("read"),
            "uniform",
          ],
          constants: { WG },
        }).then((k) => [entry, k] as const)
      ),
    );
    return new PatchKernels(gpu, Object.fromEntries(loaded));
  }

  /**
   * Records cutting `B` images into their `N` patches, one row each in the conv weight's order
   * (channel, row, column).
   *
   * @param options The output, the images and their geometry.
   * @throws {RangeError} On an operand of the wrong size, or patches larger than the image.
   */
  unfold(options: UnfoldOptions): void {
    const { B, C, H, W, P } = options;
    for (const [name, v] of Object.entries({ B, C, H, W, P })) checkCount("unfold", name, v);
    if (P < 1 || P > H || P > W) {
      throw new RangeError(`Cannot unfold ${H}x${W} images into ${P}x${P} patches`);
    }
    const N = patchCount(options);
    const total = B * N * C * P * P;
    this.#run("unfold_forward", { out: [options.out, total] }, {
      inp: [options.inp, B * C * H * W],
    }, { B, C, H, W, P, gw: Math.floor(W / P), N, total });
  }

  /**
   * Records the token sequence: the class token then the patches, each plus its position
   * embedding.
   *
   * @param options The output, the patches, class token and position embeddings, and sizes.
   * @throws {RangeError} On an operand of the wrong size.
   */
  tokensForward(options: TokensForwardOptions): void {
    const { B, N, D } = checkTokens("tokens_forward", options);
    this.#run("tokens_forward", { out: [options.out, B * (N + 1) * D] }, {
      patches: [options.patches, B * N * D],
      cls: [options.cls, D],
      pos: [options.pos, (N + 1) * D],
    }, { B, N, D, total: B * (N + 1) * D });
  }

  /**
   * Records the gradient of the embedded patches: the patch rows of the tokens' gradient.
   *
   * @param options The output, the tokens' gradient, and sizes.
   * @throws {RangeError} On an operand of the wrong size.
   */
  tokensBackward(options: TokensBackwardOptions): void {
    const { B, N, D } = checkTokens("tokens_backward", options);
    this.#run("tokens_backward", { dpatches: [options.dpatches, B * N * D] }, {
      dout: [options.dout, B * (N + 1) * D],
    }, { B, N, D, total: B * N * D });
  }

  /**
   * Records the gradients of the position embeddings and the class token, added to what they
   * hold: the tokens' gradient summed over the batch.
   *
   * @param options The two gradients, the tokens' gradient, and sizes.
   * @throws {RangeError} On an operand of the wrong size.
   */
  tokensBackwardParams(options: TokensBackwardParamsOptions): void {
    const { B, N, D } = checkTokens("tokens_backward_params", options);
    this.#run(
      "tokens_backward_params",
      {
        dpos: [options.dpos, (N + 1) * D],
        dcls: [options.dcls, D],
      },
      { dout: [options.dout, B * (N + 1) * D] },
      { B, N, D, total: (N + 1) * D },
    );
  }

  /**
   * Records gathering each example's class-token row.
   *
   * @param options The output, the tokens, and sizes.
   * @throws {RangeError} On an operand of the wrong size.
   */
  classRowsForward(options: ClassRowsForwardOptions): void {
    const { B, N, D } = checkTokens("class_rows_forward", options);
    this.#run("class_rows_forward", { out: [options.out, B * D] }, {
      x: [options.x, B * (N + 1) * D],
    }, { B, N, D, total: B * D });
  }

  /**
   * Records adding the gathered rows' gradient into the class-token rows of `dx`.
   *
   * @param options The gradient added to, the rows' gradient, and sizes.
   * @throws {RangeError} On an operand of the wrong size.
   */
  classRowsBackward(options: ClassRowsBackwardOptions): void {
    const { B, N, D } = checkTokens("class_rows_backward", options);
    this.#run("class_rows_backward", { dx: [options.dx, B * (N + 1) * D] }, {
      dout: [options.dout, B * D],
    }, { B, N, D, total: B * D });
  }

  #run(
    entry: string,
    outputs: Record<string, [BufferView, number]>,
    inputs: Record<string, [BufferView, number]>,
    sizes: Partial<Record<"B" | "C" | "H" | "W" | "P" | "gw" | "N" | "D", number>> & {
      total: number;
    },
  ): void {
    const all = { ...outputs, ...inputs };
    for (const [name, [view, size]] of Object.entries(all)) checkView(entry, name, view, { size });
    checkDistinct(
      entry,
      Object.fromEntries(Object.entries(outputs).map(([n, [v]]) => [n, v])),
      Object.fromEntries(Object.entries(inputs).map(([n, [v]]) => [n, v])),
    );
    if (sizes.total === 0) return;
    if (sizes.total >= 2 ** 32) {
      throw new RangeError(`Cannot run ${entry}: ${sizes.total} elements`);
    }
    const bound = Object.values(all).map(([view]) => bindView(this.gpu, view));
    const s = bound.map((b) => b.shift);
    this.gpu.dispatch(this.kernels[entry], bound.map((b) => b.binding), {
      uniforms: SIZES.pack({
        B: 0,
        C: 0,
        H: 0,
        W: 0,
        P: 0,
        gw: 0,
        N: 0,
        D: 0,
        ...sizes,
        s0: s[0] ?? 0,
        s1: s[1] ?? 0,
        s2: s[2] ?? 0,
        s3: s[3] ?? 0,
      }),
      workgroups: grid(this.gpu, Math.ceil(sizes.total / WG)),
    });
  }
}

function checkCount(label: string, name: string, n: number): void {
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new RangeError(`Cannot run ${label}: ${name} must be a non-negative integer, got ${n}`);
  }
}

function checkTokens(label: string, sizes: TokenSizes): TokenSizes {
  const { B, N, D } = sizes;
  for (const [name, v] of Object.entries({ B, N, D })) checkCount(label, name, v);
  return { B, N, D };
}
