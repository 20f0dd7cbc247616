/**
 * A decoder's key/value cache for one sequence: per layer, keys and values laid
 * out as ONNX wants them, [1, numKvHeads, length, headDim], row-major.
 * Values are plain Float32Arrays (not runtime tensors) so the cache can be
 * truncated after a rejected draft and serialised into prefix-cache blocks.
 */
export interface KvCache {
  readonly length: number;
  readonly numKvHeads: number;
  readonly headDim: number;
  readonly keys: Float32Array[];
  readonly values: Float32Array[];
}

export function emptyKvCache(numLayers: number, numKvHeads: number, headDim: number): KvCache {
  const none = () => Array.from({ length: numLayers }, () => new Float32Array(0));
  return { length: 0, numKvHeads, headDim, keys: none(), values: none() };
}

/** Keep the first `length` positions: what remains after the target rejects the rest of a draft. */
export function truncateKvCache(cache: KvCache, length: number): KvCache {
  if (length === cache.length) return cache;
  if (length > cache.length || length < 0) {
    throw new RangeError(`cannot truncate a KV cache of ${cache.length} positions to ${length}`);
  }
  const cut = (layer: Float32Array) => sliceSequence(layer, cache.numKvHeads, cache.length, length, cache.headDim);
  return { ...cache, length, keys: cache.keys.map(cut), values: cache.values.map(cut) };
}

/** Copy positions [0, keep) of every head out of a [heads, length, headDim] block. */
function sliceSequence(layer: Float32Array, heads: number, length: number, keep: number, headDim: number): Float32Array {
  const out = new Float32Array(heads * keep * headDim);
  for (let h = 0; h < heads; h++) {
    const from = h * length * headDim;
    out.set(layer.subarray(from, from + keep * headDim), h * keep * headDim);
  }
  return out;
}
