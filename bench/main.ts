/**
 * `deno task bench`: runs the benchmark suites on the adapter it finds, prints a table per suite
 * and writes `out/bench/<suite>.json`. Speed targets are read here as ratios measured side by
 * side in one run, never in timed tests.
 *
 * @module
 */

import { join } from "node:path";
import { writeTextFileAtomic } from "../formats/atomic.ts";
import { Gpu } from "../kernels/gpu.ts";
import { Matmul } from "../kernels/matmul.ts";
import { benchAdapters } from "./adapters.ts";
import { benchBasis } from "./basis.ts";
import { benchDecode } from "./decode.ts";
import { benchGpt2 } from "./gpt2.ts";
import { benchLlama, formatLlamaBench } from "./llama.ts";
import { benchMatmul } from "./matmul.ts";
import { benchQMatmul } from "./qmatmul.ts";
import {
  benchMemory,
  benchQuantStep,
  formatQuantStep,
  MEMORY_MODELS,
  quantRatios,
  type QuantStepReport,
} from "./memory.ts";
import { QMATMUL_SHAPES } from "./qmatmul.ts";
import { formatTable } from "./table.ts";
import { benchTrain } from "./train.ts";
import { benchVit, formatVitBench } from "./vit.ts";

/** One suite: measures, prints its table, returns what goes into its JSON. */
type Suite = (gpu: Gpu, options: { filter?: string }) => Promise<Record<string, unknown>>;

const SUITES: Record<string, Suite> = {
  async matmul(gpu, { filter }) {
    const auto = (await Matmul.load(gpu, { variant: "auto" })).variant;
    const rows = await benchMatmul(gpu, { filter });
    console.log(`variant chosen by "auto" on this adapter: ${auto}`);
    console.log(formatTable(
      ["variant", "op", "shape", "M x N x K", "ms", "GFLOP/s"],
      rows.map((r) => [
        r.variant,
        r.op,
        r.shape,
        `${r.m} x ${r.n} x ${r.k}`,
        r.ms.toFixed(2),
        r.gflops.toFixed(1),
      ]),
    ));
    return { auto, rows };
  },
  async qmatmul(gpu, { filter }) {
    const rows = await benchQMatmul(gpu, { filter });
    console.log(formatTable(
      ["shape", "op", "format", "M x out x in", "ms", "GFLOP/s", "vs f32", "W MiB", "W / f32"],
      rows.map((r) => [
        r.shape,
        r.op,
        r.format,
        `${r.m} x ${r.out} x ${r.in}`,
        r.ms.toFixed(2),
        r.gflops.toFixed(1),
        r.speedup.toFixed(2),
        (r.weightBytes / 2 ** 20).toFixed(2),
        r.bytesRatio.toFixed(3),
      ]),
    ));
    return { rows };
  },
  async memory(gpu, { filter }) {
    // --filter keeps the models (bytes and the training step) and qmatmul shapes it names.
    const match = (name: string) => !filter || name.includes(filter);
    const models = Object.keys(MEMORY_MODELS).filter(match);
    const rows = models.length > 0 ? await benchMemory(gpu, { models }) : [];
    const mib = (b: number) => (b / 2 ** 20).toFixed(1);
    console.log(formatTable(
      ["model", "precision", "linear MiB", "other MiB", "total MiB", "vs f32"],
      rows.map((r) => [
        r.model,
        r.precision,
        mib(r.linearBytes),
        mib(r.otherBytes),
        mib(r.bytes),
        r.ratio.toFixed(3),
      ]),
    ));
    const ratios = QMATMUL_SHAPES.some((s) => match(s.shape))
      ? await quantRatios(gpu, { filter })
      : [];
    const formats = [...new Set(ratios.flatMap((r) => Object.keys(r.ratios)))];
    console.log(
      "\npacked products against the f32 matmul (f32 ms / format ms; above 1 is faster):",
    );
    console.log(formatTable(
      ["shape", "op", "M x out x in", "f32 ms", ...formats],
      ratios.map((r) => [
        r.shape,
        r.op,
        r.size,
        r.f32Ms.toFixed(2),
        ...formats.map((f) => r.ratios[f]?.toFixed(2) ?? "-"),
      ]),
    ));
    let step: QuantStepReport | undefined;
    if (match("llama-2-7b")) {
      console.log(
        "\nllama-2-7b in nf4 (random weights drawn and packed on the GPU), one NOLA step:",
      );
      step = await benchQuantStep(gpu, { log: (line) => console.log(`  ${line}`) });
      console.log(formatQuantStep(step));
    }
    return { rows, ratios, step };
  },
  async basis(gpu) {
    const r = await benchBasis(gpu);
    console.log(
      `${r.count} bases of ${r.rows} x ${r.cols}: ${(r.elementsPerSecond / 1e6).toFixed(1)} M ` +
        `elements/s (${r.ms.toFixed(1)} ms, ${r.source} time)`,
    );
    return { ...r };
  },
  async gpt2(gpu) {
    const rows = await benchGpt2(gpu);
    const mib = (b: number) => (b / 2 ** 20).toFixed(1);
    console.log(formatTable(
      [
        "model",
        "B x T",
        "fwd tok/s",
        "fwd+bwd tok/s",
        "gen tok/s",
        "weights MiB",
        "grads MiB",
        "acts MiB",
      ],
      rows.map((r) => [
        r.model,
        `${r.B} x ${r.T}`,
        r.forwardTokensPerS.toFixed(1),
        r.trainTokensPerS.toFixed(1),
        r.generateTokensPerS.toFixed(1),
        mib(r.weightBytes),
        mib(r.gradientBytes),
        mib(r.activationBytes),
      ]),
    ));
    return { rows };
  },
  async llama(gpu, { filter }) {
    const rows = await benchLlama(gpu, { filter });
    console.log(formatLlamaBench(rows));
    return { rows };
  },
  async vit(gpu, { filter }) {
    const rows = await benchVit(gpu, { filter });
    console.log(formatVitBench(rows));
    return { rows };
  },
  async adapters(gpu) {
    const r = await benchAdapters(gpu);
    console.log(`${r.model}, batch ${r.B} x ${r.T}, q and v adapters, r = 8:`);
    console.log(formatTable(["method", "step ms"], [
      ["NOLA k = l = 1024", r.nolaStepMs.toFixed(0)],
      ["LoRA", r.loraStepMs.toFixed(0)],
    ]));
    console.log(
      `NOLA / LoRA step time: ${r.ratio.toFixed(3)} (target <= 1.15); combine + coefficient ` +
        `gradients: ${r.nolaOverheadMs.toFixed(0)} ms a step; queue submits a step: NOLA ` +
        `${r.submitsPerStep.nola}, LoRA ${r.submitsPerStep.lora}`,
    );
    console.log(formatTable(
      ["k = l", "coefficients", "adapter bytes", "step temp peak bytes"],
      r.memory.map((m) => [
        String(m.k),
        String(m.coefficients),
        String(m.adapterBytes),
        String(m.stepPeakBytes),
      ]),
    ));
    return { ...r };
  },
  async decode(gpu, { filter }) {
    // --filter greedy skips beam search, whose one-at-a-time side takes most of the suite.
    const rows = await benchDecode(gpu, { greedyOnly: filter === "greedy" });
    console.log(formatTable(
      ["decoding", "path", "prompts", "s", "s / prompt", "same tokens"],
      rows.map((r) => [
        r.decoding,
        r.path,
        String(r.prompts),
        r.seconds.toFixed(1),
        r.secondsPerPrompt.toFixed(2),
        r.sameTokens === undefined ? "" : String(r.sameTokens),
      ]),
    ));
    for (const decoding of ["greedy", "beam"]) {
      const [one, batched] = rows.filter((r) => r.decoding === decoding);
      if (!one || !batched) continue;
      console.log(
        `${decoding}: batched / one at a time, same prompts: ` +
          `${(one.seconds / batched.seconds).toFixed(1)}x faster`,
      );
    }
    return { rows };
  },
  async train(gpu) {
    const r = await benchTrain(gpu);
    const torch = r.torch && "tokensPerS" in r.torch ? r.torch : undefined;
    console.log(`${r.model}, NOLA on q and v (r = ${r.r}, k = l = ${r.k}), batch ${r.B} x ${r.T}:`);
    console.log(formatTable(["trainer", "tokens/s"], [
      ["nola-gpu (this adapter)", r.tokensPerS.toFixed(0)],
      [
        torch ? `PyTorch ${torch.version} CPU, ${torch.threads} threads` : "PyTorch",
        torch ? torch.tokensPerS.toFixed(0) : "-",
      ],
    ]));
    console.log(
      torch ? `nola-gpu / PyTorch: ${r.ratio!.toFixed(2)}` : (r.torch as { error: string }).error,
    );
    if (r.profile) {
      const total = r.profile.reduce((sum, k) => sum + k.ms, 0);
      console.log(`one step by kernel and grid (GPU time, each dispatch timed alone):`);
      console.log(formatTable(
        ["kernel and grid", "dispatches", "ms", "share"],
        r.profile.slice(0, 12).map((k) => [
          k.label,
          String(k.count),
          k.ms.toFixed(1),
          `${(100 * k.ms / total).toFixed(1)}%`,
        ]),
      ));
    }
    return { ...r };
  },
};

/** Options of {@link runBench}. */
export interface RunBenchOptions {
  /**
   * Suites to run (default all): matmul, qmatmul, memory, basis, gpt2, llama, vit, adapters,
   * decode, train.
   */
  suites?: string[];
  /**
   * Matmul: keeps rows whose variant, op or shape contains this text; qmatmul: shapes, ops or
   * formats; llama, vit: models by name; memory: models (`gpt2-small`, `llama-2-7b`: bytes and, for
   * the 7B, its nf4 training step) and qmatmul shapes; decode: `greedy` skips beam search.
   */
  filter?: string;
  /** Folder of the JSON reports (default `out/bench`). */
  outDir?: string;
}

/**
 * Runs the suites and writes one JSON report each.
 *
 * @example Only the adapter comparison
 * ```ts
 * import { runBench } from "./bench/main.ts";
 * await runBench({ suites: ["adapters"] });
 * ```
 */
export async function runBench(options: RunBenchOptions = {}): Promise<void> {
  const names = options.suites?.length ? options.suites : Object.keys(SUITES);
  for (const name of names) {
    if (!(name in SUITES)) {
      throw new RangeError(
        `Unknown bench suite "${name}": expected one of ${Object.keys(SUITES).join(", ")}`,
      );
    }
  }
  using gpu = await Gpu.acquire();
  const timing = gpu.hasTimestamps ? "GPU timestamp queries" : "wall clock around submits";
  console.log(`${gpu.describe()}\nkernel timing: ${timing}\n`);
  const outDir = options.outDir ?? "out/bench";
  for (const name of names) {
    console.log(`== ${name} ==`);
    const start = performance.now();
    const result = await SUITES[name](gpu, { filter: options.filter });
    const report = { adapter: gpu.adapterName, date: new Date().toISOString(), timing, ...result };
    const path = join(outDir, `${name}.json`);
    await Deno.mkdir(outDir, { recursive: true });
    await writeTextFileAtomic(path, JSON.stringify(report, null, 2) + "\n");
    console.log(`(${((performance.now() - start) / 1000).toFixed(0)} s, wrote ${path})\n`);
  }
}

if (import.meta.main) {
  await runBench({ suites: Deno.args });
}
