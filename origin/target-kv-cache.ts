import { truncateKvCache, type KvCache } from '../shared/model';
import { concatKvPositions, fullBlocks, kvBytes, prefixBlockKeys, sliceKvPositions, type PrefixBlockKey, type PrefixScope } from '../shared/prefix-cache';

export interface TargetKvCacheOptions {
  /** Memory budget for all cached target KV, in bytes. */
  maxBytes: number;
  /** Tokens per hash-chained block. */
  blockTokens: number;
  /** Names the target weights in the hash chain. */
  modelId: string;
  /** Live sequences kept besides the blocks (each is scanned on lookup). */
  maxSessions?: number;
}

/** A full block of target KV, named by its hash-chain key. */
interface BlockEntry {
  kind: 'block';
  cache: KvCache;
  bytes: number;
}

/**
 * The contiguous KV of one recent sequence (a generation in progress), tokens
 * exactly as run, the partial last block and the draft positions included.
 * It makes the next verify round of the same generation run only its new
 * tokens, with no copy; blocks alone would re-run up to B-1 tokens per round.
 */
interface SessionEntry {
  kind: 'session';
  cacheSalt: string;
  tokens: number[];
  /** Chain keys of its full blocks, computed so far (reused, not rehashed). */
  keys: PrefixBlockKey[];
  cache: KvCache;
  bytes: number;
}

type Entry = BlockEntry | SessionEntry;

/**
 * The live sequence of an open session (origin/session.ts), kept warm for the
 * session's life: its entry is evicted only when nothing else is left to
 * evict. `tokens` = what the session's last pass ran (its `known`).
 */
export interface HeldSequence {
  readonly cacheSalt: string;
  tokens: readonly number[];
  release(): void;
}

export interface TargetKvHit {
  /** The reusable KV: `length` positions of the requested tokens (empty on a miss). */
  cache: KvCache | null;
  length: number;
  /** Chain keys of the request's full blocks up to the lookup limit. */
  keys: PrefixBlockKey[];
  /** The live sequence the hit came from: the new sequence replaces it. */
  sessionKey?: string;
}

/**
 * The origin's target-KV memory (ARCHITECTURE.md: Prefix KV in Durable Objects,
 * "The origin's target KV"): hash-chained full blocks, shared across requests with the same
 * prefix under the same cache salt, plus a few live sequences so the rounds of
 * one generation only run their new tokens. Everything is in one LRU ordered
 * by last use and bounded by bytes. It is purely an optimisation: a miss, an
 * eviction or a too-small budget means recomputing, never a different token.
 */
export class TargetKvCache {
  /** Map order is recency: the first entry is the least recently used. */
  private readonly entries = new Map<string, Entry>();
  private held = 0;
  private nextSession = 0;
  private readonly maxSessions: number;
  private readonly warm = new Set<HeldSequence>();

  constructor(private readonly options: TargetKvCacheOptions) {
    if (!(options.maxBytes >= 0)) throw new RangeError(`maxBytes must be >= 0, got ${options.maxBytes}`);
    this.maxSessions = options.maxSessions ?? 32;
  }

  /** Bytes of KV held now; never above `maxBytes` between calls. */
  get bytes() {
    return this.held;
  }

  stats() {
    let blocks = 0;
    let sessions = 0;
    for (const e of this.entries.values()) e.kind === 'block' ? blocks++ : sessions++;
    return { bytes: this.held, maxBytes: this.options.maxBytes, blocks, sessions, blockTokens: this.options.blockTokens };
  }

  /** The longest reusable prefix of `tokens`, at most `limit` positions, from a live sequence or the block chain. */
  async lookup(tokens: readonly number[], cacheSalt: string, limit: number): Promise<TargetKvHit> {
    const B = this.options.blockTokens;
    let session: { key: string; entry: SessionEntry; shared: number } | null = null;
    for (const [key, entry] of this.entries) {
      if (entry.kind !== 'session' || entry.cacheSalt !== cacheSalt) continue;
      const shared = sharedPrefix(entry.tokens, tokens, Math.min(entry.cache.length, limit));
      if (shared > (session?.shared ?? 0)) session = { key, entry, shared };
    }
    const keys = await prefixBlockKeys(tokens, this.scope(cacheSalt), fullBlocks(limit, B), session?.entry.keys.slice(0, fullBlocks(session.shared, B)));

    let chained = 0;
    while (chained < keys.length && this.entries.get(keys[chained])?.kind === 'block') chained++;

    if (session && session.shared >= chained * B) {
      this.touch(session.key);
      return { cache: truncateKvCache(session.entry.cache, session.shared), length: session.shared, keys, sessionKey: session.key };
    }
    if (chained === 0) return { cache: null, length: 0, keys };
    const blocks = keys.slice(0, chained).map((key) => {
      this.touch(key);
      return (this.entries.get(key) as BlockEntry).cache;
    });
    return { cache: concatKvPositions(blocks), length: chained * B, keys };
  }

  /**
   * Keep `cache` (the KV of all of `tokens`) as the live sequence, and its full
   * blocks within the first `blockLimit` positions as shared blocks. Positions
   * past `blockLimit` (unverified draft tokens) stay only in the live sequence.
   */
  async remember(tokens: readonly number[], cacheSalt: string, cache: KvCache, hit: Pick<TargetKvHit, 'keys' | 'sessionKey'>, blockLimit: number) {
    if (cache.length !== tokens.length) throw new RangeError(`KV of ${cache.length} positions for ${tokens.length} tokens`);
    const B = this.options.blockTokens;
    const keys = await prefixBlockKeys(tokens, this.scope(cacheSalt), fullBlocks(Math.min(blockLimit, tokens.length), B), hit.keys);
    for (const [i, key] of keys.entries()) {
      if (this.entries.has(key)) this.touch(key);
      else this.insert(key, { kind: 'block', cache: sliceKvPositions(cache, i * B, (i + 1) * B), bytes: 0 });
    }

    // The sequence this one continued (its rejected draft tail included), and any it extends, are superseded.
    if (hit.sessionKey) this.remove(hit.sessionKey);
    let sessions = 0;
    for (const [key, entry] of this.entries) {
      if (entry.kind !== 'session') continue;
      if (entry.cacheSalt === cacheSalt && isPrefix(entry.tokens, tokens)) this.remove(key);
      else sessions++;
    }
    for (const [key, entry] of this.evictionOrder()) {
      if (sessions < this.maxSessions) break;
      if (entry.kind === 'session') {
        this.remove(key);
        sessions--;
      }
    }
    this.insert(`session:${this.nextSession++}`, { kind: 'session', cacheSalt, tokens: [...tokens], keys, cache, bytes: 0 });
  }

  /** Keep the live sequence of one session warm until `release()` (set `tokens` after each of its passes). */
  hold(cacheSalt: string): HeldSequence {
    const held: HeldSequence = { cacheSalt, tokens: [], release: () => void this.warm.delete(held) };
    this.warm.add(held);
    return held;
  }

  private isHeld(entry: Entry): boolean {
    if (entry.kind !== 'session') return false;
    for (const h of this.warm) {
      if (h.cacheSalt === entry.cacheSalt && h.tokens.length === entry.tokens.length && sharedPrefix(h.tokens, entry.tokens, h.tokens.length) === h.tokens.length) return true;
    }
    return false;
  }

  /** Entries in eviction order: least recently used first, held sequences after everything else. */
  private *evictionOrder(): Generator<[string, Entry]> {
    const held: Array<[string, Entry]> = [];
    for (const item of this.entries) {
      if (this.warm.size && this.isHeld(item[1])) held.push(item);
      else yield item;
    }
    yield* held;
  }

  private scope(cacheSalt: string): PrefixScope {
    return { modelId: this.options.modelId, cacheSalt, blockTokens: this.options.blockTokens };
  }

  private insert(key: string, entry: Entry) {
    entry.bytes = kvBytes(entry.cache);
    // Larger than the whole budget: keeping it would evict everything and still not fit.
    if (entry.bytes > this.options.maxBytes) return;
    this.entries.set(key, entry);
    this.held += entry.bytes;
    for (const [oldest] of this.evictionOrder()) {
      if (this.held <= this.options.maxBytes) break;
      this.remove(oldest);
    }
  }

  private touch(key: string) {
    const entry = this.entries.get(key);
    if (!entry) return;
    this.entries.delete(key);
    this.entries.set(key, entry);
  }

  private remove(key: string) {
    const entry = this.entries.get(key);
    if (!entry) return;
    this.entries.delete(key);
    this.held -= entry.bytes;
  }
}

function sharedPrefix(a: readonly number[], b: readonly number[], limit: number): number {
  const n = Math.min(a.length, b.length, limit);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

function isPrefix(short: readonly number[], long: readonly number[]): boolean {
  return short.length <= long.length && sharedPrefix(short, long, short.length) === short.length;
}
