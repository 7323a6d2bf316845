// Alpaca and chat examples tokenized with the real tokenizers of the Llama family
// (tests/models/_npm_tokenizers.ts: Mistral's SentencePiece-style BPE, Llama 3's and Qwen2.5's
// byte-level BPE with their own chat templates), on generated instructions and conversations.
//
// The references are independent of the segment mechanism: the ids must be those of
// `encodePrompt` over the whole text (plus the end-of-text id for Alpaca), and each trained run
// of tokens, decoded by the tokenizer, must be exactly the response: Alpaca's `output` and the
// end-of-text token, or the assistant's content as the template writes it (Llama 3 trims it)
// followed by the template's end of turn, which is written out here by hand for each family
// (Qwen's tokenizer normalizes text to NFC, so the response is compared in NFC there). The one
// allowed difference is a token straddling the start of a response (Mistral has "]$" in its
// vocabulary, so "[/INST]" + "$5" starts with it): that token is trained, so the run decodes to
// the end of the text before the response, then the response.

import assert from "node:assert/strict";
import fc from "fast-check";
import { encodeSegments } from "../../data/examples.ts";
import {
  type AlpacaRecord,
  alpacaSegments,
  type ChatRecord,
  chatSegments,
  instructionExample,
} from "../../data/instructions.ts";
import { Tokenizer } from "../../models/tokenizer.ts";
import { fuzz } from "../fuzz/_fuzz.ts";
import { tempDir } from "../_util.ts";
import { type NpmTokenizer, writeTokenizerFolder } from "../models/_npm_tokenizers.ts";

// Mistral-7B-v0.1 ships no chat template; this one writes turns as Mistral's instruct models
// read them (no system role, no generation prompt: a reply follows "[/INST]" directly).
const MISTRAL_CHAT = "{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}" +
  "{{ '[INST] ' + m.content + ' [/INST]' }}{% elif m.role == 'assistant' %}" +
  "{{ m.content + eos_token }}{% else %}{{ raise_exception('Only user and assistant roles') }}" +
  "{% endif %}{% endfor %}";

interface Family {
  /** Whether the template takes a system message. */
  system: boolean;
  /** The text as decoding gives it back (the tokenizer's normalizer). */
  normal?: (text: string) => string;
  /** An assistant turn's content as the template writes it, with its end of turn. */
  turn: (content: string) => string;
  files?: Record<string, string>;
}

const FAMILIES: Record<NpmTokenizer, Family> = {
  mistral: {
    system: false,
    turn: (c) => `${c}</s>`,
    files: { "chat_template.jinja": MISTRAL_CHAT },
  },
  llama3: { system: true, turn: (c) => `${c.trim()}<|eot_id|>` },
  qwen2: { system: true, turn: (c) => `${c}<|im_end|>\n`, normal: (s) => s.normalize("NFC") },
};

const loaded = new Map<NpmTokenizer, Promise<Tokenizer>>();

function load(name: NpmTokenizer): Promise<Tokenizer> {
  let tok = loaded.get(name);
  if (tok === undefined) {
    tok = (async () => {
      const dir = await tempDir(`instr-${name}`);
      try {
        await writeTokenizerFolder(dir, name, { files: FAMILIES[name].files });
        return await Tokenizer.load(dir);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    })();
    loaded.set(name, tok);
  }
  return tok;
}

/** The text of `ids[from, to)` in context: what decoding adds from `from` to `to`. */
function decodeSpan(tok: Tokenizer, ids: readonly number[], from: number, to: number): string {
  const before = tok.decode(ids.slice(0, from));
  const through = tok.decode(ids.slice(0, to));
  assert.ok(through.startsWith(before), `${JSON.stringify(before)} does not start the decoding`);
  return through.slice(before.length);
}

/** `prefix` is where `ids` start; the same when no token straddles the boundary. */
function assertStarts(ids: readonly number[], prefix: readonly number[], exact: boolean) {
  assert.deepEqual(exact ? ids : ids.slice(0, prefix.length), prefix);
}

/** The runs of 1s of a mask, as [start, end) pairs. */
function runs(mask: Uint8Array): [number, number][] {
  const out: [number, number][] = [];
  mask.forEach((m, i) => {
    if (m === 1 && (i === 0 || mask[i - 1] === 0)) out.push([i, i]);
    if (m === 1) out[out.length - 1][1] = i + 1;
  });
  return out;
}

/** How often a response started inside a token, over a whole test. */
const straddled = { runs: 0, straddled: 0 };

/**
 * The ids and the trained runs of an example, checked against the references: the ids of the
 * whole text, and one trained run per response that decodes to exactly the response, or (when
 * the run's first token straddles the start of the response) to a piece of the text before it
 * that this first token holds, then exactly the response.
 */
function checkExample(
  tok: Tokenizer,
  family: Family,
  segments: { text: string; train: boolean }[],
  options: { eos: boolean; responses: string[] },
): { tokens: number[]; runs: [number, number][] } {
  const normal = family.normal ?? ((t: string) => t);
  const { tokens, mask } = encodeSegments(segments, tok, { eos: options.eos });
  const text = segments.map((s) => s.text).join("");
  assert.deepEqual(tokens, [...tok.encodePrompt(text), ...(options.eos ? [tok.eosId] : [])]);
  const trained = runs(mask);
  assert.equal(trained.length, options.responses.length, "one trained run per response");
  const trainedAt = segments.flatMap((seg, i) => seg.train ? [i] : []);
  trained.forEach(([s, t], k) => {
    const response = normal(options.responses[k]);
    const decoded = decodeSpan(tok, tokens, s, t);
    straddled.runs++;
    if (decoded === response) return;
    assert.ok(decoded.endsWith(response), `${JSON.stringify(decoded)} lacks ${response}`);
    const head = decoded.slice(0, decoded.length - response.length);
    const at = trainedAt[k];
    const context = normal(segments.slice(0, at).map((seg) => seg.text).join(""));
    assert.ok(context.endsWith(head), `${JSON.stringify(head)} is not the end of the prompt`);
    const first = decodeSpan(tok, tokens, s, s + 1);
    assert.ok(
      first.startsWith(head) && first.length > head.length,
      `the first trained token ${JSON.stringify(first)} does not straddle the boundary`,
    );
    straddled.straddled++;
  });
  return { tokens, runs: trained };
}

// Text with spaces and tabs at its ends, unicode in the middle (letters of several scripts,
// emoji sequences, combining marks), and sometimes a line break inside. Not led by a line break:
// after a prompt ending with one, byte-level BPE would merge the two (the next test).
const pad = fc.constantFrom("", " ", "  ", "\t", " \t ");
const core = fc.oneof(
  fc.string({ unit: "grapheme", maxLength: 16 }),
  fc.string({ unit: "grapheme-ascii", maxLength: 16 }),
  fc.constantFrom(
    "Paris",
    "The answer is 42.",
    "naïve café",
    "日本語のテキスト",
    "🦙 👩‍👩‍👧 ok",
    "x = [1, 2]",
    "line one\nline two",
    "Ünïcödé\u0301",
  ),
);
const text = fc.tuple(pad, core, pad).map(([a, b, c]) => a + b + c)
  .filter((s) => !/^\s*[\r\n]/.test(s));

const alpacaRecord = fc.record({
  instruction: text,
  input: fc.oneof(fc.constant(""), text),
  output: text,
}).map((r): AlpacaRecord => ({ format: "alpaca", file: "a.jsonl", line: 1, fields: r, ...r }));

function conversation(system: boolean): fc.Arbitrary<ChatRecord> {
  return fc.record({
    system: system ? fc.option(text) : fc.constant(null),
    pairs: fc.array(fc.tuple(text, text), { minLength: 1, maxLength: 3 }),
  }).map(({ system, pairs }) => {
    const messages = [
      ...(system === null ? [] : [{ role: "system", content: system }]),
      ...pairs.flatMap(([user, assistant]) => [
        { role: "user", content: user },
        { role: "assistant", content: assistant },
      ]),
    ];
    return { format: "chat", file: "c.jsonl", line: 1, fields: { messages }, messages };
  });
}

for (const name of ["mistral", "llama3", "qwen2"] as const) {
  Deno.test(`Alpaca with ${name}'s tokenizer: the whole text's ids, the loss on output and eos`, async () => {
    const tok = await load(name);
    await fuzz(`alpaca ${name}`, alpacaRecord, (record) => {
      const segments = alpacaSegments(record);
      const before = straddled.straddled;
      const { tokens, runs } = checkExample(tok, FAMILIES[name], segments, {
        eos: true,
        responses: [record.output + tok.eosToken],
      });
      // The evaluation prompt reads as the training row's context.
      const { prompt } = instructionExample(record);
      const exact = straddled.straddled === before;
      assertStarts(tok.encodePrompt(prompt), tokens.slice(0, runs[0][0]), exact);
      if (tok.addBos) assert.equal(tokens[0], tok.bosId);
    }, { runs: 150, ms: 20_000 });
  });

  Deno.test(`chat with ${name}'s template: every assistant turn trained, nothing else`, async () => {
    const tok = await load(name);
    const template = tok.chatTemplates.get("default")!;
    const family = FAMILIES[name];
    await fuzz(`chat ${name}`, conversation(family.system), (record) => {
      const segments = chatSegments(record, template);
      const assistant = record.messages.filter((m) => m.role === "assistant");
      const before = straddled.straddled;
      const { tokens, runs } = checkExample(tok, family, segments, {
        eos: false,
        responses: assistant.map((m) => family.turn(m.content)),
      });
      const { prompt, ref } = instructionExample(record, { template });
      const exact = straddled.straddled === before;
      assertStarts(tok.encodePrompt(prompt), tokens.slice(0, runs.at(-1)![0]), exact);
      assert.equal(ref, assistant.at(-1)!.content.trim());
      // The template writes the beginning-of-text token; encodePrompt adds no second one.
      if (tok.bosId !== undefined) assert.notEqual(tokens[1], tok.bosId);
    }, { runs: 150, ms: 20_000 });
  });
}

Deno.test("Mistral: the response is not encoded apart, which would start it with ▁", async () => {
  const tok = await load("mistral");
  const record: AlpacaRecord = {
    format: "alpaca",
    file: "a.jsonl",
    line: 1,
    fields: {},
    instruction: "Name the capital of France.",
    input: "",
    output: "Paris",
  };
  const { tokens, mask } = encodeSegments(alpacaSegments(record), tok);
  const trained = tokens.filter((_, i) => mask[i] === 1);
  assert.equal(tok.decode(tok.encode("Paris")).length, "Paris".length);
  assert.equal(tok.encode("Paris")[0], tok.tokenToId("▁Paris"));
  assert.notEqual(trained[0], tok.tokenToId("▁Paris"));
  assert.deepEqual(trained.at(-1), tok.eosId);
  assert.equal(decodeSpan(tok, tokens, mask.indexOf(1), tokens.length), "Paris</s>");
});

Deno.test("Llama 3: a response led by line breaks shares the prompt's last token", async () => {
  // Llama 3's pre-tokenizer reads ":" + "\n" + "\n\nHi" as one piece ":\n\n\n": that token is
  // trained, so the loss also covers the prompt's ":\n" (a boundary is always a token's start).
  const tok = await load("llama3");
  const segments = [{ text: "Q:\n", train: false }, { text: "\n\nHi", train: true }];
  const { tokens, runs: trained } = checkExample(tok, FAMILIES.llama3, segments, {
    eos: true,
    responses: ["\n\nHi" + tok.eosToken],
  });
  assert.deepEqual(tokens.slice(0, trained[0][0]), tok.encodePrompt("Q"));
  assert.equal(decodeSpan(tok, tokens, trained[0][0], trained[0][0] + 1), ":\n\n\n");
});

Deno.test("most generated responses start on a token boundary", () => {
  // Run after the property tests of this file: a check that the straddling allowance above is
  // the exception it is meant to be.
  assert.ok(straddled.runs > 100, `${straddled.runs} responses`);
  assert.ok(straddled.straddled < straddled.runs / 4, JSON.stringify(straddled));
  console.log(`responses starting inside a token: ${straddled.straddled} of ${straddled.runs}`);
});
