// Fuzzing `tokenizer.json` and `tokenizer_config.json`: mutated components, ids and bytes. Every
// case ends in a tokenizer that encodes and decodes a sample text, or in one line of
// TokenizerError naming the file.

import assert from "node:assert/strict";
import { join } from "node:path";
import fc from "fast-check";
import { Tokenizer, TokenizerError } from "../../models/tokenizer.ts";
import { withTempDir } from "../_util.ts";
import { applyEdits, assertRefusal, byteEdits, fuzz, nastyJson, refusedOrOk } from "./_fuzz.ts";

const FIXTURE = "fixtures/tiny-gpt2";
const TEXT = await Deno.readTextFile(join(FIXTURE, "tokenizer.json"));
const BASE = JSON.parse(TEXT);
const CONFIG = JSON.parse(await Deno.readTextFile(join(FIXTURE, "tokenizer_config.json")));
const SAMPLE = "The lamp is on the table.<|endoftext|> é 😀\n\t";

// Where a mutation lands: components, their types and fields, single vocabulary entries.
const PATHS: (string | number)[][] = [
  [],
  ["model"],
  ["model", "type"],
  ["model", "vocab"],
  ["model", "vocab", "!"],
  ["model", "vocab", "the"],
  ["model", "vocab", "<|endoftext|>"],
  ["model", "merges"],
  ["model", "merges", 0],
  ["model", "unk_token"],
  ["model", "dropout"],
  ["model", "byte_fallback"],
  ["model", "continuing_subword_prefix"],
  ["model", "end_of_word_suffix"],
  ["pre_tokenizer"],
  ["pre_tokenizer", "type"],
  ["pre_tokenizer", "use_regex"],
  ["decoder"],
  ["decoder", "type"],
  ["normalizer"],
  ["post_processor"],
  ["added_tokens"],
  ["added_tokens", 0],
  ["added_tokens", 0, "id"],
  ["added_tokens", 0, "content"],
  ["added_tokens", 1],
  ["truncation"],
  ["padding"],
];

const TYPES = [
  "BPE",
  "WordPiece",
  "WordLevel",
  "Unigram",
  "ByteLevel",
  "Metaspace",
  "Sequence",
  "Split",
  "Whitespace",
  "WhitespaceSplit",
  "BertPreTokenizer",
  "Punctuation",
  "Digits",
  "NFC",
  "NFKD",
  "Lowercase",
  "Replace",
  "Strip",
  "Prepend",
  "ByteFallback",
  "Fuse",
  "TemplateProcessing",
  "RobertaProcessing",
  "Nope",
];

const component = fc.oneof(
  fc.constantFrom(...TYPES),
  fc.record(
    {
      type: fc.constantFrom(...TYPES),
      pattern: fc.oneof(
        nastyJson,
        fc.record({ Regex: fc.constantFrom("(", "a+", "\\p{L}+", "[") }),
      ),
      content: nastyJson,
      vocab: fc.oneof(nastyJson, fc.dictionary(fc.string(), fc.integer(), { maxKeys: 3 })),
      merges: nastyJson,
      pretokenizers: fc.array(fc.record({ type: fc.constantFrom(...TYPES) }), { maxLength: 2 }),
      normalizers: fc.array(fc.record({ type: fc.constantFrom(...TYPES) }), { maxLength: 2 }),
      decoders: fc.array(fc.record({ type: fc.constantFrom(...TYPES) }), { maxLength: 2 }),
      single: nastyJson,
      special_tokens: nastyJson,
    },
    { requiredKeys: ["type"] },
  ),
);

type TokenizerEdit =
  | { op: "set"; path: (string | number)[]; value: unknown }
  | { op: "drop"; path: (string | number)[] }
  | { op: "config"; key: string; value: unknown };

const tokenizerEdits: fc.Arbitrary<TokenizerEdit[]> = fc.array(
  fc.oneof(
    {
      weight: 5,
      arbitrary: fc.record({
        op: fc.constant("set" as const),
        path: fc.constantFrom(...PATHS),
        value: fc.oneof(nastyJson, component, fc.constantFrom(-1, 299, 300, 2 ** 31, 2 ** 40)),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({ op: fc.constant("drop" as const), path: fc.constantFrom(...PATHS) }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        op: fc.constant("config" as const),
        key: fc.constantFrom("", "eos_token", "add_prefix_space", "tokenizer_class"),
        value: fc.oneof(nastyJson, fc.constantFrom("<|endoftext|>", "!", "missing")),
      }),
    },
  ),
  { minLength: 1, maxLength: 3 },
);

/** The two files after `edits`; an empty `config` key replaces the whole config. */
function edit(edits: TokenizerEdit[]): { json: unknown; config: unknown } {
  let json: unknown = structuredClone(BASE);
  let config: unknown = structuredClone(CONFIG);
  for (const e of edits) {
    if (e.op === "config") {
      if (e.key === "") config = e.value;
      else if (typeof config === "object" && config !== null) {
        (config as Record<string, unknown>)[e.key] = e.value;
      }
      continue;
    }
    if (e.path.length === 0) {
      if (e.op === "set") json = e.value;
      continue;
    }
    let parent: unknown = json;
    for (const key of e.path.slice(0, -1)) {
      parent = typeof parent === "object" && parent !== null
        ? (parent as Record<string, unknown>)[key]
        : undefined;
    }
    if (typeof parent !== "object" || parent === null) continue;
    const last = e.path[e.path.length - 1];
    if (e.op === "set") (parent as Record<string, unknown>)[last] = e.value;
    else delete (parent as Record<string, unknown>)[last];
  }
  return { json, config };
}

/** Loads the folder; a loaded tokenizer must encode and decode the sample. */
async function loadAndUse(dir: string): Promise<void> {
  const tok = await refusedOrOk(() => Tokenizer.load(dir), [TokenizerError], dir);
  if (tok === undefined) return;
  assert.ok(Number.isSafeInteger(tok.vocabSize) && tok.vocabSize > 0, `vocabSize ${tok.vocabSize}`);
  assert.ok(tok.eosId >= 0 && tok.eosId < tok.vocabSize, `eosId ${tok.eosId}`);
  // Components the library only runs on use may still fail then, in one line.
  const ids = await refusedOrOk(() => tok.encode(SAMPLE), [TokenizerError], tok.path);
  if (ids === undefined) return;
  for (const id of ids) assert.ok(Number.isInteger(id) && id >= 0 && id < tok.vocabSize);
  const text = await refusedOrOk(() => tok.decode(ids), [TokenizerError], tok.path);
  if (text !== undefined) assert.equal(typeof text, "string");
}

// Under ~6 s in all for this file on the 2-core CI machine.
const COMPONENTS = { runs: 1500, ms: 4_000 };
const BYTES = { runs: 1000, ms: 2_000 };

Deno.test("fuzz: Tokenizer.load on mutated tokenizer files ends in a tokenizer or one line", async () => {
  await withTempDir("fuzz-tok", async (dir) => {
    await fuzz("tokenizer.json components", tokenizerEdits, async (edits) => {
      const { json, config } = edit(edits);
      await Deno.writeTextFile(join(dir, "tokenizer.json"), JSON.stringify(json) ?? "");
      await Deno.writeTextFile(join(dir, "tokenizer_config.json"), JSON.stringify(config) ?? "");
      await loadAndUse(dir);
    }, COMPONENTS);
  });
});

Deno.test("fuzz: Tokenizer.load on mutated tokenizer.json bytes ends in a tokenizer or one line", async () => {
  await withTempDir("fuzz-tok", async (dir) => {
    const bytes = new TextEncoder().encode(TEXT);
    await Deno.writeTextFile(join(dir, "tokenizer_config.json"), JSON.stringify(CONFIG));
    await fuzz("tokenizer.json bytes", byteEdits, async (edits) => {
      await Deno.writeFile(join(dir, "tokenizer.json"), applyEdits(bytes, edits));
      await loadAndUse(dir);
    }, BYTES);
  });
});

// Cases the fuzzer found, kept as they were shrunk.
Deno.test("tokenizer files found by fuzzing are refused in one line", async () => {
  await withTempDir("fuzz-tok", async (dir) => {
    const path = join(dir, "tokenizer.json");
    const write = (json: unknown) => Deno.writeTextFile(path, JSON.stringify(json));
    const refused = async (message: RegExp) => {
      await assert.rejects(() => Tokenizer.load(dir), (e: Error) => {
        assertRefusal(e, [TokenizerError], path);
        assert.match(e.message, message);
        return true;
      });
    };

    // JSON.parse quotes the text around the error, line breaks included.
    await Deno.writeTextFile(path, "\u0000\n\u0000 " + TEXT);
    await refused(/not JSON \(Unexpected token '\\u0000', "\\u0000\\n\\u0000/);

    // A string id was taken as it was, and came back as the end-of-text id.
    const stringId = structuredClone(BASE);
    stringId.added_tokens[0].id = "BPE";
    await write(stringId);
    await refused(
      /added token "<\|endoftext\|>" has id "BPE", expected an integer from 0 to 16777215/,
    );

    // An id of 2^31 made the library lay out 2^31 slots, which listing the vocabulary walked.
    const hugeId = structuredClone(BASE);
    hugeId.model.vocab["!"] = 2 ** 31;
    await write(hugeId);
    const start = performance.now();
    await refused(/token "!" has id 2147483648/);
    assert.ok(performance.now() - start < 500);

    // A model of an unknown type loads (the end-of-text token is an added token) but gave
    // `undefined` ids.
    const noVocab = structuredClone(BASE);
    noVocab.model = { type: "TemplateProcessing", vocab: 1 };
    await write(noVocab);
    const tok = await Tokenizer.load(dir);
    assert.throws(() => tok.encode("The lamp"), (e: Error) => {
      assertRefusal(e, [TokenizerError], path);
      assert.match(e.message, /token 0 of the text has no id/);
      return true;
    });
    assert.deepEqual(tok.encode("<|endoftext|>"), [tok.eosId]);
  });
});
