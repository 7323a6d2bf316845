import assert from "node:assert/strict";
import { bannedTokens, beamSearch, beamSearchHypothesis } from "../../eval/beam.ts";
import { generateTokens } from "../../models/generate.ts";
import { Gpt2 } from "../../models/gpt2.ts";
import { GPU_TEST, testGpu } from "../_util.ts";

const FIXTURE = "fixtures/tiny-gpt2";

interface RefOptions {
  beams: number;
  lengthPenalty: number;
  noRepeatNgram: number;
  maxNewTokens: number;
  eosIds?: readonly number[];
}

// Every n-gram of `seq` (as text keys), to test the ban independently of bannedTokens.
function ngramKeys(seq: number[], n: number): string[] {
  const keys: string[] = [];
  for (let i = 0; i + n <= seq.length; i++) keys.push(seq.slice(i, i + n).join(","));
  return keys;
}

// The same search written plainly: a full forward of the whole sequence per beam and step (no
// cache), all candidates sorted, bans found by listing n-grams.
async function referenceBeam(model: Gpt2, prompt: number[], o: RefOptions) {
  const V = model.config.vocabSize;
  let live = [{ toks: [] as number[], logProb: 0 }];
  let best: { toks: number[]; score: number } | null = null;
  const finish = (toks: number[], logProb: number) => {
    const score = logProb / toks.length ** o.lengthPenalty;
    if (!best || score > best.score) best = { toks, score };
  };
  for (let step = 0; step < o.maxNewTokens && live.length > 0; step++) {
    const cands: { logProb: number; b: number; v: number }[] = [];
    for (const [b, beam] of live.entries()) {
      const seq = [...prompt, ...beam.toks];
      const acts = model.forward({ B: 1, T: seq.length, tokens: Uint32Array.from(seq) });
      const all = await acts.logits.read();
      const row = Array.from(all.subarray((seq.length - 1) * V, seq.length * V));
      const n = o.noRepeatNgram;
      const seen = new Set(n > 0 ? ngramKeys(beam.toks, n) : []);
      const ok = row.map((_, v) =>
        n === 0 || !seen.has([...beam.toks.slice(beam.toks.length - n + 1), v].join(","))
      );
      const max = Math.max(...row.filter((_, v) => ok[v]));
      const logZ = max + Math.log(row.reduce((s, x, v) => s + (ok[v] ? Math.exp(x - max) : 0), 0));
      row.forEach((x, v) => {
        if (ok[v]) cands.push({ logProb: beam.logProb + x - logZ, b, v });
      });
    }
    cands.sort((p, q) => q.logProb - p.logProb || p.b - q.b || p.v - q.v);
    const next: typeof live = [];
    for (const c of cands.slice(0, o.beams)) {
      const toks = [...live[c.b].toks, c.v];
      if (o.eosIds?.includes(c.v)) finish(toks, c.logProb);
      else next.push({ toks, logProb: c.logProb });
    }
    if (step === o.maxNewTokens - 1) { for (const n of next) finish(n.toks, n.logProb); }
    live = next;
  }
  return best as { toks: number[]; score: number } | null;
}

Deno.test("beam search with one beam equals greedy decoding", GPU_TEST, async () => {
  const gpu = await testGpu();
  using model = await Gpt2.load(gpu, FIXTURE);
  const prompt = [17, 250, 3, 99, 42];
  const greedy = await generateTokens(model, prompt, { maxNewTokens: 10 });
  assert.deepEqual(await beamSearch(model, prompt, { beams: 1, maxNewTokens: 10 }), greedy);
  // An end token stops both at the same place.
  const eosId = greedy[4];
  const stopped = await generateTokens(model, prompt, { maxNewTokens: 10, stopTokens: [eosId] });
  assert.deepEqual(
    await beamSearch(model, prompt, { beams: 1, maxNewTokens: 10, eosIds: [eosId] }),
    stopped,
  );
});

Deno.test(
  "cached beam search equals a beam search over full forwards without a cache",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    using model = await Gpt2.load(gpu, FIXTURE);
    const settings: [number[], RefOptions][] = [
      [[5, 6, 7], { beams: 3, lengthPenalty: 0.8, noRepeatNgram: 0, maxNewTokens: 4 }],
      [[40, 2, 133, 7, 7], { beams: 4, lengthPenalty: 1, noRepeatNgram: 2, maxNewTokens: 6 }],
    ];
    for (const [prompt, o] of settings) {
      const ref = await referenceBeam(model, prompt, o);
      const got = await beamSearchHypothesis(model, prompt, o);
      assert.ok(ref && got);
      assert.deepEqual(got.tokens, ref.toks, JSON.stringify(o));
      assert.ok(Math.abs(got.score - ref.score) < 1e-4 * Math.abs(ref.score), `${got.score}`);
    }
    // With an end token among the likely ones, hypotheses end at different lengths and the
    // length penalty decides between them.
    const prompt = [9, 8, 7];
    const first = await beamSearch(model, prompt, { beams: 1, maxNewTokens: 3 });
    // One end token, then two (a tokenizer's eosIds, as Llama 3's lists several).
    for (
      const [lengthPenalty, eosIds] of [[0, [first[1]]], [2, [first[1]]], [
        1,
        first.slice(1),
      ]] as const
    ) {
      const o = { beams: 3, lengthPenalty, noRepeatNgram: 0, maxNewTokens: 5, eosIds };
      const ref = await referenceBeam(model, prompt, o);
      const got = await beamSearchHypothesis(model, prompt, o);
      assert.deepEqual(got?.tokens, ref?.toks, JSON.stringify(o));
    }
  },
);

Deno.test("beam search never repeats an n-gram of its output", GPU_TEST, async () => {
  const gpu = await testGpu();
  using model = await Gpt2.load(gpu, FIXTURE);
  const prompt = [1, 2, 3];
  for (const n of [1, 2, 3]) {
    const out = await beamSearch(model, prompt, { beams: 3, noRepeatNgram: n, maxNewTokens: 24 });
    assert.equal(out.length, 24);
    const keys = ngramKeys(out, n);
    assert.equal(new Set(keys).size, keys.length, `n=${n}: ${out}`);
  }
  await assert.rejects(() => beamSearch(model, [], {}), RangeError);
  await assert.rejects(() => beamSearch(model, [1], { beams: 0 }), RangeError);
  assert.deepEqual(await beamSearch(model, [1], { maxNewTokens: 0 }), []);
  // At the context limit: positions P-2 and P-1 are fed, and the logits at P-1 add one more.
  const full = Array.from({ length: model.config.nPositions - 2 }, (_, i) => i % 256);
  assert.equal((await beamSearch(model, full, { beams: 2, maxNewTokens: 10 })).length, 3);
});

Deno.test("bannedTokens lists the tokens that would complete a seen n-gram", () => {
  assert.deepEqual([...bannedTokens([1, 2, 3, 1, 2], 3)], [3]);
  assert.deepEqual([...bannedTokens([1, 2, 1, 2, 1], 2)].sort(), [2]);
  assert.deepEqual([...bannedTokens([4, 5, 4], 1)].sort(), [4, 5]);
  assert.deepEqual([...bannedTokens([1, 2], 4)], []);
  assert.deepEqual([...bannedTokens([1, 1, 1], 0)], []);
});
