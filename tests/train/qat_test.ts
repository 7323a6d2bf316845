import assert from "node:assert/strict";
import { loadAdapter, saveAdapter } from "../../adapters/adapter_file.ts";
import type { AdapterSet } from "../../adapters/attach.ts";
import { QatHooks, quantizeInPlace } from "../../train/qat.ts";
import { quantize, type QuantOptions } from "../../formats/quantize.ts";
import { FakequantKernels } from "../../kernels/fakequant.ts";
import type { Gpu } from "../../kernels/gpu.ts";
import { Tensor } from "../../kernels/tensor.ts";
import { Gpt2 } from "../../models/gpt2.ts";
import { RunLog } from "../../train/run_log.ts";
import { train } from "../../train/trainer.ts";
import { freshSeed, GPU_TEST, randomArray, testGpu } from "../_util.ts";
import { copyRows, FIXTURE, nolaSetup } from "./_train_fixture.ts";

const Q4: QuantOptions = { bits: 4, scheme: "symmetric" };
const B = 2;
const T = 24;
const MAX_ROWS = 4 * 24;

async function tempDir(name: string): Promise<string> {
  await Deno.mkdir("out/tmp", { recursive: true });
  return await Deno.makeTempDir({ dir: "out/tmp", prefix: `${name}-` });
}

/** A fixed batch of the copy task. */
function batch(): { tokens: Uint32Array; targets: Uint32Array } {
  const rows = copyRows(B, 5);
  const tokens = new Uint32Array(B * T);
  rows.forEach((r, i) => tokens.set(r.tokens, i * T));
  return { tokens, targets: Uint32Array.from(tokens, (_, i) => tokens[i + 1] ?? 0) };
}

async function logits(model: Gpt2): Promise<Float32Array> {
  const acts = model.forward({ B, T, tokens: batch().tokens });
  return (await acts.logits.read()) as Float32Array;
}

/** Records one forward and backward of the fixed batch; the set's hooks are the caller's. */
function forwardBackward(model: Gpt2): void {
  const { tokens, targets } = batch();
  model.forward({ B, T, tokens });
  model.loss({ targets }, { backward: true });
  model.backward();
}

function sameBits(a: Float32Array, b: Float32Array, what: string): void {
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  const i = x.findIndex((v, j) => v !== y[j]);
  assert.equal(i, -1, `${what}: element ${i} is ${a[i]}, expected ${b[i]}`);
}

/** Saves with `quant`, loads into a fresh model and checks its logits equal `expected`. */
async function checkRoundTrip(
  gpu: Gpu,
  set: AdapterSet,
  quant: QuantOptions,
  expected: Float32Array,
): Promise<void> {
  const dir = await tempDir("qat");
  const path = `${dir}/adapter.safetensors`;
  await saveAdapter(set, path, { baseModel: "tiny-gpt2", quant });
  {
    using model = await Gpt2.load(gpu, FIXTURE);
    using _loaded = await loadAdapter(model, path, { maxRows: MAX_ROWS });
    sameBits(await logits(model), expected, `logits after loading the ${quant.bits}-bit file`);
  }
  await Deno.remove(dir, { recursive: true });
}

Deno.test(
  "4-bit QAT lowers the loss, every forward sees grid coefficients, and the saved file is exact",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const steps = 12;
    using s = await nolaSetup(gpu, { steps });
    using qat = await QatHooks.create(s.set, Q4);
    // Snapshots of each coefficient and its master as the step's forward sees them.
    const snaps = qat.modules.flatMap((m) =>
      [[m.nola.alpha, m.alpha], [m.nola.beta, m.beta]].map(([used, master]) => ({
        used,
        master,
        usedAt: Tensor.empty(gpu, [steps, used.size]),
        masterAt: Tensor.empty(gpu, [steps, used.size]),
      }))
    );
    let step = 0;
    const hooks = {
      zeroGrads: () => qat.zeroGrads(),
      prepareStep: () => {
        qat.prepareStep();
        for (const t of snaps) {
          gpu.copy(t.used.buffer, t.usedAt.buffer, {
            size: t.used.byteLength,
            targetOffset: step * t.used.byteLength,
          });
          gpu.copy(t.master.buffer, t.masterAt.buffer, {
            size: t.used.byteLength,
            targetOffset: step * t.used.byteLength,
          });
        }
        step++;
      },
      finishBackward: () => qat.finishBackward(),
    };
    const dir = await tempDir("qat-run");
    {
      using log = await RunLog.open(dir);
      const result = await train({
        ...s.base,
        groups: [{ kind: "adamw", lr: 2e-2, params: qat.parameters() }],
        hooks,
        batches: s.batches(),
        log,
        logEvery: 4,
        checkpointEvery: 0,
      });
      assert.equal(result.steps, steps);
      const losses = [...result.losses.values()];
      assert(losses.at(-1)! < losses[0], `loss should fall: ${losses}`);
    }
    await Deno.remove(dir, { recursive: true });
    assert.equal(step, steps);
    let offGrid = 0;
    for (const t of snaps) {
      const used = (await t.usedAt.read()) as Float32Array;
      const master = (await t.masterAt.read()) as Float32Array;
      for (let i = 0; i < steps; i++) {
        const n = t.used.size;
        const m = master.subarray(i * n, (i + 1) * n);
        const expected = quantize(m, Q4).dequantized;
        sameBits(used.subarray(i * n, (i + 1) * n), expected, `${t.used.buffer.label} step ${i}`);
        if (m.some((v, j) => v !== expected[j])) offGrid++;
      }
      t.usedAt[Symbol.dispose]();
      t.masterAt[Symbol.dispose]();
    }
    // Otherwise quantization would have been the identity and the check above empty.
    assert(offGrid > 0, "the masters never left the 4-bit grid");

    await qat.finalize();
    for (const m of qat.modules) {
      sameBits(
        (await m.nola.alpha.read()) as Float32Array,
        quantize((await m.alpha.read()) as Float32Array, Q4).dequantized,
        `${m.name}.alpha after finalize`,
      );
    }
    await checkRoundTrip(gpu, s.set, Q4, await logits(s.model));
  },
);

Deno.test(
  "the straight-through gradient is the gradient at the quantized coefficients",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    using s = await nolaSetup(gpu, { steps: 1 });
    using qat = await QatHooks.create(s.set, Q4);
    // The optimizer updates the masters with the set's gradients.
    for (const p of qat.parameters()) {
      const m = qat.modules.find((m) => p.name.startsWith(`${m.name}.`))!;
      const alpha = p.name.endsWith(".alpha");
      assert.equal(p.param, alpha ? m.alpha : m.beta, p.name);
      assert.equal(p.grad, alpha ? m.nola.dalpha : m.nola.dbeta, p.name);
    }
    const masters = qat.modules.map((m, i) => ({
      alpha: randomArray(m.alpha.size, seed + 2 * i).map((v) => v * 0.3),
      beta: randomArray(m.beta.size, seed + 2 * i + 1).map((v) => v * 0.3),
    }));
    qat.modules.forEach((m, i) => {
      gpu.write(m.alpha.buffer, masters[i].alpha);
      gpu.write(m.beta.buffer, masters[i].beta);
    });
    const grads = async () => {
      const out = [];
      for (const m of qat.modules) {
        out.push((await m.nola.dalpha.read()) as Float32Array);
        out.push((await m.nola.dbeta.read()) as Float32Array);
      }
      return out;
    };
    qat.zeroGrads();
    qat.prepareStep();
    forwardBackward(s.model);
    qat.finishBackward();
    const ste = await grads();

    // The same step with the quantized values written directly, and with the raw masters.
    const direct = async (quantized: boolean) => {
      qat.modules.forEach((m, i) => {
        const { alpha, beta } = masters[i];
        gpu.write(m.nola.alpha.buffer, quantized ? quantize(alpha, Q4).dequantized : alpha);
        gpu.write(m.nola.beta.buffer, quantized ? quantize(beta, Q4).dequantized : beta);
      });
      s.set.zeroGrads();
      s.set.prepareStep();
      forwardBackward(s.model);
      s.set.finishBackward();
      return await grads();
    };
    const atQuantized = await direct(true);
    ste.forEach((g, i) => sameBits(g, atQuantized[i], `gradient ${i}, seed ${seed}`));
    const atMaster = await direct(false);
    assert(
      ste.some((g, i) => g.some((v, j) => v !== atMaster[i][j])),
      "the gradient at the unquantized masters should differ",
    );
  },
);

Deno.test(
  "quantizeInPlace leaves the host's dequantized values, as the GPU kernel computes them, and saves exactly",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const quant: QuantOptions = { bits: 3, scheme: "asymmetric" };
    using s = await nolaSetup(gpu, { steps: 1 });
    const fq = await FakequantKernels.load(gpu);
    const before = new Map<Tensor, Float32Array>();
    const onGpu = new Map<Tensor, Tensor>();
    s.set.modules.forEach((m, i) => {
      for (const [j, t] of [m.nola!.alpha, m.nola!.beta].entries()) {
        const v = randomArray(t.size, seed + 2 * i + j).map((x) => x * 0.2 + 0.05);
        gpu.write(t.buffer, v);
        before.set(t, v);
        const out = Tensor.empty(gpu, [t.size]);
        fq.forward({ out }, { x: t, ...quant });
        onGpu.set(t, out);
      }
    });
    const stats = await quantizeInPlace(s.set, quant);
    assert.deepEqual(stats.map((x) => x.name), s.set.modules.map((m) => m.name));
    for (const [i, m] of s.set.modules.entries()) {
      for (const t of [m.nola!.alpha, m.nola!.beta]) {
        const q = quantize(before.get(t)!, quant);
        const got = (await t.read()) as Float32Array;
        sameBits(got, q.dequantized, `${t.buffer.label}, seed ${seed}`);
        sameBits((await onGpu.get(t)!.read()) as Float32Array, got, `kernel on ${t.buffer.label}`);
        onGpu.get(t)![Symbol.dispose]();
        const maxError = Math.max(
          ...Array.from(before.get(t)!, (v, j) => Math.abs(v - got[j])),
        );
        const stat = t === m.nola!.alpha ? stats[i].alphaMaxError : stats[i].betaMaxError;
        assert.equal(stat, maxError, t.buffer.label);
        assert(maxError > 0 && maxError <= q.scale / 2 * (1 + 1e-5), `${maxError} vs ${q.scale}`);
      }
    }
    await checkRoundTrip(gpu, s.set, quant, await logits(s.model));
  },
);
