// Classifier scores: top-1 and top-5 accuracy and the confusion matrix over labelled batches
// (padding rows left out, logits rows padded) against a brute-force count on fresh random
// logits with ties; topClasses against a float64 softmax sorted by hand; the confusion SVG.

import assert from "node:assert/strict";
import { type LabelledBatch, labelledBatch } from "../../data/batches.ts";
import { classRank, evaluateClassifier, topClasses } from "../../eval/classify.ts";
import { Tensor } from "../../kernels/tensor.ts";
import type { Model } from "../../models/model.ts";
import { confusionChart } from "../../train/svg.ts";
import { freshSeed, GPU_TEST, rng, testGpu } from "../_util.ts";

const C = 7;
const STRIDE = 8;

// A stand-in classifier whose logits are its inputs (C values an example), in rows of STRIDE.
async function logitsModel(): Promise<Model> {
  const gpu = await testGpu();
  let logits: Tensor | null = null;
  return {
    modelType: "stand-in",
    task: "classification",
    outputs: C,
    gpu,
    forward(batch: { B: number; inputs: Float32Array }) {
      logits?.[Symbol.dispose]();
      const padded = new Float32Array(batch.B * STRIDE).fill(NaN);
      for (let b = 0; b < batch.B; b++) {
        padded.set(batch.inputs.subarray(b * C, (b + 1) * C), b * STRIDE);
      }
      logits = Tensor.from(gpu, padded, [batch.B, STRIDE]);
      return { logits, logitsStride: STRIDE };
    },
  } as unknown as Model;
}

Deno.test(
  "evaluateClassifier counts top-1, top-5 and the confusion matrix as a brute-force count does, ties to the lower class, padding left out",
  GPU_TEST,
  async () => {
    const seed = freshSeed();
    const next = rng(seed);
    // Logits on a coarse grid so ties happen.
    const n = 37;
    const rows = Array.from(
      { length: n },
      () => Array.from({ length: C }, () => Math.floor(next() * 4)),
    );
    const labels = rows.map(() => Math.floor(next() * C));
    const model = await logitsModel();
    const B = 5;
    const batches: LabelledBatch[] = [];
    for (let i = 0; i < n; i += B) {
      const examples = rows.slice(i, i + B).map((r, j) => ({
        input: Float32Array.from(r),
        label: labels[i + j],
      }));
      batches.push(labelledBatch(examples, { B, inputShape: [C] }));
    }
    const got = await evaluateClassifier(model, batches, { topK: 5 });
    // Brute force: sort class ids by (logit desc, id asc).
    let top1 = 0;
    let top5 = 0;
    const confusion = Array.from({ length: C }, () => new Array(C).fill(0));
    rows.forEach((r, i) => {
      const order = r.map((v, id) => ({ v, id })).sort((a, b) => b.v - a.v || a.id - b.id)
        .map((x) => x.id);
      confusion[labels[i]][order[0]]++;
      if (order[0] === labels[i]) top1++;
      if (order.slice(0, 5).includes(labels[i])) top5++;
      assert.equal(classRank(r, { classes: C, target: labels[i] }), order.indexOf(labels[i]));
    });
    assert.equal(got.n, n);
    assert.equal(got.accuracy, (100 * top1) / n);
    assert.equal(got.topKAccuracy, (100 * top5) / n);
    assert.deepEqual(got.confusion, confusion);
    await assert.rejects(
      () => evaluateClassifier(model, batches, { topK: 7 }),
      /k must be from 1 to 6/,
    );
  },
);

Deno.test("topClasses equals a float64 softmax sorted by hand, ties to the lower id", () => {
  const seed = freshSeed();
  const next = rng(seed);
  const logits = Float32Array.from({ length: 9 }, () => Math.round((next() - 0.5) * 8) / 2);
  const labels = Array.from({ length: 9 }, (_, i) => `class ${i}`);
  const z = Array.from(logits).reduce((s, v) => s + Math.exp(v), 0);
  const want = Array.from(logits, (v, id) => ({ id, p: Math.exp(v) / z }))
    .sort((a, b) => b.p - a.p || a.id - b.id);
  for (const k of [1, 5, 9, 12]) {
    const got = topClasses(logits, { labels, k });
    assert.equal(got.length, Math.min(k, 9));
    got.forEach((c, i) => {
      assert.equal(c.id, want[i].id);
      assert.equal(c.label, `class ${want[i].id}`);
      assert.ok(Math.abs(c.probability - want[i].p) < 1e-12);
    });
  }
});

Deno.test("confusionChart draws a cell a pair with its count, shaded by its row share, names escaped", () => {
  const svg = confusionChart([[3, 1, 0], [0, 0, 0], [2, 0, 5]], ["a<b", "c", "d"], {
    title: "test & more",
  });
  assert.match(svg, /^<svg [^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  assert.equal((svg.match(/<rect x=/g) ?? []).length, 9);
  assert.ok(svg.includes("a&#60;b"));
  assert.ok(svg.includes("test &#38; more"));
  // Row 0: 3 of 4 is shade 0.75 of the way to rgb(8,48,107); an empty row stays white.
  const mix = (to: number, s: number) => Math.round(255 + (to - 255) * s);
  assert.ok(svg.includes(`fill="rgb(${mix(8, 0.75)},${mix(48, 0.75)},${mix(107, 0.75)})"`));
  assert.ok(svg.includes("<title>true c, predicted d: 0</title>"));
  assert.throws(() => confusionChart([[1, 2]], ["a", "b"]), /must be 2 x 2/);
});
