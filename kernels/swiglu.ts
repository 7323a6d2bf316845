/**
 * Host wrapper of `swiglu.wgsl`: the gated activation of Llama's MLP, `h = silu(gate) * up`, and
 * its backward. Every operand is a matrix view with its own row stride, so gate and up may be the
 * two column blocks of one fused `[rows, 2I]` projection (and dgate, dup those of its gradient) or
 * separate tensors. Views larger than one storage binding are processed one window of rows at a
 * time.
 *
 * @module
 */

import { checkDistinct, grid, stridedWindows } from "./dispatch.ts";
import type { Gpu, Kernel } from "./gpu.ts";
import { type BufferView, Tensor, viewRange } from "./tensor.ts";
import { UniformStruct } from "./uniform_struct.ts";
import code from "./swiglu.wgsl" with { type: "text" };

const WG = 256;
const SIZES = new UniformStruct("Sizes", {
  rows: "u32",
  cols: "u32",
  ld0: "u32",
  ld1: "u32",
  ld2: "u32",
  ld3: "u32",
  ld4: "u32",
  shift0: "u32",
  shift1: "u32",
  shift2: "u32",
  shift3: "u32",
  shift4: "u32",
}, { wgsl: code });

/**
 * Options of {@link SwigluKernels.forward}. Each view is `rows` rows of `cols` values, `ld`
 * elements apart (dense when the view has no `ld`).
 */
export interface SwigluForwardOptions {
  /** Written: `silu(gate) * up`; its buffer must differ from gate's and up's. */
  h: BufferView;
  /** The gate projection, e.g. `{ tensor: gateUp, ld: 2 * I }`. */
  gate: BufferView;
  /** The up projection, e.g. `{ tensor: gateUp, offset: I, ld: 2 * I }`. */
  up: BufferView;
  /** Rows (B * T). */
  rows: number;
  /** Values a row: `intermediate_size`. */
  cols: number;
}

/** Options of {@link SwigluKernels.backward}, views as in {@link SwigluForwardOptions}. */
export interface SwigluBackwardOptions {
  /** Written: `dh * up * silu'(gate)`; may share a buffer with `dup`, not with an input. */
  dgate: BufferView;
  /** Written: `dh * silu(gate)`. */
  dup: BufferView;
  /** The gradient of `h`. */
  dh: BufferView;
  /** The forward's gate and up. */
  gate: BufferView;
  up: BufferView;
  rows: number;
  cols: number;
}

/**
 * The compiled SwiGLU kernels of one device. Methods only record work.
 *
 * @example The activation of one fused row of gate and up
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { Tensor } from "./kernels/tensor.ts";
 * import { SwigluKernels } from "./kernels/swiglu.ts";
 * using gpu = await Gpu.acquire();
 * const swiglu = await SwigluKernels.load(gpu);
 * using gateUp = Tensor.from(gpu, new Float32Array([-1, 0, 2, 1, 1, 3]), [1, 6]);
 * using h = Tensor.empty(gpu, [1, 3]);
 * const gate = { tensor: gateUp, ld: 6 }, up = { tensor: gateUp, offset: 3, ld: 6 };
 * swiglu.forward({ h, gate, up, rows: 1, cols: 3 });
 * console.log(await h.read()); // about [-0.2689, 0, 5.2848]
 * ```
 */
export class SwigluKernels {
  private constructor(
    readonly gpu: Gpu,
    readonly kernels: Record<"forward" | "backward", Kernel>,
  ) {}

  /** Compiles the kernels (cached by the device). */
  static async load(gpu: Gpu): Promise<SwigluKernels> {
    const load = (entry: string, bindings: ("storage" | "read" | "uniform")[]) =>
      gpu.kernel({ label: entry, code, entry, bindings, constants: { WG } });
    const s = "storage", r = "read", u = "uniform";
    const [forward, backward] = await Promise.all([
      load("swiglu_forward", [s, r, r, u]),
      load("swiglu_backward", [s, s, r, r, r, u]),
    ]);
    return new SwigluKernels(gpu, { forward, backward });
  }

  /** Records `h = silu(gate) * up` elementwise. */
  forward(options: SwigluForwardOptions): void {
    const { h, gate, up, rows, cols } = options;
    this.#run(this.kernels.forward, { h }, { gate, up }, { rows, cols });
  }

  /** Records `dgate = dh * up * silu'(gate)` and `dup = dh * silu(gate)`, overwriting both. */
  backward(options: SwigluBackwardOptions): void {
    const { dgate, dup, dh, gate, up, rows, cols } = options;
    this.#run(this.kernels.backward, { dgate, dup }, { dh, gate, up }, { rows, cols });
  }

  #run(
    kernel: Kernel,
    outputs: Record<string, BufferView>,
    inputs: Record<string, BufferView>,
    shape: { rows: number; cols: number },
  ): void {
    const { label } = kernel.key;
    const { rows, cols } = shape;
    for (const [name, n] of Object.entries(shape)) {
      if (!(Number.isSafeInteger(n) && n >= 0)) {
        throw new RangeError(`Cannot run ${label}: ${name} ${n} is not a non-negative integer`);
      }
    }
    checkDistinct(label, outputs, inputs);
    if (rows === 0 || cols === 0) return;
    const views = Object.entries({ ...outputs, ...inputs }).map(([name, view]) => {
      const ld = view instanceof Tensor ? cols : view.ld ?? cols;
      const { tensor, size } = viewRange(view);
      if (tensor.dtype !== "f32" || !(Number.isSafeInteger(ld) && ld >= cols)) {
        throw new RangeError(
          `Cannot run ${label}: "${name}" must be f32 rows of ${cols} values at least that far ` +
            `apart, got ${tensor.dtype} rows ${ld} apart`,
        );
      }
      if (size < (rows - 1) * ld + cols) {
        throw new RangeError(
          `Cannot run ${label}: "${name}" holds ${size} elements, not ${rows} rows of ${cols} ` +
            `values ${ld} apart`,
        );
      }
      return { view, ld, width: cols };
    });
    for (const w of stridedWindows(this.gpu, rows, views, label)) {
      const ld = views.map((v) => v.ld);
      const [ld0, ld1, ld2, ld3 = 0, ld4 = 0] = ld;
      const [shift0, shift1, shift2, shift3 = 0, shift4 = 0] = w.shifts;
      this.gpu.dispatch(kernel, w.bindings, {
        uniforms: SIZES.pack({
          rows: w.count,
          cols,
          ld0,
          ld1,
          ld2,
          ld3,
          ld4,
          shift0,
          shift1,
          shift2,
          shift3,
          shift4,
        }),
        workgroups: grid(this.gpu, Math.ceil((w.count * cols) / WG)),
      });
    }
  }
}
