/**
 * Host wrapper of `encoder.wgsl`: GPT-2's token + position embedding and its backward. The token
 * table (154 MB for GPT-2, over the usual 128 MiB binding cap) is bound one window of vocabulary
 * rows at a time. The token-table gradient is deterministic without atomics: the host, which
 * knows the tokens, groups positions by token (CSR lists) and one invocation sums each element.
 *
 * @module
 */

import { bindView, grid, rowsPerBinding, windows } from "./dispatch.ts";
import type { Gpu, Kernel } from "./gpu.ts";
import { Tensor } from "./tensor.ts";
import { UniformStruct } from "./uniform_struct.ts";
import code from "./encoder.wgsl" with { type: "text" };

const WG = 256;
const SIZES = new UniformStruct("Sizes", {
  rows: "u32",
  seq: "u32",
  channels: "u32",
  pos_offset: "u32",
  v_begin: "u32",
  v_end: "u32",
  shift: "u32",
  vocab: "u32",
  last: "u32",
  u_begin: "u32",
  u_count: "u32",
}, { wgsl: code });

/** The window fields of {@link SIZES}, for the dispatches that bind no window. */
const NO_WINDOW = { v_begin: 0, v_end: 0, shift: 0, last: false, u_begin: 0, u_count: 0 };

/** Options of {@link EncoderKernels.forward}. */
export interface EncoderForwardOptions {
  /** Written: `[B, T, C]` f32. */
  out: Tensor;
  /** `[B, T]` u32 token ids, each below V (a larger id gives a NaN row). */
  tokens: Tensor;
  /** `[V, C]` f32 token embedding; may be larger than one storage binding. */
  wte: Tensor;
  /** `[P, C]` f32 position embedding, P >= T + posOffset. */
  wpe: Tensor;
  /** Position of the first token of every sequence (generation embeds P..P+T-1); 0 if absent. */
  posOffset?: number;
}

/** Options of {@link EncoderKernels.backward}. */
export interface EncoderBackwardOptions {
  /** Accumulated: `[V, C]` f32, `dwte[v] += sum of dout over positions whose token is v`. */
  dwte: Tensor;
  /** Accumulated: `[P, C]` f32, `dwpe[t + posOffset] += sum_b dout[b, t]`. */
  dwpe: Tensor;
  /** `[B, T, C]` f32. */
  dout: Tensor;
  /** The forward's token ids, `B * T` of them, on the host (they decide the gradient's layout). */
  tokens: Uint32Array;
  /** As in the forward; 0 if absent. */
  posOffset?: number;
}

/**
 * The compiled embedding kernels of one device. Methods only record work (the backward uploads
 * its token lists first).
 *
 * @example Embed two tokens
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { Tensor } from "./kernels/tensor.ts";
 * import { EncoderKernels } from "./kernels/encoder.ts";
 * using gpu = await Gpu.acquire();
 * const encoder = await EncoderKernels.load(gpu);
 * using wte = Tensor.from(gpu, new Float32Array([0, 0, 10, 10, 20, 20]), [3, 2]);
 * using wpe = Tensor.from(gpu, new Float32Array([1, 2, 3, 4]), [2, 2]);
 * using tokens = Tensor.from(gpu, new Uint32Array([2, 1]), [1, 2]);
 * using out = Tensor.empty(gpu, [1, 2, 2]);
 * encoder.forward({ out, tokens, wte, wpe });
 * console.log(await out.read()); // Float32Array [21, 22, 13, 14]
 * ```
 */
export class EncoderKernels {
  private constructor(
    readonly gpu: Gpu,
    readonly kernels: Record<"forward" | "wpe" | "wte", Kernel>,
  ) {}

  /** Compiles the kernels (cached by the device). */
  static async load(gpu: Gpu): Promise<EncoderKernels> {
    const load = (entry: string, bindings: ("storage" | "read" | "uniform")[]) =>
      gpu.kernel({ label: entry, code, entry, bindings, constants: { WG } });
    const [forward, wpe, wte] = await Promise.all([
      load("encoder_forward", ["storage", "read", "read", "read", "uniform"]),
      load("encoder_backward", ["storage", "read", "uniform"]),
      load("encoder_backward_wte", ["storage", "read", "read", "read", "read", "uniform"]),
    ]);
    return new EncoderKernels(gpu, { forward, wpe, wte });
  }

  /** Records `out[b, t] = wte[tokens[b, t]] + wpe[t + posOffset]`. */
  forward(options: EncoderForwardOptions): void {
    const { out, tokens, wte, wpe, posOffset = 0 } = options;
    const s = this.#shape("encoder_forward", { x: out, wte, wpe, posOffset });
    if (tokens.dtype !== "u32" || tokens.size !== s.rows) {
      throw new RangeError(
        `Cannot run encoder_forward: "tokens" [${tokens.shape}] ${tokens.dtype} must be ` +
          `[${s.rows}] u32`,
      );
    }
    const { gpu } = this;
    const fixed = [bindView(gpu, out).binding, bindView(gpu, tokens).binding];
    const wpeBinding = bindView(gpu, wpe).binding;
    const label = "encoder_forward";
    for (const w of windows(gpu, s.vocab, [wte], { widths: [s.channels], label })) {
      const v_end = w.begin + w.count;
      gpu.dispatch(this.kernels.forward, [...fixed, w.bindings[0], wpeBinding], {
        uniforms: SIZES.pack({
          ...s,
          v_begin: w.begin,
          v_end,
          shift: w.shifts[0],
          last: v_end === s.vocab,
          u_begin: 0,
          u_count: 0,
        }),
        workgroups: grid(gpu, Math.ceil((s.rows * s.channels) / WG)),
      });
    }
  }

  /**
   * Records `dwte += ...` (per token, in position order) and `dwpe += ...` (in batch order).
   * One invocation loops over every occurrence of its token: llvmpipe stops an invocation's loops
   * after 65535 iterations, so there a token may occur at most 65535 times in one batch.
   */
  backward(options: EncoderBackwardOptions): void {
    const { dwte, dwpe, dout, tokens, posOffset = 0 } = options;
    const s = this.#shape("encoder_backward", { x: dout, wte: dwte, wpe: dwpe, posOffset });
    if (tokens.length !== s.rows) {
      throw new RangeError(
        `Cannot run encoder_backward: ${tokens.length} tokens for "dout" [${dout.shape}]`,
      );
    }
    const bad = tokens.findIndex((t) => t >= s.vocab);
    if (bad >= 0) {
      throw new RangeError(
        `Cannot run encoder_backward: token ${tokens[bad]} at ${bad} is outside the ` +
          `vocabulary of ${s.vocab}`,
      );
    }
    if (s.rows === 0) return;
    const { gpu } = this;
    const doutBinding = bindView(gpu, dout).binding;
    gpu.dispatch(this.kernels.wpe, [bindView(gpu, dwpe).binding, doutBinding], {
      uniforms: SIZES.pack({ ...s, ...NO_WINDOW }),
      workgroups: grid(gpu, Math.ceil((s.seq * s.channels) / WG)),
    });

    const lists = tokenLists(tokens);
    using unique = Tensor.from(gpu, lists.unique, [lists.unique.length], { label: "encoder ids" });
    using offsets = Tensor.from(gpu, lists.offsets, [lists.offsets.length], {
      label: "encoder offsets",
    });
    using positions = Tensor.from(gpu, lists.positions, [s.rows], { label: "encoder positions" });
    const listBindings = [unique, offsets, positions].map((t) => bindView(gpu, t).binding);
    const perWindow = rowsPerBinding(gpu, { width: s.channels });
    // Unique ids are sorted: each window takes the next run of them that fits in its rows.
    for (let u = 0; u < lists.unique.length;) {
      const vBegin = lists.unique[u];
      let uEnd = u;
      while (uEnd < lists.unique.length && lists.unique[uEnd] < vBegin + perWindow) uEnd++;
      const vEnd = lists.unique[uEnd - 1] + 1;
      const C = s.channels;
      const w = bindView(gpu, { tensor: dwte, offset: vBegin * C, size: (vEnd - vBegin) * C });
      gpu.dispatch(this.kernels.wte, [w.binding, doutBinding, ...listBindings], {
        uniforms: SIZES.pack({
          ...s,
          v_begin: vBegin,
          v_end: vEnd,
          shift: w.shift,
          last: false,
          u_begin: u,
          u_count: uEnd - u,
        }),
        workgroups: grid(gpu, Math.ceil(((uEnd - u) * C) / WG)),
      });
      u = uEnd;
    }
  }

  #shape(
    label: string,
    t: { x: Tensor; wte: Tensor; wpe: Tensor; posOffset: number },
  ) {
    const { x, wte, wpe, posOffset } = t;
    const [batch, seq, channels] = x.shape;
    const [vocab, positions] = [wte.shape[0], wpe.shape[0]];
    const fail = (why: string) => {
      throw new RangeError(`Cannot run ${label}: ${why}`);
    };
    if (x.shape.length !== 3 || x.dtype !== "f32") {
      fail(`activations [${x.shape}] ${x.dtype} must be [B, T, C] f32`);
    }
    for (const [name, table] of [["token table", wte], ["position table", wpe]] as const) {
      if (table.shape.length !== 2 || table.shape[1] !== channels || table.dtype !== "f32") {
        fail(`${name} [${table.shape}] ${table.dtype} must be [rows, ${channels}] f32`);
      }
    }
    if (!Number.isInteger(posOffset) || posOffset < 0 || posOffset + seq > positions) {
      fail(`positions ${posOffset}..${posOffset + seq - 1} are outside the ${positions} of wpe`);
    }
    if (vocab === 0) fail("the token table is empty");
    rowsPerBinding(this.gpu, { width: channels, label });
    return { rows: batch * seq, seq, channels, vocab, pos_offset: posOffset };
  }
}

/** Positions grouped by token: `positions[offsets[u] .. offsets[u + 1]]` hold `unique[u]`. */
export function tokenLists(
  tokens: Uint32Array,
): { unique: Uint32Array; offsets: Uint32Array; positions: Uint32Array } {
  // Stable by construction: ties keep position order, so each sum runs in position order.
  const positions = Uint32Array.from(tokens.keys()).sort((a, b) => tokens[a] - tokens[b] || a - b);
  const unique: number[] = [];
  const offsets: number[] = [];
  positions.forEach((p, k) => {
    if (k === 0 || tokens[p] !== tokens[positions[k - 1]]) {
      unique.push(tokens[p]);
      offsets.push(k);
    }
  });
  offsets.push(positions.length);
  return { unique: Uint32Array.from(unique), offsets: Uint32Array.from(offsets), positions };
}
