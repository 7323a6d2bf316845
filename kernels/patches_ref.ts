/**
 * Float64 CPU references of `patches.wgsl` (a vision transformer's token layout), and the
 * convolution the unfolded patches stand for, for tests.
 *
 * @module
 */

import type { PatchGeometry } from "./patches.ts";

/**
 * Patches as matrix rows: row `b * N + n` is patch `n` of image `b`, in `(c, y, x)` order.
 *
 * @param inp Images `[B, C, H, W]`.
 * @param g Their geometry.
 * @returns `[B * N, C * P * P]`.
 */
export function unfoldRef(inp: ArrayLike<number>, g: PatchGeometry): Float64Array {
  const { B, C, H, W, P } = g;
  const [gh, gw] = [Math.floor(H / P), Math.floor(W / P)];
  const K = C * P * P;
  const out = new Float64Array(B * gh * gw * K);
  let at = 0;
  for (let b = 0; b < B; b++) {
    for (let py = 0; py < gh; py++) {
      for (let px = 0; px < gw; px++) {
        for (let c = 0; c < C; c++) {
          for (let y = 0; y < P; y++) {
            for (let x = 0; x < P; x++) {
              out[at++] = inp[((b * C + c) * H + py * P + y) * W + px * P + x];
            }
          }
        }
      }
    }
  }
  return out;
}

/**
 * `torch.nn.functional.conv2d(inp, weight, bias, stride=P)` over the patch grid, written as the
 * convolution itself (not through {@link unfoldRef}), with its output in token order.
 *
 * @param inp Images `[B, C, H, W]`.
 * @param weight The conv weight `[D, C, P, P]`.
 * @param bias `[D]`.
 * @param g The geometry, and `D`.
 * @returns `[B * N, D]`: for each image, the grid's cells row-major.
 */
export function patchConvRef(
  inp: ArrayLike<number>,
  weight: ArrayLike<number>,
  bias: ArrayLike<number>,
  g: PatchGeometry & { D: number },
): Float64Array {
  const { B, C, H, W, P, D } = g;
  const [gh, gw] = [Math.floor(H / P), Math.floor(W / P)];
  const out = new Float64Array(B * gh * gw * D);
  for (let b = 0; b < B; b++) {
    for (let oy = 0; oy < gh; oy++) {
      for (let ox = 0; ox < gw; ox++) {
        for (let d = 0; d < D; d++) {
          let sum = bias[d];
          for (let c = 0; c < C; c++) {
            for (let ky = 0; ky < P; ky++) {
              for (let kx = 0; kx < P; kx++) {
                const pixel = inp[((b * C + c) * H + oy * P + ky) * W + ox * P + kx];
                sum += pixel * weight[((d * C + c) * P + ky) * P + kx];
              }
            }
          }
          out[((b * gh + oy) * gw + ox) * D + d] = sum;
        }
      }
    }
  }
  return out;
}

/**
 * The token sequence: `[cls; patches] + pos` per example.
 *
 * @param patches `[B * N, D]`.
 * @param cls `[D]`.
 * @param pos `[N + 1, D]`.
 * @param s Sizes.
 * @returns `[B, N + 1, D]`.
 */
export function tokensForwardRef(
  patches: ArrayLike<number>,
  cls: ArrayLike<number>,
  pos: ArrayLike<number>,
  s: { B: number; N: number; D: number },
): Float64Array {
  const { B, N, D } = s;
  const out = new Float64Array(B * (N + 1) * D);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t <= N; t++) {
      for (let d = 0; d < D; d++) {
        const v = t === 0 ? cls[d] : patches[(b * N + t - 1) * D + d];
        out[(b * (N + 1) + t) * D + d] = v + pos[t * D + d];
      }
    }
  }
  return out;
}

/**
 * The gradients of {@link tokensForwardRef}'s inputs.
 *
 * @param dout `[B, N + 1, D]`.
 * @param s Sizes.
 * @returns `dpatches` `[B * N, D]`, `dcls` `[D]`, `dpos` `[N + 1, D]`.
 */
export function tokensBackwardRef(
  dout: ArrayLike<number>,
  s: { B: number; N: number; D: number },
): { dpatches: Float64Array; dcls: Float64Array; dpos: Float64Array } {
  const { B, N, D } = s;
  const dpatches = new Float64Array(B * N * D);
  const dcls = new Float64Array(D);
  const dpos = new Float64Array((N + 1) * D);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t <= N; t++) {
      for (let d = 0; d < D; d++) {
        const g = dout[(b * (N + 1) + t) * D + d];
        dpos[t * D + d] += g;
        if (t === 0) dcls[d] += g;
        else dpatches[(b * N + t - 1) * D + d] = g;
      }
    }
  }
  return { dpatches, dcls, dpos };
}

/**
 * Row 0 of each example.
 *
 * @param x `[B, T, D]`.
 * @param s Sizes (`T` tokens an example).
 * @returns `[B, D]`.
 */
export function classRowsRef(
  x: ArrayLike<number>,
  s: { B: number; T: number; D: number },
): Float64Array {
  const { B, T, D } = s;
  const out = new Float64Array(B * D);
  for (let b = 0; b < B; b++) {
    for (let d = 0; d < D; d++) out[b * D + d] = x[b * T * D + d];
  }
  return out;
}
