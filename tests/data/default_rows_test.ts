// The rows of the default job (pipelines/default.yaml: the data-to-text fixture, the pretrained
// tiny GPT-2's byte-level tokenizer) are the same with the whole-text tokenization as they were
// when the prompt and the completion were encoded apart. The reference here is that older way,
// written out: `encode(prompt) ++ encode(completion) ++ [eos]`, the prompt masked, cut to T.

import assert from "node:assert/strict";
import { join } from "node:path";
import { buildRows, type Example, loadSplits, makeRows } from "../../data/examples.ts";
import { renderExamples } from "../../data/templates.ts";
import { Tokenizer } from "../../models/tokenizer.ts";
import { loadPipeline } from "../../pipelines/parse.ts";
import type { DataStage, LoadStage } from "../../pipelines/schema.ts";

Deno.test("the default job's rows equal those of encoding prompt and completion apart", async () => {
  const pipeline = await loadPipeline("pipelines/default.yaml");
  const stage = pipeline.stages.find((s): s is DataStage => s.kind === "data")!;
  const load = pipeline.stages.find((s): s is LoadStage => s.kind === "load")!;
  const tokenizer = await Tokenizer.load(join(pipeline.baseDir, load.model));
  assert.equal(tokenizer.addBos, false, "GPT-2 adds no beginning-of-text token");
  const records = await loadSplits({
    train: join(pipeline.baseDir, stage.train!),
    validation: join(pipeline.baseDir, stage.validation!),
    test: join(pipeline.baseDir, stage.test!),
    format: stage.format as "e2e",
  });
  const templates = { prompt: stage.prompt!, completion: stage.completion! };
  const T = stage.seqLen;
  let examples = 0;
  for (const split of ["train", "validation", "test"] as const) {
    const reference: Example[] = renderExamples(records[split], templates).map((pair) => {
      const prompt = tokenizer.encode(pair.prompt);
      const ids = [...prompt, ...tokenizer.encode(pair.completion), tokenizer.eosId].slice(0, T);
      const mask = new Uint8Array(ids.length).fill(1, prompt.length);
      return { tokens: Uint32Array.from(ids), mask, promptLength: prompt.length };
    });
    const expected = makeRows(reference, { T, pack: stage.pack }).rows;
    const { rows } = buildRows(records[split], {
      templates,
      encoder: tokenizer,
      T,
      pack: stage.pack,
      eos: stage.eos,
      truncate: stage.truncate,
    });
    assert.equal(rows.length, expected.length, split);
    rows.forEach((row, i) => {
      assert.deepEqual(row.segments, expected[i].segments, `${split} row ${i}`);
      assert.deepEqual(row.tokens, expected[i].tokens, `${split} row ${i}`);
      assert.deepEqual(row.mask, expected[i].mask, `${split} row ${i}`);
    });
    examples += reference.length;
  }
  assert.ok(examples > 1500, `only ${examples} examples`);
});
