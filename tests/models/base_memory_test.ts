// The memory bench's figures (bench/memory.ts) for GPT-2 small: its published parameter count,
// the f32 bytes of its linear weights by hand, and the packed bytes the GPU really allocated.

import assert from "node:assert/strict";
import { benchMemory } from "../../bench/memory.ts";
import { packedLayout } from "../../formats/base_quant.ts";
import { GPU_TEST, testGpu } from "../_util.ts";

Deno.test(
  "memory bench: GPT-2 small's weights in f32, 16-bit, int8 and nf4",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const rows = await benchMemory(gpu, { models: ["gpt2-small"] });
    assert.deepEqual(rows.map((r) => r.precision), ["f32", "16-bit", "int8", "nf4"]);
    // 124,439,808 weights (the published gpt2 checkpoint, lm_head tied).
    assert(rows.every((r) => r.parameters === 124_439_808));
    const C = 768;
    const shapes: [number, number][] = [[3 * C, C], [C, C], [4 * C, C], [C, 4 * C]];
    const linear = 12 * shapes.reduce((s, [o, i]) => s + o * i, 0);
    assert.equal(rows[0].linearBytes, 4 * linear);
    assert.equal(rows[0].otherBytes, 4 * (124_439_808 - linear));
    assert.equal(rows[1].linearBytes, 2 * linear); // 768 and 3072 columns: no row padding
    for (const [row, format] of [[rows[2], "int8"], [rows[3], "nf4"]] as const) {
      const want = 12 * shapes.reduce((s, [o, i]) => s + packedLayout(o, i, { format }).bytes, 0);
      assert.equal(row.linearBytes, want, format);
      assert.equal(row.bytes, row.linearBytes + row.otherBytes);
    }
    // nf4 with double quantization: 4 bits a weight plus 8 bits an absmax a 64-weight block.
    assert(Math.abs(rows[3].linearBytes / linear - (0.5 + 1 / 64)) < 1e-3);
    assert(rows[3].ratio < rows[2].ratio && rows[2].ratio < rows[1].ratio && rows[1].ratio < 1);
    // Packed rows: the 50,257 x 768 token table in 16 bits (768 columns: no row padding).
    const table = 50_257 * C;
    for (const row of rows.slice(1)) {
      assert.equal(row.otherBytes, 4 * (124_439_808 - linear - table) + 2 * table);
      assert.equal(row.ratio, row.bytes / (4 * 124_439_808));
    }
    assert(rows[3].ratio <= 0.3, `nf4 ratio ${rows[3].ratio}`);
  },
);
