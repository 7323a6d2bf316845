import assert from "node:assert/strict";

// `deno compile` embeds the program in the `denort` runtime, which it downloads unless
// DENORT_BIN names a local copy; without one the test is reported as ignored, never as passed.
const denort = (() => {
  try {
    return Deno.env.get("DENORT_BIN");
  } catch {
    return undefined;
  }
})();

Deno.test({
  name: "deno task compile makes one binary that answers --help and runs the GPU check",
  ignore: !denort,
  permissions: { run: true, read: true, write: true, env: true },
  async fn() {
    const compile = await new Deno.Command("deno", { args: ["task", "compile"] }).output();
    assert(compile.success, new TextDecoder().decode(compile.stderr));
    const help = await new Deno.Command("out/nola-gpu", { args: ["--help"] }).output();
    assert(help.success);
    assert.match(new TextDecoder().decode(help.stdout), /finetune \[PIPELINE\]/);
    const check = await new Deno.Command("out/nola-gpu", { args: ["check"] }).output();
    assert(check.success, new TextDecoder().decode(check.stderr));
  },
});
