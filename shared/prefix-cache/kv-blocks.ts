import type { KvCache } from '../model';

/**
 * Cutting a KV cache into position blocks and gluing blocks back together.
 * Layout per layer is [numKvHeads, length, headDim] (shared/model/kv-cache.ts),
 * so a block of positions is `numKvHeads` strided runs per layer.
 */

/** Positions [from, to) of every layer as a cache of its own. */
export function sliceKvPositions(cache: KvCache, from: number, to: number): KvCache {
  if (from < 0 || to > cache.length || from >= to) throw new RangeError(`cannot slice positions [${from}, ${to}) of a ${cache.length}-position KV cache`);
  const { numKvHeads: heads, headDim, length } = cache;
  const n = to - from;
  const cut = (layer: Float32Array) => {
    const out = new Float32Array(heads * n * headDim);
    for (let h = 0; h < heads; h++) {
      const start = (h * length + from) * headDim;
      out.set(layer.subarray(start, start + n * headDim), h * n * headDim);
    }
    return out;
  };
  return { length: n, numKvHeads: heads, headDim, keys: cache.keys.map(cut), values: cache.values.map(cut) };
}

/** Consecutive position blocks (same heads, headDim and layers) as one cache. */
export function concatKvPositions(blocks: readonly KvCache[]): KvCache {
  if (blocks.length === 0) throw new RangeError('concatKvPositions needs at least one block');
  if (blocks.length === 1) return blocks[0];
  const { numKvHeads: heads, headDim } = blocks[0];
  const layers = blocks[0].keys.length;
  const length = blocks.reduce((n, b) => n + b.length, 0);
  const glue = (pick: (b: KvCache) => Float32Array[], layer: number) => {
    const out = new Float32Array(heads * length * headDim);
    let at = 0;
    for (const block of blocks) {
      const data = pick(block)[layer];
      for (let h = 0; h < heads; h++) {
        out.set(data.subarray(h * block.length * headDim, (h + 1) * block.length * headDim), (h * length + at) * headDim);
      }
      at += block.length;
    }
    return out;
  };
  return {
    length,
    numKvHeads: heads,
    headDim,
    keys: Array.from({ length: layers }, (_, l) => glue((b) => b.keys, l)),
    values: Array.from({ length: layers }, (_, l) => glue((b) => b.values, l)),
  };
}

/** Bytes the cache's arrays occupy. */
export function kvBytes(cache: KvCache): number {
  let bytes = 0;
  for (const a of cache.keys) bytes += a.byteLength;
  for (const a of cache.values) bytes += a.byteLength;
  return bytes;
}
