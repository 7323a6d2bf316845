import assert from "node:assert/strict";
import fc from "fast-check";
import type { ChoiceItem } from "../../data/choices.ts";
import {
  choiceAccuracy,
  choicePrompt,
  evaluateMultipleChoice,
  formatChoiceItem,
  MultipleChoiceError,
} from "../../eval/multiple_choice.ts";
import type { Model } from "../../models/model.ts";
import { loadModel } from "../../models/registry.ts";
import { Tokenizer } from "../../models/tokenizer.ts";
import { freshSeed, GPU_TEST, rng, testGpu, withTempDir } from "../_util.ts";

function item(
  question: string,
  choices: string[],
  answer: number,
  subject = "high_school_physics",
): ChoiceItem {
  return { question, choices, answer, subject, file: "t.jsonl", line: 1 };
}

const JOULE = item(
  "What is a joule?",
  ["a unit of energy", "a unit of force", "a unit of mass"],
  0,
);
const SHOT_1 = item(
  "Which is a vector?",
  ["mass", "speed", "velocity", "energy", "time"],
  2,
);
const SHOT_2 = item("g is about", ["9.8 m/s^2", "1 m/s^2", "98 m/s^2"], 0);

Deno.test("an MMLU prompt with 0 shots: header with the subject's spaces, lettered choices", () => {
  assert.equal(
    choicePrompt(JOULE),
    "The following are multiple choice questions (with answers) about high school physics.\n\n" +
      "What is a joule?\nA. a unit of energy\nB. a unit of force\nC. a unit of mass\nAnswer:",
  );
  assert.equal(choicePrompt(JOULE, []), choicePrompt(JOULE));
});

Deno.test("an MMLU prompt with 1 shot of 5 choices ends the shot with its letter", () => {
  assert.equal(
    choicePrompt(JOULE, [SHOT_1]),
    "The following are multiple choice questions (with answers) about high school physics.\n\n" +
      "Which is a vector?\nA. mass\nB. speed\nC. velocity\nD. energy\nE. time\nAnswer: C\n\n" +
      "What is a joule?\nA. a unit of energy\nB. a unit of force\nC. a unit of mass\nAnswer:",
  );
});

Deno.test("an MMLU prompt with 2 shots keeps their order; the item's subject names the header", () => {
  const five = item("Pick one", ["v", "w", "x", "y", "z"], 4, "college_computer_science");
  assert.equal(
    choicePrompt(five, [SHOT_2, SHOT_1]),
    "The following are multiple choice questions (with answers) about college computer science." +
      "\n\n" +
      "g is about\nA. 9.8 m/s^2\nB. 1 m/s^2\nC. 98 m/s^2\nAnswer: A\n\n" +
      "Which is a vector?\nA. mass\nB. speed\nC. velocity\nD. energy\nE. time\nAnswer: C\n\n" +
      "Pick one\nA. v\nB. w\nC. x\nD. y\nE. z\nAnswer:",
  );
  assert.equal(
    formatChoiceItem(SHOT_2, { answer: true }),
    "g is about\nA. 9.8 m/s^2\nB. 1 m/s^2\nC. 98 m/s^2\nAnswer: A\n\n",
  );
});

Deno.test("accuracy is counted per item, per subject and as the mean over subjects", () => {
  const r = choiceAccuracy([
    { subject: "b", answer: 3, prediction: 3 },
    { subject: "a", answer: 0, prediction: 0 },
    { subject: "a", answer: 1, prediction: 1 },
    { subject: "a", answer: 2, prediction: 0 },
    { subject: "c", answer: 1, prediction: 0 },
  ]);
  assert.equal(r.accuracy, 60);
  assert.equal(r.correct, 3);
  assert.equal(r.n, 5);
  assert.deepEqual(r.subjects, [
    { subject: "a", accuracy: 200 / 3, correct: 2, n: 3 },
    { subject: "b", accuracy: 100, correct: 1, n: 1 },
    { subject: "c", accuracy: 0, correct: 0, n: 1 },
  ]);
  assert.ok(Math.abs(r.macroAccuracy - (200 / 3 + 100 + 0) / 3) < 1e-12);
  assert.deepEqual(choiceAccuracy([]), {
    accuracy: 0,
    macroAccuracy: 0,
    correct: 0,
    n: 0,
    subjects: [],
  });
  // Random predictions against a count kept per subject here.
  fc.assert(
    fc.property(
      fc.array(
        fc.record({
          subject: fc.constantFrom("x", "y_z", "w"),
          answer: fc.nat(3),
          prediction: fc.nat(3),
        }),
        { minLength: 1, maxLength: 40 },
      ),
      (rows) => {
        const got = choiceAccuracy(rows);
        const names = [...new Set(rows.map((r) => r.subject))].sort();
        const per = names.map((s) => {
          const mine = rows.filter((r) => r.subject === s);
          const right = mine.filter((r) => r.answer === r.prediction).length;
          return {
            subject: s,
            accuracy: (100 * right) / mine.length,
            correct: right,
            n: mine.length,
          };
        });
        assert.deepEqual(got.subjects, per);
        const right = rows.filter((r) => r.answer === r.prediction).length;
        assert.ok(Math.abs(got.accuracy - (100 * right) / rows.length) < 1e-9);
        const macro = per.reduce((s, p) => s + p.accuracy, 0) / per.length;
        assert.ok(Math.abs(got.macroAccuracy - macro) < 1e-9);
      },
    ),
    { seed: freshSeed(), numRuns: 200 },
  );
});

// ---------------------------------------------------------------------------------------------
// Scoring against logits read back in full and a float64 log-softmax.

const WORDS = [
  "the",
  "cat",
  "sat",
  "on",
  "a",
  "mat",
  "red",
  "blue",
  "Tom",
  "went",
  "to",
  "school",
  "and",
  "has",
  "green",
  "lamp",
];

function sentence(next: () => number, words: number): string {
  return Array.from({ length: words }, () => WORDS[Math.floor(next() * WORDS.length)]).join(" ");
}

/** Random items and dev items: odd choice counts, two subjects, a long first dev item. */
function randomSet(next: () => number, items: number) {
  const subjects = ["alpha_beta", "gamma"];
  const make = (subject: string, words: number, line: number): ChoiceItem => {
    const n = [3, 5, 7][Math.floor(next() * 3)];
    const choices = new Set<string>();
    while (choices.size < n) choices.add(sentence(next, 1 + Math.floor(next() * 2)));
    return {
      question: `${sentence(next, words)}?`,
      choices: [...choices],
      answer: Math.floor(next() * n),
      subject,
      file: "random.jsonl",
      line,
    };
  };
  const dev = subjects.flatMap((s, i) => [make(s, 40, 2 * i + 1), make(s, 4, 2 * i + 2)]);
  const test = Array.from(
    { length: items },
    (_, i) => make(subjects[i % 2], 3 + Math.floor(next() * 6), i + 1),
  );
  return { dev, test };
}

// The prompt written out here, not through choicePrompt.
function writtenPrompt(it: ChoiceItem, shots: readonly ChoiceItem[]): string {
  const block = (x: ChoiceItem) =>
    [x.question, ...x.choices.map((c, j) => `${"ABCDEFG"[j]}. ${c}`), "Answer:"].join("\n");
  let text = `The following are multiple choice questions (with answers) about ${
    it.subject.split("_").join(" ")
  }.\n\n`;
  for (const s of shots) text += `${block(s)} ${"ABCDEFG"[s.answer]}\n\n`;
  return text + block(it);
}

// Each letter's continuation log-likelihood: one forward per choice (B = 1, its own length),
// logits read back in full, float64 log-softmax.
async function reference(model: Model, tok: Tokenizer, prompt: string, n: number) {
  const p = tok.encodePrompt(prompt);
  const out: number[] = [];
  let longest = 0;
  for (let j = 0; j < n; j++) {
    const ids = tok.encodePrompt(`${prompt} ${"ABCDEFG"[j]}`);
    longest = Math.max(longest, ids.length - 1);
    if (ids.length - 1 > model.maxPositions) return { fits: false, lls: [], longest };
    let from = 0;
    while (ids[from] === p[from]) from++;
    const T = ids.length - 1;
    const acts = model.forward({ B: 1, T, tokens: Uint32Array.from(ids.slice(0, -1)) });
    const logits = (await acts.logits.read()) as Float32Array;
    const V = model.outputs;
    let ll = 0;
    for (let t = from - 1; t < T; t++) {
      const row = logits.subarray(t * acts.logitsStride, t * acts.logitsStride + V);
      let max = -Infinity;
      for (const x of row) max = Math.max(max, x);
      let sum = 0;
      for (const x of row) sum += Math.exp(x - max);
      ll += row[ids[t + 1]] - max - Math.log(sum);
    }
    out.push(ll);
  }
  return { fits: true, lls: out, longest };
}

async function checkAgainstReference(
  model: Model,
  tok: Tokenizer,
  label: string,
): Promise<{ lost: number; multiToken: boolean }> {
  const seed = freshSeed();
  const next = rng(seed);
  const { dev, test } = randomSet(next, 4);
  const shots = 2;
  const r = await evaluateMultipleChoice(model, test, { tokenizer: tok, dev, shots });
  const tag = `${label}, seed ${seed}`;
  assert.equal(r.n, test.length, tag);
  assert.equal(r.shotsAsked, shots);
  let multiToken = false;
  for (const [i, s] of r.scores.entries()) {
    const it = test[i];
    assert.equal(s.item, it);
    const own = dev.filter((d) => d.subject === it.subject).slice(0, shots);
    // The fewest shots dropped from the front: one more would not fit.
    const prompt = writtenPrompt(it, own.slice(shots - s.shots));
    if (s.shots < shots) {
      const more = await reference(
        model,
        tok,
        writtenPrompt(it, own.slice(shots - s.shots - 1)),
        it.choices.length,
      );
      assert.ok(
        !more.fits,
        `${tag}: item ${i} dropped shots although ${more.longest} positions fit`,
      );
    }
    const ref = await reference(model, tok, prompt, it.choices.length);
    assert.ok(ref.fits, `${tag}: item ${i} kept ${s.shots} shots that do not fit`);
    assert.equal(s.logLikelihoods.length, it.choices.length);
    s.logLikelihoods.forEach((ll, j) => {
      assert.ok(
        Math.abs(ll - ref.lls[j]) < 1e-4,
        `${tag}: item ${i} choice ${j}: ${ll} vs ${ref.lls[j]}`,
      );
    });
    const sorted = [...ref.lls].sort((a, b) => b - a);
    if (sorted[0] - sorted[1] > 1e-4) {
      assert.equal(s.prediction, ref.lls.indexOf(sorted[0]), `${tag}: item ${i} prediction`);
    } else {
      assert.ok(ref.lls[s.prediction] >= sorted[0] - 1e-4, `${tag}: item ${i} near-tie prediction`);
    }
    const p = tok.encodePrompt(prompt);
    multiToken ||= tok.encodePrompt(`${prompt} A`).length - p.length > 1;
  }
  const expected = choiceAccuracy(
    r.scores.map((s) => ({
      subject: s.item.subject,
      answer: s.item.answer,
      prediction: s.prediction,
    })),
  );
  assert.equal(r.accuracy, expected.accuracy);
  assert.equal(r.macroAccuracy, expected.macroAccuracy);
  assert.equal(r.lostShots, r.scores.filter((s) => s.shots < shots).length);
  return { lost: r.lostShots, multiToken };
}

Deno.test(
  "GPT-2: each letter's log-likelihood and the prediction match a float64 log-softmax of the logits",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const folder = "fixtures/tiny-gpt2-pretrained";
    using model = await loadModel(gpu, folder);
    const tok = await Tokenizer.load(folder);
    assert.equal(tok.addBos, false);
    const { lost } = await checkAgainstReference(model, tok, "gpt2");
    // The long first dev item never fits beside the header and an item in 128 positions.
    assert.ok(lost > 0, "some items lost a shot");
  },
);

Deno.test(
  "Llama with a beginning-of-text token: a two-token continuation scored as the reference",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    using model = await loadModel(gpu, "fixtures/tiny-llama");
    await withTempDir("mc-tok", async (dir) => {
      await Deno.copyFile("fixtures/tiny-gpt2/tokenizer.json", `${dir}/tokenizer.json`);
      await Deno.writeTextFile(
        `${dir}/tokenizer_config.json`,
        JSON.stringify({
          bos_token: "<|endoftext|>",
          eos_token: "<|endoftext|>",
          add_bos_token: true,
        }),
      );
      const tok = await Tokenizer.load(dir);
      assert.equal(tok.encodePrompt("x")[0], tok.bosId);
      const { multiToken } = await checkAgainstReference(model, tok, "llama");
      // Byte-level BPE of 300 tokens writes " A" as a space and a letter.
      assert.ok(multiToken);
    });
  },
);

Deno.test(
  "choices whose texts differ before their last token are scored one row a choice, as the reference",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    using model = await loadModel(gpu, "fixtures/tiny-llama");
    await withTempDir("mc-tok", async (dir) => {
      // The last merge becomes "Ġ A": " A" is one token, " B" two, so the rows differ in length.
      const json = JSON.parse(await Deno.readTextFile("fixtures/tiny-gpt2/tokenizer.json"));
      const merges: string[] = json.model.merges;
      const [left, right] = merges.at(-1)!.split(" ");
      const id = json.model.vocab[left + right];
      delete json.model.vocab[left + right];
      json.model.vocab["\u0120A"] = id;
      merges[merges.length - 1] = "\u0120 A";
      await Deno.writeTextFile(`${dir}/tokenizer.json`, JSON.stringify(json));
      const tok = await Tokenizer.load(dir);
      assert.equal(tok.encode(" A").length, 1);
      assert.equal(tok.encode(" B").length, 2);
      await checkAgainstReference(model, tok, "per-choice rows");
    });
  },
);

Deno.test(
  "too few dev items for the shots, an item longer than the model, or a classifier: one line each",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    using model = await loadModel(gpu, "fixtures/tiny-gpt2");
    const tokenizer = await Tokenizer.load("fixtures/tiny-gpt2");
    const a = { ...JOULE, subject: "a", file: "test.jsonl", line: 4 };
    const b = { ...SHOT_2, subject: "b" };
    const dev = [{ ...SHOT_1, subject: "a" }, { ...SHOT_2, subject: "a" }, { ...b }];
    const refused = (reason: string, message: string) => (e: unknown) => {
      assert.ok(e instanceof MultipleChoiceError, String(e));
      assert.equal(e.reason, reason);
      assert.equal(e.message, message);
      return true;
    };
    await assert.rejects(
      () => evaluateMultipleChoice(model, [a, b], { tokenizer, dev, shots: 2 }),
      refused(
        "shots",
        'Cannot take 2 shots for subject "b": the dev items hold 1 of it; lower shots to 1',
      ),
    );
    await assert.rejects(
      () =>
        evaluateMultipleChoice(model, [a, { ...b, subject: "c" }, { ...b, subject: "d" }], {
          tokenizer,
          dev,
          shots: 1,
        }),
      refused(
        "shots",
        'Cannot take 1 shot for subject "c": the dev items hold none of it (and 1 more subject falls short); give every subject dev items, or set shots to 0',
      ),
    );
    // The fixture reads 64 positions: MMLU's header alone takes most of them.
    const n = tokenizer.encode(`${choicePrompt(a)} A`).length - 1;
    await assert.rejects(
      () => evaluateMultipleChoice(model, [a], { tokenizer }),
      refused(
        "length",
        `Item "test.jsonl" line 4 (subject "a") does not fit the model: with no shots its prompt and answer take ${n} positions, the model has 64`,
      ),
    );
    await assert.rejects(
      () => evaluateMultipleChoice(model, [a], { tokenizer, shots: 1 }),
      /Cannot take 1 shot without dev items/,
    );
    const classifier = { ...model, task: "classification", modelType: "vit" } as unknown as Model;
    await assert.rejects(
      () => evaluateMultipleChoice(classifier, [a], { tokenizer }),
      (e) => e instanceof TypeError && /a vit model: it classifies/.test(e.message),
    );
  },
);
