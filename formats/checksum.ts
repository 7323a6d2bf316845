/**
 * A checksum over a whole safetensors file, stored in its own `__metadata__`, so that a file
 * damaged after it was written (truncated, a flipped bit, a torn copy) is refused instead of
 * silently loading other numbers.
 *
 * The entry is `"checksum": "crc32:<8 lowercase hex digits>"`: the CRC-32 (IEEE 802.3, as zlib's
 * `crc32`, Python's `zlib.crc32` and Go's `hash/crc32` compute it) of every byte of the file as
 * written, with the 8 hex digits of the value replaced by ASCII `0`. Covering the whole file and
 * not only the data section means a flipped digit in the header (a seed, a step, a shape) is caught
 * as well. The header must hold the quoted value `"crc32:<digits>"` exactly once, so a reader finds
 * the digits by searching the header bytes.
 *
 * CRC-32 rather than a cryptographic hash: the aim is accidental damage, not tampering, and zlib's
 * CRC-32 runs at several GB/s (SHA-256 runs at about 1 GB/s here and is not faster to implement
 * elsewhere). It detects every error burst up to 32 bits long, so every single flipped bit, and
 * any other damage with probability 1 - 2^-32.
 *
 * @module
 */

import { crc32 } from "node:zlib";
import type { SafetensorsFile } from "./safetensors.ts";

/** The metadata key holding the checksum. */
export const CHECKSUM_KEY = "checksum";

/** The value to put in the metadata before {@linkcode sealChecksum} fills it in. */
export const CHECKSUM_PLACEHOLDER = "crc32:00000000";

const VALUE = /^crc32:[0-9a-f]{8}$/;
const DIGITS = 8;
const CHUNK = 4 << 20;
const ascii = new TextEncoder();

/**
 * Fills in the checksum of an encoded safetensors file whose metadata holds
 * {@linkcode CHECKSUM_PLACEHOLDER} under {@linkcode CHECKSUM_KEY}, in place. The file's size does
 * not change, so size accounting can use the placeholder.
 *
 * @param bytes The whole file, as `encodeSafetensors` returned it.
 * @returns The same array, sealed.
 * @throws {RangeError} If the header does not hold the placeholder exactly once.
 *
 * @example Sealing a file before writing it
 * ```ts
 * import { CHECKSUM_KEY, CHECKSUM_PLACEHOLDER, sealChecksum } from "./checksum.ts";
 * import { encodeSafetensors } from "./safetensors.ts";
 * const bytes = sealChecksum(encodeSafetensors(
 *   [{ name: "x", dtype: "F32", shape: [2], data: new Float32Array([1, 2]) }],
 *   { [CHECKSUM_KEY]: CHECKSUM_PLACEHOLDER },
 * ));
 * ```
 */
export function sealChecksum(bytes: Uint8Array): Uint8Array {
  const header = headerOf(bytes);
  const at = findOnce(header, quoted(CHECKSUM_PLACEHOLDER));
  if (at < 0) {
    throw new RangeError(
      `Cannot seal a checksum: the header holds "${CHECKSUM_PLACEHOLDER}" ${
        at === -1 ? "nowhere" : "more than once"
      }`,
    );
  }
  const digits = hex(crc32(bytes));
  bytes.set(ascii.encode(digits), 8 + at + 1 + CHECKSUM_PLACEHOLDER.length - DIGITS);
  return bytes;
}

/** What {@linkcode verifyChecksum} found. */
export interface ChecksumCheck {
  /** The stored value; absent when the file has no checksum (written before checksums). */
  stored?: string;
  /** Why the file fails the check, as a clause for a message; absent when it passes. */
  problem?: string;
}

/**
 * Checks an open safetensors file against its stored checksum, reading the file once in chunks
 * (memory stays bounded on multi-GB checkpoints). A file without the entry passes unchecked.
 *
 * @param file The open file (its header already validated).
 * @returns The stored value, and the problem when the bytes do not match it.
 *
 * @example Refusing a damaged file
 * ```ts
 * import { verifyChecksum } from "./checksum.ts";
 * import { SafetensorsFile } from "./safetensors.ts";
 * using file = await SafetensorsFile.open("out/run/adapter.safetensors");
 * const { problem } = await verifyChecksum(file);
 * if (problem) throw new Error(`Cannot load "${file.path}": ${problem}`);
 * ```
 */
export async function verifyChecksum(file: SafetensorsFile): Promise<ChecksumCheck> {
  const stored = file.metadata[CHECKSUM_KEY];
  if (stored === undefined) return {};
  if (!VALUE.test(stored)) {
    return {
      stored,
      problem: `metadata "${CHECKSUM_KEY}" is ${JSON.stringify(stored)}, not "crc32:" and ` +
        `8 lowercase hex digits`,
    };
  }
  using handle = await Deno.open(file.path, { read: true });
  const head = new Uint8Array(8);
  await readFull(handle, head);
  const headerLength = Number(new DataView(head.buffer).getBigUint64(0, true));
  const header = new Uint8Array(headerLength);
  await readFull(handle, header);
  const at = findOnce(header, quoted(stored));
  if (at < 0) {
    const where = at === -1 ? "not literally (JSON escapes in it)" : "more than once";
    return { stored, problem: `the header holds the checksum value ${where}` };
  }
  // File offsets of the digits that count as "0" in the sum.
  const from = 8 + at + 1 + stored.length - DIGITS;
  const zeros = ascii.encode("0".repeat(DIGITS));
  let sum = crc32(head);
  let offset = 8;
  // Sized to the file when it is smaller: zeroing 4 MiB took longer than summing a small adapter.
  const chunk = new Uint8Array(Math.min(CHUNK, Math.max(1, (await handle.stat()).size - 8)));
  await handle.seek(8, Deno.SeekMode.Start);
  for (;;) {
    const n = await handle.read(chunk);
    if (n === null) break;
    const part = chunk.subarray(0, n);
    const lo = Math.max(from, offset);
    const hi = Math.min(from + DIGITS, offset + n);
    if (lo < hi) part.set(zeros.subarray(lo - from, hi - from), lo - offset);
    sum = crc32(part, sum);
    offset += n;
  }
  const actual = `crc32:${hex(sum)}`;
  if (actual === stored) return { stored };
  return {
    stored,
    problem: `its bytes give checksum ${actual}, not the stored ${stored}: the file was ` +
      `damaged or changed after it was written`,
  };
}

function headerOf(bytes: Uint8Array): Uint8Array {
  const length = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  return bytes.subarray(8, 8 + length);
}

const quoted = (value: string) => ascii.encode(`"${value}"`);

// Where `needle` starts in `haystack`: -1 when nowhere, -2 when more than once.
function findOnce(haystack: Uint8Array, needle: Uint8Array): number {
  let found = -1;
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    if (found >= 0) return -2;
    found = i;
  }
  return found;
}

async function readFull(file: Deno.FsFile, out: Uint8Array): Promise<void> {
  let filled = 0;
  while (filled < out.length) {
    const n = await file.read(out.subarray(filled));
    if (n === null) throw new RangeError("The file ended inside its header");
    filled += n;
  }
}

function hex(n: number): string {
  return (n >>> 0).toString(16).padStart(DIGITS, "0");
}
