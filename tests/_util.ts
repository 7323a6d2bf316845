/**
 * Helpers shared by the tests: seeded random data, float64 comparisons, one GPU per process.
 *
 * @module
 */

import assert from "node:assert/strict";
import { Gpu } from "../kernels/gpu.ts";

/** A seeded generator of uniform floats in [0, 1) (mulberry32), for reproducible inputs. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` values uniform in [-1, 1) from `seed`; fresh per test run unless a seed is pinned. */
export function randomArray(n: number, seed: number): Float32Array {
  const next = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = next() * 2 - 1;
  return out;
}

/** A seed for this run, printed by the caller on failure so a failing case can be replayed. */
export function freshSeed(): number {
  const pinned = Deno.env.get("NOLA_TEST_SEED");
  return pinned ? Number(pinned) : (Math.random() * 2 ** 31) >>> 0;
}

/** `||out - ref|| / ||ref||` in float64 (absolute norm when the reference is zero). */
export function relativeError(out: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (out.length !== ref.length) {
    throw new RangeError(`Length mismatch: ${out.length} vs ${ref.length}`);
  }
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = out[i] - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
  }
  return Math.sqrt(num) / (den > 0 ? Math.sqrt(den) : 1);
}

/** Index of the first non-finite value, or -1: catches elements a kernel never wrote. */
export function firstNonFinite(values: ArrayLike<number>): number {
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i])) return i;
  return -1;
}

let shared: Promise<Gpu> | null = null;

/** One device for the whole test process (adapter requests are slow on llvmpipe). */
export function testGpu(): Promise<Gpu> {
  return shared ??= Gpu.acquire();
}

/** Test options for GPU tests: Deno's sanitizers would flag the shared device's resources. */
export const GPU_TEST = { sanitizeResources: false, sanitizeOps: false } as const;

/** A fresh folder under `out/tmp/` (tests may only write below `out/`). */
export async function tempDir(prefix: string): Promise<string> {
  await Deno.mkdir("out/tmp", { recursive: true });
  return await Deno.makeTempDir({ dir: "out/tmp", prefix: `${prefix}-` });
}

/** Runs `fn` with a fresh folder under `out/tmp/`, removed afterwards. */
export async function withTempDir(
  prefix: string,
  fn: (dir: string) => Promise<void>,
): Promise<void> {
  const dir = await tempDir(prefix);
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * Checks `got = start + inc` with the error measured against the operands' size: the f32 sum
 * rounds at the scale of `start` and `inc` (or of `size`, the sum of the absolute terms of an
 * inner product `inc`), so a cancelling sum must not count as inaccurate.
 */
export function checkAccumulated(
  got: ArrayLike<number>,
  start: ArrayLike<number>,
  inc: ArrayLike<number>,
  what: string,
  size: ArrayLike<number> = inc,
): void {
  assert.equal(firstNonFinite(got), -1, `${what}: unwritten element ${firstNonFinite(got)}`);
  let num = 0;
  let s2 = 0;
  let i2 = 0;
  for (let i = 0; i < got.length; i++) {
    num += (got[i] - start[i] - inc[i]) ** 2;
    s2 += start[i] ** 2;
    i2 += size[i] ** 2;
  }
  const err = Math.sqrt(num) / (Math.sqrt(s2) + Math.sqrt(i2) || 1);
  assert(err < 1e-5, `${what}: relative error ${err}`);
}
