/**
 * Host wrapper of `encoder.wgsl`: GPT-2's token + position embedding and its backward. The token
 * table (154 MB for GPT-2, over the usual 128 MiB binding cap) is bound one window of vocabulary
 * rows at a time. The token-table gradient is deterministic without atomics: the host, which
 * knows the tokens, groups positions by token (CSR lists) and one invocation sums each element.
 *
 * @module
 */

import type { Gpu, Kernel } from "./gpu.ts";
import { Tensor, window } from "./tensor.ts";
import code from "./encoder.wgsl" with { type: "text" };

const WG = 256;

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
    const outW = whole(gpu, out);
    const tokensW = whole(gpu, tokens);
    const wpeW = whole(gpu, wpe);
    const perWindow = this.#windowRows(s.channels);
    for (let begin = 0; begin < s.vocab; begin += perWindow) {
      const end = Math.min(begin + perWindow, s.vocab);
      const w = window(gpu, wte.buffer, { begin: begin * s.channels, end: end * s.channels });
      gpu.dispatch(this.kernels.forward, [outW, tokensW, w.binding, wpeW], {
        uniforms: sizes({ ...s, vBegin: begin, vEnd: end, shift: w.shift, last: end === s.vocab }),
        workgroups: this.#grid(s.rows * s.channels),
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
    const doutW = whole(gpu, dout);
    gpu.dispatch(this.kernels.wpe, [whole(gpu, dwpe), doutW], {
      uniforms: sizes(s),
      workgroups: this.#grid(s.seq * s.channels),
    });

    const lists = tokenLists(tokens);
    using unique = Tensor.from(gpu, lists.unique, [lists.unique.length], { label: "encoder ids" });
    using offsets = Tensor.from(gpu, lists.offsets, [lists.offsets.length], {
      label: "encoder offsets",
    });
    using positions = Tensor.from(gpu, lists.positions, [s.rows], { label: "encoder positions" });
    const listW = [whole(gpu, unique), whole(gpu, offsets), whole(gpu, positions)];
    const perWindow = this.#windowRows(s.channels);
    // Unique ids are sorted: each window takes the next run of them that fits in its rows.
    for (let u = 0; u < lists.unique.length;) {
      const vBegin = lists.unique[u];
      let uEnd = u;
      while (uEnd < lists.unique.length && lists.unique[uEnd] < vBegin + perWindow) uEnd++;
      const vEnd = lists.unique[uEnd - 1] + 1;
      const w = window(gpu, dwte.buffer, { begin: vBegin * s.channels, end: vEnd * s.channels });
      gpu.dispatch(this.kernels.wte, [w.binding, doutW, ...listW], {
        uniforms: sizes({ ...s, vBegin, vEnd, shift: w.shift, uBegin: u, uCount: uEnd - u }),
        workgroups: this.#grid((uEnd - u) * s.channels),
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
    if (this.#windowRows(channels) < 1) {
      fail(`one row of ${channels} channels is over the ${this.gpu.maxBindingBytes}-byte limit`);
    }
    return { rows: batch * seq, seq, channels, vocab, posOffset };
  }

  #windowRows(channels: number): number {
    return Math.floor((this.gpu.maxBindingBytes - this.gpu.bindingAlignment) / (4 * channels));
  }

  // Workgroup counts past the per-dimension limit wrap into y; kernels skip the overhang.
  #grid(invocations: number): [number, number] {
    const groups = Math.ceil(invocations / WG);
    const max = this.gpu.device.limits.maxComputeWorkgroupsPerDimension;
    return groups <= max ? [groups, 1] : [max, Math.ceil(groups / max)];
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

function whole(gpu: Gpu, t: Tensor) {
  return window(gpu, t.buffer, { begin: 0, end: t.size }).binding;
}

function sizes(s: {
  rows: number;
  seq: number;
  channels: number;
  posOffset: number;
  vocab: number;
  vBegin?: number;
  vEnd?: number;
  shift?: number;
  last?: boolean;
  uBegin?: number;
  uCount?: number;
}): ArrayBuffer {
  return Uint32Array.of(
    s.rows,
    s.seq,
    s.channels,
    s.posOffset,
    s.vBegin ?? 0,
    s.vEnd ?? 0,
    s.shift ?? 0,
    s.vocab,
    s.last ? 1 : 0,
    s.uBegin ?? 0,
    s.uCount ?? 0,
  ).buffer;
}
