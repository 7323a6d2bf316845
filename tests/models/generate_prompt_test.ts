// generateText reads its prompt as training rows start (the beginning-of-text token first where
// the tokenizer adds one) and stops at any of the tokenizer's end-of-text ids: checked on a
// freshly initialised tiny Llama with its Llama 3-style tokenizer, against generateTokens given
// the ids written out here.

import assert from "node:assert/strict";
import { join } from "node:path";
import { generateText, generateTokens } from "../../models/generate.ts";
import { initModel, readModelConfig } from "../../models/registry.ts";
import { Tokenizer } from "../../models/tokenizer.ts";
import { GPU_TEST, testGpu, withTempDir } from "../_util.ts";

const FOLDER = "fixtures/tiny-llama-pretrained";

Deno.test(
  "generateText puts the beginning-of-text token first and stops at any end-of-text id",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    using model = await initModel(gpu, await readModelConfig(FOLDER), { seed: 3 });
    const tok = await Tokenizer.load(FOLDER);
    assert.equal(tok.addBos, true);
    // Seeded sampling: reproducible, and varied where a fresh model's greedy choice repeats.
    const sampling = { temperature: 1, topK: 50, seed: 7, maxNewTokens: 8 };
    const options = { ...sampling, stopTokens: [] };
    // A prompt whose continuation depends on the BOS, so that leaving it out would show.
    let prompt: string | undefined;
    let withBos: number[] = [];
    for (const candidate of ["The cat", "Once upon a time", "A list: 1, 2,", "Hello"]) {
      withBos = await generateTokens(model, [tok.bosId!, ...tok.encode(candidate)], options);
      const without = await generateTokens(model, tok.encode(candidate), options);
      if (withBos.join() !== without.join()) {
        prompt = candidate;
        break;
      }
    }
    assert.ok(prompt !== undefined, "no prompt tells the BOS apart");
    assert.equal(await generateText(model, tok, prompt, options), tok.decode(withBos));
    // A second end-of-text id, listed in config.json as Llama 3 Instruct lists <|eot_id|>.
    const stopAt = withBos.findIndex((id, i) => i > 0 && !withBos.slice(0, i).includes(id));
    assert.ok(stopAt > 0, `no new token after the first in ${withBos}`);
    await withTempDir("gen-eos", async (dir) => {
      for (const file of ["tokenizer.json", "tokenizer_config.json"]) {
        await Deno.copyFile(join(FOLDER, file), join(dir, file));
      }
      await Deno.writeTextFile(
        join(dir, "config.json"),
        JSON.stringify({ eos_token_id: [tok.eosId, withBos[stopAt]] }),
      );
      const stopping = await Tokenizer.load(dir);
      assert.deepEqual(stopping.eosIds, [tok.eosId, withBos[stopAt]]);
      const text = await generateText(model, stopping, prompt!, sampling);
      assert.equal(text, tok.decode(withBos.slice(0, stopAt)));
    });
  },
);
