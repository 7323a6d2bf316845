import assert from "node:assert/strict";
import {
  CompiledTemplate,
  renderExample,
  renderExamples,
  TemplateError,
} from "../../data/templates.ts";

const E2E = { prompt: "{{ mr }}\n", completion: " {{ ref }}" };

Deno.test("renderExample fills record fields into the prompt and completion", () => {
  const out = renderExample({ mr: "name[The Mill], food[Italian]", ref: "The Mill is Italian." }, {
    prompt: "Describe: {{ mr }} =>",
    completion: " {{ ref }}",
  });
  assert.deepEqual(out, {
    prompt: "Describe: name[The Mill], food[Italian] =>",
    completion: " The Mill is Italian.",
  });
});

Deno.test("renderExample renders numbers, loops, conditionals and defaults", () => {
  const out = renderExample({ n: 3, flag: true, name: "x" }, {
    prompt: "{% for i in range(n) %}{{ i }}{% endfor %}|{% if flag %}on{% endif %}|" +
      "{{ missing | default('none') }}|{% if other is defined %}bad{% else %}ok{% endif %}",
    completion: "{{ name | upper }}",
  });
  assert.deepEqual(out, { prompt: "012|on|none|ok", completion: "X" });
});

Deno.test("a missing field names the template, the field and the record index", () => {
  assert.throws(
    () => renderExamples([{ mr: "a", ref: "b" }, { mr: "c" }], E2E),
    (e: unknown) => {
      assert.ok(e instanceof TemplateError);
      assert.equal(
        e.message,
        'Template "completion" uses field "ref" missing from record 1 (it has "mr")',
      );
      assert.equal(e.template, "completion");
      assert.equal(e.field, "ref");
      assert.equal(e.index, 1);
      return true;
    },
  );
  assert.throws(
    () => renderExample({ ref: "b" }, { prompt: "{% if x %}{{ mr }}{% endif %}", completion: "" }),
    /^TemplateError: Template "prompt" uses field "x" missing from record \(it has "ref"\)$/,
  );
});

Deno.test("invalid Jinja is an error naming the template", () => {
  assert.throws(
    () => new CompiledTemplate("{{ mr ", { name: "prompt" }),
    (e: unknown) =>
      e instanceof TemplateError && e.template === "prompt" &&
      e.message.startsWith('Invalid template "prompt": '),
  );
});
