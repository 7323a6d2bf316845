/**
 * A pool of GPU buffers keyed by (size class, usage), so temporaries are reused instead of
 * created and destroyed every step.
 *
 * @module
 */

/** Rounds a byte length up to its size class: powers of two up to 1 MiB, then eighths. */
export function sizeClass(byteLength: number): number {
  const n = Math.max(256, Math.ceil(byteLength));
  const pow = 2 ** Math.ceil(Math.log2(n));
  if (pow <= 1 << 20) return pow;
  const step = pow / 16;
  return Math.ceil(n / step) * step;
}

/** Byte counts of a pool, for memory reports. */
export interface PoolStats {
  /** Bytes of every live buffer the pool created. */
  allocated: number;
  /** Bytes currently handed out. */
  inUse: number;
  /** Highest `inUse` seen since the last {@link BufferPool.resetPeak}. */
  peak: number;
}

/** Buffers by (size class, usage); a released buffer is handed out again for the same key. */
export class BufferPool {
  #free = new Map<string, GPUBuffer[]>();
  #stats: PoolStats = { allocated: 0, inUse: 0, peak: 0 };

  constructor(readonly device: GPUDevice) {}

  /** A buffer of at least `byteLength` bytes with exactly `usage`. */
  acquire(byteLength: number, usage: GPUBufferUsageFlags): GPUBuffer {
    const size = sizeClass(byteLength);
    const buffer = this.#free.get(`${size}:${usage}`)?.pop() ??
      this.#create(size, usage);
    this.#stats.inUse += size;
    this.#stats.peak = Math.max(this.#stats.peak, this.#stats.inUse);
    return buffer;
  }

  /** Hands a buffer back; it must have come from {@link BufferPool.acquire}. */
  release(buffer: GPUBuffer): void {
    const key = `${buffer.size}:${buffer.usage}`;
    let list = this.#free.get(key);
    if (!list) this.#free.set(key, list = []);
    list.push(buffer);
    this.#stats.inUse -= buffer.size;
  }

  /** A copy of the current byte counts. */
  stats(): PoolStats {
    return { ...this.#stats };
  }

  /** Starts a new peak measurement from the current use. */
  resetPeak(): void {
    this.#stats.peak = this.#stats.inUse;
  }

  /** Destroys every free buffer. */
  clear(): void {
    for (const list of this.#free.values()) {
      for (const buffer of list) {
        this.#stats.allocated -= buffer.size;
        buffer.destroy();
      }
    }
    this.#free.clear();
  }

  #create(size: number, usage: GPUBufferUsageFlags): GPUBuffer {
    this.#stats.allocated += size;
    return this.device.createBuffer({ label: `pool ${size}`, size, usage });
  }
}
