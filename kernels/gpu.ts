/**
 * The WebGPU runtime every kernel runs on: device acquisition with the adapter's own limits,
 * compiled-kernel cache, buffer pool, command batching and GPU timing.
 *
 * @module
 */

import { BufferPool } from "./pool.ts";
import { UniformArena } from "./uniforms.ts";

/** What a kernel binding is: a storage buffer written, one only read, or a uniform block. */
export type BindingKind = "storage" | "read" | "uniform";

/** The typed key a compiled kernel is cached by. */
export interface KernelKey {
  /** Human name, used as the label of every GPU object of the kernel. */
  label: string;
  /** WGSL source. */
  code: string;
  /** Entry point in `code`. */
  entry: string;
  /** The bindings of group 0, in order: outputs, inputs, then one uniform of sizes. */
  bindings: readonly BindingKind[];
  /** Values for the shader's `override` constants (workgroup and tile sizes). */
  constants?: Readonly<Record<string, number>>;
}

/** A compiled compute pipeline with its explicit bind group layout. */
export interface Kernel {
  /** The key the kernel was compiled from. */
  readonly key: KernelKey;
  /** The compiled pipeline. */
  readonly pipeline: GPUComputePipeline;
  /** Group 0's layout, one entry per `key.bindings`. */
  readonly layout: GPUBindGroupLayout;
}

/** A buffer, or a byte window of one, bound to one binding slot. */
export interface BufferBinding {
  /** The buffer. */
  buffer: GPUBuffer;
  /** Byte offset of the window; default 0. */
  offset?: number;
  /** Byte length of the window; default to the end of the buffer. */
  size?: number;
}

/** Options of {@link Gpu.acquire}. */
export interface AcquireOptions {
  /** Passed to `requestAdapter`. */
  powerPreference?: GPUPowerPreference;
  /** Cap on `maxStorageBufferBindingSize` below the adapter's, to exercise binding splits. */
  maxBindingBytes?: number;
}

/** Thrown for anything the GPU or its driver refuses; the message says what and where. */
export class GpuError extends Error {
  /** Always `"GpuError"`. */
  override name = "GpuError";
}

const OPTIONAL_FEATURES: GPUFeatureName[] = ["shader-f16", "timestamp-query"];

// Writes up to this size, made while work is recorded, go through a pooled upload buffer and a
// recorded copy; larger ones (weights at load time) submit the recorded work first, so an upload
// never holds a second copy of a big tensor.
const STAGED_WRITE_BYTES = 1 << 20;
const UPLOAD_USAGE = GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

/** Usage of every tensor buffer: bound as storage, copied in and out. */
export const TENSOR_USAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC |
  GPUBufferUsage.COPY_DST;

function noAdapterMessage(): string {
  return "No WebGPU adapter found: install a Vulkan driver (on Debian/Ubuntu " +
    "`apt-get install mesa-vulkan-drivers` gives the llvmpipe CPU fallback; on a GPU, the " +
    "vendor's driver with Vulkan, Metal or D3D12 support)";
}

/**
 * One WebGPU device and everything that hangs off it. Work is recorded into one command encoder
 * (one compute pass where possible) and submitted by {@link Gpu.flush}; writes and copies are
 * recorded in order with it, so a whole training step is one submit.
 *
 * @example Acquire a device and run nothing
 * ```ts
 * import { Gpu } from "./kernels/gpu.ts";
 * using gpu = await Gpu.acquire();
 * console.log(gpu.adapterName);
 * ```
 */
export class Gpu implements Disposable {
  /**
   * Storage buffers for temporaries, reused by (size, usage).
   *
   * @internal
   */
  readonly pool: BufferPool;
  /** Whether the device has `timestamp-query` (kernel timings). */
  readonly hasTimestamps: boolean;
  /** Whether the device has `shader-f16`. */
  readonly hasF16: boolean;
  /** Largest byte window one storage binding may cover. */
  readonly maxBindingBytes: number;
  /** Alignment of a storage binding's byte offset. */
  readonly bindingAlignment: number;
  #submits = 0;
  #kernels = new Map<string, Kernel>();
  #encoder: GPUCommandEncoder | null = null;
  #pass: GPUComputePassEncoder | null = null;
  #timedPass = false;
  #profile: { querySet: GPUQuerySet; labels: string[]; dropped: number } | null = null;
  #uniforms: UniformArena;
  #afterSubmit: (() => void)[] = [];
  #failure: Error | null = null;
  #destroyed = false;

  private constructor(
    readonly adapter: GPUAdapter,
    readonly device: GPUDevice,
    options: AcquireOptions,
  ) {
    this.hasTimestamps = device.features.has("timestamp-query");
    this.hasF16 = device.features.has("shader-f16");
    this.maxBindingBytes = Math.min(
      device.limits.maxStorageBufferBindingSize,
      options.maxBindingBytes ?? Infinity,
    );
    this.bindingAlignment = device.limits.minStorageBufferOffsetAlignment;
    this.pool = new BufferPool(device);
    this.#uniforms = new UniformArena(device, this.pool);
    device.lost.then((info) => {
      if (!this.#destroyed) {
        this.#failure ??= new GpuError(`GPU device lost (${info.reason}): ${info.message}`);
      }
    });
    device.addEventListener("uncapturederror", (event) => {
      const error = (event as GPUUncapturedErrorEvent).error;
      this.#failure ??= new GpuError(`GPU error: ${error.message}`);
    });
  }

  /** Requests an adapter and a device with the adapter's full limits and optional features. */
  static async acquire(options: AcquireOptions = {}): Promise<Gpu> {
    if (typeof navigator === "undefined" || !("gpu" in navigator)) {
      throw new GpuError("WebGPU is not available in this runtime: run with Deno 2.x");
    }
    quietVulkanLoader();
    const adapter = await navigator.gpu.requestAdapter({
      powerPreference: options.powerPreference ?? "high-performance",
    });
    if (!adapter) throw new GpuError(noAdapterMessage());
    const requiredLimits: Record<string, number> = {};
    for (const name in adapter.limits) {
      const value = (adapter.limits as unknown as Record<string, unknown>)[name];
      if (typeof value === "number") requiredLimits[name] = value;
    }
    const requiredFeatures = OPTIONAL_FEATURES.filter((f) => adapter.features.has(f));
    const device = await adapter.requestDevice({
      label: "nola-gpu",
      requiredLimits,
      requiredFeatures,
    });
    return new Gpu(adapter, device, options);
  }

  /** The adapter's description, e.g. `llvmpipe (LLVM 15.0.6, 256 bits)`. */
  get adapterName(): string {
    const info = this.adapter.info;
    return info.description || [info.vendor, info.architecture, info.device]
      .filter(Boolean).join(" ") ||
      "unknown adapter";
  }

  /** A few lines on the adapter: name, the optional features we use, the limits we rely on. */
  describe(): string {
    const limits = this.device.limits;
    const features = OPTIONAL_FEATURES.filter((f) => this.device.features.has(f));
    const fallback = this.adapter.info.isFallbackAdapter ? " (software fallback)" : "";
    return [
      `WebGPU adapter: ${this.adapterName}${fallback}`,
      `  features: ${features.join(", ") || "none of " + OPTIONAL_FEATURES.join(", ")}`,
      `  maxStorageBufferBindingSize ${limits.maxStorageBufferBindingSize}, maxBufferSize ` +
      `${limits.maxBufferSize}, maxComputeWorkgroupStorageSize ${limits.maxComputeWorkgroupStorageSize}`,
    ].join("\n");
  }

  /** Queue submits so far: each {@link Gpu.flush} that had work, each read, each large write. */
  get submits(): number {
    return this.#submits;
  }

  /** Throws the first asynchronous device error seen (lost device, uncaptured error). */
  check(): void {
    if (this.#failure) throw this.#failure;
  }

  /** Compiles (once per key) a compute kernel, with the compiler's message on failure. */
  async kernel(key: KernelKey): Promise<Kernel> {
    const id = kernelId(key);
    const cached = this.#kernels.get(id);
    if (cached) return cached;
    const { device } = this;
    device.pushErrorScope("validation");
    const module = device.createShaderModule({ label: key.label, code: key.code });
    const layout = device.createBindGroupLayout({
      label: key.label,
      entries: key.bindings.map((kind, binding) => ({
        binding,
        visibility: GPUShaderStage.COMPUTE,
        buffer: {
          type: kind === "uniform" ? "uniform" : kind === "read" ? "read-only-storage" : "storage",
        },
      })),
    });
    const shaderError = await device.popErrorScope();
    if (shaderError) {
      throw new GpuError(`Cannot compile kernel "${key.label}": ${shaderError.message.trim()}`);
    }
    let pipeline: GPUComputePipeline;
    try {
      pipeline = await device.createComputePipelineAsync({
        label: key.label,
        layout: device.createPipelineLayout({ label: key.label, bindGroupLayouts: [layout] }),
        compute: { module, entryPoint: key.entry, constants: { ...key.constants } },
      });
    } catch (error) {
      throw new GpuError(
        `Cannot create pipeline "${key.label}" (${key.entry}): ${(error as Error).message}`,
      );
    }
    const kernel = { key, pipeline, layout };
    this.#kernels.set(id, kernel);
    return kernel;
  }

  /** A zero-filled-or-not buffer from the pool (or exact-sized when `persistent`). */
  buffer(byteLength: number, options: { persistent?: boolean; label?: string } = {}): GPUBuffer {
    if (byteLength > this.device.limits.maxBufferSize) {
      throw new GpuError(
        `Cannot allocate ${byteLength} bytes${options.label ? ` for "${options.label}"` : ""}: ` +
          `over this adapter's maxBufferSize of ${this.device.limits.maxBufferSize}`,
      );
    }
    return options.persistent
      ? this.device.createBuffer({
        label: options.label,
        size: align(Math.max(byteLength, 4), 4),
        usage: TENSOR_USAGE,
      })
      : this.pool.acquire(byteLength, TENSOR_USAGE);
  }

  /** Returns a buffer to the pool once the work recorded so far has been submitted. */
  release(buffer: GPUBuffer): void {
    if (this.#encoder) this.#afterSubmit.push(() => this.pool.release(buffer));
    else this.pool.release(buffer);
  }

  /** Records one dispatch of `kernel` over `workgroups`, with its buffers and uniform data. */
  dispatch(
    kernel: Kernel,
    buffers: readonly (GPUBuffer | BufferBinding)[],
    options: { uniforms?: ArrayBuffer; workgroups: readonly [number, number?, number?] },
  ): void {
    const entries: GPUBindGroupEntry[] = buffers.map((b, binding) => ({
      binding,
      resource: b instanceof GPUBuffer ? { buffer: b } : b,
    }));
    if (options.uniforms) {
      entries.push({ binding: entries.length, resource: this.#uniforms.push(options.uniforms) });
    }
    if (entries.length !== kernel.key.bindings.length) {
      throw new GpuError(
        `Kernel "${kernel.key.label}" takes ${kernel.key.bindings.length} bindings, ` +
          `got ${entries.length}`,
      );
    }
    const [x, y = 1, z = 1] = options.workgroups;
    const max = this.device.limits.maxComputeWorkgroupsPerDimension;
    if (x > max || y > max || z > max) {
      throw new GpuError(
        `Kernel "${kernel.key.label}" dispatch ${x}x${y}x${z} exceeds ${max} workgroups a dimension`,
      );
    }
    if (x === 0 || y === 0 || z === 0) return;
    const group = this.device.createBindGroup({
      label: kernel.key.label,
      layout: kernel.layout,
      entries,
    });
    const profile = this.#profile && !this.#timedPass ? this.#profile : null;
    if (profile && profile.labels.length < PROFILE_DISPATCHES) {
      // Its own pass, bracketed by timestamps.
      const i = profile.labels.length;
      profile.labels.push(`${kernel.key.label} ${x}x${y}x${z}`);
      this.#pass?.end();
      const pass = (this.#encoder ??= this.device.createCommandEncoder({ label: "nola-gpu batch" }))
        .beginComputePass({
          label: kernel.key.label,
          timestampWrites: {
            querySet: profile.querySet,
            beginningOfPassWriteIndex: 2 * i,
            endOfPassWriteIndex: 2 * i + 1,
          },
        });
      pass.setPipeline(kernel.pipeline);
      pass.setBindGroup(0, group);
      pass.dispatchWorkgroups(x, y, z);
      pass.end();
      this.#pass = null;
      return;
    }
    if (profile) profile.dropped++;
    const pass = this.#computePass();
    pass.setPipeline(kernel.pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(x, y, z);
  }

  /**
   * Starts timing every dispatch on its own (each in a pass bracketed by GPU timestamps) until
   * {@linkcode Gpu.stopProfile}: for finding where a step's time goes. Passes split per dispatch
   * cost a little themselves, so use it to compare kernels, not to measure a whole step. Needs
   * `timestamp-query`; up to 2,048 dispatches are timed, the rest counted.
   *
   * @throws {GpuError} Without `timestamp-query`, or when a profile is already running.
   */
  startProfile(): void {
    if (!this.hasTimestamps) {
      throw new GpuError("Profiling needs the timestamp-query feature, which this adapter lacks");
    }
    if (this.#profile) throw new GpuError("A profile is already running: stop it first");
    const querySet = this.device.createQuerySet({
      type: "timestamp",
      count: 2 * PROFILE_DISPATCHES,
    });
    this.#profile = { querySet, labels: [], dropped: 0 };
  }

  /**
   * Ends the profile begun by {@linkcode Gpu.startProfile}, waits for its work, and returns the
   * GPU time and count of each kernel and workgroup grid (`matmul_wide_nn 64x8x1`), largest first.
   *
   * @returns One row a kernel and grid, and how many dispatches went untimed past the limit.
   */
  async stopProfile(): Promise<{
    kernels: { label: string; ms: number; count: number }[];
    untimed: number;
  }> {
    const profile = this.#profile;
    if (!profile) throw new GpuError("No profile is running: call startProfile first");
    this.#profile = null;
    const n = profile.labels.length;
    const kernels = new Map<string, { label: string; ms: number; count: number }>();
    if (n > 0) {
      const resolved = this.device.createBuffer({
        size: 16 * n,
        usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
      });
      this.encoder().resolveQuerySet(profile.querySet, 0, 2 * n, resolved, 0);
      const ticks = new BigUint64Array(await this.read(resolved));
      resolved.destroy();
      profile.labels.forEach((label, i) => {
        const row = kernels.get(label) ?? { label, ms: 0, count: 0 };
        row.ms += Number(ticks[2 * i + 1] - ticks[2 * i]) / 1e6;
        row.count++;
        kernels.set(label, row);
      });
    }
    profile.querySet.destroy();
    return { kernels: [...kernels.values()].sort((a, b) => b.ms - a.ms), untimed: profile.dropped };
  }

  /** The open command encoder, for copies; ends any open compute pass first. */
  encoder(): GPUCommandEncoder {
    if (this.#timedPass) throw new GpuError("Cannot record a copy inside a timed region");
    this.#pass?.end();
    this.#pass = null;
    return this.#encoder ??= this.device.createCommandEncoder({ label: "nola-gpu batch" });
  }

  /** Records a buffer-to-buffer copy. */
  copy(
    source: GPUBuffer,
    target: GPUBuffer,
    options: { size: number; sourceOffset?: number; targetOffset?: number },
  ): void {
    this.encoder().copyBufferToBuffer(
      source,
      options.sourceOffset ?? 0,
      target,
      options.targetOffset ?? 0,
      options.size,
    );
  }

  /** Records zeroing `size` bytes of `buffer` from `offset` (all of it by default). */
  clear(buffer: GPUBuffer, options: { offset?: number; size?: number } = {}): void {
    this.encoder().clearBuffer(buffer, options.offset ?? 0, options.size);
  }

  /**
   * Writes host data into a buffer, ordered after the work recorded so far and before the work
   * recorded next, without a submit of its own (except for writes over 1 MiB while work is
   * recorded). `data.byteLength` and `byteOffset` are multiples of 4.
   */
  write(buffer: GPUBuffer, data: ArrayBufferView, byteOffset = 0): void {
    const bytes = data as ArrayBufferView<ArrayBuffer>;
    // Nothing recorded: the queue write lands before the next submit, as the caller means.
    if (!this.#encoder) return this.device.queue.writeBuffer(buffer, byteOffset, bytes);
    if (data.byteLength > STAGED_WRITE_BYTES) {
      // Work already recorded must see the old contents: submit it first.
      this.flush();
      return this.device.queue.writeBuffer(buffer, byteOffset, bytes);
    }
    // A queue write would land before the recorded work, so the data goes to an upload buffer
    // now and is copied in the encoder, in order. The upload buffer goes back to the pool after
    // the submit; its next queue write is ordered after that submit.
    const upload = this.pool.acquire(data.byteLength, UPLOAD_USAGE);
    this.device.queue.writeBuffer(upload, 0, bytes);
    this.copy(upload, buffer, { size: data.byteLength, targetOffset: byteOffset });
    this.release(upload);
  }

  /** Submits everything recorded so far as one command buffer. */
  flush(): void {
    this.check();
    if (!this.#encoder && !this.#uniforms.pending) return;
    this.#pass?.end();
    this.#pass = null;
    this.#timedPass = false;
    this.#uniforms.upload();
    const encoder = this.#encoder ?? this.device.createCommandEncoder();
    this.#encoder = null;
    this.device.queue.submit([encoder.finish()]);
    this.#submits++;
    this.#uniforms.recycle();
    for (const fn of this.#afterSubmit.splice(0)) fn();
  }

  /** Copies `byteLength` bytes of `buffer` to the host; submits pending work first. */
  async read(
    buffer: GPUBuffer,
    options: { byteLength?: number; byteOffset?: number } = {},
  ): Promise<ArrayBuffer> {
    const byteOffset = options.byteOffset ?? 0;
    const byteLength = options.byteLength ?? buffer.size - byteOffset;
    const size = align(byteLength, 4);
    const staging = this.pool.acquire(size, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST);
    this.copy(buffer, staging, { size, sourceOffset: byteOffset });
    this.flush();
    try {
      await staging.mapAsync(GPUMapMode.READ, 0, size);
    } catch (error) {
      this.check();
      throw new GpuError(`Cannot read back buffer "${buffer.label}": ${(error as Error).message}`);
    }
    this.check();
    const out = staging.getMappedRange(0, size).slice(0, byteLength);
    staging.unmap();
    this.pool.release(staging);
    return out;
  }

  /**
   * Runs `record` inside one compute pass bracketed by GPU timestamps and returns the GPU time in
   * milliseconds, or wall time around submit-and-wait when the adapter has no `timestamp-query`.
   * `record` may only dispatch (no copies or writes).
   */
  async time(record: () => void): Promise<{ ms: number; source: "gpu" | "wall" }> {
    if (!this.hasTimestamps) {
      this.flush();
      await this.device.queue.onSubmittedWorkDone();
      const start = performance.now();
      record();
      this.flush();
      await this.device.queue.onSubmittedWorkDone();
      return { ms: performance.now() - start, source: "wall" };
    }
    const querySet = this.device.createQuerySet({ type: "timestamp", count: 2 });
    const resolved = this.device.createBuffer({
      size: 16,
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    });
    const encoder = this.encoder();
    this.#pass = encoder.beginComputePass({
      timestampWrites: { querySet, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 },
    });
    this.#timedPass = true;
    try {
      record();
    } finally {
      this.#timedPass = false;
    }
    this.encoder().resolveQuerySet(querySet, 0, 2, resolved, 0);
    const ticks = new BigUint64Array(await this.read(resolved));
    querySet.destroy();
    resolved.destroy();
    return { ms: Number(ticks[1] - ticks[0]) / 1e6, source: "gpu" };
  }

  /** Waits until the GPU has finished all submitted work. */
  async sync(): Promise<void> {
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    this.check();
  }

  /** Frees the pooled buffers and destroys the device. */
  [Symbol.dispose](): void {
    this.#destroyed = true;
    this.pool.clear();
    this.device.destroy();
  }

  #computePass(): GPUComputePassEncoder {
    if (this.#pass) return this.#pass;
    const encoder = this.#encoder ??= this.device.createCommandEncoder({ label: "nola-gpu batch" });
    return this.#pass = encoder.beginComputePass({ label: "nola-gpu compute" });
  }
}

// Dispatches one profile times (two timestamps each, within WebGPU's 4,096 queries a set).
const PROFILE_DISPATCHES = 2048;

/** Rounds `n` up to a multiple of `to`. */
export function align(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

function kernelId(key: KernelKey): string {
  const constants = Object.entries(key.constants ?? {}).sort(([a], [b]) => a < b ? -1 : 1);
  return JSON.stringify([key.label, key.entry, key.bindings, constants, hashString(key.code)]);
}

function hashString(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

// Mesa's Vulkan loader prints an error for every adapter request when XDG_RUNTIME_DIR is unset;
// compute never needs a display, so give it a harmless value when we may.
function quietVulkanLoader(): void {
  try {
    if (!Deno.env.get("XDG_RUNTIME_DIR")) Deno.env.set("XDG_RUNTIME_DIR", "/tmp");
  } catch {
    // No env permission: the message is noise, not an error.
  }
}
