import assert from "node:assert/strict";
import fc from "fast-check";
import { groupReferences, parseE2e } from "../../data/readers.ts";
import { evaluateGenerations } from "../../eval/evaluate.ts";
import { findMr, parseMr, type Slot, slotErrorRate, SlotLexicon } from "../../eval/slot_error.ts";
import { loadModel } from "../../models/registry.ts";
import { Tokenizer } from "../../models/tokenizer.ts";
import { PipelineError } from "../../pipelines/parse.ts";
import { runPipeline } from "../../pipelines/run.ts";
import { freshSeed, GPU_TEST, testGpu, withTempDir } from "../_util.ts";

const s = (slot: string, value: string): Slot => ({ slot, value });

Deno.test("parseMr reads E2E meaning representations and names what is wrong", () => {
  assert.deepEqual(
    parseMr(" name[The Vaults], priceRange[£20-25] ,customer rating[5 out of 5]"),
    [s("name", "The Vaults"), s("priceRange", "£20-25"), s("customer rating", "5 out of 5")],
  );
  const wrong: [string, string][] = [
    ["name[The Mill", 'the value of "name" has no closing ] at column 5'],
    ["name[The Mill] eatType[pub]", "expected , after ] at column 16"],
    ["name[The Mill], [pub]", "expected a slot name before [ at column 17"],
    ["name[The Mill], pub", "expected a slot name followed by [ at column 17"],
    ["name[], food[Thai]", '"name" has no single value at column 5'],
    ["  ", "no slot at column 1"],
  ];
  for (const [mr, what] of wrong) {
    assert.throws(() => parseMr(mr), {
      name: "SyntaxError",
      message: `Cannot read meaning representation ${JSON.stringify(mr)}: ${what}; write it as ` +
        "slot[value], slot[value], ...",
    });
  }
});

Deno.test("findMr takes the meaning representation from a prompt", () => {
  assert.equal(findMr("name[The Mill], eatType[pub]\n"), "name[The Mill], eatType[pub]");
  assert.equal(findMr("Describe the place.\nData: name[Zizzi]\nText:"), "name[Zizzi]");
  assert.equal(findMr("name[A]\nA is here.\nname[B], food[Thai]\n"), "name[B], food[Thai]");
  assert.equal(findMr("count 3:"), undefined);
});

// The fixture's values, as a split's MRs would give them.
const FIXTURE_MRS = [
  "name[The Mill], eatType[pub], food[Italian], priceRange[cheap], familyFriendly[no]",
  "name[Harbour Lights], eatType[coffee shop], food[French], priceRange[high], area[harbour]",
  "name[Saffron], eatType[restaurant], priceRange[moderate], area[riverside], near[the Park]",
  "name[Juniper], food[Chinese], area[city centre], familyFriendly[yes], near[Market Square]",
];

Deno.test("hand-checked outputs: all slots, a missing food, a wrong price, paraphrases", () => {
  const lexicon = SlotLexicon.fromMrs(FIXTURE_MRS);
  const check = (text: string, mr: string) => lexicon.check(text, mr);
  const mill = FIXTURE_MRS[0];
  const none = { missing: [], hallucinated: [] };
  assert.deepEqual(
    check("The Mill is a cheap pub serving Italian food. It is not family friendly.", mill),
    none,
  );
  assert.deepEqual(check("The Mill is an inexpensive pub. It is not family friendly.", mill), {
    missing: [s("food", "Italian")],
    hallucinated: [],
  });
  assert.deepEqual(
    check("The Mill is a pub with Italian food in the high price range, adults only.", mill),
    { missing: [s("priceRange", "cheap")], hallucinated: [s("priceRange", "high")] },
  );
  // "no" said in other words; "family friendly" inside "not family friendly" is not a "yes".
  for (const no of ["It is not suitable for children.", "No kids.", "It isn’t kid-friendly."]) {
    assert.deepEqual(check(`The Mill, a cheap Italian pub. ${no}`, mill), none, no);
  }
  assert.deepEqual(check("The Mill, a cheap Italian pub. Children are welcome.", mill), {
    missing: [s("familyFriendly", "no")],
    hallucinated: [s("familyFriendly", "yes")],
  });
  // Another cuisine of the split, and a slot the MR lacks.
  assert.deepEqual(
    check(
      "The Mill is a cheap pub serving Italian and Chinese food by the riverside. " +
        "It is not family friendly.",
      mill,
    ),
    { missing: [], hallucinated: [s("food", "Chinese"), s("area", "riverside")] },
  );
  // A name holding an area's word is the name, not the area.
  const harbour = FIXTURE_MRS[1];
  assert.deepEqual(
    check("Harbour Lights is an expensive coffee shop with French food.", harbour),
    { missing: [s("area", "harbour")], hallucinated: [] },
  );
  assert.deepEqual(
    check("Harbour Lights is an expensive French coffee shop in the harbour.", harbour),
    none,
  );
  assert.deepEqual(
    check(
      "There is a restaurant called Saffron that is moderately priced and is located by " +
        "the river near the Park.",
      FIXTURE_MRS[2],
    ),
    none,
  );
  assert.deepEqual(
    check(
      "Juniper, near Market Square in the centre of the city, serves Chinese food to " +
        "families. Children are welcome.",
      FIXTURE_MRS[3],
    ),
    none,
  );
});

Deno.test("hand-checked E2E references, with the dataset's own price and rating values", () => {
  const mrs = [
    "name[The Vaults], eatType[pub], priceRange[more than £30], customer rating[5 out of 5], " +
    "near[Café Adriatic]",
    "name[The Eagle], eatType[coffee shop], food[Japanese], priceRange[less than £20], " +
    "customer rating[low], area[riverside], familyFriendly[yes], near[Burger King]",
    "name[Cotto], eatType[coffee shop], food[Indian], priceRange[£20-25], " +
    "customer rating[average], area[city centre], near[Raja Indian Cuisine]",
  ];
  const refs = [
    "The Vaults pub near Café Adriatic has a 5 star rating.  Prices start at £30.",
    "The Eagle is a low rated coffee shop near Burger King and the riverside that is family " +
    "friendly and is less than £20 for Japanese food.",
    "Cotto is an Indian coffee shop in the city centre near Raja Indian Cuisine, with prices " +
    "from £20-25 and an average customer rating.",
  ];
  const r = slotErrorRate(refs, mrs);
  assert.deepEqual(r.checks, refs.map(() => ({ missing: [], hallucinated: [] })));
  assert.equal(r.slots, 5 + 8 + 7);
  // "Indian" inside the near value is not the food; a 1-star rating is the wrong rating.
  const cotto = SlotLexicon.fromMrs(mrs).check(
    "Cotto is a coffee shop in the city centre near Raja Indian Cuisine with prices from " +
      "£20-25. It has a 1-star rating.",
    mrs[2],
  );
  assert.deepEqual(cotto, {
    missing: [s("food", "Indian"), s("customer rating", "average")],
    hallucinated: [s("customer rating", "low")],
  });
  // Wordings of the E2E references: pounds in words ("British" is no English food), a softened
  // negation, a rating stated in a clause of its own.
  const cricketers = "name[The Cricketers], eatType[restaurant], food[Chinese], " +
    "priceRange[less than £20], customer rating[high], familyFriendly[no]";
  const lexicon = SlotLexicon.fromMrs([...mrs, cricketers, "name[Wildwood], food[English]"]);
  assert.deepEqual(
    lexicon.check(
      "The Cricketers restaurant serves Chinese food priced less than 20 British Pounds. The " +
        "customer rating is high, but it isn't very family friendly.",
      cricketers,
    ),
    { missing: [], hallucinated: [] },
  );
});

Deno.test("slotErrorRate: percent of the MRs' slots, missing and hallucinated apart", () => {
  const r = slotErrorRate(
    ["The Mill is a pub.", "Zizzi is a pub near the Park.", "Zizzi serves Thai food."],
    ["name[The Mill], eatType[pub]", "name[Zizzi], food[Thai]", "name[Zizzi], food[Thai]"],
  );
  // Slots 6; missing: Thai once; hallucinated: pub in the second (the Park is no known value).
  assert.equal(r.slots, 6);
  assert.equal(r.missingCount, 1);
  assert.equal(r.hallucinatedCount, 1);
  assert.equal(r.missing, 100 / 6);
  assert.equal(r.hallucinated, 100 / 6);
  assert.equal(r.slotError, 200 / 6);
  assert.throws(() => slotErrorRate(["a"], []), {
    name: "RangeError",
    message: "Cannot score slot errors: 1 outputs for 0 meaning representations",
  });
  assert.throws(() => slotErrorRate([], []), RangeError);
});

Deno.test("every reference of the data-to-text fixture realises its MR and nothing else", async () => {
  for (const split of ["train", "validation", "test"]) {
    const file = `fixtures/data-to-text/${split}.csv`;
    const rows = parseE2e(await Deno.readTextFile(file), { file });
    const groups = groupReferences(rows);
    const lexicon = SlotLexicon.fromMrs(groups.map((g) => g.mr));
    let slots = 0;
    for (const { mr, refs } of groups) {
      for (const ref of refs) {
        const c = lexicon.check(ref, mr);
        assert.deepEqual(c, { missing: [], hallucinated: [] }, `${file}: ${mr} -> ${ref}`);
      }
      slots += parseMr(mr).length * refs.length;
    }
    assert.ok(rows.length > 0 && slots >= 2 * rows.length, `${file}: ${slots} slots`);
  }
});

// Values of the real E2E data, with wordings written here; values in one inner list mean the
// same (a price band given as a word or in pounds).
const VALUES: Record<string, string[][]> = {
  name: [["The Eagle"], ["Zizzi"], ["The Rice Boat"], ["Blue Spice"], ["Loch Fyne"]],
  eatType: [["coffee shop"], ["pub"], ["restaurant"]],
  food: [["Fast food"], ["Italian"], ["Japanese"], ["Indian"], ["Chinese"], ["French"]],
  priceRange: [["cheap", "less than £20"], ["moderate", "£20-25"], ["high", "more than £30"]],
  "customer rating": [["low", "1 out of 5"], ["average", "3 out of 5"], ["high", "5 out of 5"]],
  area: [["city centre"], ["riverside"]],
  familyFriendly: [["yes"], ["no"]],
  near: [["Burger King"], ["Café Rouge"], ["Raja Indian Cuisine"], ["The Rice Boat"]],
};
const SLOTS = Object.keys(VALUES);

const WORDINGS: Record<string, Record<string, string[]>> = {
  priceRange: {
    cheap: ["cheap", "low-priced", "inexpensive"],
    "less than £20": ["less than £20", "priced under £20"],
    moderate: ["moderately priced", "with moderate prices"],
    "£20-25": ["£20-25", "priced £20-£25"],
    high: ["expensive", "high-priced"],
    "more than £30": ["more than £30", "over £30"],
  },
  "customer rating": {
    low: ["low rated", "with a low customer rating"],
    "1 out of 5": ["rated 1 out of 5", "with a 1-star rating"],
    average: ["with an average customer rating", "average rated"],
    "3 out of 5": ["rated 3 out of 5", "with 3 stars"],
    high: ["highly rated", "with a high customer rating"],
    "5 out of 5": ["rated 5 out of 5", "with five stars"],
  },
  familyFriendly: {
    yes: ["family friendly", "kid-friendly", "children are welcome"],
    no: ["not family-friendly", "adults only", "no kids"],
  },
  area: {
    "city centre": ["in the city centre", "in the centre of the city"],
    riverside: ["by the riverside", "on the river"],
  },
};

function wording(slot: string, value: string, variant: number): string {
  const own = WORDINGS[slot]?.[value];
  if (own) return own[variant % own.length];
  if (slot === "eatType") return `a ${value}`;
  if (slot === "food") return `with ${value} on the menu`;
  if (slot === "near") return variant % 2 ? `close to ${value}` : `near ${value}`;
  return value;
}

// An MR of the name and a random subset of the other slots, each with a variant of wording.
const mrCase = fc.record({
  picks: fc.array(fc.nat(), { minLength: SLOTS.length, maxLength: SLOTS.length }),
  present: fc.array(fc.boolean(), { minLength: SLOTS.length, maxLength: SLOTS.length }),
  variants: fc.array(fc.nat(5), { minLength: SLOTS.length, maxLength: SLOTS.length }),
  target: fc.nat(),
  other: fc.nat(),
}).map(({ picks, present, variants, target, other }) => {
  const slots: { slot: string; group: number; value: string; variant: number }[] = [];
  for (const [i, slot] of SLOTS.entries()) {
    if (i > 0 && !present[i]) continue;
    const group = picks[i] % VALUES[slot].length;
    const values = VALUES[slot][group];
    const value = values[picks[i] % values.length];
    if (slot === "near" && value === slots[0].value) continue;
    slots.push({ slot, group, value, variant: variants[i] });
  }
  return { slots, target: target % slots.length, other };
});

// Every known value: the lexicon a split holding all of them would give.
const ALL_VALUES = SlotLexicon.fromMrs(
  SLOTS.flatMap((slot) => VALUES[slot].flat().map((value) => [s(slot, value)])),
);

Deno.test("property: a reference realises its MR, and a slot's wording taken out is missing", () => {
  fc.assert(
    fc.property(mrCase, ({ slots, target, other }) => {
      const mr = slots.map((x) => s(x.slot, x.value));
      const parts = slots.map((x) => wording(x.slot, x.value, x.variant));
      const text = (p: string[]) => p.filter((w) => w !== "").join(", ") + ".";
      assert.deepEqual(ALL_VALUES.check(text(parts), mr), { missing: [], hallucinated: [] });

      const cut = parts.with(target, "");
      assert.deepEqual(ALL_VALUES.check(text(cut), mr), {
        missing: [mr[target]],
        hallucinated: [],
      });

      // Another value of the slot in its place: missing and hallucinated both.
      const t = slots[target];
      const groups = VALUES[t.slot].map((g, i) => ({ g, i })).filter(({ g, i }) =>
        i !== t.group && !slots.some((x) => g.includes(x.value))
      );
      if (groups.length === 0) return;
      const swap = groups[other % groups.length];
      const value = swap.g[other % swap.g.length];
      const c = ALL_VALUES.check(text(parts.with(target, wording(t.slot, value, t.variant))), mr);
      assert.deepEqual(c.missing, [mr[target]]);
      assert.equal(c.hallucinated.length, 1);
      // A value two slots share (The Rice Boat, a name and a place nearby) may be either.
      const [h] = c.hallucinated;
      assert.ok(swap.g.includes(h.value), JSON.stringify(h));
      assert.ok(h.slot === t.slot || VALUES[h.slot].flat().includes(h.value), JSON.stringify(h));
    }),
    { seed: freshSeed(), numRuns: 300 },
  );
});

const MODEL = "fixtures/tiny-gpt2-pretrained";

async function writeData(dir: string, header = "mr,ref"): Promise<void> {
  // Names and places the story-trained fixture tends to write, so the scored outputs (the first
  // three) realise some slots, miss others and state a name of the unscored fourth.
  const test = [
    ["name[Jonas], eatType[pub], area[Fairhaven]", "Jonas is a pub in Fairhaven."],
    ["name[Jonas], eatType[pub], area[Fairhaven]", "Jonas, a pub, is in Fairhaven."],
    ["name[Juniper], priceRange[cheap], near[the bus]", "Juniper is cheap, near the bus."],
    ["name[Saffron], familyFriendly[no], food[scarf]", "Saffron serves scarf, no kids."],
    ["name[Kate], area[riverside]", "Kate is by the riverside."],
  ];
  const csv = (rows: string[][]) =>
    `${header}\n` + rows.map(([mr, ref]) => `"${mr}","${ref}"`).join("\n") + "\n";
  await Deno.writeTextFile(`${dir}/train.csv`, csv(test.slice(0, 2)));
  await Deno.writeTextFile(`${dir}/test.csv`, csv(test));
}

function pipeline(dir: string, prompt: string, format = "e2e"): string {
  return `version: 1
name: slots
out: ${dir}/run
stages:
  - kind: load
    model: ${Deno.cwd()}/${MODEL}
  - kind: data
    format: ${format}
    train: train.csv
    test: test.csv
    prompt: "${prompt}"
    completion: " {{ ref }}"
    seq_len: 64
  - id: slots
    kind: evaluate
    split: test
    metrics: [bleu, slot_error]
    max_examples: 3
    max_new_tokens: 12
`;
}

Deno.test(
  "an evaluate stage with slot_error scores generations as the library does",
  GPU_TEST,
  async () => {
    await withTempDir("slot-run", async (dir) => {
      await writeData(dir);
      // The prompt states the MR in another form: the slots are read from the records' mr.
      const template = "Data: {{ mr | replace('[', ' = ') | replace(']', '') }}\\n";
      await Deno.writeTextFile(`${dir}/p.yaml`, pipeline(dir, template));
      const lines: string[] = [];
      const result = await runPipeline(`${dir}/p.yaml`, { say: (l) => lines.push(l) });
      const figures = JSON.parse(await Deno.readTextFile(`${dir}/run/summary.json`)).slots;

      // The same examples through the library; hallucinations among the whole split's values.
      const gpu = await testGpu();
      using model = await loadModel(gpu, MODEL);
      const tokenizer = await Tokenizer.load(MODEL);
      const groups = groupReferences(parseE2e(await Deno.readTextFile(`${dir}/test.csv`)));
      // The template engine drops a template's final newline, as Jinja does.
      const examples = groups.slice(0, 3).map((g) => ({
        prompt: `Data: ${g.mr.replaceAll("[", " = ").replaceAll("]", "")}`,
        refs: g.refs,
      }));
      const g = await evaluateGenerations(model, tokenizer, examples, { maxNewTokens: 12 });
      const lexicon = SlotLexicon.fromMrs(groups.map((x) => x.mr));
      const r = slotErrorRate(g.generations, groups.slice(0, 3).map((x) => x.mr), { lexicon });
      assert.equal(r.slots, 9);
      const near = (a: number, b: number) => Math.abs(a - b) < 1e-9;
      assert.ok(near(figures.slot_error, r.slotError), `${figures.slot_error} vs ${r.slotError}`);
      assert.ok(near(figures.slot_missing, r.missing));
      assert.ok(near(figures.slot_hallucinated, r.hallucinated));
      assert.ok(near(figures.bleu, g.bleu));
      assert.deepEqual(Object.keys(result.evaluations[0].figures), [
        "bleu",
        "slot_error",
        "slot_missing",
        "slot_hallucinated",
      ]);
      const text = lines.join("\n");
      assert.match(text, /stage\s+split\s+bleu\s+slot_error\s+slot_missing\s+slot_hallucinated\n/);
      assert.match(
        text,
        new RegExp(`slots \\(test\\): bleu [\\d.]+, slot_error ${r.slotError.toFixed(4)}`),
      );
      const report = await Deno.readTextFile(`${dir}/run/report.md`);
      assert.match(report, /\| slot_hallucinated \|/);
    });
  },
);

Deno.test(
  "slot_error on records without an mr and prompts without one fails at metrics in one line",
  GPU_TEST,
  async () => {
    await withTempDir("slot-none", async (dir) => {
      await writeData(dir, "facts,ref");
      await Deno.writeTextFile(`${dir}/p.yaml`, pipeline(dir, "Describe a place:\\n", "csv"));
      await assert.rejects(
        () => runPipeline(`${dir}/p.yaml`, { say: () => {} }),
        (e) =>
          e instanceof PipelineError &&
          e.message === `${dir}/p.yaml: stages[2].metrics: slot_error needs a meaning ` +
              `representation (slot[value], ...) for each example, and example 1's prompt ` +
              `"Describe a place:" holds none (line 17:14): give records an mr field (format: ` +
              `e2e) or render the mr into the prompt (prompt: "{{ mr }}\\n"), or drop slot_error`,
      );
    });
  },
);
