import { describe, expect, it } from 'vitest';
import { blockChecksum, blockPayloadBytes, decodeKvBlocks, encodeKvBlock, f32BitsToF16 } from '../../functions/prefix-cache/kv-codec';
import type { KvCache } from '../../shared/model';
import { concatKvPositions, prefixBlockKeys, sliceKvPositions } from '../../shared/prefix-cache';

const scope = { modelId: 'm', cacheSalt: 's', blockTokens: 4 };

function randomCache(length: number, layers = 2, heads = 2, headDim = 3): KvCache {
  let x = 1;
  const rand = () => ((x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 4 - 2;
  const layer = () => Float32Array.from({ length: heads * length * headDim }, rand);
  return { length, numKvHeads: heads, headDim, keys: Array.from({ length: layers }, layer), values: Array.from({ length: layers }, layer) };
}

describe('prefix block hash chain', () => {
  it('keys only full blocks, chains them, and depends on model, salt and every token', async () => {
    const tokens = [1, 2, 3, 4, 5, 6, 7, 8, 9];
    const keys = await prefixBlockKeys(tokens, scope);
    expect(keys).toHaveLength(2);
    expect(keys[0]).toMatch(/^[0-9a-f]{64}$/);
    expect(await prefixBlockKeys(tokens.slice(0, 8), scope)).toEqual(keys);
    // Same second block after a different first block: a different key (the chain).
    expect((await prefixBlockKeys([0, 2, 3, 4, 5, 6, 7, 8], scope))[1]).not.toBe(keys[1]);
    expect((await prefixBlockKeys(tokens, { ...scope, cacheSalt: 't' }))[0]).not.toBe(keys[0]);
    expect((await prefixBlockKeys(tokens, { ...scope, modelId: 'n' }))[0]).not.toBe(keys[0]);
    // Length-prefixed scope: ("ab", "") and ("a", "b") differ.
    expect((await prefixBlockKeys(tokens, { ...scope, modelId: 'ab', cacheSalt: '' }))[0]).not.toBe((await prefixBlockKeys(tokens, { ...scope, modelId: 'a', cacheSalt: 'b' }))[0]);
    expect(await prefixBlockKeys(tokens, scope, 2, keys.slice(0, 1))).toEqual(keys);
  });
});

describe('KV blocks', () => {
  it('slices and concatenates positions exactly', () => {
    const cache = randomCache(12);
    const parts = [sliceKvPositions(cache, 0, 4), sliceKvPositions(cache, 4, 8), sliceKvPositions(cache, 8, 12)];
    expect(concatKvPositions(parts)).toEqual(cache);
  });

  it('round-trips blocks through fp16 within fp16 precision', async () => {
    const cache = randomCache(10);
    const shape = { numLayers: 2, numKvHeads: 2, headDim: 3, blockTokens: 4 };
    const payloads = [encodeKvBlock(cache, 0, shape), encodeKvBlock(cache, 4, shape)];
    expect(payloads[0].byteLength).toBe(blockPayloadBytes(shape));
    const restored = decodeKvBlocks(payloads, shape);
    const expected = sliceKvPositions(cache, 0, 8);
    expect(restored.length).toBe(8);
    for (let l = 0; l < 2; l++) {
      for (const [a, b] of [[restored.keys[l], expected.keys[l]], [restored.values[l], expected.values[l]]]) {
        for (let i = 0; i < a.length; i++) expect(Math.abs(a[i] - b[i])).toBeLessThanOrEqual(Math.abs(b[i]) * 2 ** -11 + 2 ** -24);
      }
    }
    const sum = await blockChecksum('ab'.repeat(32), payloads[0]);
    payloads[0][3] ^= 1;
    expect(await blockChecksum('ab'.repeat(32), payloads[0])).not.toBe(sum);
  });

  it('converts special float values to fp16', () => {
    const bits = (v: number) => new Uint32Array(Float32Array.of(v).buffer)[0];
    expect(f32BitsToF16(bits(1))).toBe(0x3c00);
    expect(f32BitsToF16(bits(-2))).toBe(0xc000);
    expect(f32BitsToF16(bits(65504))).toBe(0x7bff);
    expect(f32BitsToF16(bits(1e6))).toBe(0x7c00);
    expect(f32BitsToF16(bits(2 ** -24))).toBe(1);
    expect(f32BitsToF16(bits(NaN)) & 0x7c00).toBe(0x7c00);
    expect(f32BitsToF16(bits(0.1))).toBe(0x2e66);
  });
});
