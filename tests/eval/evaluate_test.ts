import assert from "node:assert/strict";
import type { TokenBatch as MicroBatch } from "../../data/batches.ts";
import { beamSearch } from "../../eval/beam.ts";
import { accuracy, evaluateGenerations, evaluateLoss } from "../../eval/evaluate.ts";
import { scoreGenerations } from "../../eval/metrics.ts";
import { generateText } from "../../models/generate.ts";
import { Gpt2 } from "../../models/gpt2.ts";
import { Tokenizer } from "../../models/tokenizer.ts";
import { freshSeed, GPU_TEST, rng, testGpu } from "../_util.ts";

const FIXTURE = "fixtures/tiny-gpt2";

function randomBatch(next: () => number, B: number, T: number, V: number): MicroBatch {
  const n = B * T;
  const tokens = Uint32Array.from({ length: n }, () => Math.floor(next() * V));
  const targets = Uint32Array.from({ length: n }, () => Math.floor(next() * V));
  // Prompt positions (mask 0) first in each row, then completion tokens, some weighted.
  const mask = Float32Array.from({ length: n }, (_, i) => (i % T < 2 ? 0 : next() < 0.2 ? 0.5 : 1));
  // A masked target may hold any id, even one outside the vocabulary.
  targets[0] = 1_000_000;
  return { B, T, tokens, targets, mask };
}

// Float64 cross-entropy of the model's logits, weighted by the mask over all batches.
async function hostLoss(model: Gpt2, batches: MicroBatch[]) {
  const V = model.config.vocabSize;
  let sum = 0;
  let count = 0;
  for (const b of batches) {
    const logits = (await model.forward(b).logits.read()) as Float32Array;
    for (let r = 0; r < b.B * b.T; r++) {
      if (b.mask[r] === 0) continue;
      const row = logits.subarray(r * V, (r + 1) * V);
      const max = Math.max(...row);
      const lse = max + Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0));
      sum += b.mask[r] * (lse - row[b.targets[r]]);
      count += b.mask[r];
    }
  }
  return { loss: sum / count, tokens: count };
}

Deno.test(
  "evaluateLoss equals a float64 cross-entropy over completion tokens",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    using model = await Gpt2.load(gpu, FIXTURE);
    const seed = freshSeed();
    const next = rng(seed);
    const V = model.config.vocabSize;
    // Batches of different shapes: the mean is over tokens, not over batches.
    const batches = [
      randomBatch(next, 2, 7, V),
      randomBatch(next, 1, 12, V),
      randomBatch(next, 3, 5, V),
    ];
    const got = await evaluateLoss(model, batches);
    const ref = await hostLoss(model, batches);
    assert.ok(
      Math.abs(got.loss - ref.loss) < 1e-5 * ref.loss,
      `seed ${seed}: ${got.loss} vs ${ref.loss}`,
    );
    assert.equal(got.tokens, ref.tokens);
    assert.ok(Math.abs(got.perplexity - Math.exp(ref.loss)) < 1e-4 * got.perplexity);
    // Async iterables work too.
    async function* stream() {
      yield* batches;
    }
    assert.ok(Math.abs((await evaluateLoss(model, stream())).loss - got.loss) < 1e-9);
    const bad = randomBatch(next, 1, 4, V);
    bad.targets[3] = V;
    await assert.rejects(() => evaluateLoss(model, [bad]), RangeError);
    const empty = { ...bad, mask: new Float32Array(4) };
    await assert.rejects(() => evaluateLoss(model, [empty]), RangeError);
  },
);

Deno.test(
  "evaluateGenerations scores what greedy and beam decoding produce",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    using model = await Gpt2.load(gpu, FIXTURE);
    const tokenizer = await Tokenizer.load(FIXTURE);
    const prompts = ["The model", "A lamp is", "name : The Eagle ||"];
    const greedy: string[] = [];
    for (const p of prompts) {
      greedy.push(await generateText(model, tokenizer, p, { maxNewTokens: 12 }));
    }
    // One reference equal to the output, one unrelated.
    const examples = prompts.map((prompt, i) => ({
      prompt,
      refs: i === 0 ? ["Nothing like it at all.", greedy[0]] : ["The lamp is on the table."],
    }));
    const seen: string[] = [];
    const g = await evaluateGenerations(model, tokenizer, examples, {
      maxNewTokens: 12,
      onGeneration: (i, text) => seen[i] = text,
    });
    assert.deepEqual(g.generations, greedy);
    assert.deepEqual(seen, greedy);
    // Two prompts a forward: the same generations, chunk by chunk.
    const chunked = await evaluateGenerations(model, tokenizer, examples, {
      maxNewTokens: 12,
      maxRows: 2,
    });
    assert.deepEqual(chunked.generations, greedy);
    const expected = scoreGenerations(greedy, examples.map((e) => e.refs));
    assert.deepEqual(
      { bleu: g.bleu, rougeL: g.rougeL, exactMatch: g.exactMatch, n: g.n },
      expected,
    );
    assert.ok(g.exactMatch >= 100 / 3);

    const o = { beams: 3, lengthPenalty: 0.8, noRepeatNgram: 2, maxNewTokens: 10 };
    const beam = await evaluateGenerations(model, tokenizer, examples, { decoding: "beam", ...o });
    for (const [i, prompt] of prompts.entries()) {
      const ids = await beamSearch(model, tokenizer.encode(prompt), {
        ...o,
        eosIds: tokenizer.eosIds,
      });
      assert.equal(beam.generations[i], tokenizer.decode(ids));
    }
    // Greedy with an n-gram ban is beam search with one beam.
    const banned = await evaluateGenerations(model, tokenizer, [examples[2]], {
      noRepeatNgram: 2,
      maxNewTokens: 10,
    });
    const ids = await beamSearch(model, tokenizer.encode(prompts[2]), {
      beams: 1,
      noRepeatNgram: 2,
      maxNewTokens: 10,
      eosIds: tokenizer.eosIds,
    });
    assert.equal(banned.generations[0], tokenizer.decode(ids));
    // A stop string cuts the beam output before it.
    const cutAt = beam.generations[1].slice(2, 4);
    if (cutAt.length === 2) {
      const cut = await evaluateGenerations(model, tokenizer, [examples[1]], {
        decoding: "beam",
        ...o,
        stop: [cutAt],
      });
      assert.equal(
        cut.generations[0],
        beam.generations[1].slice(0, beam.generations[1].indexOf(cutAt)),
      );
    }
    await assert.rejects(
      () => evaluateGenerations(model, tokenizer, [{ prompt: "x", refs: [] }]),
      RangeError,
    );
  },
);

Deno.test(
  "accuracy takes the argmax over the label tokens at the last prompt position",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    using model = await Gpt2.load(gpu, FIXTURE);
    const V = model.config.vocabSize;
    const labelIds = [10, 20, 30, 40];
    const prompts = [[1, 2, 3], [7], [100, 200, 250, 5, 6], [42, 42], [9, 8, 7, 6]];
    const predicted: number[] = [];
    for (const p of prompts) {
      const logits = await model.forward({ B: 1, T: p.length, tokens: Uint32Array.from(p) }).logits
        .read();
      const row = logits.subarray((p.length - 1) * V);
      const scores = labelIds.map((id) => row[id]);
      predicted.push(scores.indexOf(Math.max(...scores)));
    }
    // Gold labels: right for the first three, wrong for the last two.
    const examples = prompts.map((prompt, i) => ({
      prompt,
      label: i < 3 ? predicted[i] : (predicted[i] + 1) % labelIds.length,
    }));
    const r = await accuracy(model, examples, { labelIds });
    assert.deepEqual(r.predictions, predicted);
    assert.deepEqual([r.correct, r.n, r.accuracy], [3, 5, 60]);
    await assert.rejects(
      () => accuracy(model, [{ prompt: [1], label: 4 }], { labelIds }),
      RangeError,
    );
    await assert.rejects(() => accuracy(model, [], { labelIds: [V] }), RangeError);
    assert.equal((await accuracy(model, [], { labelIds })).accuracy, 0);
  },
);
