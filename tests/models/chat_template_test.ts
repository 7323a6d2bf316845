// Chat templates rendered as Hugging Face's apply_chat_template renders them: variables, globals,
// whitespace control, errors in one line naming the file; and how a tokenizer folder supplies them
// (tokenizer_config.json, a list of named templates, chat_template.jinja taking precedence).

import assert from "node:assert/strict";
import { join } from "node:path";
import { ChatTemplate } from "../../models/chat_template.ts";
import { Tokenizer, TokenizerError } from "../../models/tokenizer.ts";
import { withTempDir } from "../_util.ts";
import { writeTokenizerFolder } from "./_npm_tokenizers.ts";

const CHATML = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n" +
  "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

// Llama-2-chat's template as meta-llama/Llama-2-7b-chat-hf publishes it (one line there).
const LLAMA2_CHAT =
  "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}" +
  "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}" +
  "{% set system_message = false %}{% endif %}{% for message in loop_messages %}" +
  "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}" +
  "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}" +
  "{% endif %}{% if loop.index0 == 0 and system_message != false %}" +
  "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}" +
  "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}" +
  "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}" +
  "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}" +
  "{% endif %}{% endfor %}";

/** Asserts that `fn` throws a one-line TokenizerError naming `file` with exactly `message`. */
function assertRefused(fn: () => unknown, file: string, message: string): void {
  assert.throws(fn, (e) => {
    assert.ok(e instanceof TokenizerError, String(e));
    assert.equal(e.file, file);
    assert.equal(e.message, message);
    return true;
  });
}

Deno.test("ChatTemplate renders messages, the generation prompt and special tokens", () => {
  const chatml = new ChatTemplate(CHATML, { file: "chat_template.jinja" });
  const messages = [{ role: "system", content: "Be brief." }, { role: "user", content: "Hi" }];
  const turns = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n";
  assert.equal(chatml.render(messages), turns);
  assert.equal(
    chatml.render(messages, { addGenerationPrompt: true }),
    `${turns}<|im_start|>assistant\n`,
  );
  const tokens = new ChatTemplate("{{ bos_token }}[{{ messages[0].content }}]{{ eos_token }}", {
    file: "tokenizer_config.json",
    specialTokens: { bos_token: "<s>", eos_token: "</s>" },
  });
  assert.equal(tokens.render([{ role: "user", content: "x" }]), "<s>[x]</s>");
  // The caller's variables come after the special tokens, as keyword arguments do in Python.
  assert.equal(
    tokens.render([{ role: "user", content: "x" }], { variables: { eos_token: "<|end|>" } }),
    "<s>[x]<|end|>",
  );
});

Deno.test("ChatTemplate is lenient with undefined variables, as chat templates expect", () => {
  const template = new ChatTemplate(
    "{% if tools %}tools{% endif %}{{ messages[0].tool_calls }}|{{ documents | default('none') }}" +
      "{% for m in messages %}{% if m.tool_calls is defined %}!{% endif %}{% endfor %}",
    { file: "t.jinja" },
  );
  assert.equal(template.render([{ role: "user", content: "Hi" }]), "|none");
  assert.equal(
    template.render([{ role: "assistant", tool_calls: [] }], { variables: { tools: [{}] } }),
    "tools[]|none!",
  );
});

Deno.test("ChatTemplate has no clock: strftime_now is undefined unless the caller gives one", () => {
  // The date idiom of Llama 3.1's template.
  const template = new ChatTemplate(
    "{%- if not date_string is defined %}{%- if strftime_now is defined %}" +
      "{%- set date_string = strftime_now('%d %b %Y') %}{%- else %}" +
      '{%- set date_string = "26 Jul 2024" %}{%- endif %}{%- endif %}Today Date: {{ date_string }}',
    { file: "t.jinja" },
  );
  assert.equal(template.render([]), "Today Date: 26 Jul 2024");
  assert.equal(
    template.render([], { variables: { date_string: "01 Dec 2026" } }),
    "Today Date: 01 Dec 2026",
  );
  assert.equal(
    template.render([], { variables: { strftime_now: (format: string) => `<${format}>` } }),
    "Today Date: <%d %b %Y>",
  );
});

Deno.test("ChatTemplate trims blocks and drops one trailing newline, as transformers' Jinja does", () => {
  const template = new ChatTemplate(
    "{% for m in messages %}\n    {% if m.role == 'user' %}\n  {{ m.content }}\n    {% endif %}\n" +
      "{% endfor %}\n",
    { file: "t.jinja" },
  );
  assert.equal(
    template.render([
      { role: "user", content: "a" },
      { role: "assistant", content: "skipped" },
      { role: "user", content: "b" },
    ]),
    "  a\n  b\n",
  );
  assert.equal(
    new ChatTemplate("{{ messages | length }}\n\n", { file: "t.jinja" }).render([{ role: "u" }]),
    "1\n",
  );
});

Deno.test("ChatTemplate errors are one line naming the file and the template", () => {
  const file = "models/x/chat_template.jinja";
  const llama2 = new ChatTemplate(LLAMA2_CHAT, { file });
  assertRefused(
    () => llama2.render([{ role: "assistant", content: "Hi" }]),
    file,
    `Cannot render chat template of "${file}": Conversation roles must alternate ` +
      "user/assistant/user/assistant/...",
  );
  const raising = new ChatTemplate("{{ raise_exception('bad\nrole') }}", {
    file,
    name: "tool_use",
  });
  assertRefused(
    () => raising.render([]),
    file,
    `Cannot render chat template "tool_use" of "${file}": bad\\nrole`,
  );
  // Compiled on first use: a template nobody renders does not stop a tokenizer loading.
  const broken = new ChatTemplate("{% for m in messages %}{{ m.content }}", { file });
  assert.throws(() => broken.render([]), (e) => {
    assert.ok(e instanceof TokenizerError);
    assert.match(e.message, new RegExp(`^Invalid chat template in "${file}": [^\\n]+$`));
    return true;
  });
  const notCallable = new ChatTemplate("{{ messages() }}", { file });
  assert.throws(() => notCallable.render([]), {
    name: "TokenizerError",
    message: new RegExp(`^Cannot render chat template of "${file}": `),
  });
});

Deno.test("a tokenizer folder's chat_template.jinja is its chat template (Llama-2-chat on Mistral's files)", async () => {
  await withTempDir("chat-", async (dir) => {
    await writeTokenizerFolder(dir, "mistral", {
      config: (c) => (c.chat_template = "from tokenizer_config.json"),
      files: { "chat_template.jinja": LLAMA2_CHAT + "\n" },
    });
    const tok = await Tokenizer.load(dir);
    assert.deepEqual([...tok.chatTemplates.keys()], ["default"]);
    const text = tok.applyChatTemplate([
      { role: "system", content: "Be brief." },
      { role: "user", content: "Hi" },
      { role: "assistant", content: " Hello! " },
      { role: "user", content: "Bye" },
    ]);
    assert.equal(
      text,
      "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Bye [/INST]",
    );
    const ids = tok.encode(text);
    // "<s>" and "</s>" written by the template are the special ids; "[INST]" is ▁[ INST ].
    assert.deepEqual(ids.slice(0, 4), [1, 733, 16289, 28793]);
    assert.deepEqual(ids.filter((id) => id === 1 || id === 2), [1, 2, 1]);
    assertRefused(
      () => tok.applyChatTemplate([{ role: "user", content: "a" }, { role: "user", content: "b" }]),
      join(dir, "chat_template.jinja"),
      `Cannot render chat template of "${join(dir, "chat_template.jinja")}": Conversation ` +
        "roles must alternate user/assistant/user/assistant/...",
    );
  });
});

Deno.test("named chat templates of tokenizer_config.json: default, tool_use with tools, by name", async () => {
  await withTempDir("chat-", async (dir) => {
    const configPath = join(dir, "tokenizer_config.json");
    await writeTokenizerFolder(dir, "mistral", {
      config: (c) =>
        c.chat_template = [
          { name: "default", template: "default:{{ messages[0].content }}" },
          { name: "tool_use", template: "tools:{{ tools | length }}" },
          { name: "rag", template: "{{ documents[0].text }}" },
        ],
    });
    const tok = await Tokenizer.load(dir);
    const hi = [{ role: "user", content: "Hi" }];
    assert.equal(tok.chatTemplates.get("rag")?.file, configPath);
    assert.equal(tok.applyChatTemplate(hi), "default:Hi");
    assert.equal(tok.applyChatTemplate(hi, { variables: { tools: [{}, {}] } }), "tools:2");
    assert.equal(
      tok.applyChatTemplate(hi, { template: "rag", variables: { documents: [{ text: "d" }] } }),
      "d",
    );
    assertRefused(
      () => tok.applyChatTemplate(hi, { template: "nope" }),
      join(dir, "tokenizer.json"),
      `Tokenizer "${join(dir, "tokenizer.json")}" has no chat template named "nope" (it has ` +
        `"default", "tool_use", "rag")`,
    );
    // No documents: the library's own message follows the template's name and file.
    assert.throws(() => tok.applyChatTemplate(hi, { template: "rag" }), (e) => {
      assert.ok(e instanceof TokenizerError);
      assert.equal(e.file, configPath);
      assert.ok(e.message.startsWith(`Cannot render chat template "rag" of "${configPath}": `));
      return true;
    });
  });
});

Deno.test("a tokenizer without a chat template says so in one line", async () => {
  await withTempDir("chat-", async (dir) => {
    await writeTokenizerFolder(dir, "mistral");
    const tok = await Tokenizer.load(dir);
    const path = join(dir, "tokenizer.json");
    assertRefused(
      () => tok.applyChatTemplate([{ role: "user", content: "Hi" }]),
      path,
      `Tokenizer "${path}" has no chat template (no "chat_template" in tokenizer_config.json and ` +
        "no chat_template.jinja beside it)",
    );
  });
  // The GPT-2 fixture has none either, and nothing else about it changed.
  const gpt2 = await Tokenizer.load("fixtures/tiny-gpt2");
  assert.equal(gpt2.chatTemplates.size, 0);
  assert.equal(gpt2.addBos, false);
  assert.equal(gpt2.addEos, false);
  assert.deepEqual(gpt2.eosIds, [299]);
  assert.equal(gpt2.modelMaxLength, 64);
  assert.deepEqual(gpt2.encode("the", { addSpecialTokens: true }), gpt2.encode("the"));
});
