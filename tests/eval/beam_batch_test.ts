import assert from "node:assert/strict";
import {
  type BeamHypothesis,
  beamSearchBatch,
  beamSearchHypothesis,
  beamSearchMany,
} from "../../eval/beam.ts";
import { loadModel } from "../../models/registry.ts";
import { freshSeed, GPU_TEST, rng, testGpu } from "../_util.ts";
import { attachRandomNola, DECODING_FIXTURES, randomPrompts } from "../_decoding.ts";

// Basis seed and scratch rows of the adapter in the NOLA runs.
const NOLA = { basisSeed: 5, maxRows: 64 };

for (const [fixture, targets] of DECODING_FIXTURES) {
  Deno.test(
    `${fixture}: batched beam search equals one prompt at a time: tokens, scores within 1e-5`,
    GPU_TEST,
    async () => {
      const gpu = await testGpu();
      using model = await loadModel(gpu, fixture);
      const seed = freshSeed();
      const list = randomPrompts(seed, 5, 15, model.outputs);
      // A tenth of the vocabulary ends a hypothesis, so that beams end at different steps.
      const next = rng(seed + 9);
      const eosIds = Array.from({ length: 30 }, () => Math.floor(next() * model.outputs));
      for (const adapted of [false, true]) {
        using _set = adapted ? await attachRandomNola(model, targets, seed, NOLA) : null;
        const what = `${adapted ? "NOLA" : "base"} seed ${seed}`;
        const options = {
          beams: 4,
          lengthPenalty: 0.8,
          noRepeatNgram: 2,
          maxNewTokens: 7,
          eosIds,
        };
        const one: (BeamHypothesis | null)[] = [];
        for (const p of list) one.push(await beamSearchHypothesis(model, p, options));
        // maxRows 9 with 4 beams: chunks of 2, 2 and 1 prompts.
        const batched = await beamSearchBatch(model, list, {
          ...options,
          maxRows: adapted ? 9 : 64,
        });
        batched.forEach((h, i) => {
          const want = one[i];
          assert.equal(h === null, want === null, `${what} prompt ${i}`);
          if (!h || !want) return;
          assert.deepEqual(h.tokens, want.tokens, `${what} prompt ${i}`);
          assert(
            Math.abs(h.score - want.score) <= 1e-5 * Math.max(1, Math.abs(want.score)),
            `${what} prompt ${i}: score ${h.score} vs ${want.score}`,
          );
        });
        const ids = await beamSearchMany(model, list, options);
        ids.forEach((got, i) => {
          const t = one[i]?.tokens ?? [];
          const ended = t.length > 0 && eosIds.includes(t.at(-1)!);
          assert.deepEqual(got, ended ? t.slice(0, -1) : t, `${what} ids of prompt ${i}`);
        });
        model.detachAll();
      }
    },
  );
}

Deno.test("batched beam search near the context end and with no new tokens", GPU_TEST, async () => {
  const gpu = await testGpu();
  using model = await loadModel(gpu, "fixtures/tiny-gpt2");
  const P = model.maxPositions;
  const list = [
    Array.from({ length: P }, (_, i) => i % 200),
    [3, 4],
    Array.from({ length: P - 2 }, (_, i) => i),
  ];
  const options = { beams: 3, maxNewTokens: 5 };
  const batched = await beamSearchBatch(model, list, options);
  for (const [i, p] of list.entries()) {
    assert.deepEqual(batched[i], await beamSearchHypothesis(model, p, options), `prompt ${i}`);
  }
  assert.deepEqual(await beamSearchBatch(model, list, { maxNewTokens: 0 }), [null, null, null]);
  await assert.rejects(() => beamSearchBatch(model, [[1], []]), /prompt 1: it is empty/);
});
