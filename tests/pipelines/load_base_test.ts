// The `load` stage's base precision keys: dtype (f32 | as-stored), quantize_base (int8 | nf4),
// block_size, double_quant; their one-line errors, and the weight bytes it prints by precision.

import assert from "node:assert/strict";
import { packedLayout } from "../../formats/base_quant.ts";
import { SafetensorsFile } from "../../formats/safetensors.ts";
import { parsePipeline, PipelineError } from "../../pipelines/parse.ts";
import { runPipeline } from "../../pipelines/run.ts";
import { readGpt2Config } from "../../models/gpt2_config.ts";
import { tempDir } from "../_util.ts";

const LOAD = (keys: string) =>
  `version: 1
name: base
stages:
  - kind: load
    model: m
${keys}`;

function oneLineError(text: string, pattern: RegExp): void {
  assert.throws(
    () => parsePipeline(text, { file: "p.yaml" }),
    (e: Error) =>
      e instanceof PipelineError && !e.message.includes("\n") && pattern.test(e.message),
  );
}

Deno.test("load: dtype defaults to as-stored; quantize_base and its options parse", () => {
  const plain = parsePipeline(LOAD(""), { file: "p.yaml" }).stages[0];
  assert.deepEqual(plain, {
    kind: "load",
    id: "load",
    model: "m",
    dtype: "as-stored",
    init: "pretrained",
  });
  const q = parsePipeline(
    LOAD("    dtype: f32\n    quantize_base: nf4\n    block_size: 128\n    double_quant: false"),
    { file: "p.yaml" },
  ).stages[0];
  assert.deepEqual(q, {
    kind: "load",
    id: "load",
    model: "m",
    dtype: "f32",
    quantizeBase: "nf4",
    blockSize: 128,
    doubleQuant: false,
    init: "pretrained",
  });
});

Deno.test("load: wrong base keys are refused in one line naming the key", () => {
  oneLineError(LOAD("    dtype: f16"), /stages\[0\]\.dtype.*"f32", "as-stored"|stages\[0\]\.dtype/);
  oneLineError(LOAD("    quantize_base: fp4"), /stages\[0\]\.quantize_base/);
  oneLineError(
    LOAD("    block_size: 64"),
    /stages\[0\]\.block_size only applies with quantize_base/,
  );
  oneLineError(LOAD("    double_quant: true"), /stages\[0\]\.double_quant only applies/);
  oneLineError(
    LOAD("    quantize_base: int8\n    block_size: 96"),
    /stages\[0\]\.block_size:? must be a power of two from 32 to 4096, got 96/,
  );
  oneLineError(LOAD("    quantize_base: int8\n    block_size: 16"), /stages\[0\]\.block_size/);
});

async function pipeline(dir: string, load: string, rest: string): Promise<string> {
  const lines = Array.from({ length: 16 }, (_, i) => JSON.stringify({ q: `n ${i}`, a: `${i}` }));
  await Deno.writeTextFile(`${dir}/task.jsonl`, lines.join("\n") + "\n");
  const path = `${dir}/p.yaml`;
  await Deno.writeTextFile(
    path,
    `version: 1
name: base
out: ${dir}/run
stages:
  - kind: load
    model: ../../../fixtures/tiny-gpt2
${load}
  - kind: data
    file: task.jsonl
    split: { train: 0.75, validation: 0.125, test: 0.125 }
    prompt: "{{ q }}:"
    completion: " {{ a }}"
    seq_len: 16
${rest}`,
  );
  return path;
}

Deno.test("load: an nf4 base trains NOLA, prints its bytes by precision and merges", async () => {
  const dir = await tempDir("load-base");
  const path = await pipeline(
    dir,
    "    quantize_base: nf4",
    `  - kind: attach
    r: 2
    k: 16
  - kind: train
    steps: 2
    batch_size: 2
    lr: 1.0e-2
  - kind: merge
`,
  );
  const lines: string[] = [];
  await runPipeline(path, { say: (l) => lines.push(l) });
  // The bytes the stage prints, against the layout's arithmetic for the fixture's linears.
  const c = await readGpt2Config("fixtures/tiny-gpt2");
  const C = c.nEmbd;
  const I = c.nInner;
  const nf4 = c.nLayer * [[3 * C, C], [C, C], [I, C], [C, I]]
    .reduce((s, [rows, cols]) => s + packedLayout(rows, cols, { format: "nf4" }).bytes, 0);
  const f32 = 4 * (c.vocabSize * C + c.nPositions * C +
    c.nLayer * (4 * C + 3 * C + C + I + C) + 2 * C);
  const n = (v: number) => v.toLocaleString("en-US");
  const want = `weights on the GPU: ${n(f32 + nf4)} bytes (f32 ${n(f32)}, nf4 ${n(nf4)})`;
  assert(lines.includes(want), `${want}\nnot in:\n${lines.join("\n")}`);
  const summary = JSON.parse(await Deno.readTextFile(`${dir}/run/summary.json`));
  const record = JSON.stringify(summary);
  assert(record.includes(`"weight_bytes_nf4":${nf4}`), record);
  // The merged folder holds the dequantized base plus the delta, in the checkpoint's f32.
  using merged = await SafetensorsFile.open(`${dir}/run/merged/model.safetensors`);
  assert.equal(merged.info("h.0.attn.c_attn.weight").dtype, "F32");
  assert.deepEqual(merged.info("h.0.attn.c_attn.weight").shape, [C, 3 * C]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("load: a quantized base with full fine-tuning is refused in one line", async () => {
  const dir = await tempDir("load-base-full");
  const path = await pipeline(
    dir,
    "    quantize_base: int8",
    `  - kind: train
    full: true
    steps: 1
    lr: 1.0e-2
`,
  );
  await assert.rejects(
    () => runPipeline(path, { say: () => {} }),
    (e: Error) =>
      e instanceof PipelineError && !e.message.includes("\n") &&
      /stages\[0\]\.quantize_base:? a base quantized to int8 cannot be trained whole, and stages\[2\]/
        .test(
          e.message,
        ) &&
      /full fine-tuning needs f32/.test(e.message),
  );
  await Deno.remove(dir, { recursive: true });
});
