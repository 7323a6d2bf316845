// Alpaca and chat JSON Lines: the Alpaca prompt checked letter by letter, the segments of a
// conversation through a ChatML template worked out by hand, and every refusal as one line
// naming the file, the line and the field.

import assert from "node:assert/strict";
import {
  alpacaPrompt,
  alpacaSegments,
  chatSegments,
  instructionExample,
  parseAlpaca,
  parseChat,
  readInstructions,
} from "../../data/instructions.ts";
import { DataError } from "../../data/readers.ts";
import { ChatTemplate } from "../../models/chat_template.ts";
import { withTempDir } from "../_util.ts";

const CHATML = new ChatTemplate(
  "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}" +
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
  { file: "chat_template.jinja" },
);

/** Asserts a one-line DataError with exactly `message`, at `line` of `file`. */
function refused(run: () => unknown, message: string, where: { file: string; line?: number }) {
  assert.throws(run, (e: unknown) => {
    assert.ok(e instanceof DataError, `expected a DataError, got ${e}`);
    assert.equal(e.message, message);
    assert.ok(!e.message.includes("\n"));
    assert.equal(e.file, where.file);
    assert.equal(e.line, where.line);
    return true;
  });
}

Deno.test("the Alpaca prompt, with and without input, as the Alpaca repository writes it", () => {
  assert.equal(
    alpacaPrompt("Add the numbers.", "2 and 3"),
    "Below is an instruction that describes a task, paired with an input that provides " +
      "further context. Write a response that appropriately completes the request.\n\n" +
      "### Instruction:\nAdd the numbers.\n\n### Input:\n2 and 3\n\n### Response:\n",
  );
  const noInput = "Below is an instruction that describes a task. Write a response that " +
    "appropriately completes the request.\n\n### Instruction:\nName a colour.\n\n### Response:\n";
  assert.equal(alpacaPrompt("Name a colour."), noInput);
  assert.equal(alpacaPrompt("Name a colour.", ""), noInput);
});

Deno.test("parseAlpaca: absent or empty input is the no-input prompt; other keys are kept", () => {
  const text = '{"instruction": "Name a colour.", "output": "Blue."}\n\n' +
    '{"instruction": "Add.", "input": "", "output": "0", "id": 7}\r\n' +
    '{"instruction": "Add.", "input": "2 + 2", "output": " 4 "}\n';
  const records = parseAlpaca(text, { file: "a.jsonl" });
  assert.deepEqual(records.map((r) => [r.line, r.instruction, r.input, r.output]), [
    [1, "Name a colour.", "", "Blue."],
    [3, "Add.", "", "0"],
    [4, "Add.", "2 + 2", " 4 "],
  ]);
  assert.equal(records[1].fields.id, 7);
  assert.deepEqual(alpacaSegments(records[0]), [
    { text: alpacaPrompt("Name a colour."), train: false },
    { text: "Blue.", train: true },
  ]);
  assert.deepEqual(instructionExample(records[2]), {
    prompt: alpacaPrompt("Add.", "2 + 2"),
    ref: "4",
  });
});

Deno.test("parseAlpaca refuses a missing or non-string field, naming the file, line and field", () => {
  const file = "data/a.jsonl";
  const ok = '{"instruction": "i", "output": "o"}\n';
  refused(
    () => parseAlpaca(ok + '{"instruction": "i", "response": "o"}', { file }),
    'Invalid Alpaca record in "data/a.jsonl" line 2: no "output" field (it has "instruction", ' +
      '"response")',
    { file, line: 2 },
  );
  refused(
    () => parseAlpaca('\n{"prompt": "i", "output": "o"}', { file }),
    'Invalid Alpaca record in "data/a.jsonl" line 2: no "instruction" field (it has "prompt", ' +
      '"output")',
    { file, line: 2 },
  );
  refused(
    () => parseAlpaca('{"instruction": ["i"], "output": "o"}', { file }),
    'Invalid Alpaca record in "data/a.jsonl" line 1: field "instruction" is an array; expected ' +
      "a string",
    { file, line: 1 },
  );
  refused(
    () => parseAlpaca('{"instruction": "i", "output": 4}', { file }),
    'Invalid Alpaca record in "data/a.jsonl" line 1: field "output" is a number; expected a string',
    { file, line: 1 },
  );
  refused(
    () => parseAlpaca('{"instruction": "i", "input": null, "output": "o"}', { file }),
    'Invalid Alpaca record in "data/a.jsonl" line 1: field "input" is null; expected a string ' +
      '(leave the field out, or give "", for none)',
    { file, line: 1 },
  );
  refused(
    () => parseAlpaca("{}", { file }),
    'Invalid Alpaca record in "data/a.jsonl" line 1: no "instruction" field (it has no fields)',
    { file, line: 1 },
  );
  refused(
    () => parseAlpaca('["i", "o"]', { file }),
    'Invalid record in "data/a.jsonl" line 1: expected a JSON object, found an array',
    { file, line: 1 },
  );
  // A key holding a line break is quoted as JSON, so the message stays on one line.
  refused(
    () => parseAlpaca('{"instruction\\n": "i", "output": "o"}', { file }),
    'Invalid Alpaca record in "data/a.jsonl" line 1: no "instruction" field (it has ' +
      '"instruction\\n", "output")',
    { file, line: 1 },
  );
});

const chat = (messages: unknown[]) => JSON.stringify({ messages });
const turns = [
  { role: "system", content: "S" },
  { role: "user", content: "Hi" },
  { role: "assistant", content: "Yo" },
  { role: "user", content: "Q" },
  { role: "assistant", content: "A" },
];

Deno.test("chatSegments: every assistant turn with the template's end of turn, nothing else", () => {
  const [record] = parseChat(chat(turns), { file: "c.jsonl" });
  const segments = chatSegments(record, CHATML);
  assert.deepEqual(segments, [
    {
      text: "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n" +
        "<|im_start|>assistant\n",
      train: false,
    },
    { text: "Yo<|im_end|>\n", train: true },
    { text: "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n", train: false },
    { text: "A<|im_end|>\n", train: true },
    { text: "", train: false },
  ]);
  assert.equal(segments.map((s) => s.text).join(""), CHATML.render(record.messages));
  assert.deepEqual(instructionExample(record, { template: CHATML }), {
    prompt: "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n" +
      "<|im_start|>assistant\nYo<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n" +
      "<|im_start|>assistant\n",
    ref: "A",
  });
  // A user turn after the last assistant turn is context, not trained.
  const [tail] = parseChat(chat([...turns.slice(1, 3), { role: "user", content: "Bye" }]));
  assert.deepEqual(chatSegments(tail, CHATML).map((s) => s.train), [false, true, false]);
  assert.equal(chatSegments(tail, CHATML)[2].text, "<|im_start|>user\nBye<|im_end|>\n");
  assert.equal(instructionExample(tail, { template: CHATML }).ref, "Yo");
});

Deno.test("parseChat refuses what is not a conversation, naming the file, line and message", () => {
  const file = "c.jsonl";
  const ok = chat(turns.slice(1, 3)) + "\n";
  const shape = 'expected a list of {"role": ..., "content": ...} objects with string values';
  const cases: [string, string][] = [
    [
      '{"conversations": []}',
      `no "messages" field (it has "conversations"); ${shape}`,
    ],
    ['{"messages": "Hi"}', `field "messages" is a string; ${shape}`],
    ['{"messages": []}', `field "messages" is an empty list; ${shape}`],
    [
      chat([turns[1], "Yo"]),
      'messages[1] is a string; expected an object with string "role" and "content"',
    ],
    [chat([{ content: "Hi" }]), 'messages[0] has no "role"'],
    [chat([{ role: "user" }]), 'messages[0] has no "content"'],
    [
      chat([turns[1], { role: "assistant", content: null, tool_calls: [] }]),
      "messages[1].content is null; expected a string",
    ],
    [chat([{ role: 1, content: "Hi" }]), "messages[0].role is a number; expected a string"],
    [
      chat([turns[0], turns[1]]),
      'the conversation has no "assistant" turn, so there is nothing to learn',
    ],
  ];
  for (const [line, message] of cases) {
    refused(
      () => parseChat(ok + line, { file }),
      `Invalid chat record in "c.jsonl" line 2: ${message}`,
      { file, line: 2 },
    );
  }
});

Deno.test("a template that raises or fails is refused naming the data file, line and template", () => {
  // Llama-2-chat style: roles must alternate.
  const strict = new ChatTemplate(
    "{% for m in messages %}{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}" +
      "{{ raise_exception('Conversation roles must alternate user/assistant') }}{% endif %}" +
      "{{ m.content }}{% endfor %}",
    { file: "tok/tokenizer_config.json" },
  );
  const [record] = parseChat("\n\n" + chat([turns[1], turns[3], turns[2]]), { file: "c.jsonl" });
  refused(
    () => chatSegments(record, strict),
    'Invalid conversation in "c.jsonl" line 3: Cannot render chat template of ' +
      '"tok/tokenizer_config.json": Conversation roles must alternate user/assistant',
    { file: "c.jsonl", line: 3 },
  );
  const broken = new ChatTemplate("{% for m in messages %}{{ m.content }", {
    file: "chat_template.jinja",
  });
  assert.throws(
    () => chatSegments(record, broken),
    (e: unknown) =>
      e instanceof DataError && e.line === 3 &&
      e.message.startsWith(
        'Invalid conversation in "c.jsonl" line 3: Invalid chat template in "chat_template.jinja": ',
      ) && !e.message.includes("\n"),
  );
});

Deno.test("a template that does not render prefixes consistently is refused", () => {
  const file = "c.jsonl";
  const [record] = parseChat(chat(turns.slice(1)), { file });
  const prefix = 'Invalid conversation in "c.jsonl" line 1: the chat template does not render ' +
    "conversation prefixes consistently (";
  const suffix = "), so the assistant turns cannot be located; use a template that writes each " +
    "turn regardless of later turns";
  // The generation prompt is not how the template starts an assistant turn.
  const header = new ChatTemplate(
    "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}" +
      "{% if add_generation_prompt %}<bot>{% endif %}",
    { file: "t.jinja" },
  );
  refused(
    () => chatSegments(record, header),
    `${prefix}the rendering of the first message with the generation prompt is not the start ` +
      `of the rendering of the first 2 messages${suffix}`,
    { file, line: 1 },
  );
  // The last message is written apart, so an earlier prefix is not written as in the whole.
  const last = new ChatTemplate(
    "{% for m in messages %}{% if loop.last %}[last]{% endif %}<{{ m.role }}>{{ m.content }}" +
      "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}",
    { file: "t.jinja" },
  );
  refused(
    () => chatSegments(record, last),
    `${prefix}the rendering of the first message with the generation prompt is not the start ` +
      `of the rendering of the first 2 messages${suffix}`,
    { file, line: 1 },
  );
  // Earlier turns rewritten once later ones exist (as templates that drop old reasoning do).
  const rewrite = new ChatTemplate(
    "{% for m in messages %}<{{ m.role }}>{% if m.role == 'assistant' and not loop.last %}" +
      "...{% else %}{{ m.content }}{% endif %}{% endfor %}" +
      "{% if add_generation_prompt %}<assistant>{% endif %}",
    { file: "t.jinja" },
  );
  refused(
    () => chatSegments(record, rewrite),
    `${prefix}the rendering of the first 2 messages is not the start of the whole ` +
      `conversation's${suffix}`,
    { file, line: 1 },
  );
});

Deno.test("readInstructions reads either format and names an unreadable file", async () => {
  await withTempDir("instructions", async (dir) => {
    await Deno.writeTextFile(`${dir}/a.jsonl`, '{"instruction": "i", "output": "o"}\n');
    await Deno.writeTextFile(`${dir}/c.jsonl`, `\uFEFF${chat(turns)}\n`);
    const [alpaca] = await readInstructions(`${dir}/a.jsonl`, "alpaca");
    assert.equal(alpaca.format === "alpaca" && alpaca.output, "o");
    assert.equal(alpaca.file, `${dir}/a.jsonl`);
    const [conversation] = await readInstructions(`${dir}/c.jsonl`, "chat");
    assert.deepEqual(conversation.format === "chat" && conversation.messages, turns);
    await assert.rejects(
      () => readInstructions(`${dir}/c.jsonl`, "alpaca"),
      (e: unknown) =>
        e instanceof DataError && e.line === 1 && /no "instruction" field/.test(e.message),
    );
  });
  await assert.rejects(
    () => readInstructions("tests/data/missing.jsonl", "alpaca"),
    (e: unknown) =>
      e instanceof DataError &&
      e.message.startsWith('Cannot read dataset "tests/data/missing.jsonl": '),
  );
});
