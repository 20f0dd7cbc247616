import type { KvCache } from '../../shared/model';
import { bytesToHex, hexToBytes } from '../../shared/prefix-cache';

/**
 * How one block of draft KV is stored: per layer, keys then values, each
 * [numKvHeads, blockTokens, headDim] as IEEE fp16 (little-endian). fp16 halves
 * the bytes of the fp32 cache; the draft only proposes, so the rounding can at
 * worst cost acceptance, never a wrong token (the target decides).
 */
export interface KvShape {
  numLayers: number;
  numKvHeads: number;
  headDim: number;
  blockTokens: number;
}

export const blockPayloadBytes = (s: KvShape) => s.numLayers * 2 * s.numKvHeads * s.blockTokens * s.headDim * 2;

/** One block's payload from the positions [from, from + blockTokens) of `cache`. */
export function encodeKvBlock(cache: KvCache, from: number, shape: KvShape): Uint8Array {
  const { numKvHeads: heads, headDim, blockTokens: B } = shape;
  const out = new Uint16Array(blockPayloadBytes(shape) / 2);
  let at = 0;
  const run = B * headDim;
  for (let l = 0; l < shape.numLayers; l++) {
    for (const layer of [cache.keys[l], cache.values[l]]) {
      const bits = new Uint32Array(layer.buffer, layer.byteOffset, layer.length);
      for (let h = 0; h < heads; h++) {
        const start = (h * cache.length + from) * headDim;
        for (let i = 0; i < run; i++) out[at++] = f32BitsToF16(bits[start + i]);
      }
    }
  }
  return new Uint8Array(out.buffer);
}

/** A cache of `payloads.length * blockTokens` positions from consecutive block payloads (each already size-checked). */
export function decodeKvBlocks(payloads: readonly Uint8Array[], shape: KvShape): KvCache {
  const { numKvHeads: heads, headDim, blockTokens: B, numLayers } = shape;
  const length = payloads.length * B;
  const keys = Array.from({ length: numLayers }, () => new Float32Array(heads * length * headDim));
  const values = Array.from({ length: numLayers }, () => new Float32Array(heads * length * headDim));
  const table = f16Table();
  const run = B * headDim;
  payloads.forEach((payload, b) => {
    const halves = aligned16(payload);
    let at = 0;
    for (let l = 0; l < numLayers; l++) {
      for (const layer of [keys[l], values[l]]) {
        for (let h = 0; h < heads; h++) {
          const start = (h * length + b * B) * headDim;
          for (let i = 0; i < run; i++) layer[start + i] = table[halves[at++]];
        }
      }
    }
  });
  return { length, numKvHeads: heads, headDim, keys, values };
}

/** SHA-256 over the block key and its payload: catches a corrupted or truncated payload, and one stored under the wrong key. */
export async function blockChecksum(key: string, payload: Uint8Array): Promise<string> {
  const keyBytes = hexToBytes(key);
  const input = new Uint8Array(keyBytes.length + payload.length);
  input.set(keyBytes);
  input.set(payload, keyBytes.length);
  return bytesToHex(new Uint8Array(await crypto.subtle.digest('SHA-256', input)));
}

function aligned16(bytes: Uint8Array): Uint16Array {
  const copy = bytes.byteOffset % 2 ? bytes.slice() : bytes;
  return new Uint16Array(copy.buffer, copy.byteOffset, copy.byteLength >> 1);
}

/** float32 bits -> fp16 bits, round to nearest even; overflow -> ±inf, NaN kept. */
export function f32BitsToF16(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 112; // rebias 127 -> 15
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    let half = m >>> shift;
    const rest = m & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rest > halfway || (rest === halfway && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  // A carry out of the mantissa correctly bumps the exponent (up to inf).
  if (rest > 0x1000 || (rest === 0x1000 && half & 1)) half++;
  return sign | half;
}

let table: Float32Array | null = null;
/** All 65536 fp16 values as float32: decoding is one lookup per value. */
function f16Table(): Float32Array {
  if (table) return table;
  table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const mant = h & 0x3ff;
    table[h] = exp === 0 ? sign * mant * 2 ** -24 : exp === 0x1f ? (mant ? NaN : sign * Infinity) : sign * (1 + mant / 1024) * 2 ** (exp - 15);
  }
  return table;
}
