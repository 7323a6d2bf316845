/**
 * Host wrapper of `decode.wgsl`: the kernels of batched decoding, where each row of a step is a
 * different sequence with its own length and its own slot of a batched key-value cache.
 *
 * - {@link DecodeKernels.attention}: one query row per sequence against that sequence's cached
 *   keys and values only, up to its own length (grouped-query heads as `attention.ts`);
 * - {@link DecodeKernels.copyRows}: row `s` of one matrix to row `d` of another, for a list of
 *   pairs (writing a step's new keys and values into each sequence's slot; adding a position
 *   embedding at each row's own position);
 * - {@link DecodeKernels.moveRows}: runs of rows inside one buffer (a beam taking over a copy of
 *   its parent's cache), with no readback;
 * - {@link DecodeKernels.rope}: rotary embeddings where each row has its own position.
 *
 * Operands are whole buffers: each must fit in one storage binding.
 *
 * @module
 */

import { GpuError } from "./gpu.ts";
import type { Gpu, Kernel } from "./gpu.ts";
import { ROPE_MAX_ANGLE } from "./rope.ts";
import { Tensor } from "./tensor.ts";
import { UniformStruct } from "./uniform_struct.ts";
import code from "./decode.wgsl" with { type: "text" };

const WG = 64;
/** Largest head size {@link DecodeKernels.attention} takes. */
export const DECODE_MAX_HEAD_SIZE = 128;
// llvmpipe ends all loops of an invocation after 65535 iterations: keys a pass, within budget.
const LOOP_BUDGET = 48_000;

const ATTN = new UniformStruct("AttnSizes", {
  B: "u32",
  NH: "u32",
  KVH: "u32",
  hd: "u32",
  scale: "f32",
  lo: "u32",
  hi: "u32",
  pad: "u32",
  q: "vec2u",
  k: "vec2u",
  v: "vec2u",
  out: "vec2u",
}, { wgsl: code });
const COPY = new UniformStruct("CopySizes", {
  n: "u32",
  width: "u32",
  accumulate: "u32",
  pad: "u32",
  src_at: "vec2u",
  dst_at: "vec2u",
}, { wgsl: code });
const MOVE = new UniformStruct("MoveSizes", {
  n: "u32",
  width: "u32",
  span: "u32",
  pad: "u32",
}, { wgsl: code });
const ROPE = new UniformStruct("RopeSizes", {
  rows: "u32",
  heads: "u32",
  half: "u32",
  ld: "u32",
  shift: "u32",
  zero: "u32",
  pad0: "u32",
  pad1: "u32",
}, { wgsl: code });

/** A matrix inside a tensor: first element and row stride, in elements. */
export interface RowsView {
  /** The tensor. */
  tensor: Tensor;
  /** First element of row 0; default 0. */
  offset?: number;
  /** Elements from one row to the next; default the tensor's last dimension. */
  ld?: number;
}

/** Options of {@link DecodeKernels.attention}. */
export interface DecodeAttentionOptions {
  /** Written: `[B, NH * hd]`, row b the attention output of sequence b. */
  out: Tensor;
  /** Written: `[B * NH]`, the log-sum-exp of each row's scaled scores. */
  lse: Tensor;
  /** `B` query rows of `NH * hd`. */
  q: RowsView;
  /** The cache's keys: rows of `KVH * hd`, row `first_b + j` the key of position j of b. */
  k: RowsView;
  /** The cache's values, laid out like `k`. */
  v: RowsView;
  /** Per row b: the cache row of its position 0 (`first_b`), and its keys `len_b >= 1`. */
  rows: readonly { first: number; length: number }[];
  /** Query heads. */
  NH: number;
  /** Key/value heads, dividing NH; NH by default. */
  KVH?: number;
}

/** The rotary frequencies {@link DecodeKernels.rope} reads (a `RopeTable` of `rope.ts`). */
export interface RopeFrequencies {
  /** `[headDim / 2]` f32 inverse frequencies on the GPU. */
  readonly tensor: Tensor<"f32">;
  /** Values a head. */
  readonly headDim: number;
  /** The largest frequency: bounds the angles the positions reach. */
  readonly maxInvFreq: number;
}

/** One row copy of {@link DecodeKernels.copyRows}: source row `from` to target row `to`. */
export interface RowPair {
  /** Source row. */
  from: number;
  /** Target row. */
  to: number;
}

/** One run of {@link DecodeKernels.moveRows}: `count` rows from row `from` to row `to`. */
export interface RowMove extends RowPair {
  /** Rows moved. */
  count: number;
}

/**
 * The compiled batched-decoding kernels of one device. Methods only record work.
 *
 * @example One query row per sequence, two sequences of lengths 3 and 1 in a cache of 4 rows
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * import { Tensor } from "./kernels/tensor.ts";
 * import { DecodeKernels } from "./kernels/decode.ts";
 * using gpu = await Gpu.acquire();
 * const decode = await DecodeKernels.load(gpu);
 * using q = Tensor.from(gpu, new Float32Array(2 * 8).fill(0.5), [2, 8]);
 * using kv = Tensor.from(gpu, new Float32Array(8 * 8).fill(0.25), [8, 8]);
 * using out = Tensor.empty(gpu, [2, 8]);
 * using lse = Tensor.empty(gpu, [2 * 2]);
 * decode.attention({
 *   out,
 *   lse,
 *   q,
 *   k: kv,
 *   v: kv,
 *   rows: [{ first: 0, length: 3 }, { first: 4, length: 1 }],
 *   NH: 2,
 * });
 * console.log(await out.read()); // every element 0.25
 * ```
 */
export class DecodeKernels {
  private constructor(
    readonly gpu: Gpu,
    readonly kernels: Record<"attention" | "copy" | "move" | "rope", Kernel>,
  ) {}

  /**
   * Compiles the kernels (cached by the device).
   *
   * @param gpu The device.
   * @returns The kernels.
   */
  static async load(gpu: Gpu): Promise<DecodeKernels> {
    const load = (entry: string, bindings: ("storage" | "read" | "uniform")[]) =>
      gpu.kernel({ label: entry, code, entry, bindings, constants: { WG } });
    const [attention, copy, move, rope] = await Promise.all([
      load("decode_attention", ["storage", "storage", "read", "read", "read", "read", "uniform"]),
      load("copy_rows", ["storage", "read", "read", "uniform"]),
      load("move_rows", ["storage", "read", "uniform"]),
      load("rope_rows", ["storage", "read", "read", "uniform"]),
    ]);
    return new DecodeKernels(gpu, { attention, copy, move, rope });
  }

  /**
   * Records `out[b] = softmax(q_b k_jᵀ / sqrt(hd)) v_j` over the keys `j < len_b` of row b's own
   * slot, per query head (over its kv head), and each row's log-sum-exp.
   *
   * @param o Outputs, inputs, per-row slots and heads.
   * @throws {RangeError} On sizes that do not fit together, a row with no key, or views not
   * aligned to 4 floats.
   */
  attention(o: DecodeAttentionOptions): void {
    const label = "decode_attention";
    const B = o.rows.length;
    const NH = o.NH;
    const KVH = o.KVH ?? NH;
    if (!(Number.isSafeInteger(NH) && NH > 0 && Number.isSafeInteger(KVH) && KVH > 0)) {
      throw new RangeError(`Cannot run ${label}: heads NH ${NH} and KVH ${KVH} must be positive`);
    }
    if (NH % KVH !== 0) {
      throw new RangeError(`Cannot run ${label}: NH = ${NH} is not a multiple of KVH = ${KVH}`);
    }
    if (B === 0) return;
    if (o.out.size % B !== 0 || (o.out.size / B) % NH !== 0) {
      throw new RangeError(
        `Cannot run ${label}: out of ${o.out.size} is not ${B} rows of ${NH} heads`,
      );
    }
    const hd = o.out.size / B / NH;
    if (hd % 4 !== 0 || hd > DECODE_MAX_HEAD_SIZE) {
      throw new RangeError(
        `Cannot run ${label}: head size ${hd} must be a multiple of 4 up to ${DECODE_MAX_HEAD_SIZE}`,
      );
    }
    if (o.lse.size < B * NH) {
      throw new RangeError(`Cannot run ${label}: lse holds ${o.lse.size} < ${B * NH}`);
    }
    let maxLen = 0;
    const rows = new Uint32Array(2 * B);
    o.rows.forEach(({ first, length }, b) => {
      if (
        !(Number.isSafeInteger(first) && first >= 0 && Number.isSafeInteger(length) && length >= 1)
      ) {
        throw new RangeError(
          `Cannot run ${label}: row ${b} has first cache row ${first} and length ${length}; ` +
            `a row needs a first row >= 0 and at least one key`,
        );
      }
      rows[2 * b] = first;
      rows[2 * b + 1] = length;
      maxLen = Math.max(maxLen, length);
    });
    const q = at(label, "q", o.q, { width: NH * hd, last: B - 1 });
    const lastKey = Math.max(...o.rows.map((r) => r.first + r.length - 1));
    const k = at(label, "k", o.k, { width: KVH * hd, last: lastKey });
    const v = at(label, "v", o.v, { width: KVH * hd, last: lastKey });
    for (const [name, view] of [["q", q], ["k", k], ["v", v]] as const) {
      if (view[0] % 4 !== 0 || view[1] % 4 !== 0) {
        throw new RangeError(
          `Cannot run ${label}: "${name}" starts at element ${view[0]} with rows ${
            view[1]
          } apart; ` +
            `both must be multiples of 4`,
        );
      }
    }
    for (const t of [o.out, o.lse, o.q.tensor, o.k.tensor, o.v.tensor]) this.#fits(label, t);
    if (o.out === o.q.tensor || o.out === o.k.tensor || o.out === o.v.tensor) {
      throw new RangeError(`Cannot run ${label}: "out" may not be an input`);
    }
    const rowsBuffer = this.#upload(rows);
    const h4 = hd / 4;
    const span = Math.max(1, Math.floor((LOOP_BUDGET - 3 * h4 - 64) / (2 * h4 + 2)));
    const [gx, gy] = groups2d(this.gpu, Math.ceil((B * NH) / WG));
    for (let lo = 0; lo < maxLen; lo += span) {
      const uniforms = ATTN.pack({
        B,
        NH,
        KVH,
        hd,
        scale: 1 / Math.sqrt(hd),
        lo,
        hi: Math.min(lo + span, maxLen),
        pad: 0,
        q,
        k,
        v,
        out: [0, NH * hd],
      });
      this.gpu.dispatch(
        this.kernels.attention,
        [
          o.out.buffer,
          o.lse.buffer,
          o.q.tensor.buffer,
          o.k.tensor.buffer,
          o.v.tensor.buffer,
          rowsBuffer,
        ],
        { uniforms, workgroups: [gx, gy] },
      );
    }
    this.gpu.release(rowsBuffer);
  }

  /**
   * Records, for every pair, `dst[to] = src[from]` (or `+=` with `accumulate`), `width` elements
   * a row. No target row may appear twice.
   *
   * @param o Target and source views, the pairs, the row width, and `accumulate`.
   * @throws {RangeError} On a row outside its tensor, or `dst` and `src` the same tensor.
   */
  copyRows(o: {
    dst: RowsView;
    src: RowsView;
    pairs: readonly RowPair[];
    width: number;
    accumulate?: boolean;
  }): void {
    const label = "copy_rows";
    const n = o.pairs.length;
    if (n === 0 || o.width === 0) return;
    if (o.dst.tensor === o.src.tensor) {
      throw new RangeError(`Cannot run ${label}: source and target are one tensor (use moveRows)`);
    }
    const lastFrom = Math.max(...o.pairs.map((p) => p.from));
    const lastTo = Math.max(...o.pairs.map((p) => p.to));
    const src = at(label, "src", o.src, { width: o.width, last: lastFrom });
    const dst = at(label, "dst", o.dst, { width: o.width, last: lastTo });
    this.#fits(label, o.dst.tensor);
    this.#fits(label, o.src.tensor);
    const list = new Uint32Array(2 * n);
    o.pairs.forEach((p, i) => {
      checkRow(label, "from", p.from);
      checkRow(label, "to", p.to);
      list[2 * i] = p.from;
      list[2 * i + 1] = p.to;
    });
    const buffer = this.#upload(list);
    this.gpu.dispatch(this.kernels.copy, [o.dst.tensor.buffer, o.src.tensor.buffer, buffer], {
      uniforms: COPY.pack({
        n,
        width: o.width,
        accumulate: o.accumulate ? 1 : 0,
        pad: 0,
        src_at: src,
        dst_at: dst,
      }),
      workgroups: groups2d(this.gpu, Math.ceil((n * o.width) / WG)),
    });
    this.gpu.release(buffer);
  }

  /**
   * Records moving runs of rows inside one dense `[rows, width]` tensor: rows `from .. from +
   * count - 1` to rows `to ..`. No run may read or write rows another run writes.
   *
   * @param tensor The tensor, `width` elements a row.
   * @param o The runs and the row width.
   * @throws {RangeError} On runs outside the tensor or overlapping the rows another writes.
   */
  moveRows(tensor: Tensor, o: { moves: readonly RowMove[]; width: number }): void {
    const label = "move_rows";
    const moves = o.moves.filter((m) => m.count > 0 && m.from !== m.to);
    if (moves.length === 0 || o.width === 0) return;
    const rowsHeld = Math.floor(tensor.size / o.width);
    const written = moves.map((m) => [m.to, m.to + m.count] as const).sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < written.length; i++) {
      if (written[i][0] < written[i - 1][1]) {
        throw new RangeError(`Cannot run ${label}: two runs write row ${written[i][0]}`);
      }
    }
    const list = new Uint32Array(4 * moves.length);
    let span = 0;
    moves.forEach((m, i) => {
      for (const row of [m.from, m.to, m.count]) checkRow(label, "row", row);
      if (m.from + m.count > rowsHeld || m.to + m.count > rowsHeld) {
        throw new RangeError(
          `Cannot run ${label}: run of ${m.count} rows from ${m.from} to ${m.to} leaves the ` +
            `tensor's ${rowsHeld} rows`,
        );
      }
      if (overlaps(written, m.from, m.from + m.count)) {
        throw new RangeError(
          `Cannot run ${label}: run from row ${m.from} reads rows that another run writes`,
        );
      }
      list.set([m.from, m.to, m.count, 0], 4 * i);
      span = Math.max(span, m.count * o.width);
    });
    this.#fits(label, tensor);
    const buffer = this.#upload(list);
    this.gpu.dispatch(this.kernels.move, [tensor.buffer, buffer], {
      uniforms: MOVE.pack({ n: moves.length, width: o.width, span, pad: 0 }),
      workgroups: [Math.ceil(span / WG), moves.length],
    });
    this.gpu.release(buffer);
  }

  /**
   * Records rotary embeddings in place where row r of `x` (its `heads * table.headDim` values)
   * turns by `positions[r]`: the rotation of `RopeKernels.forward`, bit for bit.
   *
   * @param o The rows, the frequencies, heads a row and each row's position.
   * @throws {RangeError} On a view outside its tensor or a position past the angle range.
   */
  rope(
    o: { x: RowsView; table: RopeFrequencies; heads: number; positions: readonly number[] },
  ): void {
    const label = "rope_rows";
    const rows = o.positions.length;
    const width = o.heads * o.table.headDim;
    if (rows === 0 || width === 0) return;
    const [shift, ld] = at(label, "x", o.x, { width, last: rows - 1 });
    this.#fits(label, o.x.tensor);
    const positions = Uint32Array.from(o.positions, (p) => {
      checkRow(label, "position", p);
      if (!(Math.fround(Math.fround(p) * o.table.maxInvFreq) < ROPE_MAX_ANGLE)) {
        throw new RangeError(
          `Cannot run ${label}: position ${p} times frequency ${o.table.maxInvFreq} is past the ` +
            `kernel's angle range ${ROPE_MAX_ANGLE}`,
        );
      }
      return p;
    });
    const buffer = this.#upload(positions);
    const half = o.table.headDim / 2;
    this.gpu.dispatch(this.kernels.rope, [o.x.tensor.buffer, o.table.tensor.buffer, buffer], {
      uniforms: ROPE.pack({ rows, heads: o.heads, half, ld, shift, zero: 0, pad0: 0, pad1: 0 }),
      workgroups: groups2d(this.gpu, Math.ceil((rows * o.heads * half) / WG)),
    });
    this.gpu.release(buffer);
  }

  #upload(data: Uint32Array): GPUBuffer {
    const buffer = this.gpu.buffer(data.byteLength);
    this.gpu.write(buffer, data);
    return buffer;
  }

  #fits(label: string, t: Tensor): void {
    if (t.byteLength > this.gpu.maxBindingBytes) {
      throw new GpuError(
        `Cannot run ${label}: "${t.buffer.label}" of ${t.byteLength} bytes is over the ` +
          `${this.gpu.maxBindingBytes}-byte binding limit; decode fewer rows at once`,
      );
    }
  }
}

// (first element, row stride) of a view, checked to hold row `last` of `width` elements.
function at(
  label: string,
  name: string,
  view: RowsView,
  o: { width: number; last: number },
): [number, number] {
  const offset = view.offset ?? 0;
  const ld = view.ld ?? view.tensor.shape.at(-1)!;
  if (view.tensor.dtype !== "f32" || ld < o.width || offset < 0) {
    throw new RangeError(
      `Cannot run ${label}: "${name}" must be f32 rows of ${o.width} values at least that far ` +
        `apart, got ${view.tensor.dtype} rows ${ld} apart from element ${offset}`,
    );
  }
  if (offset + o.last * ld + o.width > view.tensor.size) {
    throw new RangeError(
      `Cannot run ${label}: "${name}" row ${o.last} of ${o.width} values (${ld} apart from ` +
        `element ${offset}) lies outside its ${view.tensor.size} elements`,
    );
  }
  return [offset, ld];
}

function checkRow(label: string, what: string, n: number): void {
  if (!(Number.isSafeInteger(n) && n >= 0 && n < 2 ** 32)) {
    throw new RangeError(`Cannot run ${label}: ${what} ${n} is not a row index`);
  }
}

function overlaps(sorted: readonly (readonly [number, number])[], lo: number, hi: number): boolean {
  return sorted.some(([a, b]) => a < hi && lo < b);
}

function groups2d(gpu: Gpu, groups: number): [number, number] {
  const max = gpu.device.limits.maxComputeWorkgroupsPerDimension;
  return groups <= max ? [groups, 1] : [max, Math.ceil(groups / max)];
}
