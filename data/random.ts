/**
 * Seeded random numbers for data order, splits and token sampling: a xoshiro128** generator keyed
 * by (seed, stream), and the Fisher-Yates permutations drawn from it.
 *
 * @module
 */

/** A seeded generator of 32-bit integers: xoshiro128** (Blackman and Vigna, 2018). */
export class Random {
  readonly #s = new Uint32Array(4);

  /**
   * @param seed Any safe integer (its low 53 bits are used).
   * @param stream A second integer mixed in, such as the epoch.
   */
  constructor(seed: number, stream = 0) {
    if (!Number.isSafeInteger(seed) || !Number.isSafeInteger(stream)) {
      throw new RangeError(`Invalid seed ${seed}/${stream}: expected safe integers`);
    }
    // Absorb the four 32-bit words of (seed, stream) with murmur3's finaliser, then squeeze four
    // state words (SplitMix32 style): nearby seeds give unrelated states.
    const words = [
      seed >>> 0,
      Math.floor(seed / 2 ** 32) >>> 0,
      stream >>> 0,
      Math.floor(stream / 2 ** 32) >>> 0,
    ];
    let h = 0;
    for (const w of words) h = fmix32((h ^ w) + 0x9e3779b9);
    for (let i = 0; i < 4; i++) {
      h = fmix32(h + 0x9e3779b9);
      this.#s[i] = h;
    }
    if ((this.#s[0] | this.#s[1] | this.#s[2] | this.#s[3]) === 0) this.#s[0] = 1;
  }

  /** @returns The next uniform integer in `[0, 2^32)`. */
  nextUint32(): number {
    const s = this.#s;
    const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** @returns The next uniform float in `[0, 1)`, a multiple of 2^-53 (two draws). */
  nextFloat(): number {
    return ((this.nextUint32() >>> 5) * 2 ** 26 + (this.nextUint32() >>> 6)) / 2 ** 53;
  }

  /**
   * @param n The bound, an integer in `[1, 2^32]`.
   * @returns A uniform integer in `[0, n)`, without modulo bias (rejection).
   */
  below(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > 2 ** 32) {
      throw new RangeError(`Invalid bound ${n}: expected an integer in [1, 2^32]`);
    }
    const threshold = 2 ** 32 % n; // values under it would make low results more likely
    for (;;) {
      const x = this.nextUint32();
      if (x >= threshold) return x % n;
    }
  }
}

function fmix32(x: number): number {
  x = x >>> 0;
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/**
 * The order in which epoch `epoch` visits `n` items.
 *
 * @param n How many items.
 * @param seed The shuffle seed.
 * @param epoch The epoch (any safe integer stream; splits use their own).
 * @returns A permutation of `0 .. n-1`.
 *
 * @example
 * ```ts
 * import { permutation } from "./batches.ts";
 * permutation(5, 42, 0); // the same five indices in the same order on every run and machine
 * ```
 */
export function permutation(n: number, seed: number, epoch: number): Uint32Array {
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  const random = new Random(seed, epoch);
  for (let i = n - 1; i > 0; i--) {
    const j = random.below(i + 1);
    const t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  return order;
}
