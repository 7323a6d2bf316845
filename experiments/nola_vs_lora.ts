/**
 * The paper's trade-off on the fixtures, in one command: LoRA at r = 1, 2, 4, 8 against NOLA
 * (q and v, r = 8) at k = l = 16, 64, 256, 1024, all trained for the same number of steps on the
 * data-to-text task from the pretrained tiny GPT-2, plus 4-bit post-training quantization and
 * quantization-aware training of NOLA's coefficients.
 *
 *     deno task experiment
 *
 * Writes `out/experiments/nola-vs-lora/results.md` (the table), `results.json` and `loss.svg`
 * (validation loss against trainable parameters, log scale).
 *
 * @module
 */

import { join } from "node:path";
import { writeTextFileAtomic } from "../formats/atomic.ts";
import { runPipeline } from "../pipelines/run.ts";
import { lineChart } from "../train/svg.ts";

const OUT = "out/experiments/nola-vs-lora";

/** One configuration of the sweep. */
interface Variant {
  label: string;
  method: "nola" | "lora";
  r: number;
  k?: number;
  lr: number;
  /** After training: `ptq` quantizes and evaluates again; `qat` trains with 4-bit coefficients. */
  quant?: "ptq" | "qat";
}

/** One row of the results. */
interface Result {
  label: string;
  method: string;
  params: number;
  bytes: number;
  validationLoss: number;
  bleu: number;
  seconds: number;
}

const STEPS = Number(Deno.env.get("NOLA_EXPERIMENT_STEPS") ?? 150);
const EXAMPLES = 20;

const VARIANTS: Variant[] = [
  ...[1, 2, 4, 8].map((r): Variant => ({ label: `LoRA r=${r}`, method: "lora", r, lr: 5e-3 })),
  ...[16, 64, 256, 1024].map((k): Variant => ({
    label: `NOLA k=l=${k}`,
    method: "nola",
    r: 8,
    k,
    lr: 3e-2,
  })),
  { label: "NOLA k=l=1024 4-bit PTQ", method: "nola", r: 8, k: 1024, lr: 3e-2, quant: "ptq" },
  { label: "NOLA k=l=1024 4-bit QAT", method: "nola", r: 8, k: 1024, lr: 3e-2, quant: "qat" },
];

/** The pipeline of one variant, as YAML. */
function pipelineYaml(v: Variant, out: string): string {
  const evaluate = (id: string) =>
    `  - id: ${id}
    kind: evaluate
    split: validation
    metrics: [loss, bleu]
    max_examples: ${EXAMPLES}
    max_new_tokens: 40
`;
  return `version: 1
name: ${v.label.replace(/[^A-Za-z0-9]+/g, "-").toLowerCase()}
seed: 0
out: ${out}
stages:
  - kind: load
    model: ../../../../fixtures/tiny-gpt2-pretrained
  - kind: data
    format: e2e
    train: ../../../../fixtures/data-to-text/train.csv
    validation: ../../../../fixtures/data-to-text/validation.csv
    prompt: "{{ mr }}\\n"
    completion: " {{ ref }}"
    seq_len: 128
    pack: true
  - kind: attach
    method: ${v.method}
    r: ${v.r}
${v.k ? `    k: ${v.k}\n` : ""}  - kind: train
    steps: ${STEPS}
    batch_size: 8
    lr: ${v.lr}
    schedule: { kind: linear, warmup_steps: ${Math.ceil(STEPS / 10)} }
    label_smoothing: 0.1
    checkpoint_every: 0
${v.quant === "qat" ? "    qat: { bits: 4 }\n" : ""}${evaluate("trained")}${
    v.quant === "ptq" ? `  - kind: quantize\n    bits: 4\n${evaluate("quantized")}` : ""
  }  - kind: save
`;
}

async function runVariant(v: Variant): Promise<Result> {
  const dir = join(OUT, v.label.replace(/[^A-Za-z0-9]+/g, "-").toLowerCase());
  await Deno.mkdir(dir, { recursive: true });
  const path = join(dir, "pipeline.yaml");
  await Deno.writeTextFile(path, pipelineYaml(v, dir));
  const start = performance.now();
  await runPipeline(path, { say: (line) => console.error(`  ${line}`) });
  const summary = JSON.parse(await Deno.readTextFile(join(dir, "summary.json")));
  const evaluation = summary.quantized ?? summary.trained;
  return {
    label: v.label,
    method: v.method,
    params: summary.attach.trainable_parameters,
    bytes: summary.save.bytes,
    validationLoss: evaluation.loss,
    bleu: evaluation.bleu,
    seconds: (performance.now() - start) / 1000,
  };
}

function table(results: readonly Result[]): string {
  const n = (x: number) => x.toLocaleString("en-US");
  return [
    "| method | trainable params | adapter bytes | val loss | BLEU |",
    "|---|---:|---:|---:|---:|",
    ...results.map((r) =>
      `| ${r.label} | ${n(r.params)} | ${n(r.bytes)} | ${r.validationLoss.toFixed(4)} | ${
        r.bleu.toFixed(2)
      } |`
    ),
  ].join("\n");
}

if (import.meta.main) {
  await Deno.mkdir(OUT, { recursive: true });
  const only = Deno.args;
  const results: Result[] = [];
  for (
    const v of VARIANTS.filter((v) => only.length === 0 || only.some((o) => v.label.includes(o)))
  ) {
    console.error(`== ${v.label} ==`);
    results.push(await runVariant(v));
    await writeTextFileAtomic(
      join(OUT, "results.json"),
      JSON.stringify({ steps: STEPS, results }, null, 2),
    );
  }
  const svg = lineChart([
    {
      name: "LoRA",
      style: "line+markers",
      points: results.filter((r) => r.method === "lora" && !r.label.includes("bit"))
        .map((r) => ({ x: r.params, y: r.validationLoss, label: r.label })),
    },
    {
      name: "NOLA",
      style: "line+markers",
      points: results.filter((r) => r.method === "nola" && !r.label.includes("bit"))
        .map((r) => ({ x: r.params, y: r.validationLoss, label: r.label })),
    },
    {
      name: "NOLA 4-bit",
      style: "scatter",
      points: results.filter((r) => r.label.includes("bit"))
        .map((r) => ({
          x: r.params,
          y: r.validationLoss,
          label: r.label.replace(/.* 4-bit /, ""),
        })),
    },
  ], {
    title: `Validation loss against trainable parameters (${STEPS} steps each)`,
    xLabel: "trainable parameters",
    yLabel: "validation loss",
    xLog: true,
  });
  await writeTextFileAtomic(join(OUT, "loss.svg"), svg);
  const text =
    `# NOLA against LoRA on the fixtures\n\n${STEPS} steps of batch 8 x 128 tokens each, ` +
    `validation loss over the validation split's completion tokens, BLEU over its first ` +
    `${EXAMPLES} meaning representations (greedy).\n\n${table(results)}\n\n![](loss.svg)\n`;
  await writeTextFileAtomic(join(OUT, "results.md"), text);
  console.log(table(results));
}
