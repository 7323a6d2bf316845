/**
 * Checks a Hugging Face GPT-2 folder (`config.json` plus `model.safetensors` or a sharded index)
 * against its config from the header alone, strictly, and plans a streaming load
 * ({@linkcode planGpt2Weights}); or loads it into f32 host arrays under canonical names
 * ({@linkcode loadGpt2Weights}).
 *
 * Canonical names are those of the published `gpt2` checkpoint: `wte.weight`, `h.0.ln_1.weight`,
 * ..., `ln_f.bias`, with no `transformer.` prefix. A checkpoint may carry that prefix (as
 * `GPT2LMHeadModel.save_pretrained` writes it) on all of its parameters or on none: a mix is an
 * error, since it means two models were merged into one file. The causal-mask buffers
 * `h.{i}.attn.bias` and `h.{i}.attn.masked_bias` are skipped whatever their dtype and shape.
 * `lm_head.weight` is accepted only when it equals `wte.weight` exactly, since GPT-2 ties them.
 * Every other difference from {@linkcode expectedGpt2Shapes} (a missing tensor, an extra one, a
 * wrong shape) is an error naming the tensor, the file, and the expected shape.
 *
 * @module
 */

import { Checkpoint, type Dtype } from "../formats/safetensors.ts";
import type { PlannedWeight, WeightReader } from "./_base_weights.ts";
import { readGpt2Config } from "./gpt2_config.ts";
import type { Gpt2Config } from "./gpt2_config.ts";
import { ModelWeightsError } from "./model.ts";
import { describeCheckpoint, formatShape, sameShape } from "./_weight_files.ts";

/** One weight on the host, row-major f32. */
export interface HostTensor {
  /** The dimensions. */
  shape: number[];
  /** The values, widened to f32 from F16/BF16 checkpoints. */
  data: Float32Array;
}

/** A loaded GPT-2: its architecture and every parameter under its canonical name. */
export interface Gpt2Weights {
  /** The architecture from `config.json`. */
  config: Gpt2Config;
  /** Every parameter, in {@linkcode expectedGpt2Shapes} order. */
  tensors: Map<string, HostTensor>;
}

/** A checkpoint whose tensors do not match its config. */
export class Gpt2WeightsError extends ModelWeightsError {
  /**
   * Makes the error.
   *
   * @param message The whole message, already naming the file and tensor.
   * @param options Where the error happened.
   */
  constructor(message: string, options: { file: string; tensor?: string }) {
    super(message, options);
    this.name = "Gpt2WeightsError";
  }
}

/** The prefix `GPT2LMHeadModel` puts before the transformer's parameters. */
export const TRANSFORMER_PREFIX = "transformer.";

const LM_HEAD = "lm_head.weight";
/** The dtypes a weight may be stored in (widened or rounded to f32, or kept 16-bit). */
export const FLOAT_DTYPES: readonly Dtype[] = ["F32", "F16", "BF16", "F64"];
const BUFFER = /^h\.\d+\.attn\.(bias|masked_bias)$/;

/**
 * Every parameter of a GPT-2 and its shape, in the order the published checkpoint lists them.
 * Conv1D weights are stored [in, out], so a layer computes `x @ W + b`.
 *
 * @param config The architecture.
 * @returns Canonical names and shapes.
 *
 * @example The attention weights of block 0
 * ```ts
 * import { expectedGpt2Shapes } from "./gpt2_weights.ts";
 * import { readGpt2Config } from "./gpt2_config.ts";
 * const shapes = expectedGpt2Shapes(await readGpt2Config("fixtures/tiny-gpt2"));
 * shapes.find((s) => s.name === "h.0.attn.c_attn.weight"); // { shape: [C, 3C] }
 * ```
 */
export function expectedGpt2Shapes(config: Gpt2Config): Array<{ name: string; shape: number[] }> {
  const { nLayer, nEmbd: C, nInner: I, vocabSize: V, nPositions: P } = config;
  const out = [
    { name: "wte.weight", shape: [V, C] },
    { name: "wpe.weight", shape: [P, C] },
  ];
  for (let i = 0; i < nLayer; i++) {
    const h = `h.${i}.`;
    out.push(
      { name: `${h}ln_1.weight`, shape: [C] },
      { name: `${h}ln_1.bias`, shape: [C] },
      { name: `${h}attn.c_attn.weight`, shape: [C, 3 * C] },
      { name: `${h}attn.c_attn.bias`, shape: [3 * C] },
      { name: `${h}attn.c_proj.weight`, shape: [C, C] },
      { name: `${h}attn.c_proj.bias`, shape: [C] },
      { name: `${h}ln_2.weight`, shape: [C] },
      { name: `${h}ln_2.bias`, shape: [C] },
      { name: `${h}mlp.c_fc.weight`, shape: [C, I] },
      { name: `${h}mlp.c_fc.bias`, shape: [I] },
      { name: `${h}mlp.c_proj.weight`, shape: [I, C] },
      { name: `${h}mlp.c_proj.bias`, shape: [C] },
    );
  }
  out.push({ name: "ln_f.weight", shape: [C] }, { name: "ln_f.bias", shape: [C] });
  return out;
}

/**
 * Checks a GPT-2 checkpoint against its config from the header alone (names, prefix, shapes,
 * dtypes, a stored tied head's shape), before any weight is read, and plans the load.
 *
 * @param config The architecture.
 * @param ckpt The checkpoint (or a reader wrapping one).
 * @returns Every weight in {@linkcode expectedGpt2Shapes} order; `wte.weight` carries a stored
 * `lm_head.weight` as its tied copy, which must hold the same values.
 * @throws {Gpt2WeightsError} If a tensor is missing, unexpected, of the wrong shape or not a
 * float, names mix prefixed and bare forms, or `lm_head.weight` differs from `wte.weight` in
 * shape.
 *
 * @example Planning the fixture's load
 * ```ts
 * import { Checkpoint, type Dtype } from "../formats/safetensors.ts";
import type { PlannedWeight, WeightReader } from "./_base_weights.ts";
 * import { planGpt2Weights } from "./gpt2_weights.ts";
 * import { readGpt2Config } from "./gpt2_config.ts";
 * using ckpt = await Checkpoint.open("fixtures/tiny-gpt2");
 * const plan = await planGpt2Weights(await readGpt2Config("fixtures/tiny-gpt2"), ckpt);
 * console.log(plan[0].name, plan[0].dtype); // wte.weight F32
 * ```
 */
export async function planGpt2Weights(
  config: Gpt2Config,
  ckpt: WeightReader,
): Promise<PlannedWeight[]> {
  const fail = (message: string, file: string, tensor?: string): never => {
    throw new Gpt2WeightsError(`Invalid GPT-2 checkpoint "${file}": ${message}`, { file, tensor });
  };

  const names = ckpt.names();
  const prefixed = names.find((n) => n.startsWith(TRANSFORMER_PREFIX));
  const prefix = prefixed === undefined ? "" : TRANSFORMER_PREFIX;
  const expected = expectedGpt2Shapes(config);
  const expectedShape = new Map(expected.map((e) => [e.name, e.shape]));
  const stored = new Map<string, string>(); // canonical name -> name in the checkpoint
  let lmHead: string | undefined;

  for (const name of names) {
    if (name === LM_HEAD) {
      lmHead = name;
      continue;
    }
    if (prefix !== "" && !name.startsWith(prefix)) {
      fail(
        `tensor "${name}" has no "${prefix}" prefix while "${prefixed}" has one; a checkpoint ` +
          `must use one naming for all its parameters`,
        ckpt.fileOf(name),
        name,
      );
    }
    const canonical = name.slice(prefix.length);
    if (BUFFER.test(canonical)) continue;
    const shape = expectedShape.get(canonical);
    if (shape === undefined) {
      fail(
        `unexpected tensor "${name}" (a GPT-2 with n_layer ${config.nLayer} has no such ` +
          `parameter)`,
        ckpt.fileOf(name),
        name,
      );
    }
    const actual = ckpt.info(name).shape;
    if (!sameShape(actual, shape!)) {
      fail(
        `tensor "${name}" has shape ${formatShape(actual)}, expected ${formatShape(shape!)}`,
        ckpt.fileOf(name),
        name,
      );
    }
    stored.set(canonical, name);
  }

  const missing = expected.filter((e) => !stored.has(e.name));
  if (missing.length > 0) {
    const first = missing[0];
    const more = missing.length > 1 ? ` (and ${missing.length - 1} more)` : "";
    fail(
      `missing tensor "${prefix}${first.name}" with shape ${formatShape(first.shape)}${more}`,
      await describeCheckpoint(ckpt.folder),
      prefix + first.name,
    );
  }
  for (const name of [...stored.values(), ...(lmHead ? [lmHead] : [])]) {
    const { dtype } = ckpt.info(name);
    if (!FLOAT_DTYPES.includes(dtype)) {
      fail(
        `tensor "${name}" has dtype ${dtype}; weights must be ${FLOAT_DTYPES.join(", ")}`,
        ckpt.fileOf(name),
        name,
      );
    }
  }

  const wte = `${prefix}wte.weight`;
  const untied = `"${lmHead}" differs from "${wte}": untied heads are not supported`;
  if (lmHead !== undefined) {
    const shape = ckpt.info(lmHead).shape;
    const want = expectedShape.get("wte.weight")!;
    if (!sameShape(shape, want)) {
      fail(
        `${untied} (its shape is ${formatShape(shape)}, not ${formatShape(want)})`,
        ckpt.fileOf(lmHead),
        lmHead,
      );
    }
  }
  return expected.map(({ name, shape }) => {
    const where = stored.get(name)!;
    const planned: PlannedWeight = {
      name,
      stored: where,
      shape: [...shape],
      dtype: ckpt.info(where).dtype,
    };
    if (name === "wte.weight" && lmHead !== undefined) {
      const file = ckpt.fileOf(lmHead);
      planned.tiedCopy = {
        stored: lmHead,
        differs: (at) =>
          new Gpt2WeightsError(
            `Invalid GPT-2 checkpoint "${file}": ${untied} (first difference at element ${at})`,
            { file, tensor: lmHead },
          ),
      };
    }
    return planned;
  });
}

/**
 * Loads a Hugging Face GPT-2 folder into host memory, checking every tensor against the config.
 * Every check that needs only the header runs before any weight is read
 * ({@linkcode planGpt2Weights}). A model loaded for the GPU streams instead (`Gpt2.load`); this
 * is for code that wants the values on the host.
 *
 * @param folder A folder with `config.json` and `model.safetensors` or
 * `model.safetensors.index.json` plus its shards.
 * @returns The architecture and every parameter under its canonical name, as f32.
 * @throws {Gpt2ConfigError} If `config.json` is missing or invalid.
 * @throws {SafetensorsError} If a weights file is missing or invalid.
 * @throws {Gpt2WeightsError} If a tensor is missing, unexpected, of the wrong shape or not a
 * float, names mix prefixed and bare forms, or `lm_head.weight` differs from `wte.weight`.
 *
 * @example Loading the fixture
 * ```ts
 * import { loadGpt2Weights } from "./gpt2_weights.ts";
 * const { config, tensors } = await loadGpt2Weights("fixtures/tiny-gpt2");
 * console.log(config.nLayer, tensors.get("wte.weight")?.shape);
 * ```
 */
export async function loadGpt2Weights(folder: string): Promise<Gpt2Weights> {
  const config = await readGpt2Config(folder);
  using ckpt = await Checkpoint.open(folder);
  const plan = await planGpt2Weights(config, ckpt);
  const tensors = new Map<string, HostTensor>();
  for (const { name, stored, shape } of plan) {
    tensors.set(name, { shape, data: await ckpt.readFloat32(stored) });
  }
  const tied = plan.find((p) => p.tiedCopy)?.tiedCopy;
  if (tied) {
    const wte = tensors.get("wte.weight")!.data;
    const head = await ckpt.readFloat32(tied.stored);
    const a = new Uint32Array(head.buffer, head.byteOffset, head.length);
    const b = new Uint32Array(wte.buffer, wte.byteOffset, wte.length);
    const at = a.findIndex((bits, i) => bits !== b[i]);
    if (at >= 0) throw tied.differs(at);
  }
  return { config, tensors };
}

/**
 * Maps a GPT-2 checkpoint's tensor names to weight names: the `transformer.` prefix dropped when
 * the checkpoint uses it, `lm_head.weight` to `wte.weight` (the tied head), the attention mask
 * buffers to `null`.
 *
 * @param names The checkpoint's tensor names.
 * @returns Each name's weight name, or null for a buffer.
 */
export function gpt2WeightNames(names: readonly string[]): Map<string, string | null> {
  const prefix = names.some((n) => n.startsWith(TRANSFORMER_PREFIX)) ? TRANSFORMER_PREFIX : "";
  return new Map(names.map((name) => {
    if (name === LM_HEAD) return [name, "wte.weight"];
    const canonical = name.startsWith(prefix) ? name.slice(prefix.length) : name;
    return [name, BUFFER.test(canonical) ? null : canonical];
  }));
}
