import assert from "node:assert/strict";
import { generateText, generateTokens } from "../../models/generate.ts";
import { Gpt2 } from "../../models/gpt2.ts";
import { argmax } from "../../models/sampling.ts";
import { Tokenizer } from "../../models/tokenizer.ts";
import { GPU_TEST, testGpu } from "../_util.ts";

const FIXTURE = "fixtures/tiny-gpt2";

Deno.test(
  "greedy generation with the KV cache equals the argmax of full forwards",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    using model = await Gpt2.load(gpu, FIXTURE);
    const prompt = [17, 250, 3, 99, 42];
    const out = await generateTokens(model, prompt, { maxNewTokens: 12 });
    assert.equal(out.length, 12);
    const V = model.config.vocabSize;
    const seq = [...prompt];
    for (const id of out) {
      const acts = model.forward({ B: 1, T: seq.length, tokens: Uint32Array.from(seq) });
      const logits = await acts.logits.read();
      assert.equal(argmax(logits.subarray((seq.length - 1) * V, seq.length * V)), id);
      seq.push(id);
    }
    assert.deepEqual(await generateTokens(model, prompt, { maxNewTokens: 12 }), out);
  },
);

Deno.test("seeded sampling is reproducible and stops at the context length", GPU_TEST, async () => {
  const gpu = await testGpu();
  using model = await Gpt2.load(gpu, FIXTURE);
  const options = { temperature: 1, topK: 20, seed: 5, maxNewTokens: 8 };
  const a = await generateTokens(model, [1, 2, 3], options);
  assert.deepEqual(await generateTokens(model, [1, 2, 3], options), a);
  const full = Array.from({ length: model.config.nPositions - 2 }, (_, i) => i % 256);
  // Positions P-2 and P-1 are fed; the logits at P-1 still give one more token.
  assert.equal((await generateTokens(model, full, { maxNewTokens: 10 })).length, 3);
  await assert.rejects(() => generateTokens(model, []), RangeError);
});

Deno.test(
  "text generation streams pieces that add up to the result and honours stop strings",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    using model = await Gpt2.load(gpu, FIXTURE);
    const tokenizer = await Tokenizer.load(FIXTURE);
    const pieces: string[] = [];
    const text = await generateText(model, tokenizer, "The model", {
      maxNewTokens: 16,
      onText: (p) => pieces.push(p),
    });
    assert.equal(pieces.join(""), text);
    const stop = text.slice(3, 5);
    if (stop.length === 2) {
      const cut: string[] = [];
      const short = await generateText(model, tokenizer, "The model", {
        maxNewTokens: 16,
        stop: [stop],
        onText: (p) => cut.push(p),
      });
      assert.equal(short, text.slice(0, text.indexOf(stop)));
      assert.equal(cut.join(""), short);
    }
  },
);

Deno.test(
  "no-repeat n-grams: greedy never repeats an n-gram of what it generated",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    using model = await Gpt2.load(gpu, FIXTURE);
    const plain = await generateTokens(model, [5, 6], { maxNewTokens: 40 });
    const banned = await generateTokens(model, [5, 6], { maxNewTokens: 40, noRepeatNgram: 2 });
    const bigrams = (ids: number[]) => ids.slice(1).map((id, i) => `${ids[i]},${id}`);
    const seen = bigrams(banned);
    assert.equal(new Set(seen).size, seen.length, `repeated bigram in ${banned}`);
    // The fixture's random weights repeat themselves, so the rule must have changed something.
    assert(new Set(bigrams(plain)).size < bigrams(plain).length, `no repeat to ban in ${plain}`);
  },
);
