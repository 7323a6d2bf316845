import assert from "node:assert/strict";
import {
  DataError,
  groupReferences,
  parseCsv,
  parseE2e,
  parseJsonl,
  parseJsonlObjects,
  readRecords,
} from "../../data/readers.ts";

function throwsData(
  run: () => unknown,
  message: string,
  where: { line?: number; column?: number },
) {
  assert.throws(run, (e: unknown) => {
    assert.ok(e instanceof DataError, `expected a DataError, got ${e}`);
    assert.equal(e.message, message);
    assert.equal(e.line, where.line);
    assert.equal(e.column, where.column);
    return true;
  });
}

Deno.test("parseJsonl reads objects, skips blank lines, BOM and CRLF", () => {
  const text = '\ufeff{"a": 1, "b": "x"}\r\n\r\n  \n{"a": null, "b": true}\n';
  assert.deepEqual(parseJsonl(text), [{ a: 1, b: "x" }, { a: null, b: true }]);
});

Deno.test("parseJsonl names the file and line of a bad line", () => {
  const bad = '{"a": 1}\n\n{"a": 2\n';
  assert.throws(() => parseJsonl(bad, { file: "d.jsonl" }), (e: unknown) => {
    assert.ok(e instanceof DataError);
    assert.match(e.message, /^Invalid JSON in "d\.jsonl" line 3: /);
    assert.equal(e.line, 3);
    return true;
  });
  throwsData(
    () => parseJsonl('{"a": 1}\n[1, 2]\n', { file: "d.jsonl" }),
    'Invalid record in "d.jsonl" line 2: expected a JSON object, found an array',
    { line: 2 },
  );
  throwsData(
    () => parseJsonl('{"a": {"b": 1}}', { file: "d.jsonl" }),
    'Invalid record in "d.jsonl" line 1: field "a" is an object; expected a string, number, boolean or null',
    { line: 1 },
  );
});

Deno.test("parseJsonlObjects keeps nested values and line numbers; the flat reader still refuses them", () => {
  const text =
    '\uFEFF{"messages": [{"role": "user", "content": "Hi"}]}\r\n\n  \n{"n": {"a": null}}\n';
  assert.deepEqual(parseJsonlObjects(text, { file: "c.jsonl" }), [
    { line: 1, value: { messages: [{ role: "user", content: "Hi" }] } },
    { line: 4, value: { n: { a: null } } },
  ]);
  throwsData(
    () => parseJsonl(text, { file: "c.jsonl" }),
    'Invalid record in "c.jsonl" line 1: field "messages" is an array; expected a string, number, boolean or null',
    { line: 1 },
  );
  throwsData(
    () => parseJsonlObjects('{"a": 1}\n"text"\n', { file: "c.jsonl" }),
    'Invalid record in "c.jsonl" line 2: expected a JSON object, found a string',
    { line: 2 },
  );
});

Deno.test("a DataError's message is one line even when it quotes line breaks", () => {
  const e = new DataError('Invalid record in "d.jsonl" line 1: field "a\nb"', { file: "d.jsonl" });
  assert.equal(e.message, 'Invalid record in "d.jsonl" line 1: field "a\\nb"');
});

Deno.test("parseCsv handles quotes, escaped quotes, embedded commas and newlines, CRLF, BOM", () => {
  const text = '\ufeffmr,ref\r\n"name[A], food[B]","He said ""hi"",\r\nthen left"\r\nplain,x\r\n' +
    '"",last';
  assert.deepEqual(parseCsv(text), [
    { mr: "name[A], food[B]", ref: 'He said "hi",\r\nthen left' },
    { mr: "plain", ref: "x" },
    { mr: "", ref: "last" },
  ]);
});

Deno.test("parseCsv keeps empty fields and skips empty lines", () => {
  assert.deepEqual(parseCsv("a,b,c\n,,\n\nx,,z\n\n"), [
    { a: "", b: "", c: "" },
    { a: "x", b: "", c: "z" },
  ]);
});

Deno.test("parseCsv names the file, line and column of malformed rows", () => {
  throwsData(
    () => parseCsv('a,b\n1,2\n3,x"y\n', { file: "d.csv" }),
    'Invalid CSV in "d.csv" line 3 column 4: quote inside an unquoted field; quote the whole field and double the quote',
    { line: 3, column: 4 },
  );
  throwsData(
    () => parseCsv('a,b\n"multi\nline"z,2\n', { file: "d.csv" }),
    'Invalid CSV in "d.csv" line 3 column 6: "z" after a closing quote; expected a comma or the end of the line',
    { line: 3, column: 6 },
  );
  throwsData(
    () => parseCsv('a,b\n1,2\n3,"open\n\n', { file: "d.csv" }),
    'Invalid CSV in "d.csv" line 3 column 3: unterminated quoted field',
    { line: 3, column: 3 },
  );
  throwsData(
    () => parseCsv("a,b\n1,2\n3,4,5\n", { file: "d.csv" }),
    'Invalid CSV row in "d.csv" line 3 column 5: 3 fields where the header has 2',
    { line: 3, column: 5 },
  );
  throwsData(
    () => parseCsv('a,b\n"x\ny"\n', { file: "d.csv" }),
    'Invalid CSV row in "d.csv" line 2 column 1: 1 field (ends early) where the header has 2',
    { line: 2, column: 1 },
  );
  throwsData(
    () => parseCsv("a,a\n1,2\n", { file: "d.csv" }),
    'Invalid CSV header in "d.csv" line 1 column 3: column "a" appears twice',
    { line: 1, column: 3 },
  );
  throwsData(
    () => parseCsv("a,b\r1,2\n", { file: "d.csv" }),
    'Invalid CSV in "d.csv" line 1 column 4: carriage return without a line feed',
    { line: 1, column: 4 },
  );
  throwsData(() => parseCsv("", { file: "d.csv" }), 'Invalid CSV "d.csv": no header row', {});
});

Deno.test("parseE2e requires mr and ref; groupReferences keeps every reference of an mr", () => {
  const text = 'mr,ref\n"name[A], food[B]",A serves B.\nname[C],C.\n"name[A], food[B]",B at A.\n';
  const rows = parseE2e(text, { file: "e.csv" });
  assert.equal(rows.length, 3);
  assert.deepEqual(groupReferences(rows), [
    { mr: "name[A], food[B]", refs: ["A serves B.", "B at A."] },
    { mr: "name[C]", refs: ["C."] },
  ]);
  throwsData(
    () => parseE2e("meaning,ref\nx,y\n", { file: "e.csv" }),
    'Invalid E2E file "e.csv": no "mr" column (the header has "meaning", "ref")',
    { line: 1 },
  );
});

Deno.test("readRecords picks the format from the extension and names unreadable files", async () => {
  const rows = await readRecords("fixtures/data-to-text/validation.csv", { format: "e2e" });
  assert.ok(rows.length > 80);
  assert.deepEqual(Object.keys(rows[0]), ["mr", "ref"]);
  await assert.rejects(
    () => readRecords("fixtures/data-to-text/missing.jsonl"),
    (e: unknown) =>
      e instanceof DataError && e.message.startsWith(
        'Cannot read dataset "fixtures/data-to-text/missing.jsonl": ',
      ),
  );
  await assert.rejects(
    () => readRecords("fixtures/README.md"),
    /Cannot read dataset "fixtures\/README\.md": unknown format/,
  );
});

Deno.test("text files give one record per non-blank line", async () => {
  const { parseText, formatOf } = await import("../../data/readers.ts");
  assert.deepEqual(parseText('\uFEFFone line\r\n\n  \nanother, with "quotes"\n'), [
    { text: "one line" },
    { text: 'another, with "quotes"' },
  ]);
  assert.equal(formatOf("corpus.TXT"), "text");
});
