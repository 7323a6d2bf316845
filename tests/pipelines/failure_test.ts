import assert from "node:assert/strict";
import { OutputPathError } from "../../formats/folder.ts";
import { GpuError } from "../../kernels/gpu.ts";
import { failureLine, plainOsMessage } from "../../pipelines/failure.ts";

Deno.test("OS errors become words with the path, once", () => {
  const cases: [string, string][] = [
    [
      "No such file or directory (os error 2): stat 'm'",
      'Cannot find "m": no such file or directory',
    ],
    ["Is a directory (os error 21): readfile 'p.yaml'", 'Cannot read "p.yaml": is a directory'],
    ["Permission denied (os error 13): open 'a b'", 'Cannot open "a b": permission denied'],
    [
      "Is a directory (os error 21): rename 'x.tmp' -> 'x'",
      'Cannot rename "x.tmp" to "x": is a directory',
    ],
    [
      `Cannot read model config "m/config.json": No such file or directory (os error 2): readfile 'm/config.json'`,
      'Cannot read model config "m/config.json": No such file or directory',
    ],
    [
      `Cannot open "m": Permission denied (os error 13): open 'm/w'`,
      'Cannot open "m": Permission denied ("m/w")',
    ],
    ["Is a directory (os error 21)", "Is a directory"],
    ["Plain message", "Plain message"],
  ];
  for (const [message, line] of cases) assert.equal(plainOsMessage(message), line);
});

Deno.test("failureLine: one line for what a user can cause, nothing for a bug", () => {
  assert.equal(
    failureLine(new Deno.errors.NotFound("No such file or directory (os error 2): stat 'm'")),
    'Cannot find "m": no such file or directory',
  );
  assert.equal(
    failureLine(new OutputPathError("m", 'it is the model folder "m"', "--out")),
    'Cannot write --out "m": it is the model folder "m"',
  );
  assert.equal(
    failureLine(new GpuError('Cannot compile kernel "gelu":\n  3:7 error: unknown type\n')),
    'Cannot compile kernel "gelu": 3:7 error: unknown type',
  );
  assert.equal(
    failureLine(new GpuError("GPU device lost (destroyed): the driver reset\n")),
    "GPU device lost (destroyed): the driver reset",
  );
  assert.match(
    failureLine(new GpuError('GPU error: Out of memory creating buffer "acts"'))!,
    /^GPU error: Out of memory creating buffer "acts" \(out of GPU memory: try a smaller batch_size/,
  );
  for (const bug of [new TypeError("x is undefined"), new RangeError("index 3"), "text"]) {
    assert.equal(failureLine(bug), undefined);
  }
});

Deno.test("failureLine names the flag and the task for a missing permission", () => {
  const env = new Deno.errors.NotCapable(
    'Requires env access to "LOG_TOKENS", run again with the --allow-env flag',
  );
  assert.equal(
    failureLine(env, { command: "finetune" }),
    'Requires env access to "LOG_TOKENS": run again with --allow-env=LOG_TOKENS, or run it ' +
      "through `deno task finetune`",
  );
  const read = new Deno.errors.NotCapable(
    'Requires read access to "/m", run again with the --allow-read flag',
  );
  assert.equal(
    failureLine(read, { command: "merge" }),
    'Requires read access to "/m": run again with --allow-read=/m, or run it with -A',
  );
});
