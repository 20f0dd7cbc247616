import type { KvCache } from '../../shared/model';
import { fullBlocks, prefixBlockKeys, type PrefixBlockKey, type PrefixScope } from '../../shared/prefix-cache';
import type { BlockPolicy, PrefixCache, StoredBlock } from './durable-object';
import { blockChecksum, blockPayloadBytes, decodeKvBlocks, encodeKvBlock, type KvShape } from './kv-codec';

/** Draft KV for the first `tokens.length` positions of a sequence. */
export interface DraftPrefix {
  tokens: readonly number[];
  cache: KvCache;
}

export interface RestoredPrefix {
  /** Positions restored from the cache (a multiple of the block size; 0 on a miss). */
  cachedTokens: number;
  prefix: DraftPrefix | null;
  /** Chain keys of the prompt's full blocks (reused when storing). */
  keys: PrefixBlockKey[];
  /** Blocks the object found damaged and dropped. */
  dropped: number;
}

export interface PrefixCacheSettings extends BlockPolicy {
  blockTokens: number;
}

/**
 * The edge's view of the draft prefix cache for one request: one tenant (the
 * cache salt), one draft model, one shape. Every failure of the cache (object
 * unreachable, block missing, damaged or of the wrong size) is a miss: the
 * draft then recomputes, and the target decides the output anyway.
 */
export class DraftPrefixCache {
  private readonly scope: PrefixScope;
  private readonly shape: KvShape;

  constructor(
    private readonly namespace: DurableObjectNamespace<PrefixCache>,
    model: { id: string; numLayers: number; numKvHeads: number; headDim: number },
    cacheSalt: string,
    private readonly settings: PrefixCacheSettings,
    private readonly log: (message: string) => void = (m) => console.warn(`[prefix-cache] ${m}`),
  ) {
    this.scope = { modelId: model.id, cacheSalt, blockTokens: settings.blockTokens };
    this.shape = { numLayers: model.numLayers, numKvHeads: model.numKvHeads, headDim: model.headDim, blockTokens: settings.blockTokens };
  }

  /** Chain keys of the full blocks of `tokens`. */
  keysFor(tokens: readonly number[], known: readonly PrefixBlockKey[] = []): Promise<PrefixBlockKey[]> {
    return prefixBlockKeys(tokens, this.scope, undefined, known);
  }

  /**
   * Sharding: the object is named by the chain's first key. All blocks of a
   * chain descend from its first block, so they share an object and a lookup
   * is one request to one object; different prompt families (and tenants: the
   * salt is in every key) spread over objects instead of queueing on one
   * single-threaded object, and each family keeps its own byte budget.
   */
  object(keys: readonly PrefixBlockKey[]): DurableObjectStub<PrefixCache> {
    return this.namespace.get(this.namespace.idFromName(`prefix:${keys[0]}`));
  }

  /** The longest cached prefix of `prompt`, leaving at least its last token to run (the draft needs its logits). */
  async restore(prompt: readonly number[]): Promise<RestoredPrefix> {
    const keys = await this.keysFor(prompt);
    const usable = Math.min(keys.length, fullBlocks(prompt.length - 1, this.shape.blockTokens));
    const miss: RestoredPrefix = { cachedTokens: 0, prefix: null, keys, dropped: 0 };
    if (usable === 0) return miss;
    let found;
    try {
      found = await this.object(keys).lookup(keys.slice(0, usable));
    } catch (err) {
      this.log(`lookup failed, recomputing: ${(err as Error).message}`);
      return miss;
    }
    const expected = blockPayloadBytes(this.shape);
    const payloads: Uint8Array[] = [];
    for (const [i, block] of found.blocks.entries()) {
      // The object checks checksums; a payload of the wrong size (another shape, truncation in transit) ends the run here too.
      if (block.key !== keys[i] || block.payload.byteLength !== expected) break;
      payloads.push(new Uint8Array(block.payload));
    }
    if (payloads.length === 0) return { ...miss, dropped: found.dropped };
    const cachedTokens = payloads.length * this.shape.blockTokens;
    return { cachedTokens, prefix: { tokens: prompt.slice(0, cachedTokens), cache: decodeKvBlocks(payloads, this.shape) }, keys, dropped: found.dropped };
  }

  /**
   * Store the full blocks of `state` from block `fromBlock` on (the ones restored
   * need not travel again). Meant for `waitUntil`: it never throws.
   */
  async store(state: DraftPrefix, knownKeys: readonly PrefixBlockKey[], fromBlock: number): Promise<void> {
    try {
      // Yield first: the response is being written; encoding blocks can wait for it.
      await new Promise((resolve) => setTimeout(resolve, 0));
      const length = Math.min(state.tokens.length, state.cache.length);
      const keys = await prefixBlockKeys(state.tokens.slice(0, length), this.scope, undefined, knownKeys);
      if (keys.length <= fromBlock) return;
      const blocks: StoredBlock[] = [];
      for (let i = fromBlock; i < keys.length; i++) {
        const payload = encodeKvBlock(state.cache, i * this.shape.blockTokens, this.shape);
        blocks.push({ key: keys[i], depth: i, payload, checksum: await blockChecksum(keys[i], payload) });
      }
      await this.object(keys).store(blocks, { maxBytes: this.settings.maxBytes, ttlMs: this.settings.ttlMs });
    } catch (err) {
      this.log(`store failed (the next request recomputes): ${(err as Error).message}`);
    }
  }
}
