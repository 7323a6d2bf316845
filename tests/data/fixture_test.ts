import assert from "node:assert/strict";
import { groupReferences, parseE2e } from "../../data/readers.ts";
import { makeDataset } from "../../fixtures/data-to-text/make_dataset.ts";

Deno.test("the data-to-text generator gives the same bytes twice, equal to the committed files", async () => {
  const a = makeDataset();
  const b = makeDataset();
  assert.deepEqual(a, b);
  for (const split of ["train", "validation", "test"] as const) {
    const file = await Deno.readTextFile(`fixtures/data-to-text/${split}.csv`);
    assert.ok(file === a[split], `fixtures/data-to-text/${split}.csv differs from make_dataset.ts`);
  }
  assert.notDeepEqual(makeDataset({ seed: 1 }), a);
});

Deno.test("the data-to-text splits have 600/80/80 distinct mrs, 2-3 refs each, disjoint", () => {
  const data = makeDataset();
  const groups = {
    train: groupReferences(parseE2e(data.train)),
    validation: groupReferences(parseE2e(data.validation)),
    test: groupReferences(parseE2e(data.test)),
  };
  assert.deepEqual(
    [groups.train.length, groups.validation.length, groups.test.length],
    [600, 80, 80],
  );
  const all = [...groups.train, ...groups.validation, ...groups.test];
  assert.equal(new Set(all.map((g) => g.mr)).size, 760);
  for (const g of all) {
    assert.ok(g.refs.length === 2 || g.refs.length === 3, g.mr);
    assert.equal(new Set(g.refs).size, g.refs.length, `repeated reference for ${g.mr}`);
    const name = /^name\[([^\]]+)\]/.exec(g.mr)![1];
    for (const ref of g.refs) assert.ok(ref.includes(name), `${ref} lacks ${name}`);
  }
});
