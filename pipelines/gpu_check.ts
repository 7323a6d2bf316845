/**
 * The built-in GPU check that `deno task finetune` runs until pipeline files land: the adapter,
 * matmul against a float64 reference on fresh shapes, the tiny GPT-2 against its PyTorch dump,
 * and a quick matmul speed figure.
 *
 * @module
 */

import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { SafetensorsFile } from "../formats/safetensors.ts";
import { Gpu } from "../kernels/gpu.ts";
import { Matmul } from "../kernels/matmul.ts";
import { matmulRef } from "../kernels/matmul_ref.ts";
import { Tensor } from "../kernels/tensor.ts";
import { loadModel } from "../models/registry.ts";

// Beside this module, so a compiled binary finds its embedded copy.
const FIXTURE = fileURLToPath(new URL("../fixtures/tiny-gpt2", import.meta.url));

function randoms(n: number): Float32Array {
  return Float32Array.from({ length: n }, () => Math.random() * 2 - 1);
}

function relativeError(out: ArrayLike<number>, ref: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; i++) {
    num += (out[i] - ref[i]) ** 2;
    den += ref[i] ** 2;
  }
  return Math.sqrt(num / (den || 1));
}

/** Runs the check, printing as it goes; throws if a result is off. */
export async function runGpuCheck(options: { fixture?: string } = {}): Promise<void> {
  const fixture = options.fixture ?? FIXTURE;
  using gpu = await Gpu.acquire();
  console.log(gpu.describe());
  const matmul = await Matmul.load(gpu);
  console.log(`matmul variant: ${matmul.variant}\n`);

  console.log("matmul vs float64 reference (fresh random inputs):");
  for (
    const [m, n, k, transA, transB] of [
      [255, 383, 129, false, false],
      [17, 1023, 64, false, true],
      [100, 3, 1023, true, false],
    ] as const
  ) {
    const a = randoms(m * k);
    const b = randoms(k * n);
    using ta = Tensor.from(gpu, a, transA ? [k, m] : [m, k]);
    using tb = Tensor.from(gpu, b, transB ? [n, k] : [k, n]);
    using c = matmul.run(ta, tb, { transA, transB });
    const ref = matmulRef({ a, b, c: new Float64Array(m * n) }, { m, n, k, transA, transB });
    const err = relativeError(await c.read(), ref);
    const op = `${transA ? "Aᵀ" : "A"}·${transB ? "Bᵀ" : "B"}`;
    console.log(
      `  ${op.padEnd(6)} ${`${m}x${n}x${k}`.padEnd(14)} relative error ${err.toExponential(2)}`,
    );
    if (!(err < 1e-5)) throw new Error(`matmul ${op} ${m}x${n}x${k} is off: ${err}`);
  }

  console.log("\ntiny GPT-2 vs its PyTorch dump:");
  using model = await loadModel(gpu, fixture);
  using golden = await SafetensorsFile.open(join(fixture, "golden.safetensors"));
  const [B, T] = golden.info("tokens").shape;
  const ints = async (name: string) =>
    new Uint32Array(new Int32Array((await golden.readBytes(name)).slice().buffer));
  const acts = model.forward({ B, T, tokens: await ints("tokens") });
  const logitsErr = relativeError(await acts.logits.read(), await golden.readFloat32("logits"));
  model.loss({ targets: await ints("targets") });
  const losses = await acts.losses.read();
  let loss = 0;
  for (const x of losses) loss += x / losses.length;
  const want = (await golden.readFloat32("loss"))[0];
  console.log(
    `  logits relative error ${logitsErr.toExponential(2)}, loss ${loss.toFixed(6)} (PyTorch ${
      want.toFixed(6)
    })`,
  );
  if (!(logitsErr < 1e-5)) throw new Error(`GPT-2 logits are off: ${logitsErr}`);

  const n = 1024;
  using a = Tensor.from(gpu, randoms(n * n), [n, n]);
  using b = Tensor.from(gpu, randoms(n * n), [n, n]);
  using c = Tensor.empty(gpu, [n, n]);
  matmul.run(a, b, { out: c });
  await gpu.sync();
  const { ms, source } = await gpu.time(() => matmul.run(a, b, { out: c }));
  console.log(`\nmatmul ${n}³: ${(2 * n ** 3 / ms / 1e6).toFixed(1)} GFLOP/s (${source} time)`);
  console.log("\nGPU check passed. `deno task bench` measures every kernel.");
}
