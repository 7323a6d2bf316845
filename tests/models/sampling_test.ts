import assert from "node:assert/strict";
import { argmax, Sampler } from "../../models/sampling.ts";

Deno.test("greedy picks the argmax and the lowest id on ties", () => {
  assert.equal(new Sampler().next([0, 3, 3, -1]), 1);
  assert.equal(argmax(new Float32Array([-5, -2, -9])), 1);
});

Deno.test("the same seed gives the same samples, another seed other samples", () => {
  const logits = Float32Array.from({ length: 50 }, (_, i) => Math.sin(i));
  const draw = (seed: number) => {
    const s = new Sampler({ temperature: 1, seed });
    return Array.from({ length: 40 }, () => s.next(logits));
  };
  assert.deepEqual(draw(3), draw(3));
  assert.notDeepEqual(draw(3), draw(4));
});

Deno.test("sample frequencies follow the softmax at the temperature", () => {
  const logits = [0, Math.log(2), Math.log(5)];
  const s = new Sampler({ temperature: 1, seed: 11 });
  const counts = [0, 0, 0];
  const n = 40_000;
  for (let i = 0; i < n; i++) counts[s.next(logits)]++;
  const expected = [1 / 8, 2 / 8, 5 / 8];
  for (let i = 0; i < 3; i++) {
    const sd = Math.sqrt(expected[i] * (1 - expected[i]) / n);
    assert(Math.abs(counts[i] / n - expected[i]) < 5 * sd, `token ${i}: ${counts[i] / n}`);
  }
});

Deno.test("top-k and top-p never return a token outside the kept set", () => {
  const logits = [5, 4, 3, 2, 1, 0];
  const k = new Sampler({ temperature: 2, topK: 2, seed: 1 });
  const p = new Sampler({ temperature: 1, topP: 0.7, seed: 2 }); // p(0)=.636, p(0)+p(1)=.87
  for (let i = 0; i < 2000; i++) {
    assert(k.next(logits) < 2);
    assert(p.next(logits) < 2);
  }
  assert.throws(() => new Sampler({ topP: 0 }), RangeError);
  assert.throws(() => new Sampler({ temperature: -1 }), RangeError);
  assert.throws(() => new Sampler({ seed: 1.5 }), /seed must be a safe integer, got 1.5/);
});
