import assert from "node:assert/strict";
import { Gpt2 } from "../../models/gpt2.ts";
import { readGpt2Config } from "../../models/gpt2_config.ts";
import { initGpt2Weights } from "../../models/gpt2_init.ts";
import { generateTokens } from "../../models/generate.ts";
import { argmax } from "../../models/sampling.ts";
import { freshSeed, GPU_TEST, relativeError, testGpu } from "../_util.ts";

// GPT-2's real vocabulary (50257) is odd: logits rows are padded to a multiple of 4 elements so
// the LM head's backward matmuls can use vector loads. A vocabulary of 301 exercises that path.
Deno.test(
  "an odd vocabulary: LM head, its gradients and generation agree with float64",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const base = await readGpt2Config("fixtures/tiny-gpt2");
    const config = { ...base, vocabSize: 301 };
    using model = await Gpt2.fromWeights(gpu, initGpt2Weights(config, { seed }), {
      trainAll: true,
    });
    const [B, T, V, C] = [2, 9, 301, config.nEmbd];
    const tokens = Uint32Array.from({ length: B * T }, (_, i) => (i * 37 + seed) % 150);
    const targets = Uint32Array.from({ length: B * T }, (_, i) => (i * 53 + 7) % V);
    const acts = model.forward({ B, T, tokens });
    assert.equal(acts.logitsStride, 304);
    const lnf = await acts.lnf.read() as Float32Array;
    const wte = await model.params.get("wte.weight")!.read() as Float32Array;
    const logits = await acts.logits.read() as Float32Array;
    const rows = B * T;
    const got = new Float64Array(rows * V);
    const want = new Float64Array(rows * V);
    for (let t = 0; t < rows; t++) {
      for (let v = 0; v < V; v++) {
        let s = 0;
        for (let c = 0; c < C; c++) s += lnf[t * C + c] * wte[v * C + c];
        want[t * V + v] = s;
        got[t * V + v] = logits[t * 304 + v];
      }
      assert.deepEqual([...logits.subarray(t * 304 + V, (t + 1) * 304)], [0, 0, 0], `padding ${t}`);
    }
    assert(relativeError(got, want) < 1e-5, `seed ${seed}: logits`);

    model.zeroGrads();
    model.loss({ targets }, { backward: true });
    const dlogits = await acts.logits.read() as Float32Array;
    model.backward();
    // ln_f's bias gradient is the sum over positions of dlogits · wte.
    const dbias = new Float64Array(C);
    for (let t = 0; t < rows; t++) {
      for (let v = 0; v < V; v++) {
        for (let c = 0; c < C; c++) dbias[c] += dlogits[t * 304 + v] * wte[v * C + c];
      }
    }
    const gotBias = await model.grads!.get("ln_f.bias")!.read();
    assert(relativeError(gotBias, dbias) < 1e-4, `seed ${seed}: ln_f.bias gradient`);
    // Rows of wte no input token uses get only the LM head's gradient, dlogitsᵀ · lnf.
    const dwte = await model.grads!.get("wte.weight")!.read() as Float32Array;
    const unused = [150, 151, 299, 300];
    const gotRows = unused.flatMap((v) => [...dwte.subarray(v * C, (v + 1) * C)]);
    const wantRows = unused.flatMap((v) =>
      Array.from({ length: C }, (_, c) => {
        let s = 0;
        for (let t = 0; t < rows; t++) s += dlogits[t * 304 + v] * lnf[t * C + c];
        return s;
      })
    );
    assert(relativeError(gotRows, wantRows) < 1e-5, `seed ${seed}: wte gradient rows`);

    const prompt = [3, 1, 4, 1, 5];
    const out = await generateTokens(model, prompt, { maxNewTokens: 4 });
    const seq = [...prompt];
    for (const id of out) {
      const a = model.forward({ B: 1, T: seq.length, tokens: Uint32Array.from(seq) });
      const last = (await a.logits.read() as Float32Array).subarray(
        (seq.length - 1) * 304,
        (seq.length - 1) * 304 + V,
      );
      assert.equal(argmax(last), id);
      seq.push(id);
    }
  },
);
