// The fixture tokenizer against the encodings of the reference BPE in fixtures/make_tiny_gpt2.py
// (it prints them), plus round trips and the end-of-text token.

import assert from "node:assert/strict";
import { Tokenizer, TokenizerError } from "../../models/tokenizer.ts";

const FIXTURE = "fixtures/tiny-gpt2";

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  await Deno.mkdir("out/tmp", { recursive: true });
  const dir = await Deno.makeTempDir({ dir: "out/tmp", prefix: "tokenizer-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("Tokenizer matches the fixture's reference BPE encodings", async () => {
  const tok = await Tokenizer.load(FIXTURE);
  const known: Array<[string, number[]]> = [
    ["The lamp is on the table.", [51, 257, 262, 289, 277, 220, 272, 258, 256, 64, 65, 271, 13]],
    ["the model learns", [83, 257, 287, 291, 262, 68, 64, 81, 77, 82]],
    [
      "Hello, world!  It's 2024.\n",
      [
        39,
        279,
        75,
        78,
        11,
        265,
        273,
        75,
        67,
        0,
        220,
        220,
        40,
        83,
        6,
        82,
        220,
        17,
        15,
        17,
        19,
        13,
        198,
      ],
    ],
    ["end<|endoftext|>start", [68, 261, 299, 82, 83, 64, 81, 83]],
  ];
  for (const [text, ids] of known) assert.deepEqual(tok.encode(text), ids, text);
});

Deno.test("Tokenizer knows the fixture's vocabulary and its end-of-text id", async () => {
  const tok = await Tokenizer.load(`${FIXTURE}/tokenizer.json`);
  assert.equal(tok.vocabSize, 300);
  assert.equal(tok.eosId, 299);
  assert.equal(tok.tokenToId("<|endoftext|>"), 299);
  // Byte tokens come first in GPT-2's bytes_to_unicode order: "!" is byte 33 and id 0.
  assert.equal(tok.tokenToId("!"), 0);
  assert.equal(tok.tokenToId("Ġ"), 220);
  assert.equal(tok.tokenToId("Ġt"), 256); // the first merge learned
  assert.equal(tok.tokenToId("not a token"), undefined);
});

Deno.test("Tokenizer treats <|endoftext|> as one special token and decodes it back", async () => {
  const tok = await Tokenizer.load(FIXTURE);
  const ids = tok.encode("a<|endoftext|>b<|endoftext|>");
  assert.deepEqual(ids.filter((id) => id === tok.eosId).length, 2);
  assert.equal(ids.at(-1), tok.eosId);
  assert.equal(tok.decode(ids), "a<|endoftext|>b<|endoftext|>");
  assert.equal(tok.decode([tok.eosId]), "<|endoftext|>");
  // Broken up, the marker is ordinary text and never the special id.
  assert.ok(!tok.encode("<|endof text|>").includes(tok.eosId));
});

Deno.test("Tokenizer round-trips text exactly, spaces, punctuation and non-ASCII included", async () => {
  const tok = await Tokenizer.load(FIXTURE);
  const texts = [
    "",
    " ",
    "The lamp is on the table.",
    "a , b . c ' d n't  -- spaces   before punctuation ?",
    "\ttabs\nand\r\nnewlines\n\n",
    "héllo 日本 🙂 – ∑",
    "12345 6.7e-8",
  ];
  for (const text of texts) {
    const ids = tok.encode(text);
    assert.ok(ids.every((id) => Number.isInteger(id) && id >= 0 && id < tok.vocabSize), text);
    assert.equal(tok.decode(ids), text);
  }
  // Every byte is reachable: 256 byte tokens cover any UTF-8.
  assert.equal(tok.encode("日").length, 3);
});

Deno.test("Tokenizer.decode rejects ids outside the vocabulary", async () => {
  const tok = await Tokenizer.load(FIXTURE);
  assert.throws(() => tok.decode([1, 300]), {
    name: "RangeError",
    message:
      `Cannot decode token id 300: the tokenizer "${FIXTURE}/tokenizer.json" has ids 0 to 299`,
  });
  assert.throws(() => tok.decode([-1]), RangeError);
  assert.throws(() => tok.decode([1.5]), RangeError);
});

Deno.test("Tokenizer.load names the file it cannot use", async () => {
  await withTempDir(async (dir) => {
    await assert.rejects(Tokenizer.load(dir), (e) => {
      assert.ok(e instanceof TokenizerError);
      assert.match(e.message, new RegExp(`^Cannot read tokenizer file "${dir}/tokenizer.json": `));
      return true;
    });
    await Deno.writeTextFile(`${dir}/tokenizer.json`, "{not json");
    await assert.rejects(Tokenizer.load(dir), {
      name: "TokenizerError",
      message: new RegExp(`^Invalid tokenizer file "${dir}/tokenizer.json": not JSON`),
    });
    const json = JSON.parse(await Deno.readTextFile(`${FIXTURE}/tokenizer.json`));
    json.added_tokens = [];
    delete json.model.vocab["<|endoftext|>"];
    await Deno.writeTextFile(`${dir}/tokenizer.json`, JSON.stringify(json));
    await assert.rejects(Tokenizer.load(dir), {
      name: "TokenizerError",
      message: `Invalid tokenizer "${dir}/tokenizer.json": the end-of-text token "<|endoftext|>" ` +
        `is not in its vocabulary`,
    });
  });
});
