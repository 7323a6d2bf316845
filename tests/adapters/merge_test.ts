import assert from "node:assert/strict";
import {
  addLowRankDelta,
  mergeAdapters,
  mergedWeights,
  unmergeAdapters,
  type WeightLayout,
  writeMergedFolder,
} from "../../adapters/merge.ts";
import type { LinearAdapter } from "../../adapters/linear_adapter.ts";
import { OutputPathError } from "../../formats/folder.ts";
import { SafetensorsFile, writeSafetensors } from "../../formats/safetensors.ts";
import { narrowToF16 } from "../../formats/narrow.ts";
import { Matmul } from "../../kernels/matmul.ts";
import { Tensor } from "../../kernels/tensor.ts";
import { Gpt2 } from "../../models/gpt2.ts";
import { loadGpt2Weights } from "../../models/gpt2_weights.ts";
import { freshSeed, GPU_TEST, randomArray, relativeError, testGpu } from "../_util.ts";
import { attachRandomAdapters, batchTokens, FIXTURE, logitsOf } from "./_adapted_gpt2.ts";

async function tempDir(prefix: string): Promise<string> {
  await Deno.mkdir("out/tmp", { recursive: true });
  return await Deno.makeTempDir({ dir: "out/tmp", prefix });
}

// W + sign · s · (B A)ᵀ (conv1d, W [in, total]) or W + sign · s · B A (linear, W [total, in]).
function deltaRef(
  w: Float32Array,
  f: { a: Float32Array; b: Float32Array; r: number; inF: number; outF: number; s: number },
  o: { layout: WeightLayout; total: number; off: number; sign: number },
): Float64Array {
  const out = Float64Array.from(w);
  for (let i = 0; i < f.inF; i++) {
    for (let j = 0; j < f.outF; j++) {
      let d = 0;
      for (let k = 0; k < f.r; k++) d += f.b[j * f.r + k] * f.a[k * f.inF + i];
      const at = o.layout === "conv1d" ? i * o.total + o.off + j : (o.off + j) * f.inF + i;
      out[at] += o.sign * f.s * d;
    }
  }
  return out;
}

Deno.test(
  "addLowRankDelta matches the float64 reference in both layouts and touches only its slice",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const matmul = await Matmul.load(gpu);
    const seed = freshSeed();
    const shapes = [
      { inF: 1, outF: 1, total: 1, off: 0, r: 1 },
      { inF: 17, outF: 5, total: 23, off: 7, r: 3 },
      { inF: 64, outF: 33, total: 100, off: 67, r: 8 },
      { inF: 48, outF: 48, total: 144, off: 96, r: 2 },
    ];
    for (const layout of ["conv1d", "linear"] as const) {
      for (const [n, { inF, outF, total, off, r }] of shapes.entries()) {
        const what = `${layout} in ${inF} out ${outF}/${total} at ${off} r ${r} seed ${seed}`;
        const s0 = seed + 10 * n;
        const w = randomArray(inF * total, s0);
        const a = randomArray(r * inF, s0 + 1);
        const b = randomArray(outF * r, s0 + 2);
        const scale = 1.75;
        const shape = layout === "conv1d" ? [inF, total] : [total, inF];
        using tw = Tensor.from(gpu, w, shape, { label: "w" });
        using ta = Tensor.from(gpu, a, [r, inF]);
        using tb = Tensor.from(gpu, b, [outF, r]);
        const adapter = { name: "x", a: ta, b: tb, r, inFeatures: inF, outFeatures: outF, scale };
        addLowRankDelta(matmul, tw, adapter, { layout, colOffset: off });
        const got = await tw.read();
        const f = { a, b, r, inF, outF, s: scale };
        const want = deltaRef(w, f, { layout, total, off, sign: 1 });
        const err = relativeError(got, want);
        assert(err < 1e-6, `${what}: relative error ${err}`);
        const changed = deltaRef(new Float32Array(w.length), f, { layout, total, off, sign: 1 });
        for (let i = 0; i < w.length; i++) {
          if (changed[i] === 0) assert.equal(got[i], w[i], `${what}: element ${i} outside`);
        }
        addLowRankDelta(matmul, tw, adapter, { layout, colOffset: off, sign: -1 });
        // W + d - d rounds at the scale of W + d, which may dwarf W (a 1x1 weight, say).
        const norm = (x: ArrayLike<number>) => Math.hypot(...Array.from(x));
        const back = relativeError(await tw.read(), w) * norm(w) / Math.max(norm(w), norm(want));
        assert(back < 1e-6, `${what}: unmerge error ${back} relative to |W + dW|`);
      }
    }
    using tw = Tensor.from(gpu, new Float32Array(12), [3, 4]);
    using ta = Tensor.from(gpu, new Float32Array(3), [1, 3]);
    using tb = Tensor.from(gpu, new Float32Array(2), [2, 1]);
    const bad = { name: "h.0.attn.c_attn.q", a: ta, b: tb, r: 1, inFeatures: 3, outFeatures: 2 };
    assert.throws(
      () => addLowRankDelta(matmul, tw, { ...bad, scale: 1 }, { layout: "conv1d", colOffset: 3 }),
      /Cannot merge adapter "h.0.attn.c_attn.q" \(3 -> 2, rank 1, at output 3\)/,
    );
  },
);

Deno.test(
  "Merged GPT-2 computes base + adapters alone, unmerges back, and writes a folder that reloads",
  GPU_TEST,
  async (t) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    using model = await Gpt2.load(gpu, FIXTURE);
    const tokens = batchTokens(seed, model.config.vocabSize);
    const base = await logitsOf(model, tokens);
    const adapters = attachRandomAdapters(model, seed + 1);
    using _ = { [Symbol.dispose]: () => adapters.forEach((a) => a[Symbol.dispose]()) };
    const adapted = await logitsOf(model, tokens);
    const moved = relativeError(adapted, base);
    assert(moved > 1e-2, `adapters barely change the logits (${moved}), seed ${seed}`);
    const before = new Map(
      await Promise.all([...model.params].map(async ([n, p]) => [n, await p.read()] as const)),
    );

    const dir = await tempDir("merge-");
    try {
      await writeMergedFolder(model, FIXTURE, `${dir}/merged`);
      await t.step("writing leaves the model's weights bit for bit", async () => {
        for (const [name, p] of model.params) assert.deepEqual(await p.read(), before.get(name));
      });

      const detached = mergeAdapters(model);
      assert.equal(model.adapters.size, 0);
      const merged = await logitsOf(model, tokens);
      await t.step("merged logits equal base + adapters within 1e-5", () => {
        const err = relativeError(merged, adapted);
        assert(err < 1e-5, `relative error ${err}, seed ${seed}`);
      });

      unmergeAdapters(model, detached);
      await t.step("unmerge restores the base weights and logits within 1e-6", async () => {
        assert.deepEqual(
          [...model.adapters].map(([m, l]) => [m, l.map((x) => x.colOffset)]),
          [...detached].map(([m, l]) => [m, l.map((x) => x.colOffset)]),
        );
        const attached = [...model.adapters.values()].flat().map((x) => x.adapter);
        assert.deepEqual(attached, adapters);
        for (const [name, p] of model.params) {
          const err = relativeError(await p.read(), before.get(name)!);
          assert(err < 1e-6, `${name}: relative error ${err}, seed ${seed}`);
        }
        model.detachAll();
        const err = relativeError(await logitsOf(model, tokens), base);
        assert(err < 1e-6, `relative error ${err}, seed ${seed}`);
        for (const [m, list] of detached) for (const x of list) model.attach(m, x.adapter, x);
      });

      await t.step("the written folder reloads with the merged logits", async () => {
        const files = [...Deno.readDirSync(`${dir}/merged`)].map((e) => e.name).sort();
        assert.deepEqual(files, [
          "config.json",
          "model.safetensors",
          "tokenizer.json",
          "tokenizer_config.json",
        ]);
        assert.equal(
          await Deno.readTextFile(`${dir}/merged/config.json`),
          await Deno.readTextFile(`${FIXTURE}/config.json`),
        );
        using source = await SafetensorsFile.open(`${FIXTURE}/model.safetensors`);
        using file = await SafetensorsFile.open(`${dir}/merged/model.safetensors`);
        // The causal-mask buffers are not weights: they are dropped, everything else kept in order.
        const weights = source.names().filter((n) => !/\.attn\.(bias|masked_bias)$/.test(n));
        assert(weights.length < source.names().length);
        assert.deepEqual(file.names(), weights);
        assert.deepEqual(file.metadata, { format: "pt" });
        for (const name of file.names()) assert.equal(file.info(name).dtype, "F32");
        using reloaded = await Gpt2.load(gpu, `${dir}/merged`);
        const err = relativeError(await logitsOf(reloaded, tokens), adapted);
        assert(err < 1e-5, `relative error ${err}, seed ${seed}`);
      });

      await t.step("writing again replaces its own files and keeps the others", async () => {
        await Deno.writeTextFile(`${dir}/merged/notes.txt`, "mine\n");
        await writeMergedFolder(model, FIXTURE, `${dir}/merged`);
        assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["merged"]);
        assert.deepEqual([...Deno.readDirSync(`${dir}/merged`)].map((e) => e.name).sort(), [
          "config.json",
          "model.safetensors",
          "notes.txt",
          "tokenizer.json",
          "tokenizer_config.json",
        ]);
        assert.equal(await Deno.readTextFile(`${dir}/merged/notes.txt`), "mine\n");
      });

      await t.step("the source folder, a folder inside it or around it is refused", async () => {
        for (const out of [FIXTURE, `${FIXTURE}/merged`, "fixtures"]) {
          await assert.rejects(
            () => writeMergedFolder(model, FIXTURE, out),
            (e) => e instanceof OutputPathError && e.path === out,
          );
        }
        await assert.rejects(Deno.stat(`${FIXTURE}/merged`), Deno.errors.NotFound);
      });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test(
  "An f16 checkpoint with the transformer. prefix, mask buffers and lm_head merges in its own layout",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const dir = await tempDir("merge-f16-");
    try {
      // The fixture as GPT2LMHeadModel.half().save_pretrained would write it.
      const { tensors: host, config } = await loadGpt2Weights(FIXTURE);
      const src = `${dir}/source`;
      await Deno.mkdir(src);
      await Deno.copyFile(`${FIXTURE}/config.json`, `${src}/config.json`);
      await Deno.copyFile(`${FIXTURE}/tokenizer.json`, `${src}/tokenizer.json`);
      const written = [...host].map(([name, { shape, data }]) => ({
        name: `transformer.${name}`,
        dtype: "F16" as const,
        shape,
        data: narrowToF16(data),
      }));
      const mask = new Uint8Array(config.nPositions * config.nPositions).fill(1);
      const P = config.nPositions;
      written.splice(3, 0, {
        name: "transformer.h.0.attn.bias",
        dtype: "BOOL" as never,
        shape: [1, 1, P, P],
        data: mask as never,
      });
      written.push({ ...written[0], name: "lm_head.weight" });
      await writeSafetensors(`${src}/model.safetensors`, written, { format: "pt" });

      using model = await Gpt2.load(gpu, src);
      const adapters = attachRandomAdapters(model, seed);
      using _ = { [Symbol.dispose]: () => adapters.forEach((a) => a[Symbol.dispose]()) };
      const want = await mergedWeights(model);
      await writeMergedFolder(model, src, `${dir}/merged`);

      using file = await SafetensorsFile.open(`${dir}/merged/model.safetensors`);
      assert.deepEqual(
        file.names(),
        written.map((w) => w.name).filter((n) => n !== "transformer.h.0.attn.bias"),
      );
      for (const name of file.names()) {
        assert.equal(file.info(name).dtype, "F16", name);
        const canonical = name === "lm_head.weight" ? "wte.weight" : name.slice(12);
        const bits = new Uint16Array((await file.readBytes(name)).buffer);
        assert.deepEqual(bits, narrowToF16(want.get(canonical)!), `${name}, seed ${seed}`);
      }
      const c_attn = want.get("h.1.attn.c_attn.weight")!;
      const baseAttn = host.get("h.1.attn.c_attn.weight")!.data;
      assert(relativeError(c_attn, baseAttn) > 1e-2, "the adapters changed c_attn");
      using reloaded = await Gpt2.load(gpu, `${dir}/merged`);
      const tokens = batchTokens(seed, config.vocabSize);
      const adapted = await logitsOf(model, tokens);
      // The only difference is f16 rounding of the merged weights (relative 2^-11 each).
      const err = relativeError(await logitsOf(reloaded, tokens), adapted);
      assert(err < 1e-2, `relative error ${err}, seed ${seed}`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test(
  "mergeAdapters refuses an adapter without factors and changes nothing",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    using model = await Gpt2.load(gpu, FIXTURE);
    const opaque: LinearAdapter = {
      name: "h.1.mlp.c_proj.custom",
      inFeatures: model.config.nInner,
      outFeatures: model.config.nEmbd,
      r: 1,
      scale: 1,
      forward: () => {},
      backward: () => {},
    };
    model.attach("h.1.mlp.c_proj", opaque);
    const w = await model.params.get("h.1.mlp.c_proj.weight")!.read();
    assert.throws(
      () => mergeAdapters(model),
      /Cannot merge adapter "h.1.mlp.c_proj.custom" on "h.1.mlp.c_proj": it does not expose/,
    );
    assert.equal(model.adapters.get("h.1.mlp.c_proj")?.length, 1);
    assert.deepEqual(await model.params.get("h.1.mlp.c_proj.weight")!.read(), w);
  },
);
