import assert from "node:assert/strict";
import { adapterAccounting, formatAccounting } from "../../adapters/accounting.ts";
import { adapterFileSize, encodeAdapter } from "../../adapters/adapter_file.ts";
import { type AttachConfig, planAdapters } from "../../adapters/attach.ts";
import { configHash, GPT2_SMALL as SMALL_CONFIG } from "../../models/gpt2_config.ts";
import { gpt2Family } from "../../models/gpt2_family.ts";

const GPT2_SMALL = gpt2Family.shape(SMALL_CONFIG);

const QV: AttachConfig = {
  method: "nola",
  targets: ["h.*.attn.c_attn.q", "h.*.attn.c_attn.v"],
  r: 8,
  k: 1024,
  loraAlpha: 8,
  seed: 0,
};

Deno.test("GPT-2 small q/v: NOLA k=l=1024 trains 49,152 numbers, LoRA r=1 36,864, r=8 294,912", () => {
  const rows = adapterAccounting(GPT2_SMALL, QV);
  assert.deepEqual(rows.map((r) => [r.label, r.modules, r.params]), [
    ["NOLA r=8 k=1024 l=1024", 24, 24 * 2048],
    ["LoRA r=1", 24, 24 * (768 + 768)],
    ["LoRA r=8", 24, 24 * 8 * (768 + 768)],
  ]);
  assert.equal(rows[0].params, 49_152);
  assert.equal(rows[1].params, 36_864);
  // Files: the data plus a header of a few kilobytes.
  assert(rows[0].quantBytes! > 24 * 1024 && rows[0].quantBytes! < 30 * 1024);
  assert(rows[0].fileBytes > 4 * 49_152 && rows[0].fileBytes < 4 * 49_152 + 8192);
  assert(rows[2].fileBytes > 4 * 294_912 && rows[2].fileBytes < 4 * 294_912 + 8192);
  assert.equal(rows[1].quantBytes, undefined);
  const table = formatAccounting(rows);
  assert.match(table, /\| NOLA r=8 k=1024 l=1024 \| 24 \| 49,152 \| [0-9,]+ B \(/);
  assert.match(table, /\| LoRA r=1 \| 24 \| 36,864 \| 152,600 B \(149\.0 KiB\) \| - \|/);
  console.log(`\n${table}`);
});

Deno.test("accounting file sizes are the exact encoded sizes", () => {
  const config: AttachConfig = {
    ...QV,
    targets: ["h.*.mlp.c_fc", "h.0.attn.c_attn"],
    k: 64,
    l: 32,
    overrides: [{ pattern: "h.1*.mlp.c_fc", r: 2, k: 16 }],
  };
  const [nola, rank1, same] = adapterAccounting(GPT2_SMALL, config, {
    quant: { bits: 3, scheme: "asymmetric" },
  });
  const modules = planAdapters(GPT2_SMALL, config);
  const desc = { baseModel: "gpt2", baseConfigHash: configHash(SMALL_CONFIG), config, modules };
  const values = new Map(modules.map((m) => [m.name, {
    alpha: new Float32Array(m.k).fill(0.5),
    beta: new Float32Array(m.l).fill(-0.25),
  }]));
  assert.equal(nola.fileBytes, encodeAdapter(desc, values).bytes.length);
  assert.equal(
    nola.quantBytes,
    encodeAdapter(desc, values, { quant: { bits: 3, scheme: "asymmetric" } }).bytes.length,
  );
  // 13 modules; layers 1, 10 and 11 take k = 16 from the override and keep l = 32.
  assert.equal(nola.params, 10 * (64 + 32) + 3 * (16 + 32));
  // LoRA r=1 drops the rank override; LoRA at the same rank keeps it.
  const c = 768;
  assert.equal(rank1.params, 12 * (c + 4 * c) + (c + 3 * c));
  assert.equal(same.params, 9 * 8 * 5 * c + 3 * 2 * 5 * c + 8 * 4 * c);
  const { k: _k, l: _l, ...lora } = { ...config, method: "lora" as const };
  assert.equal(
    same.fileBytes,
    adapterFileSize({ ...desc, config: lora, modules: planAdapters(GPT2_SMALL, lora) }),
  );
});
