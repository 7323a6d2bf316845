// Fuzzing `config.json`: mutated objects through parseModelConfig, mutated bytes through
// readModelConfig. Every case ends in a config whose shape (the sites an adapter may take) is
// computed at once, or in one line of ModelConfigError naming the file.

import assert from "node:assert/strict";
import { join } from "node:path";
import fc from "fast-check";
import { ModelConfigError } from "../../models/model.ts";
import { modelShape, parseModelConfig, readModelConfig } from "../../models/registry.ts";
import type { ModelConfig } from "../../models/registry.ts";
import { withTempDir } from "../_util.ts";
import { applyEdits, assertRefusal, byteEdits, fuzz, nastyJson, refusedOrOk } from "./_fuzz.ts";

const FIXTURE = "fixtures/tiny-gpt2/config.json";
const TEXT = await Deno.readTextFile(FIXTURE);
const BASE = JSON.parse(TEXT) as Record<string, unknown>;

const KEYS = [
  ...Object.keys(BASE),
  "n_inner",
  "n_ctx",
  "add_cross_attention",
  "scale_attn_by_inverse_layer_idx",
  "__proto__",
  "constructor",
];

type ConfigEdit =
  | { op: "set"; key: string; value: unknown }
  | { op: "drop"; key: string }
  | { op: "whole"; value: unknown };

const configEdits: fc.Arbitrary<ConfigEdit[]> = fc.array(
  fc.oneof(
    {
      weight: 6,
      arbitrary: fc.record({
        op: fc.constant("set" as const),
        key: fc.oneof(fc.constantFrom(...KEYS), fc.string({ unit: "binary", maxLength: 6 })),
        value: fc.oneof(
          nastyJson,
          fc.constantFrom("gpt2", "llama", "gelu_new", "relu", ["GPT2LMHeadModel"], 2 ** 30),
        ),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({ op: fc.constant("drop" as const), key: fc.constantFrom(...KEYS) }),
    },
    { weight: 1, arbitrary: fc.record({ op: fc.constant("whole" as const), value: nastyJson }) },
  ),
  { minLength: 1, maxLength: 4 },
);

function edit(edits: ConfigEdit[]): unknown {
  let json: unknown = structuredClone(BASE);
  for (const e of edits) {
    if (e.op === "whole") json = e.value;
    else if (typeof json !== "object" || json === null || Array.isArray(json)) continue;
    // defineProperty: an own "__proto__" key, as JSON.parse makes one.
    else if (e.op === "set") {
      Object.defineProperty(json, e.key, {
        value: e.value,
        enumerable: true,
        writable: true,
        configurable: true,
      });
    } else delete (json as Record<string, unknown>)[e.key];
  }
  return json;
}

/** What every accepted config must allow at once: its shape, the sites an adapter may take. */
function checkShape(config: ModelConfig): void {
  const shape = modelShape(config);
  assert.match(shape.configHash, /^[0-9a-f]{16}$/);
  assert.ok(shape.sites.length > 0);
}

// Under ~4 s in all for this file on the 2-core CI machine.
const OBJECTS = { runs: 10000, ms: 2_000 };
const FILES = { runs: 3000, ms: 2_000 };

Deno.test("fuzz: parseModelConfig on mutated configs ends in a config or one line", async () => {
  const source = "models/fuzz/config.json";
  await fuzz("config.json objects", configEdits, (edits) => {
    const config = (() => {
      try {
        return parseModelConfig(edit(edits), source);
      } catch (e) {
        assertRefusal(e, [ModelConfigError], source);
        return undefined;
      }
    })();
    if (config !== undefined) checkShape(config);
  }, OBJECTS);
});

Deno.test("fuzz: readModelConfig on mutated config.json bytes ends in a config or one line", async () => {
  await withTempDir("fuzz-config", async (dir) => {
    const path = join(dir, "config.json");
    const bytes = new TextEncoder().encode(TEXT);
    await fuzz("config.json bytes", byteEdits, async (edits) => {
      await Deno.writeFile(path, applyEdits(bytes, edits));
      const config = await refusedOrOk(() => readModelConfig(dir), [ModelConfigError], path);
      if (config !== undefined) checkShape(config);
    }, FILES);
  });
});

// Cases the fuzzer found, kept as they were shrunk.
Deno.test("configs found by fuzzing are refused in one line before anything follows their claims", async () => {
  // n_layer 2^30 made modelShape list 7 * 2^30 sites: out of memory instead of a refusal.
  const source = "models/fuzz/config.json";
  for (const nLayer of [2 ** 30, 2 ** 53 - 1, 4097]) {
    const start = performance.now();
    assert.throws(() => parseModelConfig({ ...BASE, n_layer: nLayer }, source), (e: Error) => {
      assertRefusal(e, [ModelConfigError], source);
      assert.match(e.message, /"n_layer" is \d+, more than the 4096 layers this project supports/);
      return true;
    });
    assert.ok(performance.now() - start < 100);
  }
  assert.equal(
    modelShape(parseModelConfig({ ...BASE, n_layer: 4096 }, source)).sites.length,
    7 * 4096,
  );

  // JSON.parse quotes the text around the error, line breaks included.
  await withTempDir("fuzz-config", async (dir) => {
    const path = join(dir, "config.json");
    await Deno.writeTextFile(path, '{\n  "n_layer": tru\n}');
    await assert.rejects(() => readModelConfig(dir), (e: Error) => {
      assertRefusal(e, [ModelConfigError], path);
      assert.match(e.message, /not JSON \(Unexpected token '\\n'/);
      return true;
    });
  });
});
