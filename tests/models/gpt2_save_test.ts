import assert from "node:assert/strict";
import { Gpt2 } from "../../models/gpt2.ts";
import { readGpt2Config } from "../../models/gpt2_config.ts";
import { initGpt2Weights } from "../../models/gpt2_init.ts";
import { saveGpt2Folder } from "../../models/gpt2_save.ts";
import { Tokenizer } from "../../models/tokenizer.ts";
import { GPU_TEST, tempDir, testGpu } from "../_util.ts";

Deno.test("fresh weights are seeded and follow the GPT-2 initialisation", async () => {
  const config = await readGpt2Config("fixtures/tiny-gpt2");
  const a = initGpt2Weights(config, { seed: 4 });
  const b = initGpt2Weights(config, { seed: 4 });
  const c = initGpt2Weights(config, { seed: 5 });
  assert.deepEqual(a.tensors.get("wte.weight")!.data, b.tensors.get("wte.weight")!.data);
  assert.notDeepEqual(a.tensors.get("wte.weight")!.data, c.tensors.get("wte.weight")!.data);
  const std = (x: Float32Array) => Math.sqrt(x.reduce((s, v) => s + v * v, 0) / x.length);
  assert(Math.abs(std(a.tensors.get("wte.weight")!.data) - 0.02) < 0.001);
  const proj = std(a.tensors.get("h.0.mlp.c_proj.weight")!.data);
  assert(Math.abs(proj - 0.02 / Math.sqrt(2 * config.nLayer)) < 0.001, `${proj}`);
  assert(a.tensors.get("h.1.ln_2.weight")!.data.every((v) => v === 1));
  assert(a.tensors.get("h.1.attn.c_attn.bias")!.data.every((v) => v === 0));
});

Deno.test("a saved folder loads back with the same logits and tokenizer", GPU_TEST, async () => {
  const gpu = await testGpu();
  const config = await readGpt2Config("fixtures/tiny-gpt2");
  using model = await Gpt2.fromWeights(gpu, initGpt2Weights(config, { seed: 9 }));
  const dir = await tempDir("save");
  await saveGpt2Folder(model, `${dir}/model`, { tokenizerFrom: "fixtures/tiny-gpt2" });
  using loaded = await Gpt2.load(gpu, `${dir}/model`);
  const batch = { B: 1, T: 5, tokens: new Uint32Array([1, 50, 7, 299, 3]) };
  const want = await model.forward(batch).logits.read();
  assert.deepEqual(await loaded.forward(batch).logits.read(), want);
  assert.equal((await Tokenizer.load(`${dir}/model`)).eosId, 299);
  await Deno.remove(dir, { recursive: true });
});
