import assert from "node:assert/strict";
import { generateBatch, generateTokens } from "../../models/generate.ts";
import { loadModel } from "../../models/registry.ts";
import { freshSeed, GPU_TEST, relativeError, rng, testGpu } from "../_util.ts";
import { attachRandomNola, DECODING_FIXTURES, randomPrompts } from "../_decoding.ts";

// Basis seed and scratch rows of the adapter in the NOLA runs.
const NOLA = { basisSeed: 11, maxRows: 256 };

for (const [fixture, targets] of DECODING_FIXTURES) {
  Deno.test(
    `${fixture}: batched greedy and sampled generation equal one prompt at a time, with and without NOLA`,
    GPU_TEST,
    async () => {
      const gpu = await testGpu();
      using model = await loadModel(gpu, fixture);
      const seed = freshSeed();
      const list = randomPrompts(seed, 11, 19, model.outputs);
      for (const adapted of [false, true]) {
        using _set = adapted ? await attachRandomNola(model, targets, seed, NOLA) : null;
        const what = `${adapted ? "NOLA" : "base"} seed ${seed}`;
        const options = { maxNewTokens: 9, noRepeatNgram: adapted ? 2 : 0 };
        const one = [];
        for (const p of list) one.push(await generateTokens(model, p, options));
        // maxRows 4: chunks of 4, 4 and 3 prompts; all 11 at once uses the wide matmul tiles.
        const batched = await generateBatch(model, list, { ...options, maxRows: 4 });
        assert.deepEqual(batched, one, what);
        if (!adapted) {
          assert.deepEqual(await generateBatch(model, list, options), one, what);
          // Seeded sampling: each prompt draws from its own sampler, seeded as it would be alone.
          const sampled = { maxNewTokens: 6, temperature: 1, topK: 20, seed: seed % 1000 };
          const alone = [];
          for (const p of list.slice(0, 4)) alone.push(await generateTokens(model, p, sampled));
          assert.deepEqual(await generateBatch(model, list.slice(0, 4), sampled), alone, what);
        }
        model.detachAll();
      }
    },
  );

  Deno.test(
    `${fixture}: a decoding step's logits equal full forwards, rows at their own positions`,
    GPU_TEST,
    async () => {
      const gpu = await testGpu();
      using model = await loadModel(gpu, fixture);
      const seed = freshSeed();
      const list = randomPrompts(seed, 5, 13, model.outputs);
      const V = model.outputs;
      using cache = model.newBatchCache!(6, 20);
      // Rows 5, 3, 0, 1, 2 hold the prompts (row 4 stays empty): slots need not be in order.
      const rows = [5, 3, 0, 1, 2];
      list.forEach((p, i) => {
        model.forward({ B: 1, T: p.length, tokens: Uint32Array.from(p) }, cache.row(rows[i]));
      });
      // Row 4 := row 3, then both continue differently.
      cache.copyRows([{ from: 3, to: 4 }]);
      const seqs = [...list, [...list[1]]];
      const order = [...rows, 4];
      const next = rng(seed + 1);
      for (let step = 0; step < 3; step++) {
        const tokens = seqs.map(() => Math.floor(next() * V));
        const acts = model.decode!(tokens, cache, { rows: order });
        const got = await acts.logits.read();
        for (const [b, seq] of seqs.entries()) {
          seq.push(tokens[b]);
          const full = model.forward({ B: 1, T: seq.length, tokens: Uint32Array.from(seq) });
          const want = (await full.logits.read()).subarray(
            (seq.length - 1) * full.logitsStride,
            (seq.length - 1) * full.logitsStride + V,
          );
          const row = got.subarray(b * acts.logitsStride, b * acts.logitsStride + V);
          const err = relativeError(row, want);
          assert(err < 1e-5, `step ${step} row ${order[b]} seed ${seed}: relative error ${err}`);
        }
      }
      assert.deepEqual(
        cache.lengths,
        [0, 1, 2, 3, 4, 5].map((r) => seqs[order.indexOf(r)].length),
      );
      // A row copied into a cache of its own, and back into another row, decodes alike.
      using single = model.newCache(20);
      single.copyFrom(cache.row(5));
      cache.row(4).copyFrom(single);
      const token = Math.floor(next() * V);
      const one = model.forward({ B: 1, T: 1, tokens: Uint32Array.of(token) }, single);
      const fromSingle = (await one.logits.read()).slice(0, V);
      const two = model.decode!([token, token], cache, { rows: [5, 4] });
      const both = await two.logits.read();
      for (const b of [0, 1]) {
        const row = both.subarray(b * two.logitsStride, b * two.logitsStride + V);
        assert(relativeError(row, fromSingle) < 1e-6, `copied row ${b} seed ${seed}`);
      }
      assert.equal(cache.lengths[4], cache.lengths[5]);
      assert.throws(() => model.decode!([1, 2], cache, { rows: [0, 0] }), /taken twice/);
      assert.throws(() => model.newBatchCache!(0, 4), /rows >= 1/);
      assert.throws(
        () => model.newBatchCache!(2 ** 24, 64),
        /binding limit: decode at most \d+ rows/,
      );
      assert.throws(() => model.decode!([V], cache, { rows: [0] }), /not below vocab/);
      assert.throws(() => cache.copyRows([{ from: 0, to: 1 }, { from: 1, to: 2 }]), /both read/);
    },
  );
}
