// `inspect DIR`'s GPU memory of a typical NOLA run in each base precision: the lines are the
// estimate of models/memory_estimate.ts for that run, and their weight bytes are what a model
// loaded in that precision really holds (Model.memory).

import assert from "node:assert/strict";
import { join } from "node:path";
import { toFloatDtype } from "../../formats/narrow.ts";
import { Checkpoint, writeSafetensors } from "../../formats/safetensors.ts";
import type { BaseWeightFormat } from "../../models/model.ts";
import { loadModel } from "../../models/registry.ts";
import { inspectModelFolder } from "../../pipelines/inspect_model.ts";
import { GPU_TEST, testGpu, withTempDir } from "../_util.ts";

/** The line `base <label> <total> bytes (weights <weights>, ...)` as numbers. */
function estimateLine(text: string, label: string): { total: number; weights: number } {
  const line = text.split("\n").find((l) => l.trimStart().startsWith(`base ${label} `));
  assert(line, `no "base ${label}" line in:\n${text}`);
  const m = /^\s*base \S+\s+([\d,]+) bytes \(weights ([\d,]+),/.exec(line)!;
  const n = (s: string) => Number(s.replaceAll(",", ""));
  return { total: n(m[1]), weights: n(m[2]) };
}

Deno.test(
  "inspect DIR: a NOLA run's memory by base precision, weights as the loaded models hold them",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    await withTempDir("inspect-estimate", async (dir) => {
      // A bf16 copy of the Qwen2 fixture: as-stored keeps its linears and embeddings 16-bit.
      const folder = join(dir, "tiny-qwen2-bf16");
      await Deno.mkdir(folder);
      using ckpt = await Checkpoint.open("fixtures/tiny-qwen2");
      const tensors = [];
      for (const name of ckpt.names()) {
        const data = toFloatDtype(await ckpt.readFloat32(name), "BF16");
        tensors.push({ name, shape: ckpt.info(name).shape, dtype: "BF16" as const, data });
      }
      await writeSafetensors(join(folder, "model.safetensors"), tensors, { format: "pt" });
      for (const file of ["config.json"]) {
        await Deno.copyFile(join("fixtures/tiny-qwen2", file), join(folder, file));
      }
      const text = await inspectModelFolder(folder);
      assert.match(text, /GPU memory of a NOLA run \(every linear, r 8, k = l = 1024, AdamW/);
      const rows: [string, BaseWeightFormat][] = [
        ["f32", "f32"],
        ["as-stored", "as-stored"],
        ["int8", "int8"],
        ["nf4", "nf4"],
      ];
      const totals = [];
      for (const [label, baseFormat] of rows) {
        const line = estimateLine(text, label);
        using model = await loadModel(gpu, folder, { baseFormat });
        assert.equal(line.weights, model.memory().weights, label);
        totals.push(line.total);
      }
      // Adapters, optimizer and activations do not depend on the base: smaller weights, less.
      assert(totals[0] > totals[1] && totals[1] > totals[2] && totals[2] > totals[3], `${totals}`);
    });
  },
);
