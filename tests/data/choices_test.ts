import assert from "node:assert/strict";
import fc from "fast-check";
import {
  choiceLetter,
  parseChoiceItems,
  readChoiceItems,
  subjectOfFile,
} from "../../data/choices.ts";
import { DataError } from "../../data/readers.ts";
import { freshSeed, withTempDir } from "../_util.ts";

function throwsData(run: () => unknown, message: string, line?: number) {
  assert.throws(run, (e: unknown) => {
    assert.ok(e instanceof DataError, `expected a DataError, got ${e}`);
    assert.equal(e.message, message);
    assert.equal(e.line, line);
    assert.ok(!/[\n\r]/.test(e.message), "one line");
    return true;
  });
}

const jsonl = (rows: unknown[]) => rows.map((r) => JSON.stringify(r)).join("\n") + "\n";

Deno.test("cais/mmlu rows: the answer as an index, a letter or a choice's text", () => {
  const text = "\ufeff" + jsonl([
    { question: "2 + 2 =", choices: ["3", "4", "5", "22"], answer: 1, subject: "math" },
    { question: "Sky?", choices: ["red", "blue", "green"], answer: "C", subject: "science" },
  ]) + "\r\n  \n" +
    JSON.stringify({ question: "Pick B", choices: ["A", "B"], answer: "B", id: 7 }) + "\r\n" +
    JSON.stringify({ question: "Text", choices: ["x y", "z"], answer: "z" });
  const items = parseChoiceItems(text, { file: "data/physics_dev.jsonl" });
  assert.deepEqual(items, [
    {
      question: "2 + 2 =",
      choices: ["3", "4", "5", "22"],
      answer: 1,
      subject: "math",
      file: "data/physics_dev.jsonl",
      line: 1,
    },
    {
      question: "Sky?",
      choices: ["red", "blue", "green"],
      answer: 2,
      subject: "science",
      file: "data/physics_dev.jsonl",
      line: 2,
    },
    // No subject: the file's name without _dev; a letter that is also its own choice's text.
    {
      question: "Pick B",
      choices: ["A", "B"],
      answer: 1,
      subject: "physics",
      file: "data/physics_dev.jsonl",
      line: 5,
    },
    {
      question: "Text",
      choices: ["x y", "z"],
      answer: 1,
      subject: "physics",
      file: "data/physics_dev.jsonl",
      line: 6,
    },
  ]);
});

Deno.test("MMLU CSV rows: no header, quoted fields, the subject from the file name", () => {
  const text = '"What is 1,000 + 1?","1001","1,001 ""exactly""",10001,none,B\r\n' +
    "Three choices?,yes,no,maybe,A\n";
  const items = parseChoiceItems(text, { file: "mmlu/test/abstract_algebra_test.csv" });
  assert.deepEqual(
    items.map(({ question, choices, answer, subject, line }) => ({
      question,
      choices,
      answer,
      subject,
      line,
    })),
    [
      {
        question: "What is 1,000 + 1?",
        choices: ["1001", '1,001 "exactly"', "10001", "none"],
        answer: 1,
        subject: "abstract_algebra",
        line: 1,
      },
      {
        question: "Three choices?",
        choices: ["yes", "no", "maybe"],
        answer: 0,
        subject: "abstract_algebra",
        line: 2,
      },
    ],
  );
  assert.equal(subjectOfFile("x/high_school_physics_val.csv"), "high_school_physics");
  assert.equal(subjectOfFile("x/anatomy.jsonl"), "anatomy");
  assert.equal(subjectOfFile("_test.csv"), "_test");
  assert.equal(choiceLetter(0), "A");
  assert.equal(choiceLetter(25), "Z");
  assert.throws(() => choiceLetter(26), RangeError);
});

Deno.test("a folder is read as its item files in name order; other files are skipped", async () => {
  await withTempDir("choices", async (dir) => {
    await Deno.writeTextFile(`${dir}/b_test.csv`, "Q1,x,y,A\n");
    await Deno.writeTextFile(
      `${dir}/a.jsonl`,
      jsonl([{ question: "Q0", choices: ["p", "q"], answer: 1 }]),
    );
    await Deno.writeTextFile(`${dir}/README.md`, "not items\n");
    const items = await readChoiceItems(dir);
    assert.deepEqual(items.map((i) => [i.question, i.subject, i.answer]), [
      ["Q0", "a", 1],
      ["Q1", "b", 0],
    ]);
    assert.deepEqual((await readChoiceItems(`${dir}/b_test.csv`)).map((i) => i.file), [
      `${dir}/b_test.csv`,
    ]);
    await Deno.mkdir(`${dir}/empty`);
    await assert.rejects(
      () => readChoiceItems(`${dir}/empty`),
      (e) =>
        e instanceof DataError &&
        e.message ===
          `Cannot read multiple-choice items "${dir}/empty": the folder has no .jsonl, .ndjson or .csv file`,
    );
    await assert.rejects(
      () => readChoiceItems(`${dir}/README.md`),
      (e) => e instanceof DataError && /README\.md": unknown layout; use a \.jsonl/.test(e.message),
    );
    await assert.rejects(
      () => readChoiceItems(`${dir}/missing.jsonl`),
      (e) =>
        e instanceof DataError &&
        /^Cannot read multiple-choice items ".*missing\.jsonl": /.test(e.message),
    );
  });
});

Deno.test("every malformed item is one line naming the file and line", () => {
  const f = "mc.jsonl";
  const at = (line: number, why: string) =>
    `Invalid multiple-choice item in "mc.jsonl" line ${line}: ${why}`;
  const good = { question: "q", choices: ["a", "b", "c"], answer: 0 };
  const one = (row: unknown) => () => parseChoiceItems(jsonl([good, row]), { file: f });
  // Lines that are not JSON objects: the JSON Lines reader's own messages.
  throwsData(
    one([1, 2]),
    'Invalid record in "mc.jsonl" line 2: expected a JSON object, found an array',
    2,
  );
  throwsData(
    () => parseChoiceItems('{"question": "q",\n', { file: f }),
    'Invalid JSON in "mc.jsonl" line 1: ' + jsonError('{"question": "q",'),
    1,
  );
  throwsData(one({ choices: ["a", "b"], answer: 0 }), at(2, 'no "question"'), 2);
  throwsData(one({ ...good, question: 3 }), at(2, '"question" is a number; expected a string'), 2);
  throwsData(one({ ...good, question: null }), at(2, '"question" is null; expected a string'), 2);
  throwsData(one({ question: "q", answer: 0 }), at(2, 'no "choices"'), 2);
  throwsData(
    one({ ...good, choices: "a,b" }),
    at(2, '"choices" is a string; expected a list of strings'),
    2,
  );
  throwsData(one({ ...good, choices: ["a"] }), at(2, "1 choice; expected 2 to 26"), 2);
  throwsData(one({ ...good, choices: [] }), at(2, "0 choices; expected 2 to 26"), 2);
  throwsData(
    one({ ...good, choices: Array.from({ length: 27 }, (_, i) => `c${i}`) }),
    at(2, "27 choices; expected at most 26 (one a letter, A to Z)"),
    2,
  );
  throwsData(
    one({ ...good, choices: ["a", 5, "c"] }),
    at(2, "choice 1 is a number 5; expected a string"),
    2,
  );
  throwsData(
    one({ ...good, choices: ["a", "b", "a\nb", "b"] }),
    at(2, 'choices B and D are both "b"; every choice must differ'),
    2,
  );
  throwsData(one({ question: "q", choices: ["a", "b"] }), at(2, 'no "answer"'), 2);
  const allowed = "expected an index 0 to 2, a letter A to C or the text of a choice";
  throwsData(
    one({ ...good, answer: 3 }),
    at(2, `answer 3 is not one of its 3 choices; ${allowed}`),
    2,
  );
  throwsData(
    one({ ...good, answer: -1 }),
    at(2, `answer -1 is not one of its 3 choices; ${allowed}`),
    2,
  );
  throwsData(
    one({ ...good, answer: 1.5 }),
    at(2, `answer 1.5 is not one of its 3 choices; ${allowed}`),
    2,
  );
  throwsData(
    one({ ...good, answer: "D" }),
    at(2, `answer "D" is not one of its 3 choices; ${allowed}`),
    2,
  );
  throwsData(
    one({ ...good, answer: "1" }),
    at(2, `answer "1" is not one of its 3 choices; ${allowed}`),
    2,
  );
  throwsData(
    one({ ...good, answer: "A " }),
    at(2, `answer "A " is not one of its 3 choices; ${allowed}`),
    2,
  );
  throwsData(one({ ...good, answer: null }), at(2, `answer is null; ${allowed}`), 2);
  throwsData(one({ ...good, answer: [0] }), at(2, `answer is a list; ${allowed}`), 2);
  throwsData(
    one({ question: "q", choices: ["B", "A"], answer: "A" }),
    at(
      2,
      'answer "A" is ambiguous: it is the letter of choice A and the text of choice B; give the index instead',
    ),
    2,
  );
  throwsData(
    one({ ...good, subject: 7 }),
    at(
      2,
      '"subject" is a number; expected a non-empty string (or leave it out: the file\'s name is the subject)',
    ),
    2,
  );
  throwsData(
    one({ ...good, subject: "" }),
    at(
      2,
      '"subject" is empty; expected a non-empty string (or leave it out: the file\'s name is the subject)',
    ),
    2,
  );
  // A control character of the file is escaped: the message stays one line.
  throwsData(
    one({ ...good, answer: "x\ny" }),
    at(2, `answer "x\\ny" is not one of its 3 choices; ${allowed}`),
    2,
  );
  // CSV: the answer is a letter or a choice's text.
  const csv = "t_test.csv";
  const atCsv = (line: number, why: string) =>
    `Invalid multiple-choice item in "t_test.csv" line ${line}: ${why}`;
  throwsData(
    () => parseChoiceItems("q,a,b,c,d,A\nq2,a,b,c,d,E\n", { file: csv }),
    atCsv(
      2,
      'answer "E" is not one of its 4 choices; expected a letter A to D or the text of a choice',
    ),
    2,
  );
  throwsData(
    () => parseChoiceItems("q,a,b,c,d,A\n\nq2,a,A\n", { file: csv }),
    atCsv(3, "1 choice; expected 2 to 26"),
    3,
  );
  throwsData(
    () => parseChoiceItems("q,a,b,A\nJust a question?\n", { file: csv }),
    atCsv(
      2,
      "1 field; an MMLU CSV row is the question, 2 to 26 choices and the answer letter (no header)",
    ),
    2,
  );
  throwsData(
    () => parseChoiceItems("q,A\n", { file: csv }),
    atCsv(1, "0 choices; expected 2 to 26"),
    1,
  );
  throwsData(
    () => parseChoiceItems("q,a,a,A\n", { file: csv }),
    atCsv(1, 'choices A and B are both "a"; every choice must differ'),
    1,
  );
  throwsData(
    () => parseChoiceItems("q,a,b\n", { file: "items.txt" }),
    'Cannot read multiple-choice items from "items.txt": unknown layout; use a .jsonl file (cais/mmlu rows) or an MMLU .csv file',
  );
});

function jsonError(text: string): string {
  try {
    JSON.parse(text);
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error("valid JSON");
}

// Random items, written in either layout with the answer in any of its forms, read back the same.
Deno.test("random items written as JSON Lines or MMLU CSV read back as written", () => {
  const word = fc.string({
    unit: fc.constantFrom("a", "b", "x", " ", ",", '"', "é", "\n"),
    minLength: 1,
    maxLength: 6,
  });
  const item = fc.record({
    question: fc.string({ maxLength: 20 }),
    choices: fc.uniqueArray(word, { minLength: 2, maxLength: 26 }),
    form: fc.constantFrom("index", "letter", "text"),
    pick: fc.nat(),
    subject: fc.option(fc.constantFrom("math", "high_school_physics"), { nil: undefined }),
  }).filter(({ choices, form, pick }) => {
    // A letter answer that is also another choice's text is refused as ambiguous (tested above).
    const answer = pick % choices.length;
    const text = choices[answer];
    return form !== "text" || !/^[A-Z]$/.test(text) || text.charCodeAt(0) - 65 === answer ||
      text.charCodeAt(0) - 65 >= choices.length;
  });
  fc.assert(
    fc.property(fc.array(item, { minLength: 1, maxLength: 5 }), fc.boolean(), (items, csv) => {
      const answerOf = (it: (typeof items)[number]) => {
        const a = it.pick % it.choices.length;
        return it.form === "index"
          ? a
          : it.form === "letter"
          ? String.fromCharCode(65 + a)
          : it.choices[a];
      };
      const file = csv ? "dir/chem_val.csv" : "dir/chem_val.jsonl";
      const quote = (s: string) => `"${s.replaceAll('"', '""')}"`;
      const text = csv
        ? items.map((it) =>
          [
            it.question,
            ...it.choices,
            it.form === "index"
              ? "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[it.pick % it.choices.length]
              : answerOf(it) as string,
          ]
            .map(quote).join(",")
        ).join("\r\n")
        : items.map((it) =>
          JSON.stringify({
            subject: it.subject,
            question: it.question,
            choices: it.choices,
            answer: answerOf(it),
          })
        ).join("\n");
      const got = parseChoiceItems(text, { file });
      assert.deepEqual(
        got.map((g) => [g.question, g.choices, g.answer, g.subject]),
        items.map((it) => [
          it.question,
          it.choices,
          it.pick % it.choices.length,
          csv ? "chem" : it.subject ?? "chem",
        ]),
      );
      if (!csv) assert.deepEqual(got.map((g) => g.line), items.map((_, i) => i + 1));
    }),
    { seed: freshSeed(), numRuns: 200 },
  );
});
