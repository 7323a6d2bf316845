/**
 * Uniform blocks of one command batch, packed into a few shared buffers and uploaded with one
 * write each just before the batch is submitted.
 *
 * @module
 */

import type { BufferPool } from "./pool.ts";

const CHUNK_BYTES = 1 << 16;
const USAGE = GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST;

/** Packs each dispatch's uniform block at its own aligned offset. */
export class UniformArena {
  #chunks: { buffer: GPUBuffer; data: Uint8Array<ArrayBuffer>; used: number }[] = [];
  #alignment: number;

  constructor(readonly device: GPUDevice, readonly pool: BufferPool) {
    this.#alignment = device.limits.minUniformBufferOffsetAlignment;
  }

  /** True when blocks were pushed since the last upload. */
  get pending(): boolean {
    return this.#chunks.length > 0;
  }

  /** Stores one block and returns the binding that reads it. */
  push(block: ArrayBuffer): GPUBufferBinding {
    const size = Math.ceil(block.byteLength / 16) * 16;
    let chunk = this.#chunks.at(-1);
    const offset = chunk ? Math.ceil(chunk.used / this.#alignment) * this.#alignment : 0;
    if (!chunk || offset + size > CHUNK_BYTES) {
      chunk = {
        buffer: this.pool.acquire(CHUNK_BYTES, USAGE),
        data: new Uint8Array(CHUNK_BYTES),
        used: 0,
      };
      this.#chunks.push(chunk);
      return this.push(block);
    }
    chunk.data.set(new Uint8Array(block), offset);
    chunk.used = offset + size;
    return { buffer: chunk.buffer, offset, size };
  }

  /** Writes every chunk's blocks to its buffer (queue-ordered before the next submit). */
  upload(): void {
    for (const { buffer, data, used } of this.#chunks) {
      this.device.queue.writeBuffer(buffer, 0, data.subarray(0, used));
    }
  }

  /** Returns the chunks to the pool; later writes are queue-ordered after this submit. */
  recycle(): void {
    for (const { buffer } of this.#chunks.splice(0)) this.pool.release(buffer);
  }
}
