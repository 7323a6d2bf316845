import assert from "node:assert/strict";
import { messageOf, oneLine } from "../../formats/one_line.ts";

Deno.test("oneLine escapes line breaks and control characters and keeps the rest", () => {
  assert.equal(oneLine('"a\nb\r\tc" is not valid JSON'), '"a\\nb\\r\\tc" is not valid JSON');
  assert.equal(
    oneLine("x\u0000\u001b\u007f\u0085\u2028\u2029"),
    "x\\u0000\\u001b\\u007f\\u0085\\u2028\\u2029",
  );
  const plain = 'C:\\models\\gpt2 "h.0.attn" é 😀';
  assert.equal(oneLine(plain), plain);
});

Deno.test("messageOf is one line for errors and for anything else thrown", () => {
  assert.equal(messageOf(new SyntaxError("Unexpected token\nhere")), "Unexpected token\\nhere");
  assert.equal(messageOf("text\r"), "text\\r");
  assert.equal(messageOf(undefined), "undefined");
});
