import assert from "node:assert/strict";
import fc from "fast-check";
import { formatStat, pooledStd, stat } from "../../experiments/stats.ts";
import { freshSeed } from "../_util.ts";

Deno.test("stat gives the mean and the sample standard deviation of hand-checked values", () => {
  // 2 4 4 4 5 5 7 9: mean 5, squared deviations sum to 32, sample variance 32 / 7.
  const s = stat([2, 4, 4, 4, 5, 5, 7, 9]);
  assert.equal(s.mean, 5);
  assert.equal(s.std, Math.sqrt(32 / 7));
  assert.equal(s.n, 8);
  assert.deepEqual(stat([45.1, 46.3, 44.8]).std.toFixed(6), Math.sqrt(1.26 / 2).toFixed(6));
  assert.ok(Number.isNaN(stat([]).mean) && Number.isNaN(stat([3]).std));
  assert.equal(stat([3]).mean, 3);
});

Deno.test("stat matches a float64 sum-of-squares reference on random small integers", () => {
  const seed = freshSeed();
  fc.assert(
    fc.property(fc.array(fc.integer({ min: -1000, max: 1000 }), { minLength: 2, maxLength: 30 }), (
      xs,
    ) => {
      // Integers below 2^53 in every partial sum: this formula is exact up to the final division.
      const n = xs.length;
      const sum = xs.reduce((a, b) => a + b, 0);
      const squares = xs.reduce((a, b) => a + b * b, 0);
      const variance = (squares - (sum * sum) / n) / (n - 1);
      const s = stat(xs);
      assert.ok(Math.abs(s.mean - sum / n) <= 1e-12 * Math.max(1, Math.abs(sum / n)));
      assert.ok(Math.abs(s.std - Math.sqrt(variance)) <= 1e-9 * Math.max(1, Math.sqrt(variance)));
    }),
    { seed, numRuns: 200 },
  );
});

Deno.test("pooledStd weights each group by its degrees of freedom", () => {
  // s1^2 = 2 (1 dof), s2^2 = 4 (2 dof): (2 + 8) / 3.
  assert.equal(pooledStd(stat([1, 3]), stat([2, 4, 6])), Math.sqrt(10 / 3));
  assert.equal(pooledStd(stat([1, 3]), stat([5])), Math.sqrt(2), "a lone value adds no dof");
  assert.equal(pooledStd(stat([1]), stat([5])), 0, "no spread measured");
  assert.equal(pooledStd(stat([1, 2, 3]), stat([7, 8, 9])), 1, "equal spreads pool to it");
});

Deno.test("formatStat writes mean ± std, the mean alone for one run, - for none", () => {
  assert.equal(formatStat(stat([45.1, 46.3, 44.8]), 2), "45.40 ± 0.79");
  assert.equal(formatStat(stat([4.5]), 4), "4.5000");
  assert.equal(formatStat(stat([]), 2), "-");
});
