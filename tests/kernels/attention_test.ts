import assert from "node:assert/strict";
import { AttentionKernels } from "../../kernels/attention.ts";
import { attentionBackwardRef, attentionForwardRef } from "../../kernels/attention_ref.ts";
import type { Gpu } from "../../kernels/gpu.ts";
import { type BufferView, Tensor } from "../../kernels/tensor.ts";
import {
  firstNonFinite,
  freshSeed,
  GPU_TEST,
  randomArray,
  relativeError,
  testGpu,
} from "../_util.ts";

/** `[B, T, NH, KVH, hd]`: batch, query rows, query heads, key/value heads, head size. */
type Shape = readonly [B: number, T: number, NH: number, KVH: number, hd: number];

// GQA ratios 1, 2 and 4 and NH = KVH = 1; T of 1, 3, 17 and 129; head sizes 1, 3 and 5 (scalar
// kernels) and 4, 8, 12 and 64 (vec4 kernels).
const SHAPES: readonly Shape[] = [
  [1, 1, 1, 1, 4],
  [1, 3, 1, 1, 1],
  [2, 3, 2, 1, 3],
  [2, 17, 4, 1, 8],
  [2, 17, 8, 2, 4],
  [1, 129, 4, 2, 12],
  [1, 129, 3, 3, 5],
  [1, 33, 2, 2, 64],
];
// Non-causal attention (ViT): one token, a head size of 1 and of 128 (the largest), and
// ViT-B/16's 197 tokens of head size 64.
const FULL_SHAPES: readonly Shape[] = [
  [1, 1, 1, 1, 1],
  [3, 17, 2, 2, 5],
  [2, 10, 3, 3, 8],
  [1, 5, 1, 1, 128],
  [1, 197, 2, 2, 64],
];
const TOLERANCE = 1e-5;
// q and k entries in [-QK, QK): scaled scores have a standard deviation of QK^2 / 3 = 2, so
// the softmaxes are neither near-uniform nor one-hot.
const QK = 2.45;
// What the backward must leave alone in its gradient buffers.
const UNTOUCHED = 1234.5;

/**
 * Where q, k and v (or their gradients) lie:
 * - fused: column blocks q | k | v of one buffer, rows as wide as all three (GPT-2's c_attn);
 * - separate: three dense tensors, passed as tensors;
 * - strided: three buffers, each view 4 elements in with rows 4 wider (vec4 still applies);
 * - odd: three buffers, each view 3 elements in with rows 1 wider (scalar kernels only).
 */
type Layout = "fused" | "separate" | "strided" | "odd";
const LAYOUTS: readonly Layout[] = ["fused", "separate", "strided", "odd"];

/** A dense `[rows, width]` part and where it lies: buffer, first element, row stride. */
interface Part {
  rows: number;
  width: number;
  buffer: number;
  offset: number;
  ld: number;
}

/** q, k and v (or their gradients) on the GPU in one layout, `gap` between the parts. */
class Placed implements Disposable {
  private constructor(
    readonly layout: Layout,
    readonly parts: readonly Part[],
    readonly hosts: readonly Float32Array[],
    readonly tensors: readonly Tensor[],
  ) {}

  static upload(
    gpu: Gpu,
    layout: Layout,
    data: readonly Float32Array[],
    options: { widths: readonly number[]; gap?: number },
  ): Placed {
    const { widths, gap = NaN } = options;
    const rows = data.map((d, i) => d.length / widths[i]);
    let parts: Part[];
    let sizes: number[];
    if (layout === "fused") {
      assert(rows.every((r) => r === rows[0]), "fused parts need equal rows");
      const ld = widths.reduce((sum, w) => sum + w, 0);
      let offset = 0;
      parts = widths.map((width, i) => {
        offset += width;
        return { rows: rows[i], width, buffer: 0, offset: offset - width, ld };
      });
      sizes = [rows[0] * ld];
    } else {
      const [offset, extra] = { separate: [0, 0], strided: [4, 4], odd: [3, 1] }[layout];
      parts = widths.map((width, i) => ({
        rows: rows[i],
        width,
        buffer: i,
        offset,
        ld: width + extra,
      }));
      sizes = parts.map((p) => p.offset + p.rows * p.ld);
    }
    const hosts = sizes.map((n) => new Float32Array(n).fill(gap));
    data.forEach((d, i) => scatter(hosts, parts[i], d));
    const tensors = hosts.map((h) => Tensor.from(gpu, h, [h.length]));
    return new Placed(layout, parts, hosts, tensors);
  }

  /** The view of part `i`, from its row `row` on (a tensor when it is the whole buffer). */
  view(i: number, row = 0): BufferView {
    const { buffer, offset, ld } = this.parts[i];
    const tensor = this.tensors[buffer];
    if (this.layout === "separate" && row === 0) return tensor;
    return { tensor, offset: offset + row * ld, ld };
  }

  /** The buffers' contents now. */
  read(): Promise<Float32Array[]> {
    return Promise.all(this.tensors.map((t) => t.read() as Promise<Float32Array>));
  }

  [Symbol.dispose](): void {
    for (const t of this.tensors) t[Symbol.dispose]();
  }
}

function scatter(hosts: readonly Float32Array[], part: Part, data: ArrayLike<number>): void {
  const { rows, width, buffer, offset, ld } = part;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < width; c++) hosts[buffer][offset + r * ld + c] = data[r * width + c];
  }
}

function gather(hosts: readonly Float32Array[], part: Part): Float32Array {
  const { rows, width, buffer, offset, ld } = part;
  const out = new Float32Array(rows * width);
  for (let r = 0; r < rows; r++) {
    out.set(hosts[buffer].subarray(offset + r * ld, offset + r * ld + width), r * width);
  }
  return out;
}

/** Random q, k (scaled by {@link QK}) and v of `rows` rows a batch element. */
function randomQkv(seed: number, shape: Shape, rows: number) {
  const [B, , NH, KVH, hd] = shape;
  const scaled = (n: number, s: number, by: number) => randomArray(n, s).map((x) => x * by);
  return {
    q: scaled(B * rows * NH * hd, seed, QK),
    k: scaled(B * rows * KVH * hd, seed + 1, QK),
    v: scaled(B * rows * KVH * hd, seed + 2, 1),
  };
}

function poisoned(shape: number[]): Float32Array {
  return new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(NaN);
}

/** The entry points `record` dispatches. */
function entries(gpu: Gpu, record: () => void): Set<string> {
  const seen = new Set<string>();
  const dispatch = gpu.dispatch;
  gpu.dispatch = (kernel, buffers, options) => {
    seen.add(kernel.key.entry);
    dispatch.call(gpu, kernel, buffers, options);
  };
  try {
    record();
  } finally {
    gpu.dispatch = dispatch;
  }
  return seen;
}

function checkPath(ran: Set<string>, shape: Shape, layout: Layout, what: string): void {
  const vec4 = shape[4] % 4 === 0 && layout !== "odd";
  assert(
    ran.size > 0 && [...ran].every((e) => e.endsWith("_vec4") === vec4),
    `expected the ${vec4 ? "vec4" : "scalar"} kernels, ran ${[...ran]}, ${what}`,
  );
}

Deno.test(
  "the reference backward matches finite differences of the forward, causal or not, kv heads shared or not",
  () => {
    const seed = freshSeed();
    const shapes = [[2, 5, 4, 2, 3], [1, 4, 3, 1, 2], [1, 3, 2, 2, 2]] as const;
    for (const [shape, causal] of shapes.flatMap((s) => [[s, true], [s, false]] as const)) {
      const [B, T, NH, KVH, hd] = shape;
      const sizes = { B, T, NH, KVH, hd, causal };
      const x = randomQkv(seed, shape, T);
      const inputs = {
        q: Float64Array.from(x.q),
        k: Float64Array.from(x.k),
        v: Float64Array.from(x.v),
      };
      const dout = randomArray(B * T * NH * hd, seed + 3);
      const loss = () => {
        const { out } = attentionForwardRef(inputs, sizes);
        return out.reduce((sum, o, i) => sum + o * dout[i], 0);
      };
      const grad = attentionBackwardRef({ ...inputs, dout }, sizes);
      for (const name of ["q", "k", "v"] as const) {
        const at = inputs[name];
        const numeric = new Float64Array(at.length);
        const h = 1e-5;
        for (let i = 0; i < at.length; i++) {
          const x0 = at[i];
          at[i] = x0 + h;
          const up = loss();
          at[i] = x0 - h;
          const down = loss();
          at[i] = x0;
          numeric[i] = (up - down) / (2 * h);
        }
        const err = relativeError(grad[`d${name}`], numeric);
        const what = `shape (${shape}), causal ${causal}, seed ${seed}`;
        assert(err < 1e-7, `d${name} relative error ${err}, ${what}`);
        assert(grad[`d${name}`].some((g) => g !== 0), `all-zero d${name}, ${what}`);
      }
    }
  },
);

function describe(attention: AttentionKernels, what: string, seed: number): string {
  const mode = attention.causal ? "causal" : "non-causal";
  return `${what}, ${mode}, span ${attention.span ?? "auto"}, seed ${seed}`;
}

async function checkForward(
  attention: AttentionKernels,
  shape: Shape,
  layout: Layout,
  seed: number,
) {
  const { gpu } = attention;
  const [B, T, NH, KVH, hd] = shape;
  const x = randomQkv(seed + T, shape, T);
  const what = describe(attention, `(B, T, NH, KVH, hd) = (${shape}), ${layout}`, seed);
  using qkv = Placed.upload(gpu, layout, [x.q, x.k, x.v], {
    widths: [NH * hd, KVH * hd, KVH * hd],
  });
  using out = Tensor.from(gpu, poisoned([B, T, NH * hd]), [B, T, NH * hd]);
  using lse = Tensor.from(gpu, poisoned([B, NH, T]), [B, NH, T]);
  const [q, k, v] = [qkv.view(0), qkv.view(1), qkv.view(2)];
  const ran = entries(gpu, () => attention.forward({ out, lse, q, k, v, B, T, NH, KVH }));
  checkPath(ran, shape, layout, what);
  const ref = attentionForwardRef(x, { B, T, NH, KVH, hd, causal: attention.causal });
  const [gotOut, gotLse] = [await out.read(), await lse.read()];
  assert.equal(firstNonFinite(gotOut), -1, `unwritten out, ${what}`);
  assert.equal(firstNonFinite(gotLse), -1, `unwritten lse, ${what}`);
  const errOut = relativeError(gotOut, ref.out);
  const errLse = relativeError(gotLse, ref.lse);
  assert(errOut < TOLERANCE, `out relative error ${errOut}, ${what}`);
  assert(errLse < TOLERANCE, `lse relative error ${errLse}, ${what}`);
}

async function checkBackward(
  attention: AttentionKernels,
  shape: Shape,
  layout: Layout,
  seed: number,
) {
  const { gpu } = attention;
  const [B, T, NH, KVH, hd] = shape;
  const x = randomQkv(seed + T, shape, T);
  const dout = randomArray(B * T * NH * hd, seed + T + 3);
  const widths = [NH * hd, KVH * hd, KVH * hd];
  // Small, so that subtracting it back off loses nothing of the gradient's precision.
  const start = widths.map((w, i) => randomArray(B * T * w, seed + T + 4 + i).map((s) => s * 0.1));
  const what = describe(attention, `(B, T, NH, KVH, hd) = (${shape}), ${layout}`, seed);
  using qkv = Placed.upload(gpu, layout, [x.q, x.k, x.v], { widths });
  using grads = Placed.upload(gpu, layout, start, { widths, gap: UNTOUCHED });
  using gout = Tensor.from(gpu, dout, [B, T, NH * hd]);
  using out = Tensor.empty(gpu, [B, T, NH * hd]);
  using lse = Tensor.empty(gpu, [B, NH, T]);
  const [q, k, v] = [qkv.view(0), qkv.view(1), qkv.view(2)];
  attention.forward({ out, lse, q, k, v, B, T, NH, KVH });
  const ran = entries(gpu, () =>
    attention.backward({
      dq: grads.view(0),
      dk: grads.view(1),
      dv: grads.view(2),
      dout: gout,
      q,
      k,
      v,
      out,
      lse,
      B,
      T,
      NH,
      KVH,
    }));
  checkPath(ran, shape, layout, what);
  const got = await grads.read();
  const ref = attentionBackwardRef({ ...x, dout }, { B, T, NH, KVH, hd, causal: attention.causal });
  for (const [i, name] of ["dq", "dk", "dv"].entries()) {
    const part = gather(got, grads.parts[i]);
    assert.equal(firstNonFinite(part), -1, `non-finite ${name}, ${what}`);
    // The kernel adds into a random start: f32 rounds the sum to the size of both terms, so the
    // error is measured against start and gradient together, not the gradient alone.
    const want = ref[name as "dq" | "dk" | "dv"];
    const diff = Float64Array.from(part, (g, j) => g - (start[i][j] + want[j]));
    const terms = Float64Array.from(part, (_, j) => Math.abs(start[i][j]) + Math.abs(want[j]));
    const norm = (v: Float64Array) => Math.sqrt(v.reduce((a, x) => a + x * x, 0));
    const err = norm(diff) / Math.max(norm(terms), 1e-30);
    assert(err < TOLERANCE, `${name} error ${err} of the terms' size, ${what}`);
    scatter(got, grads.parts[i], new Float32Array(part.length).fill(UNTOUCHED));
  }
  const stray = got.findIndex((h) => h.some((g) => g !== UNTOUCHED));
  assert.equal(stray, -1, `the backward wrote outside dq, dk and dv, ${what}`);
}

/**
 * Decodes `steps` positions at a time over a KV cache of `past + T + 2` rows (rows past the
 * filled ones poisoned, as are q of cached rows in the fused layout) and compares each step with
 * the reference and, when causal, with the same rows of one full forward.
 */
async function checkDecode(
  attention: AttentionKernels,
  heads: { B: number; NH: number; KVH: number; hd: number; layout: Layout; steps: number[] },
  seed: number,
) {
  const { gpu } = attention;
  const { B, NH, KVH, hd, layout, steps } = heads;
  const N = steps.reduce((a, b) => a + b, 0);
  const tMax = N + 2;
  const shape = [B, N, NH, KVH, hd] as const;
  const x = randomQkv(seed + N, shape, N);
  const widths = [NH * hd, KVH * hd, KVH * hd];
  const what = describe(
    attention,
    `(B, NH, KVH, hd) = (${B}, ${NH}, ${KVH}, ${hd}), steps ${steps}, ${layout}`,
    seed,
  );
  using full = Placed.upload(gpu, layout, [x.q, x.k, x.v], { widths });
  using fullOut = Tensor.from(gpu, poisoned([B, N, NH * hd]), [B, N, NH * hd]);
  using fullLse = Tensor.from(gpu, poisoned([B, NH, N]), [B, NH, N]);
  const [q, k, v] = [full.view(0), full.view(1), full.view(2)];
  attention.forward({ out: fullOut, lse: fullLse, q, k, v, B, T: N, NH, KVH });
  const [allOut, allLse] = [await fullOut.read(), await fullLse.read()];
  // `count` rows a batch element of a [B, N, width] array from row `first` on, as
  // [B, count, width], NaN outside rows [from, to).
  const rows = (
    a: ArrayLike<number>,
    width: number,
    at: { first?: number; count: number; from?: number; to?: number },
  ) => {
    const { first = 0, count, from = first, to = first + count } = at;
    const out = new Float32Array(B * count * width).fill(NaN);
    for (let b = 0; b < B; b++) {
      for (let t = Math.max(first, from); t < Math.min(first + count, to, N); t++) {
        for (let c = 0; c < width; c++) {
          out[(b * count + t - first) * width + c] = a[(b * N + t) * width + c];
        }
      }
    }
    return out;
  };
  let past = 0;
  for (const T of steps) {
    const fill = past + T;
    // The cache: k and v of rows [0, fill), nothing after; q of the new rows.
    const fused = layout === "fused";
    const kc = rows(x.k, KVH * hd, { count: tMax, to: fill });
    const vc = rows(x.v, KVH * hd, { count: tMax, to: fill });
    const qc = fused
      ? rows(x.q, NH * hd, { count: tMax, from: past, to: fill })
      : rows(x.q, NH * hd, { first: past, count: T });
    using cache = Placed.upload(gpu, layout, [qc, kc, vc], { widths });
    using out = Tensor.from(gpu, poisoned([B, T, NH * hd]), [B, T, NH * hd]);
    using lse = Tensor.from(gpu, poisoned([B, NH, T]), [B, NH, T]);
    attention.forward({
      out,
      lse,
      q: cache.view(0, fused ? past : 0),
      k: cache.view(1),
      v: cache.view(2),
      B,
      T,
      NH,
      KVH,
      past,
      tMax,
      qRows: fused ? tMax : T,
    });
    const [gotOut, gotLse] = [await out.read(), await lse.read()];
    const at = `${what}, past ${past}, T ${T}`;
    assert.equal(firstNonFinite(gotOut), -1, `non-finite out, ${at}`);
    assert.equal(firstNonFinite(gotLse), -1, `non-finite lse, ${at}`);
    // Without the mask, a step's rows see the keys cached so far, not all N of the full forward.
    if (attention.causal) {
      const errOut = relativeError(gotOut, rows(allOut, NH * hd, { first: past, count: T }));
      assert(errOut < 1e-6, `out differs from the full forward by ${errOut}, ${at}`);
      const wantLse = new Float32Array(B * NH * T);
      for (let bh = 0; bh < B * NH; bh++) {
        wantLse.set(allLse.subarray(bh * N + past, bh * N + fill), bh * T);
      }
      const errLse = relativeError(gotLse, wantLse);
      assert(errLse < 1e-6, `lse differs from the full forward by ${errLse}, ${at}`);
    }
    const ref = attentionForwardRef(
      { q: rows(x.q, NH * hd, { first: past, count: T }), k: x.k, v: x.v },
      { B, T, NH, KVH, hd, past, tMax: N, causal: attention.causal },
    );
    const errRef = relativeError(gotOut, ref.out);
    assert(errRef < TOLERANCE, `out relative error ${errRef} to the reference, ${at}`);
    const errRefLse = relativeError(gotLse, ref.lse);
    assert(errRefLse < TOLERANCE, `lse relative error ${errRefLse} to the reference, ${at}`);
    past = fill;
  }
}

Deno.test(
  "attention forward matches the float64 reference with grouped kv heads on every layout",
  GPU_TEST,
  async () => {
    const attention = await AttentionKernels.load(await testGpu());
    const seed = freshSeed();
    for (const shape of SHAPES) {
      for (const layout of LAYOUTS) await checkForward(attention, shape, layout, seed);
    }
  },
);

Deno.test(
  "attention backward adds the float64 reference gradients into dq, dk and dv views only",
  GPU_TEST,
  async () => {
    const attention = await AttentionKernels.load(await testGpu());
    const seed = freshSeed();
    for (const shape of SHAPES) {
      for (const layout of LAYOUTS) await checkBackward(attention, shape, layout, seed);
    }
  },
);

Deno.test(
  "incremental decoding over a KV cache equals the full forward, fused and separate",
  GPU_TEST,
  async () => {
    const attention = await AttentionKernels.load(await testGpu());
    const seed = freshSeed();
    for (const layout of LAYOUTS) {
      for (const [NH, KVH, hd] of [[3, 3, 5], [4, 2, 8], [4, 1, 3], [1, 1, 4]]) {
        await checkDecode(attention, { B: 2, NH, KVH, hd, layout, steps: [5, 1, 1, 3, 1] }, seed);
      }
    }
  },
);

Deno.test(
  "attention split into many 16-row passes matches the reference, forward, backward and cached",
  GPU_TEST,
  async () => {
    // What llvmpipe's loop limit forces on long sequences with large heads, on small shapes;
    // T = 3 with 4 query heads a kv head also splits the dk/dv passes by head.
    const attention = await AttentionKernels.load(await testGpu(), { span: 16 });
    const seed = freshSeed();
    const shapes: Shape[] = [[2, 17, 3, 3, 5], [1, 64, 4, 2, 16], [1, 50, 2, 1, 64]];
    for (const shape of [...shapes, [2, 3, 8, 2, 4] as const, [1, 3, 4, 1, 3] as const]) {
      for (const layout of ["fused", "odd"] as const) {
        await checkForward(attention, shape, layout, seed);
        await checkBackward(attention, shape, layout, seed);
      }
    }
    for (const [NH, KVH, hd] of [[3, 3, 5], [4, 2, 8]]) {
      for (const layout of ["fused", "separate"] as const) {
        const steps = [5, 10, 1, 1, 14, 3];
        await checkDecode(attention, { B: 1, NH, KVH, hd, layout, steps }, seed);
      }
    }
  },
);

Deno.test(
  "non-causal attention (ViT) matches the float64 reference forward and backward on every layout",
  GPU_TEST,
  async () => {
    const attention = await AttentionKernels.load(await testGpu(), { causal: false });
    assert.equal(attention.causal, false);
    const seed = freshSeed();
    for (const shape of FULL_SHAPES) {
      for (const layout of LAYOUTS) {
        await checkForward(attention, shape, layout, seed);
        await checkBackward(attention, shape, layout, seed);
      }
    }
  },
);

Deno.test(
  "non-causal attention split into 16-row passes and over a KV cache matches the reference",
  GPU_TEST,
  async () => {
    const attention = await AttentionKernels.load(await testGpu(), { causal: false, span: 16 });
    const seed = freshSeed();
    const shapes: Shape[] = [[2, 17, 3, 3, 5], [1, 64, 4, 2, 16], [1, 50, 2, 1, 64], [
      1,
      3,
      4,
      1,
      3,
    ]];
    for (const shape of shapes) {
      for (const layout of ["fused", "odd"] as const) {
        await checkForward(attention, shape, layout, seed);
        await checkBackward(attention, shape, layout, seed);
      }
    }
    for (const [NH, KVH, hd] of [[3, 3, 5], [4, 2, 8]]) {
      for (const layout of ["fused", "separate"] as const) {
        const steps = [5, 10, 1, 14, 3];
        await checkDecode(attention, { B: 1, NH, KVH, hd, layout, steps }, seed);
      }
    }
  },
);

Deno.test(
  "with all-zero queries a row averages the values it sees: rows 0 ..= t, or every row",
  GPU_TEST,
  async () => {
    // Equal scores make the softmax uniform: causal row t is the mean of v rows 0 ..= t and its
    // lse log(t + 1); without the mask every row is the mean of all T and its lse log(T).
    const gpu = await testGpu();
    const [T, hd] = [5, 4];
    const v = Float32Array.from({ length: T * hd }, (_, i) => 2 ** (i % hd) * Math.floor(i / hd));
    for (const causal of [true, false]) {
      const attention = await AttentionKernels.load(gpu, { causal });
      using q = Tensor.from(gpu, new Float32Array(T * hd), [1, T, hd]);
      using k = Tensor.from(gpu, randomArray(T * hd, freshSeed()), [1, T, hd]);
      using tv = Tensor.from(gpu, v, [1, T, hd]);
      using out = Tensor.from(gpu, poisoned([1, T, hd]), [1, T, hd]);
      using lse = Tensor.from(gpu, poisoned([1, 1, T]), [1, 1, T]);
      attention.forward({ out, lse, q, k, v: tv, B: 1, T, NH: 1 });
      const [gotOut, gotLse] = [await out.read(), await lse.read()];
      for (let t = 0; t < T; t++) {
        const seen = causal ? t + 1 : T;
        // Rows 0 .. seen - 1 of v hold 0, 1, .. times (1, 2, 4, 8): their mean is (seen - 1) / 2.
        const want = [1, 2, 4, 8].map((c) => (c * (seen - 1)) / 2);
        const got = gotOut.subarray(t * hd, (t + 1) * hd);
        assert(relativeError(got, want) < 1e-6, `causal ${causal}, row ${t}: ${got} vs ${want}`);
        assert(Math.abs(gotLse[t] - Math.log(seen)) < 1e-6, `causal ${causal}, lse of row ${t}`);
      }
    }
  },
);

Deno.test(
  "a 1024-token forward runs without a [T, T] buffer and matches the reference",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const attention = await AttentionKernels.load(gpu);
    const seed = freshSeed();
    const [B, T, NH, hd] = [1, 1024, 1, 64];
    const x = randomQkv(seed, [B, T, NH, NH, hd], T);
    using q = Tensor.from(gpu, x.q, [B, T, hd]);
    using k = Tensor.from(gpu, x.k, [B, T, hd]);
    using v = Tensor.from(gpu, x.v, [B, T, hd]);
    using out = Tensor.from(gpu, poisoned([B, T, hd]), [B, T, hd]);
    using lse = Tensor.from(gpu, poisoned([B, NH, T]), [B, NH, T]);
    gpu.flush();
    gpu.pool.resetPeak();
    const before = gpu.pool.stats().inUse;
    attention.forward({ out, lse, q, k, v, B, T, NH });
    gpu.flush();
    // One [T, T] f32 score matrix would be 4 MiB; the forward takes uniform blocks only.
    const extra = gpu.pool.stats().peak - before;
    assert(extra < T * T, `the forward took ${extra} bytes of temporaries`);
    const [gotOut, gotLse] = [await out.read(), await lse.read()];
    const ref = attentionForwardRef(x, { B, T, NH, hd });
    assert.equal(firstNonFinite(gotOut), -1, `non-finite out, seed ${seed}`);
    const errOut = relativeError(gotOut, ref.out);
    const errLse = relativeError(gotLse, ref.lse);
    assert(errOut < TOLERANCE, `out relative error ${errOut}, seed ${seed}`);
    assert(errLse < TOLERANCE, `lse relative error ${errLse}, seed ${seed}`);
  },
);

Deno.test(
  "1024 tokens, 128-wide heads, 4 query heads a kv head: the dk/dv passes split by head",
  GPU_TEST,
  async () => {
    // One pass over all four query heads would loop 4 * 1024 / 4 * 65 > 65535 times.
    const attention = await AttentionKernels.load(await testGpu());
    const seed = freshSeed();
    await checkForward(attention, [1, 1024, 4, 1, 128], "fused", seed);
    await checkBackward(attention, [1, 1024, 4, 1, 128], "fused", seed);
  },
);

Deno.test(
  "non-causal attention over 1536 tokens splits into passes by itself and matches the reference",
  GPU_TEST,
  async () => {
    // The scalar kernels (the odd layout) at hd 64 stream 1312 rows a pass under llvmpipe's loop
    // limit: every row of the other side is then walked in two passes.
    const attention = await AttentionKernels.load(await testGpu(), { causal: false });
    const seed = freshSeed();
    await checkForward(attention, [1, 1536, 2, 1, 64], "odd", seed);
    await checkBackward(attention, [1, 1536, 2, 1, 64], "odd", seed);
  },
);

Deno.test("attention rejects operands and sizes that do not fit", GPU_TEST, async () => {
  const gpu = await testGpu();
  const attention = await AttentionKernels.load(gpu);
  const [B, T, NH, C] = [2, 3, 2, 8];
  const ld = 3 * C;
  using qkv = Tensor.empty(gpu, [B, T, ld]);
  using out = Tensor.empty(gpu, [B, T, C]);
  using lse = Tensor.empty(gpu, [B, NH, T]);
  using dense = Tensor.empty(gpu, [B, T + 1, C]);
  using wide = Tensor.empty(gpu, [1, 1, 3 * 258]);
  const q = { tensor: qkv, ld };
  const k = { tensor: qkv, offset: C, ld };
  const v = { tensor: qkv, offset: 2 * C, ld };
  const fwd = { out, lse, q, k, v, B, T, NH };
  const message = (pattern: RegExp) => (e: unknown) =>
    e instanceof RangeError && pattern.test(e.message);
  assert.throws(
    () => attention.forward({ ...fwd, k: { tensor: qkv, offset: C, ld, size: 100 } }),
    message(/k has 100 elements, expected 128 \(rows 24 apart\)/),
  );
  assert.throws(
    () => attention.forward({ ...fwd, q: dense }),
    message(/q has 64 elements, expected 48 \(shape \[2,4,8\]\)/),
  );
  assert.throws(
    () => attention.forward({ ...fwd, v: { tensor: qkv, ld: 4 } }),
    message(/v rows of 8 elements cannot be 4 apart/),
  );
  assert.throws(() => attention.forward({ ...fwd, NH: 3 }), message(/not \[B=2, T=3, NH \* hd\]/));
  assert.throws(
    () => attention.forward({ ...fwd, KVH: 3 }),
    message(/NH = 2 must be a multiple of the kv heads KVH = 3/),
  );
  assert.throws(
    () => attention.forward({ ...fwd, past: 1, tMax: T }),
    message(/past \+ T = 4 exceed tMax = 3/),
  );
  assert.throws(
    () => attention.forward({ ...fwd, out: wide, B: 1, NH: 1 }),
    message(/head size 258 exceeds/),
  );
  assert.throws(
    () => attention.forward({ ...fwd, lse: { tensor: qkv, offset: 0, size: B * NH * T } }),
    message(/output "lse" and input "q" share one buffer/),
  );
  assert.throws(
    () => attention.backward({ dq: out, dk: k, dv: v, dout: out, q, k, v, out, lse, B, T, NH }),
    message(/output "dq" and input "dout" share one buffer/),
  );
});
