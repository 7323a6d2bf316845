import assert from "node:assert/strict";
import { bindView, checkDistinct, checkSameSize, grid, windows } from "../../kernels/dispatch.ts";
import { Gpu } from "../../kernels/gpu.ts";
import { Tensor, viewRange } from "../../kernels/tensor.ts";
import { UniformStruct } from "../../kernels/uniform_struct.ts";
import { GPU_TEST, testGpu } from "../_util.ts";

// Copies the first element of every row of `inp` to `out`, one invocation a row, over a grid
// that may wrap into y.
const GATHER = /* wgsl */ `
struct Sizes { rows: u32, width: u32, shift_out: u32, shift_inp: u32 }
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(2) var<uniform> sizes: Sizes;
override WG: u32 = 4;
@compute @workgroup_size(WG)
fn gather_forward(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
                  @builtin(num_workgroups) groups: vec3u) {
  let r = (wid.x + wid.y * groups.x) * WG + lid.x;
  if (r < sizes.rows) { out[r + sizes.shift_out] = inp[r * sizes.width + sizes.shift_inp]; }
}`;

const GATHER_SIZES = new UniformStruct(
  "Sizes",
  { rows: "u32", width: "u32", shift_out: "u32", shift_inp: "u32" },
  { wgsl: GATHER },
);

Deno.test(
  "windows split odd views into bindings that fit a tiny binding limit, as computed by hand",
  GPU_TEST,
  async () => {
    using gpu = await Gpu.acquire({ maxBindingBytes: 1024 });
    const align = gpu.bindingAlignment;
    const rows = 1001;
    using inp = Tensor.empty(gpu, [7 + 3 * rows + 5]);
    using out = Tensor.empty(gpu, [11 + rows + 2]);
    const views = [{ tensor: out, offset: 11, size: rows }, { tensor: inp, offset: 7 }];
    const got = [...windows(gpu, rows, views, { widths: [1, 3] })];
    // A binding holds 1024 bytes less one alignment of slack: rows of 3 floats (12 bytes).
    const perWindow = Math.floor((1024 - align) / 12);
    assert.equal(got.length, Math.ceil(rows / perWindow));
    for (const [k, w] of got.entries()) {
      assert.equal(w.begin, k * perWindow);
      assert.equal(w.count, Math.min(perWindow, rows - k * perWindow));
      for (const [v, [offset, width]] of [[11, 1], [7, 3]].entries()) {
        const first = 4 * (offset + w.begin * width);
        const end = 4 * (offset + (w.begin + w.count) * width);
        const { offset: at, size } = w.bindings[v];
        assert.equal(at, Math.floor(first / align) * align, `window ${k} view ${v} offset`);
        assert.equal(at! + 4 * w.shifts[v], first, `window ${k} view ${v} shift`);
        assert.equal(at! + size!, end, `window ${k} view ${v} end`);
        assert(size! <= 1024, `window ${k} view ${v}: ${size} bytes`);
      }
    }
    const chunked = [...windows(gpu, rows, views, { widths: [1, 3], multiple: 16 })];
    assert(chunked.every((w, k) => k === chunked.length - 1 || w.count % 16 === 0));
    assert.deepEqual(chunked.reduce((sum, w) => sum + w.count, 0), rows);
    assert.deepEqual([...windows(gpu, 0, views, { widths: [1, 3] })], []);
    assert.throws(() => [...windows(gpu, 1, [inp], { widths: [300], label: "wide" })], {
      name: "RangeError",
      message: "Cannot run wide: one row of 300 values is over the 1024-byte binding limit",
    });
    assert.throws(() => [...windows(gpu, rows + 1, views, { widths: [1, 3] })], RangeError);
  },
);

Deno.test(
  "a kernel driven by windows and a wrapped grid reads every row of an unaligned view",
  GPU_TEST,
  async () => {
    using gpu = await Gpu.acquire({ maxBindingBytes: 1024 });
    const kernel = await gpu.kernel({
      label: "gather",
      code: GATHER,
      entry: "gather_forward",
      bindings: ["storage", "read", "uniform"],
    });
    const rows = 1001;
    const data = Float32Array.from({ length: 7 + 3 * rows + 5 }, (_, i) => i);
    using inp = Tensor.from(gpu, data, [data.length]);
    using out = Tensor.from(gpu, new Float32Array(11 + rows + 2).fill(-1), [11 + rows + 2]);
    const views = [{ tensor: out, offset: 11, size: rows }, { tensor: inp, offset: 7 }];
    for (const w of windows(gpu, rows, views, { widths: [1, 3] })) {
      gpu.dispatch(kernel, w.bindings, {
        uniforms: GATHER_SIZES.pack({
          rows: w.count,
          width: 3,
          shift_out: w.shifts[0],
          shift_inp: w.shifts[1],
        }),
        // At most 5 workgroups a row: a window's twenty-odd workgroups wrap into y.
        workgroups: grid(gpu, Math.ceil(w.count / 4), { max: 5 }),
      });
    }
    const want = new Float32Array(11 + rows + 2).fill(-1);
    for (let r = 0; r < rows; r++) want[11 + r] = 7 + 3 * r;
    assert.deepEqual(await out.read(), want);
  },
);

Deno.test("grid wraps workgroup counts past the limit into y", GPU_TEST, async () => {
  const gpu = await testGpu();
  const max = gpu.device.limits.maxComputeWorkgroupsPerDimension;
  assert.deepEqual(grid(gpu, 0), [0, 1]);
  assert.deepEqual(grid(gpu, 1), [1, 1]);
  assert.deepEqual(grid(gpu, max), [max, 1]);
  assert.deepEqual(grid(gpu, max + 1), [max, 2]);
  assert.deepEqual(grid(gpu, 3 * max - 1), [max, 3]);
  assert.deepEqual(grid(gpu, 50, { max: 7 }), [7, 8]);
  assert.deepEqual(grid(gpu, 49, { max: 7 }), [7, 7]);
  assert.deepEqual(grid(gpu, 3, { max: 2 * max }), [3, 1]);
});

Deno.test(
  "views name the elements they cover and are checked against their tensor",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    using t = Tensor.empty(gpu, [10]);
    using u = Tensor.empty(gpu, [4], { dtype: "u32" });
    assert.deepEqual(viewRange(t), { tensor: t, offset: 0, size: 10 });
    assert.deepEqual(viewRange({ tensor: t, offset: 3 }), { tensor: t, offset: 3, size: 7 });
    assert.deepEqual(viewRange({ tensor: t, offset: 3, size: 2, ld: 5 }).size, 2);
    for (const bad of [{ offset: 8, size: 3 }, { offset: -1 }, { offset: 1.5 }, { offset: 11 }]) {
      assert.throws(() => viewRange({ tensor: t, ...bad }), RangeError, JSON.stringify(bad));
    }
    const { binding, shift } = bindView(gpu, { tensor: t, offset: 9, size: 1 });
    assert.equal(binding.offset! + 4 * shift, 36);
    assert.equal(checkSameSize("k", { a: { tensor: t, offset: 6 }, b: { tensor: t, size: 4 } }), 4);
    assert.throws(() => checkSameSize("k", { a: t, b: { tensor: t, size: 4 } }), {
      message: 'Cannot run k: "b" has 4 elements, expected 10',
    });
    assert.throws(() => checkSameSize("k", { a: u, b: u }), {
      message: 'Cannot run k: "a" is u32, not f32',
    });
    checkDistinct("k", { out: t }, { inp: u, none: undefined });
    assert.throws(() => checkDistinct("k", { out: { tensor: t, size: 2 } }, { inp: u, x: t }), {
      message: 'Cannot run k: output "out" and input "x" share one buffer',
    });
  },
);

Deno.test("uniform structs pack with WGSL's layout, as laid out by hand", () => {
  const wgsl = `
    struct Params {
      key: vec2<u32>,   // a Philox key
      flag: u32,
      scale: f32,
      delta: i32,
    }`;
  const params = new UniformStruct(
    "Params",
    { key: "vec2u", flag: "u32", scale: "f32", delta: "i32" },
    { wgsl },
  );
  assert.deepEqual(params.offsets, { key: 0, flag: 8, scale: 12, delta: 16 });
  assert.equal(params.byteLength, 32);
  const block = params.pack({ key: [0xdeadbeef, 7], flag: true, scale: 0.1, delta: -3 });
  const hand = new DataView(new ArrayBuffer(32));
  hand.setUint32(0, 0xdeadbeef, true);
  hand.setUint32(4, 7, true);
  hand.setUint32(8, 1, true);
  hand.setFloat32(12, 0.1, true);
  hand.setInt32(16, -3, true);
  assert.deepEqual(new Uint8Array(block), new Uint8Array(hand.buffer));

  // A vec2 after an odd number of words starts on 8 bytes; a 4-byte struct still takes 16.
  const padded = new UniformStruct("P", { n: "u32", v: "vec2u" });
  assert.deepEqual(padded.offsets, { n: 0, v: 8 });
  assert.equal(padded.byteLength, 16);
  assert.equal(new UniformStruct("One", { n: "u32" }).byteLength, 16);
  assert.equal(
    new UniformStruct("Five", { a: "u32", b: "u32", c: "u32", d: "u32", e: "f32" })
      .byteLength,
    32,
  );

  for (const flag of [-1, 1.5, 2 ** 32, NaN]) {
    assert.throws(() => params.pack({ key: [0, 0], flag, scale: 0, delta: 0 }), {
      name: "RangeError",
      message: `Uniform Params.flag must be a u32, got ${flag}`,
    });
  }
  assert.throws(() => params.pack({ key: [0, -1], flag: 0, scale: 0, delta: 0 }), RangeError);
  assert.throws(() => params.pack({ key: [0, 0], flag: 0, scale: 0, delta: 2 ** 31 }), RangeError);
});

Deno.test("a uniform struct declared unlike its WGSL fails where it is declared", () => {
  const wgsl = "struct Sizes { n: u32, shift: u32, factor: f32 }";
  assert.throws(
    () => new UniformStruct("Sizes", { shift: "u32", n: "u32", factor: "f32" }, { wgsl }),
    {
      name: "TypeError",
      message: "Uniform struct Sizes is declared { shift: u32, n: u32, factor: f32 } but the " +
        "WGSL has { n: u32, shift: u32, factor: f32 }",
    },
  );
  assert.throws(() =>
    new UniformStruct("Sizes", { n: "u32", shift: "u32", factor: "u32" }, {
      wgsl,
    }), TypeError);
  assert.throws(() => new UniformStruct("Other", { n: "u32" }, { wgsl }), {
    message: "WGSL declares no struct Other",
  });
});
