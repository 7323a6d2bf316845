// Activation arenas kept per (B, T), shared by the model families: allocated on first use, the
// few most recently used shapes kept (training, evaluation, a prompt, single-token steps).

import type { Tensor } from "../kernels/tensor.ts";

const ARENAS_KEPT = 4;

/** Arenas by (B, T), least recently used freed first. */
export class Arenas<A extends Disposable & { readonly bytes: number }> implements Disposable {
  #byShape = new Map<string, A>();

  /**
   * The arena for (B, T), made on first use.
   *
   * @param shape `B` and `T`.
   * @param options `make` builds a new arena; `pinned` is never freed (the last forward's).
   * @returns The arena.
   */
  get(shape: { B: number; T: number }, options: { make: () => A; pinned?: A }): A {
    const key = `${shape.B}x${shape.T}`;
    let arena = this.#byShape.get(key);
    if (arena) this.#byShape.delete(key);
    else arena = options.make();
    this.#byShape.set(key, arena);
    for (const [old, stale] of this.#byShape) {
      if (this.#byShape.size <= ARENAS_KEPT) break;
      if (stale === options.pinned) continue;
      stale[Symbol.dispose]();
      this.#byShape.delete(old);
    }
    return arena;
  }

  /** Bytes of every arena kept. */
  get bytes(): number {
    return [...this.#byShape.values()].reduce((s, a) => s + a.bytes, 0);
  }

  /** Frees every arena. */
  [Symbol.dispose](): void {
    for (const arena of this.#byShape.values()) arena[Symbol.dispose]();
    this.#byShape.clear();
  }
}

/**
 * A model's GPU bytes by kind, as `Model.memory` reports them.
 *
 * @param params The weights.
 * @param grads Their gradients, when trained.
 * @param arenas The activation arenas.
 * @returns Bytes of weights, gradients and activations.
 */
export function modelMemory(
  params: Map<string, Tensor>,
  grads: Map<string, Tensor> | null,
  arenas: { readonly bytes: number },
): { weights: number; gradients: number; activations: number } {
  const sum = (ts: Iterable<Tensor>) => [...ts].reduce((s, t) => s + t.byteLength, 0);
  return {
    weights: sum(params.values()),
    gradients: grads ? sum(grads.values()) : 0,
    activations: arenas.bytes,
  };
}
