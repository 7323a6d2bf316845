/**
 * A second model family for tests of the model contract: a two-layer classifier
 * `logits = gelu(x W1ᵀ + b1) W2ᵀ + b2` with `nn.Linear` weights `[out, in]`, labelled inputs and
 * no decoding cache. It is built only from kernels and the contract, as a real family is, so the
 * adapters, trainer, evaluator, merge and PEFT export run on it unchanged.
 *
 * @module
 */

import type { LabelledInput, TokenInput } from "../../data/batches.ts";
import { writeSafetensors } from "../../formats/safetensors.ts";
import { CrossEntropyKernels } from "../../kernels/crossentropy.ts";
import { GeluKernels } from "../../kernels/gelu.ts";
import type { Gpu } from "../../kernels/gpu.ts";
import { Matmul } from "../../kernels/matmul.ts";
import { Tensor } from "../../kernels/tensor.ts";
import type {
  Activations,
  AttachedAdapter,
  DecodingCache,
  LinearAdapter,
  LinearSite,
  LinearWeight,
  LossTargets,
  Model,
  ModelSummary,
} from "../../models/model.ts";

/** Sizes of the toy classifier. */
export interface ToyConfig {
  inputs: number;
  hidden: number;
  classes: number;
}

class ToyActivations implements Activations {
  readonly x: Tensor;
  readonly h: Tensor;
  readonly g: Tensor;
  readonly dg: Tensor;
  readonly dh: Tensor;
  readonly logits: Tensor;
  readonly losses: Tensor;
  readonly weights: Tensor;
  readonly targets: Tensor<"u32">;
  readonly logitsStride: number;

  constructor(gpu: Gpu, c: ToyConfig, readonly B: number) {
    const f = (shape: number[]) => Tensor.empty(gpu, shape, { persistent: true });
    this.x = f([B, c.inputs]);
    this.h = f([B, c.hidden]);
    this.g = f([B, c.hidden]);
    this.dg = f([B, c.hidden]);
    this.dh = f([B, c.hidden]);
    this.logits = f([B, c.classes]);
    this.losses = f([B]);
    this.weights = f([B]);
    this.targets = Tensor.empty(gpu, [B], { dtype: "u32", persistent: true });
    this.logitsStride = c.classes;
  }

  dispose(): void {
    for (const t of Object.values(this)) if (t instanceof Tensor) t[Symbol.dispose]();
  }
}

/** The toy classifier on the GPU. */
export class ToyClassifier implements Model {
  readonly modelType = "toy-classifier";
  readonly task = "classification";
  readonly peft = { modulePrefix: "", taskType: "SEQ_CLS" };
  readonly configHash = "toy";
  readonly sites: readonly LinearSite[];
  readonly grads = null;
  readonly adapters = new Map<string, AttachedAdapter[]>();
  readonly maxPositions = 1;
  #acts = new Map<number, ToyActivations>();
  #last: ToyActivations | null = null;

  private constructor(
    readonly gpu: Gpu,
    readonly config: ToyConfig,
    readonly matmul: Matmul,
    readonly gelu: GeluKernels,
    readonly ce: CrossEntropyKernels,
    readonly params: Map<string, Tensor>,
  ) {
    const { inputs: D, hidden: H, classes: C } = config;
    this.sites = [
      { name: "fc1", linear: "fc1", colOffset: 0, inFeatures: D, outFeatures: H },
      { name: "fc2", linear: "fc2", colOffset: 0, inFeatures: H, outFeatures: C },
    ];
  }

  /** A toy classifier with the given host weights (`fc1.weight` [H, D], ...). */
  static async create(
    gpu: Gpu,
    config: ToyConfig,
    weights: Record<"fc1.weight" | "fc1.bias" | "fc2.weight" | "fc2.bias", Float32Array>,
  ): Promise<ToyClassifier> {
    const { inputs: D, hidden: H, classes: C } = config;
    const shapes = { "fc1.weight": [H, D], "fc1.bias": [H], "fc2.weight": [C, H], "fc2.bias": [C] };
    const params = new Map(
      Object.entries(shapes).map(([name, shape]) => [
        name,
        Tensor.from(gpu, weights[name as keyof typeof shapes], shape, { persistent: true }),
      ]),
    );
    const [matmul, gelu, ce] = await Promise.all([
      Matmul.load(gpu),
      GeluKernels.load(gpu),
      CrossEntropyKernels.load(gpu),
    ]);
    return new ToyClassifier(gpu, config, matmul, gelu, ce, params);
  }

  get outputs(): number {
    return this.config.classes;
  }

  summary(): ModelSummary {
    return {
      modelType: this.modelType,
      layers: 2,
      width: this.config.hidden,
      heads: 0,
      positions: 1,
      outputs: this.config.classes,
      parameters: [...this.params.values()].reduce((s, t) => s + t.size, 0),
    };
  }

  linearWeight(linear: string): LinearWeight | undefined {
    const weight = this.params.get(`${linear}.weight`);
    if (!weight) return undefined;
    return { weight, layout: "linear", inFeatures: weight.shape[1], outFeatures: weight.shape[0] };
  }

  weightNames(names: readonly string[]): Map<string, string | null> {
    return new Map(names.map((n) => [n, this.params.has(n) ? n : null]));
  }

  attach(linear: string, adapter: LinearAdapter, options: { colOffset?: number } = {}): void {
    const w = this.linearWeight(linear);
    if (!w || adapter.inFeatures !== w.inFeatures) {
      throw new RangeError(`Cannot attach adapter to "${linear}"`);
    }
    this.adapters.set(linear, [
      ...this.adapters.get(linear) ?? [],
      { adapter, colOffset: options.colOffset ?? 0 },
    ]);
  }

  detachAll(): void {
    this.adapters.clear();
  }

  forward(input: TokenInput | LabelledInput, cache?: DecodingCache): Activations {
    if (input.kind !== "labelled" || cache) {
      throw new TypeError("The toy classifier takes labelled inputs and has no cache");
    }
    const { inputs: D, hidden: H, classes: C } = this.config;
    const { B } = input;
    let acts = this.#acts.get(B);
    if (!acts) this.#acts.set(B, acts = new ToyActivations(this.gpu, this.config, B));
    this.gpu.write(acts.x.buffer, input.inputs);
    this.#linear("fc1", acts.x, acts.h, B, D, H);
    this.gelu.forward({ out: acts.g, inp: acts.h });
    this.#linear("fc2", acts.g, acts.logits, B, H, C);
    this.#last = acts;
    return acts;
  }

  loss(targets: LossTargets, options: { backward?: boolean } = {}): Tensor {
    const acts = this.#last!;
    this.gpu.write(acts.targets.buffer, targets.targets);
    const common = {
      losses: acts.losses,
      logits: acts.logits,
      targets: acts.targets,
      eps: targets.labelSmoothing ?? 0,
    };
    if (!options.backward) {
      this.ce.forward(common);
      return acts.losses;
    }
    this.gpu.write(
      acts.weights.buffer,
      targets.weights ?? new Float32Array(acts.B).fill(1 / acts.B),
    );
    this.ce.backward({ ...common, weights: acts.weights });
    return acts.losses;
  }

  backward(): void {
    const acts = this.#last!;
    this.#last = null;
    const { inputs: D, hidden: H, classes: C } = this.config;
    const B = acts.B;
    // dg = dlogits W2 (+ fc2 adapters); dh = gelu'(h) dg; fc1 adapters take dh.
    this.matmul.raw(
      { out: acts.dg.buffer, a: acts.logits.buffer, b: this.params.get("fc2.weight")!.buffer },
      { m: B, n: H, k: C },
    );
    for (const { adapter } of this.adapters.get("fc2") ?? []) {
      adapter.backward({ tensor: acts.g, ld: H }, { tensor: acts.logits, ld: C }, {
        tensor: acts.dg,
        ld: H,
      }, B);
    }
    this.gpu.clear(acts.dh.buffer);
    this.gelu.backward({ dinp: acts.dh, inp: acts.h, dout: acts.dg });
    for (const { adapter } of this.adapters.get("fc1") ?? []) {
      adapter.backward({ tensor: acts.x, ld: D }, { tensor: acts.dh, ld: H }, null, B);
    }
  }

  zeroGrads(): void {}

  newCache(): DecodingCache {
    throw new TypeError("The toy classifier does not generate text");
  }

  memory(): { weights: number; gradients: number; activations: number } {
    const weights = [...this.params.values()].reduce((s, t) => s + t.byteLength, 0);
    return { weights, gradients: 0, activations: 0 };
  }

  async save(outFolder: string): Promise<void> {
    await Deno.mkdir(outFolder, { recursive: true });
    const tensors = [];
    for (const [name, t] of this.params) {
      tensors.push({
        name,
        dtype: "F32" as const,
        shape: [...t.shape],
        data: await t.read() as Float32Array,
      });
    }
    await writeSafetensors(`${outFolder}/model.safetensors`, tensors);
  }

  [Symbol.dispose](): void {
    for (const a of this.#acts.values()) a.dispose();
    for (const t of this.params.values()) t[Symbol.dispose]();
  }

  // y = x Wᵀ + b (+ adapters), W stored [out, in].
  #linear(name: string, x: Tensor, y: Tensor, rows: number, inF: number, outF: number): void {
    this.matmul.raw({
      out: y.buffer,
      a: x.buffer,
      b: this.params.get(`${name}.weight`)!.buffer,
      bias: this.params.get(`${name}.bias`)!.buffer,
    }, { m: rows, n: outF, k: inF, transB: true });
    for (const { adapter, colOffset } of this.adapters.get(name) ?? []) {
      adapter.forward({ tensor: x, ld: inF }, { tensor: y, ld: outF, offset: colOffset }, rows);
    }
  }
}
