import assert from "node:assert/strict";
import { SafetensorsFile } from "../../formats/safetensors.ts";
import { AdamwKernels } from "../../kernels/adamw.ts";
import { Tensor } from "../../kernels/tensor.ts";
import { Gpt2 } from "../../models/gpt2.ts";
import { GPU_TEST, relativeError, testGpu } from "../_util.ts";

const FIXTURE = "fixtures/tiny-gpt2";

async function golden() {
  using file = await SafetensorsFile.open(`${FIXTURE}/golden.safetensors`);
  const ints = async (name: string) =>
    new Uint32Array(new Int32Array((await file.readBytes(name)).slice().buffer));
  const grads = new Map<string, Float32Array>();
  for (const name of file.names()) {
    if (name.startsWith("grad.")) grads.set(name.slice(5), await file.readFloat32(name));
  }
  const [B, T] = file.info("tokens").shape;
  return {
    B,
    T,
    tokens: await ints("tokens"),
    targets: await ints("targets"),
    logits: await file.readFloat32("logits"),
    loss: (await file.readFloat32("loss"))[0],
    losses: await file.readFloat32("losses"),
    grads,
    optimizer: JSON.parse(file.metadata.optimizer ?? "{}"),
  };
}

function mean(values: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += values[i];
  return sum / values.length;
}

Deno.test(
  "GPT-2 matches the PyTorch dump: logits, loss, every gradient, ten AdamW steps",
  GPU_TEST,
  async (t) => {
    const gpu = await testGpu();
    const ref = await golden();
    using model = await Gpt2.load(gpu, FIXTURE, { trainAll: true });
    const batch = { B: ref.B, T: ref.T, tokens: ref.tokens };

    const acts = model.forward(batch);
    const logits = await acts.logits.read();
    const logitsErr = relativeError(logits, ref.logits);
    model.loss({ targets: ref.targets }, { backward: true });
    const loss = mean(await acts.losses.read());
    model.backward();

    await t.step("logits and loss within 1e-5", () => {
      assert(logitsErr < 1e-5, `logits relative error ${logitsErr}`);
      assert(Math.abs(loss - ref.loss) / Math.abs(ref.loss) < 1e-5, `loss ${loss} vs ${ref.loss}`);
    });

    const worst = { name: "", err: 0 };
    const failures: string[] = [];
    for (const [name, want] of ref.grads) {
      const got = await model.grads!.get(name)!.read();
      const err = relativeError(got, want);
      if (err > worst.err) Object.assign(worst, { name, err });
      if (!(err < 1e-4)) failures.push(`${name}: ${err.toExponential(2)}`);
    }
    await t.step(
      `every gradient within 1e-4 (worst ${worst.name}: ${worst.err.toExponential(2)})`,
      () => {
        assert.equal(ref.grads.size, model.params.size);
        assert.deepEqual(failures, []);
      },
    );

    const adamw = await AdamwKernels.load(gpu);
    const state = new Map([...model.params].map(([name, p]) => {
      const m = Tensor.empty(gpu, p.shape);
      const v = Tensor.empty(gpu, p.shape);
      gpu.clear(m.buffer);
      gpu.clear(v.buffer);
      return [name, { m, v }];
    }));
    using gradScale = Tensor.from(gpu, new Float32Array([1]), [1]);
    const losses: number[] = [];
    const opt = ref.optimizer;
    for (let step = 1; step <= ref.losses.length; step++) {
      model.zeroGrads();
      const a = model.forward(batch);
      model.loss({ targets: ref.targets }, { backward: true });
      model.backward();
      for (const [name, param] of model.params) {
        const { m, v } = state.get(name)!;
        adamw.update({ param, m, v, grad: model.grads!.get(name)!, gradScale }, {
          step,
          lr: opt.lr ?? 1e-3,
          beta1: opt.betas?.[0] ?? 0.9,
          beta2: opt.betas?.[1] ?? 0.999,
          eps: opt.eps ?? 1e-8,
          weightDecay: opt.weight_decay ?? 0,
        });
      }
      losses.push(mean(await a.losses.read()));
    }
    for (const { m, v } of state.values()) {
      m[Symbol.dispose]();
      v[Symbol.dispose]();
    }
    await t.step("ten AdamW steps' losses within 1e-3", () => {
      for (let i = 0; i < losses.length; i++) {
        const err = Math.abs(losses[i] - ref.losses[i]) / ref.losses[i];
        assert(err < 1e-3, `step ${i}: ${losses[i]} vs ${ref.losses[i]} (${err})`);
      }
    });
  },
);
