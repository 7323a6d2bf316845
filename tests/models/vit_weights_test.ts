import assert from "node:assert/strict";
import { join } from "node:path";
import { f32ToF16Bits } from "../../formats/base_quant.ts";
import {
  SafetensorsFile,
  type TensorToWrite,
  writeSafetensors,
} from "../../formats/safetensors.ts";
import { ModelWeightsError } from "../../models/model.ts";
import { loadModel } from "../../models/registry.ts";
import { Vit } from "../../models/vit.ts";
import { readVitConfig } from "../../models/vit_config.ts";
import { expectedVitShapes, loadVitWeights, vitWeightNames } from "../../models/vit_weights.ts";
import { GPU_TEST, relativeError, testGpu, withTempDir } from "../_util.ts";

const HF = "fixtures/tiny-vit";
const TIMM = "fixtures/tiny-vit-timm";

async function tensorsOf(folder: string): Promise<TensorToWrite[]> {
  using file = await SafetensorsFile.open(join(folder, "model.safetensors"));
  const out: TensorToWrite[] = [];
  for (const name of file.names()) {
    out.push({
      name,
      dtype: "F32",
      shape: file.info(name).shape,
      data: await file.readFloat32(name),
    });
  }
  return out;
}

// A copy of a fixture with its tensors (and config) changed.
async function variant(
  dir: string,
  from: string,
  edit: (tensors: TensorToWrite[]) => TensorToWrite[],
  config?: (json: Record<string, unknown>) => Record<string, unknown>,
): Promise<string> {
  const json = JSON.parse(await Deno.readTextFile(join(from, "config.json")));
  await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(config ? config(json) : json));
  await writeSafetensors(join(dir, "model.safetensors"), edit(await tensorsOf(from)));
  return dir;
}

async function refused(folder: string, tensor: string | undefined, message: RegExp): Promise<void> {
  await assert.rejects(() => loadVitWeights(folder), (e: unknown) => {
    assert(e instanceof ModelWeightsError, `not a ModelWeightsError: ${e}`);
    assert.equal(e.tensor, tensor);
    assert.match(e.message, /^Invalid ViT checkpoint ".*model\.safetensors": /);
    assert.match(e.message, message);
    assert(!e.message.includes("\n"));
    return true;
  });
}

const rename = (from: string, to: string) => (ts: TensorToWrite[]) =>
  ts.map((t) => t.name === from ? { ...t, name: to } : t);

Deno.test(
  "a bare ViTModel checkpoint (no prefix, a pooler, no classifier) loads with a zero head",
  GPU_TEST,
  async () => {
    await withTempDir("vit-model", async (dir) => {
      const D = 24;
      await variant(dir, HF, (ts) => [
        ...ts.filter((t) => !t.name.startsWith("classifier.")).map((t) => ({
          ...t,
          name: t.name.replace(/^vit\./, ""),
        })),
        {
          name: "pooler.dense.weight",
          dtype: "F32",
          shape: [D, D],
          data: new Float32Array(D * D).fill(0.5),
        },
        { name: "pooler.dense.bias", dtype: "F32", shape: [D], data: new Float32Array(D) },
        {
          name: "embeddings.mask_token",
          dtype: "F32",
          shape: [1, 1, D],
          data: new Float32Array(D),
        },
      ], (json) => ({ ...json, architectures: ["ViTModel"] }));
      const weights = await loadVitWeights(dir);
      assert.equal(weights.storedHead, false);
      assert.deepEqual(weights.tensors.get("classifier.weight")!.data, new Float32Array(5 * D));
      assert.equal(weights.tensors.get("pooler.dense.weight")!.data[0], 0.5);
      assert(!weights.tensors.has("embeddings.mask_token"));
      const gpu = await testGpu();
      using model = await loadModel(gpu, dir);
      const acts = model.forward({
        kind: "labelled",
        B: 2,
        inputShape: [3, 12, 12],
        inputs: new Float32Array(2 * 3 * 144).fill(0.25),
      });
      // Every class starts equal.
      assert.deepEqual((await acts.logits.read()).slice(0, 5), new Float32Array(5));
      assert.deepEqual(
        [...model.weightNames(["vit.encoder.layer.0.output.dense.bias", "classifier.bias"])],
        [["vit.encoder.layer.0.output.dense.bias", "encoder.layer.0.output.dense.bias"], [
          "classifier.bias",
          "classifier.bias",
        ]],
      );
    });
    assert.equal(vitWeightNames(["embeddings.mask_token"]).get("embeddings.mask_token"), null);
  },
);

Deno.test(
  "a ViT stored in F16 loads widened, within f16 rounding of the F32 one",
  GPU_TEST,
  async () => {
    await withTempDir("vit-f16", async (dir) => {
      await variant(dir, HF, (ts) =>
        ts.map((t) => ({
          ...t,
          dtype: "F16" as const,
          data: Uint16Array.from(t.data as Float32Array, f32ToF16Bits),
        })));
      const gpu = await testGpu();
      const inputs = new Float32Array(3 * 144).map((_, i) => Math.sin(i));
      const batch = { kind: "labelled" as const, B: 1, inputShape: [3, 12, 12], inputs };
      using half = await loadModel(gpu, dir);
      using full = await loadModel(gpu, HF);
      const a = await half.forward(batch).logits.read();
      const b = await full.forward(batch).logits.read();
      const err = relativeError(a, b);
      assert(err > 0 && err < 5e-3, `f16 logits relative error ${err}`);
    });
  },
);

Deno.test("ViT checkpoints that do not fit their config are refused naming file and tensor", async () => {
  await withTempDir("vit-bad", async (dir) => {
    const at = (name: string) => join(dir, name);
    await Deno.mkdir(at("pos"));
    await refused(
      await variant(at("pos"), HF, (ts) => ts, (json) => ({ ...json, image_size: 16 })),
      "vit.embeddings.position_embeddings",
      /has shape \[1, 10, 24\], expected \[1, 17, 24\]: the position embeddings do not fit image_size \/ patch_size \(16x16 \/ 4 = 4x4 = 16 patches \+ the class token\)/,
    );
    await Deno.mkdir(at("mixed"));
    await refused(
      await variant(at("mixed"), HF, rename("vit.layernorm.bias", "layernorm.bias")),
      "layernorm.bias",
      /tensor "layernorm.bias" has no "vit." prefix while others have it/,
    );
    await Deno.mkdir(at("missing"));
    await refused(
      await variant(
        at("missing"),
        HF,
        (ts) => ts.filter((t) => t.name !== "vit.encoder.layer.1.intermediate.dense.bias"),
      ),
      "vit.encoder.layer.1.intermediate.dense.bias",
      /missing tensor "vit.encoder.layer.1.intermediate.dense.bias" with shape \[40\]/,
    );
    await Deno.mkdir(at("extra"));
    await refused(
      await variant(
        at("extra"),
        HF,
        rename("vit.encoder.layer.1.output.dense.bias", "vit.encoder.layer.2.output.dense.bias"),
      ),
      "vit.encoder.layer.2.output.dense.bias",
      /unexpected tensor "vit.encoder.layer.2.output.dense.bias" \(a Hugging Face ViT with num_hidden_layers 2/,
    );
    await Deno.mkdir(at("head"));
    await refused(
      await variant(at("head"), HF, (ts) =>
        ts.map((t) =>
          t.name.startsWith("classifier.")
            ? {
              ...t,
              shape: [1000, ...t.shape.slice(1)],
              data: new Float32Array(1000 * (t.shape[1] ?? 1)),
            }
            : t
        )),
      "classifier.weight",
      /the head has 1000 classes, the config's "id2label" 5/,
    );
    await Deno.mkdir(at("half-head"));
    await refused(
      await variant(at("half-head"), HF, (ts) => ts.filter((t) => t.name !== "classifier.bias")),
      "classifier.weight",
      /the head has "classifier.weight" but not its bias/,
    );
    await Deno.mkdir(at("int"));
    await refused(
      await variant(
        at("int"),
        HF,
        (ts) =>
          ts.map((t) =>
            t.name === "vit.layernorm.weight"
              ? { ...t, dtype: "I32" as const, data: new Int32Array(t.shape[0]) }
              : t
          ),
      ),
      "vit.layernorm.weight",
      /has dtype I32; weights must be F32, F16, BF16, F64/,
    );
    await Deno.mkdir(at("timm-bias"));
    await refused(
      await variant(at("timm-bias"), TIMM, (ts) => ts, (json) => ({
        ...json,
        model_args: { ...json.model_args as object, qkv_bias: false },
      })),
      "blocks.0.attn.qkv.bias",
      /unexpected tensor "blocks.0.attn.qkv.bias" \(a timm ViT with depth 2 and qkv_bias false/,
    );
  });
});

Deno.test(
  "ViT loads one weight at a time, and keeps its linears int8 on a quantized base",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const loaded: string[] = [];
    using full = await Vit.load(gpu, TIMM, { onWeight: (w) => loaded.push(w.name) });
    const config = await readVitConfig(TIMM);
    assert.deepEqual(loaded, expectedVitShapes(config).map((e) => e.name));
    using int8 = await Vit.load(gpu, TIMM, { baseFormat: "int8", blockSize: 32 });
    // Every site's linear is packed; norms, embeddings and the head stay f32.
    assert.deepEqual(
      [...int8.packed.keys()].sort(),
      [...new Set(int8.sites.map((s) => `${s.linear}.weight`))].sort(),
    );
    const inputs = new Float32Array(2 * 3 * 144).map((_, i) => Math.cos(i));
    const batch = { kind: "labelled" as const, B: 2, inputShape: [3, 12, 12], inputs };
    const err = relativeError(
      await int8.forward(batch).logits.read(),
      await full.forward(batch).logits.read(),
    );
    assert(err > 0 && err < 5e-2, `int8 logits relative error ${err}`);
    await assert.rejects(
      () => Vit.load(gpu, TIMM, { baseFormat: "int8", trainAll: true }),
      /full fine-tuning needs baseFormat "f32"/,
    );
  },
);

Deno.test("a sharded ViT checkpoint loads the same weights", GPU_TEST, async () => {
  await withTempDir("vit-shards", async (dir) => {
    const tensors = await tensorsOf(HF);
    const half = Math.ceil(tensors.length / 2);
    const shards = [tensors.slice(0, half), tensors.slice(half)];
    const files = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
    const weightMap: Record<string, string> = {};
    for (const [i, shard] of shards.entries()) {
      await writeSafetensors(join(dir, files[i]), shard);
      for (const t of shard) weightMap[t.name] = files[i];
    }
    await Deno.writeTextFile(
      join(dir, "model.safetensors.index.json"),
      JSON.stringify({ metadata: {}, weight_map: weightMap }),
    );
    await Deno.copyFile(join(HF, "config.json"), join(dir, "config.json"));
    const [a, b] = [await loadVitWeights(dir), await loadVitWeights(HF)];
    assert.deepEqual([...a.tensors.keys()], [...b.tensors.keys()]);
    for (const [name, t] of a.tensors) assert.deepEqual(t.data, b.tensors.get(name)!.data, name);
  });
});
