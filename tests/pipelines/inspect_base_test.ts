// `inspect DIR`'s bytes of the linear weights by base precision, against the bytes a model loaded
// in each precision really holds on the GPU (Model.memory) and the fixture's f32 sizes.

import assert from "node:assert/strict";
import { loadModel } from "../../models/registry.ts";
import type { BaseWeightFormat } from "../../models/model.ts";
import { inspectModelFolder } from "../../pipelines/inspect_model.ts";
import { GPU_TEST, testGpu } from "../_util.ts";

const ROWS: Record<string, { label: string; format: BaseWeightFormat; key: string }> = {
  int8: { label: "int8", format: "int8", key: "int8" },
  nf4: { label: "nf4 (double quantization)", format: "nf4", key: "nf4" },
};

function figure(text: string, label: string): number {
  const line = text.split("\n").find((l) => l.trimStart().startsWith(label + " "));
  assert(line, `no "${label}" line in:\n${text}`);
  return Number(line.trim().slice(label.length).trim().split(" ")[0].replaceAll(",", ""));
}

for (const folder of ["fixtures/tiny-gpt2", "fixtures/tiny-qwen2"]) {
  Deno.test(
    `inspect ${folder}: linear weight bytes by precision match the loaded models`,
    GPU_TEST,
    async () => {
      const gpu = await testGpu();
      const text = await inspectModelFolder(folder);
      using f32 = await loadModel(gpu, folder);
      const linears = new Set(f32.sites.map((s) => s.linear));
      const f32Bytes = [...linears].reduce((s, l) => {
        const w = f32.linearWeight(l)!;
        return s + 4 * w.inFeatures * w.outFeatures;
      }, 0);
      assert.equal(figure(text, "f32"), f32Bytes);
      // Both fixtures' input widths are multiples of 8 values: 16-bit rows need no padding.
      assert.equal(figure(text, "16-bit (as-stored f16/bf16)"), f32Bytes / 2);
      for (const { label, format, key } of Object.values(ROWS)) {
        using model = await loadModel(gpu, folder, { baseFormat: format });
        const memory = model.memory();
        assert.equal(figure(text, label), memory.weightsByPrecision![key], `${folder} ${format}`);
        // The rest of the model stays f32, byte for byte.
        assert.equal(
          memory.weightsByPrecision!.f32,
          f32.memory().weights - f32Bytes,
          `${folder} ${format}: f32 part`,
        );
        assert.equal(
          memory.weights,
          memory.weightsByPrecision!.f32 + memory.weightsByPrecision![key],
        );
      }
    },
  );
}
