/**
 * The optimizer of a training run: parameter groups (NOLA coefficients, LoRA factors, a
 * classifier head, every weight of a full fine-tune) with their own peak rate, weight decay and
 * update rule (AdamW or SGD), global gradient-norm clipping, and checkpointable state. A step only
 * records GPU work: the schedule's factor comes from the host (`lrFactor` of `schedule.ts`) and
 * the clipping scale stays on the GPU, so nothing is read back inside a step.
 *
 * @module
 */

import { AdamwKernels } from "../kernels/adamw.ts";
import type { Gpu } from "../kernels/gpu.ts";
import { GradnormKernels } from "../kernels/gradnorm.ts";
import { SgdKernels } from "../kernels/sgd.ts";
import { Tensor } from "../kernels/tensor.ts";

/** A trainable tensor and its gradient (what `AdapterSet.parameters()` returns). */
export interface OptimizerParam {
  /** Unique across all groups: names the moments in {@link OptimizerState}. */
  name: string;
  /** The values (f32, on the GPU), updated in place. */
  param: Tensor;
  /** The gradient, same shape as `param`. */
  grad: Tensor;
}

/** One parameter group and its hyper-parameters (PyTorch's names and defaults). */
export interface ParamGroup {
  /** For messages; default `group <index>`. */
  name?: string;
  /** The tensors this group updates. */
  params: readonly OptimizerParam[];
  /** `adamw` (decoupled weight decay) or `sgd`, with PyTorch's update rules. */
  kind: "adamw" | "sgd";
  /** Peak learning rate; each step uses `lr * lrFactor`. */
  lr: number;
  /** AdamW: decoupled, `p *= 1 - lr * wd`; SGD: added to the gradient. Default 0. */
  weightDecay?: number;
  /** AdamW; default [0.9, 0.999]. */
  betas?: readonly [number, number];
  /** AdamW; default 1e-8. */
  eps?: number;
  /** SGD; default 0 (no momentum buffer). */
  momentum?: number;
  /** SGD; default 0. */
  dampening?: number;
  /** SGD; default false. */
  nesterov?: boolean;
}

/** Options of {@link Optimizer.create}. */
export interface OptimizerOptions {
  /** Clip the global norm of the scaled gradients to this; 0, Infinity or absent: no clipping. */
  maxGradNorm?: number;
  /**
   * Multiplier on every gradient before clipping (averaging); default 1, right when the loss
   * weights already average over the step's tokens.
   */
  gradScale?: number;
}

/** A snapshot for checkpoints: steps taken and every moment by name. */
export interface OptimizerState {
  /** Optimizer steps taken. */
  step: number;
  /**
   * `<param>.exp_avg` and `<param>.exp_avg_sq` (AdamW), `<param>.momentum_buffer` (SGD with
   * momentum); empty before the first step.
   */
  tensors: Map<string, Float32Array>;
}

const GROUP_FIELDS = new Set([
  "name",
  "params",
  "kind",
  "lr",
  "weightDecay",
  "betas",
  "eps",
  "momentum",
  "dampening",
  "nesterov",
]);

interface Slot {
  group: ParamGroup;
  p: OptimizerParam;
  /** Moment names and tensors, allocated on the first step. */
  moments: { name: string; tensor: Tensor }[];
}

/**
 * AdamW and SGD over parameter groups, with global gradient clipping on the GPU.
 *
 * @example NOLA coefficients and a head with different rates, on a linear schedule
 * ```ts ignore
 * import { Optimizer } from "./train/optimizer.ts";
 * import { lrFactor } from "./train/schedule.ts";
 * const optimizer = await Optimizer.create(gpu, [
 *   { name: "nola", kind: "adamw", lr: 5e-3, params: adapters.parameters() },
 *   { name: "head", kind: "adamw", lr: 1e-3, weightDecay: 0.01, params: head },
 * ], { maxGradNorm: 1 });
 * const schedule = { kind: "linear", lr: 5e-3, totalSteps: 1000, warmupSteps: 50 } as const;
 * for (let step = 0; step < 1000; step++) {
 *   // ... forward, loss, backward of every micro-batch ...
 *   optimizer.step(lrFactor(step, schedule));
 *   if (step % 50 === 0) console.log(await optimizer.lastGradNorm());
 * }
 * ```
 */
export class Optimizer implements Disposable {
  /** The global norm of the last step's raw gradients (f32 [1], on the GPU). */
  readonly norm: Tensor;
  /** The last step's multiplier on every gradient (f32 [1], on the GPU). */
  readonly gradScale: Tensor;
  #step = 0;
  #slots: Slot[];

  private constructor(
    readonly gpu: Gpu,
    readonly groups: readonly ParamGroup[],
    readonly options: OptimizerOptions,
    /**
     * The compiled update and gradient-norm kernels.
     *
     * @internal
     */
    readonly kernels: { adamw: AdamwKernels; sgd: SgdKernels; gradnorm: GradnormKernels },
  ) {
    this.#slots = groups.flatMap((group) => group.params.map((p) => ({ group, p, moments: [] })));
    this.norm = Tensor.empty(gpu, [1], { persistent: true, label: "optimizer grad norm" });
    this.gradScale = Tensor.empty(gpu, [1], { persistent: true, label: "optimizer grad scale" });
  }

  /**
   * Checks the groups and compiles the kernels; moments are allocated on the first step.
   *
   * @param gpu The device the parameters live on.
   * @param groups Parameter groups; every parameter name unique, every tensor in one group.
   * @param options Clipping and gradient scale.
   * @throws {RangeError} Naming the group and field at fault.
   */
  static async create(
    gpu: Gpu,
    groups: readonly ParamGroup[],
    options: OptimizerOptions = {},
  ): Promise<Optimizer> {
    checkGroups(groups);
    const maxNorm = options.maxGradNorm ?? 0;
    if (!(maxNorm >= 0)) {
      throw new RangeError(`Optimizer "maxGradNorm" must be >= 0, got ${maxNorm}`);
    }
    const scale = options.gradScale ?? 1;
    if (!Number.isFinite(scale)) {
      throw new RangeError(`Optimizer "gradScale" must be finite, got ${scale}`);
    }
    const [adamw, sgd, gradnorm] = await Promise.all([
      AdamwKernels.load(gpu),
      SgdKernels.load(gpu),
      GradnormKernels.load(gpu),
    ]);
    return new Optimizer(gpu, groups.map((g) => ({ ...g })), { ...options }, {
      adamw,
      sgd,
      gradnorm,
    });
  }

  /** Optimizer steps taken (restored by {@link load}). */
  get stepCount(): number {
    return this.#step;
  }

  /**
   * Records one update of every parameter: the global gradient norm and clipping scale over all
   * groups' gradients, then each group's rule with learning rate `group.lr * lrFactor`.
   *
   * @param lrFactor The schedule's multiplier for this step, `lrFactor(stepCount, schedule)`.
   */
  step(lrFactor: number): void {
    if (!(Number.isFinite(lrFactor) && lrFactor >= 0)) {
      throw new RangeError(`Optimizer lrFactor must be a finite number >= 0, got ${lrFactor}`);
    }
    if (this.#step === 0) this.#allocate();
    const { adamw, sgd, gradnorm } = this.kernels;
    gradnorm.forward({ norm: this.norm, gradScale: this.gradScale }, {
      grads: this.#slots.map((s) => s.p.grad),
      maxNorm: this.options.maxGradNorm,
      baseScale: this.options.gradScale,
    });
    const t = this.#step + 1;
    for (const { group, p, moments } of this.#slots) {
      const lr = group.lr * lrFactor;
      const common = { param: p.param, grad: p.grad, gradScale: this.gradScale };
      if (group.kind === "adamw") {
        adamw.update({ ...common, m: moments[0].tensor, v: moments[1].tensor }, {
          step: t,
          lr,
          beta1: group.betas?.[0],
          beta2: group.betas?.[1],
          eps: group.eps,
          weightDecay: group.weightDecay,
        });
      } else {
        sgd.update({ ...common, buf: moments[0]?.tensor }, {
          lr,
          momentum: group.momentum,
          dampening: group.dampening,
          nesterov: group.nesterov,
          weightDecay: group.weightDecay,
          first: this.#step === 0,
        });
      }
    }
    this.#step = t;
  }

  /**
   * The norm of the last step's gradients times `gradScale` (what clipping compares with
   * `maxGradNorm`, before clipping); NaN before the first step or when a gradient was not finite.
   * Reads back: call it every few steps, not every step.
   */
  async lastGradNorm(): Promise<number> {
    if (this.#step === 0) return NaN;
    const raw = (await this.norm.read())[0];
    return raw * (this.options.gradScale ?? 1);
  }

  /** Copies the step count and every moment to the host, for a checkpoint. */
  async state(): Promise<OptimizerState> {
    const tensors = new Map<string, Float32Array>();
    for (const slot of this.#slots) {
      for (const { name, tensor } of slot.moments) {
        tensors.set(name, (await tensor.read()) as Float32Array);
      }
    }
    return { step: this.#step, tensors };
  }

  /**
   * Restores a {@link state} snapshot exactly (the parameters themselves are restored by their
   * owner): the next step continues bit for bit where the snapshot's optimizer would have.
   *
   * @throws {RangeError} When the snapshot's moments do not match these groups by name and size.
   */
  load(state: OptimizerState): void {
    if (!Number.isSafeInteger(state.step) || state.step < 0) {
      throw new RangeError(`Optimizer state step must be an integer >= 0, got ${state.step}`);
    }
    const expected = state.step === 0 ? [] : this.#momentNames();
    const known = new Set(expected.map((e) => e.name));
    for (const name of state.tensors.keys()) {
      if (!known.has(name)) {
        throw new RangeError(`Optimizer state has tensor "${name}" that no parameter here owns`);
      }
    }
    for (const { name, size } of expected) {
      const data = state.tensors.get(name);
      if (!data) throw new RangeError(`Optimizer state lacks tensor "${name}"`);
      if (data.length !== size) {
        throw new RangeError(
          `Optimizer state tensor "${name}" has ${data.length} values, the parameter has ${size}`,
        );
      }
    }
    this.#release();
    this.#step = state.step;
    if (state.step === 0) return;
    this.#allocate();
    for (const slot of this.#slots) {
      for (const { name, tensor } of slot.moments) {
        this.gpu.write(tensor.buffer, state.tensors.get(name)!);
      }
    }
  }

  /** Frees the moments and the norm tensors. */
  [Symbol.dispose](): void {
    this.#release();
    this.norm[Symbol.dispose]();
    this.gradScale[Symbol.dispose]();
  }

  #momentNames(): { slot: Slot; name: string; size: number }[] {
    return this.#slots.flatMap((slot) => {
      const { group, p } = slot;
      const suffixes = group.kind === "adamw"
        ? ["exp_avg", "exp_avg_sq"]
        : (group.momentum ?? 0) > 0
        ? ["momentum_buffer"]
        : [];
      return suffixes.map((s) => ({ slot, name: `${p.name}.${s}`, size: p.param.size }));
    });
  }

  // Zeroed moments: AdamW's start from 0; SGD's buffer is overwritten on the first step.
  #allocate(): void {
    for (const { slot, name, size } of this.#momentNames()) {
      const tensor = Tensor.empty(this.gpu, [size], { persistent: true, label: name });
      this.gpu.clear(tensor.buffer);
      slot.moments.push({ name, tensor });
    }
  }

  #release(): void {
    for (const slot of this.#slots) {
      for (const { tensor } of slot.moments.splice(0)) tensor[Symbol.dispose]();
    }
  }
}

function checkGroups(groups: readonly ParamGroup[]): void {
  const names = new Map<string, string>();
  const tensors = new Map<Tensor, string>();
  groups.forEach((group, index) => {
    const where = `Optimizer group "${group.name ?? `group ${index}`}"`;
    const fail = (field: string, message: string): never => {
      throw new RangeError(`${where} "${field}" ${message}`);
    };
    for (const key of Object.keys(group)) {
      if (!GROUP_FIELDS.has(key)) fail(key, "is not a group field");
    }
    if (group.kind !== "adamw" && group.kind !== "sgd") {
      fail("kind", `must be "adamw" or "sgd", got ${JSON.stringify(group.kind)}`);
    }
    if (!(Number.isFinite(group.lr) && group.lr >= 0)) fail("lr", `must be >= 0, got ${group.lr}`);
    const wd = group.weightDecay ?? 0;
    if (!(Number.isFinite(wd) && wd >= 0)) fail("weightDecay", `must be >= 0, got ${wd}`);
    const sgdOnly = ["momentum", "dampening", "nesterov"] as const;
    const adamOnly = ["betas", "eps"] as const;
    for (const key of group.kind === "adamw" ? sgdOnly : adamOnly) {
      if (group[key] !== undefined) fail(key, `does not apply to ${group.kind}`);
    }
    if (group.betas !== undefined) {
      const ok = Array.isArray(group.betas) && group.betas.length === 2 &&
        group.betas.every((b) => b >= 0 && b < 1);
      if (!ok) fail("betas", `must be two numbers in [0, 1), got ${JSON.stringify(group.betas)}`);
    }
    if (group.eps !== undefined && !(group.eps > 0)) fail("eps", `must be > 0, got ${group.eps}`);
    const momentum = group.momentum ?? 0;
    if (!(momentum >= 0 && momentum < Infinity)) fail("momentum", `must be >= 0, got ${momentum}`);
    const dampening = group.dampening ?? 0;
    if (!(dampening >= 0 && dampening <= 1)) {
      fail("dampening", `must be in [0, 1], got ${dampening}`);
    }
    if (group.nesterov && (momentum <= 0 || dampening !== 0)) {
      fail("nesterov", "needs momentum > 0 and dampening 0");
    }
    if (!Array.isArray(group.params)) fail("params", "must be a list of parameters");
    for (const p of group.params) {
      const other = names.get(p.name);
      if (other !== undefined) fail("params", `repeats the name "${p.name}" (also in ${other})`);
      names.set(p.name, where);
      const owner = tensors.get(p.param);
      if (owner !== undefined) fail("params", `repeats the tensor of "${p.name}" (${owner})`);
      tensors.set(p.param, `"${p.name}"`);
      if (p.param.dtype !== "f32" || p.grad.dtype !== "f32" || p.grad.size !== p.param.size) {
        fail(
          "params",
          `has "${p.name}" with parameter [${p.param.shape}] ${p.param.dtype} and gradient ` +
            `[${p.grad.shape}] ${p.grad.dtype}: need f32 of one size`,
        );
      }
    }
  });
}
