import assert from "node:assert/strict";
import { GpuError } from "../../kernels/gpu.ts";
import { sizeClass } from "../../kernels/pool.ts";
import { Tensor, window } from "../../kernels/tensor.ts";
import { GPU_TEST, testGpu } from "../_util.ts";

const SCALE = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
struct Sizes { n: u32, shift: u32, factor: f32 }
@group(0) @binding(2) var<uniform> sizes: Sizes;
override WG: u32 = 64;
@compute @workgroup_size(WG)
fn scale_forward(@builtin(global_invocation_id) id: vec3u) {
  if (id.x < sizes.n) { out[id.x] = x[id.x + sizes.shift] * sizes.factor; }
}`;

function scaleKernel(wg = 64) {
  return {
    label: "scale",
    code: SCALE,
    entry: "scale_forward",
    bindings: ["storage", "read", "uniform"] as const,
    constants: { WG: wg },
  };
}

function sizes(n: number, shift: number, factor: number): ArrayBuffer {
  const block = new ArrayBuffer(16);
  new Uint32Array(block, 0, 2).set([n, shift]);
  new Float32Array(block, 8, 1)[0] = factor;
  return block;
}

Deno.test("tensors round-trip through the GPU exactly", GPU_TEST, async () => {
  const gpu = await testGpu();
  const data = new Float32Array([0, -1.5, 3.25, 1e-30, -0, Infinity, 7]);
  using t = Tensor.from(gpu, data, [7]);
  assert.deepEqual(await t.read(), data);
  using u = Tensor.from(gpu, new Int32Array([-5, 2 ** 31 - 1]), [2]);
  assert.deepEqual(u.dtype, "i32");
  assert.deepEqual([...await u.read()], [-5, 2 ** 31 - 1]);
});

Deno.test(
  "many dispatches batch into one submit and each sees its own uniforms",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const kernel = await gpu.kernel(scaleKernel());
    const n = 1000;
    using x = Tensor.from(gpu, Float32Array.from({ length: n }, (_, i) => i), [n]);
    const outs = Array.from({ length: 40 }, () => Tensor.empty(gpu, [n]));
    outs.forEach((out, k) =>
      gpu.dispatch(kernel, [out.buffer, x.buffer], {
        uniforms: sizes(n, 0, k),
        workgroups: [Math.ceil(n / 64)],
      })
    );
    for (const [k, out] of outs.entries()) {
      const got = await out.read();
      assert.deepEqual(got[n - 1], (n - 1) * k);
      out[Symbol.dispose]();
    }
  },
);

Deno.test("a kernel that does not compile reports the compiler's message", GPU_TEST, async () => {
  const gpu = await testGpu();
  const bad = { ...scaleKernel(), label: "broken", code: SCALE.replace("* sizes.factor", "* 1u") };
  await assert.rejects(
    () => gpu.kernel(bad),
    (e) => e instanceof GpuError && /Cannot compile kernel "broken".*wgsl:/s.test(e.message),
  );
});

Deno.test("kernels are cached by key and specialised by override constants", GPU_TEST, async () => {
  const gpu = await testGpu();
  const a = await gpu.kernel(scaleKernel(64));
  assert(a === await gpu.kernel(scaleKernel(64)));
  const b = await gpu.kernel(scaleKernel(32));
  assert(a !== b);
  using x = Tensor.from(gpu, new Float32Array([1, 2, 3]), [3]);
  using out = Tensor.empty(gpu, [3]);
  gpu.dispatch(b, [out.buffer, x.buffer], { uniforms: sizes(3, 0, 2), workgroups: [1] });
  assert.deepEqual([...await out.read()], [2, 4, 6]);
});

Deno.test(
  "the pool hands a released buffer out again for the same size class",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const a = Tensor.empty(gpu, [1000]);
    const buffer = a.buffer;
    a[Symbol.dispose]();
    gpu.flush();
    using b = Tensor.empty(gpu, [900]);
    assert(b.buffer === buffer);
    assert.deepEqual(sizeClass(1), 256);
    assert.deepEqual(sizeClass(4000), 4096);
    assert(sizeClass(3_000_000) >= 3_000_000 && sizeClass(3_000_000) < 3_000_000 * 1.07);
  },
);

Deno.test(
  "windows bind an aligned slice of a buffer and say where the range starts",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const kernel = await gpu.kernel(scaleKernel());
    const n = 300;
    using x = Tensor.from(gpu, Float32Array.from({ length: n }, (_, i) => i), [n]);
    using out = Tensor.empty(gpu, [10]);
    const w = window(gpu, x.buffer, { begin: 137, end: 147 });
    assert.deepEqual(w.binding.offset! % gpu.bindingAlignment, 0);
    gpu.dispatch(kernel, [out.buffer, w.binding], {
      uniforms: sizes(10, w.shift, 1),
      workgroups: [1],
    });
    assert.deepEqual([...await out.read()], Array.from({ length: 10 }, (_, i) => 137 + i));
    assert.throws(() => window(gpu, x.buffer, { begin: 0, end: gpu.maxBindingBytes }), GpuError);
  },
);

Deno.test("GPU timing returns a positive duration", GPU_TEST, async () => {
  const gpu = await testGpu();
  const kernel = await gpu.kernel(scaleKernel());
  using x = Tensor.from(gpu, new Float32Array(4096), [4096]);
  using out = Tensor.empty(gpu, [4096]);
  const { ms, source } = await gpu.time(() => {
    for (let i = 0; i < 10; i++) {
      gpu.dispatch(kernel, [out.buffer, x.buffer], {
        uniforms: sizes(4096, 0, 1),
        workgroups: [64],
      });
    }
  });
  assert(ms > 0 && ms < 10_000, `${ms} ms from ${source}`);
});

Deno.test(
  "a profile times each dispatch by kernel and grid, and leaves the results unchanged",
  GPU_TEST,
  async (t) => {
    const gpu = await testGpu();
    if (!gpu.hasTimestamps) {
      assert.throws(() => gpu.startProfile(), /timestamp-query/);
      await t.step({ name: "(no timestamp-query: profiling refused)", fn: () => {} });
      return;
    }
    const kernel = await gpu.kernel(scaleKernel());
    const values = Float32Array.from({ length: 3000 }, (_, i) => i % 97 - 48);
    using x = Tensor.from(gpu, values, [3000]);
    using out = Tensor.empty(gpu, [3000]);
    await assert.rejects(() => gpu.stopProfile(), /No profile is running/);
    gpu.startProfile();
    assert.throws(() => gpu.startProfile(), /already running/);
    for (const [n, factor] of [[3000, 2], [3000, 3], [64, 5]] as const) {
      gpu.dispatch(kernel, [out.buffer, x.buffer], {
        uniforms: sizes(n, 0, factor),
        workgroups: [Math.ceil(n / 64)],
      });
    }
    const profile = await gpu.stopProfile();
    assert.deepEqual(
      profile.kernels.map((k) => [k.label, k.count]).sort(),
      [["scale 1x1x1", 1], ["scale 47x1x1", 2]],
    );
    assert.ok(profile.kernels.every((k) => k.ms >= 0 && k.ms < 10_000));
    assert.equal(profile.untimed, 0);
    // The last dispatch scaled the first 64 values by 5, the rest kept the second's 3.
    const got = await out.read();
    for (let i = 0; i < 3000; i++) assert.equal(got[i], values[i] * (i < 64 ? 5 : 3));
    // Work after the profile runs in the shared pass again.
    gpu.dispatch(kernel, [out.buffer, x.buffer], { uniforms: sizes(3000, 0, 1), workgroups: [47] });
    assert.deepEqual([...await out.read()], [...values]);
  },
);

Deno.test(
  "a write between recorded dispatches lands in order without a submit of its own",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const kernel = await gpu.kernel(scaleKernel());
    using x = Tensor.from(gpu, new Float32Array([1, 2, 3, 4]), [4]);
    using before = Tensor.empty(gpu, [4]);
    using after = Tensor.empty(gpu, [4]);
    gpu.flush();
    const submits = gpu.submits;
    const scale = (out: Tensor) =>
      gpu.dispatch(kernel, [out.buffer, x.buffer], { uniforms: sizes(4, 0, 2), workgroups: [1] });
    scale(before);
    gpu.write(x.buffer, new Float32Array([10, 20]), 4);
    scale(after);
    assert.equal(gpu.submits, submits, "the write submitted the recorded work");
    gpu.flush();
    assert.equal(gpu.submits, submits + 1);
    assert.deepEqual([...await before.read()], [2, 4, 6, 8]);
    assert.deepEqual([...await after.read()], [2, 20, 40, 8]);
    // A large write submits the recorded work first rather than holding a second copy.
    const n = (1 << 20) / 4 + 4;
    using big = Tensor.from(gpu, new Float32Array(n).fill(1), [n]);
    using out = Tensor.empty(gpu, [4]);
    gpu.dispatch(kernel, [out.buffer, big.buffer], { uniforms: sizes(4, 0, 3), workgroups: [1] });
    const beforeBig = gpu.submits;
    big.fill(5);
    assert.equal(gpu.submits, beforeBig + 1);
    assert.deepEqual([...await out.read()], [3, 3, 3, 3]);
    assert.deepEqual((await big.read())[n - 1], 5);
  },
);
