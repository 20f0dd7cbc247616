import { DurableObject } from 'cloudflare:workers';
import type { Env } from '../env';
import { blockChecksum } from './kv-codec';

/** A block as the edge hands it over: its chain key, position in the chain, fp16 payload and checksum. */
export interface StoredBlock {
  key: string;
  /** Block index in its chain (0 = first block of the prompt). */
  depth: number;
  payload: Uint8Array;
  checksum: string;
}

/** Limits the caller applies on every store (from configuration). */
export interface BlockPolicy {
  /** Byte budget of this object; least recently used blocks go first. */
  maxBytes: number;
  /** Blocks unused for this long are deleted by the alarm. */
  ttlMs: number;
}

export interface LookupResult {
  blocks: Array<{ key: string; payload: ArrayBuffer }>;
  /** Blocks found corrupted or truncated (deleted; the chain stops there). */
  dropped: number;
}

export interface StoreResult {
  stored: number;
  /** Already present (another writer got there first): only their recency was refreshed. */
  present: number;
  /** Payload did not match its checksum: refused. */
  rejected: number;
  evicted: number;
  bytes: number;
}

export interface ObjectStats {
  blocks: number;
  bytes: number;
  maxBytes: number | null;
  ttlMs: number | null;
  alarm: number | null;
  present: Array<{ key: string; bytes: number } | null>;
}

/**
 * PrefixCache: draft-model KV blocks of one prefix family, in SQLite-backed
 * Durable Object storage (ARCHITECTURE.md: Prefix KV in Durable Objects). One row per
 * block (a row holds at most 2 MB; a block of the shipped draft is 16 KiB),
 * LRU by bytes within the object's budget, expiry by alarm.
 *
 * Which object holds a block is decided by the client (./client.ts): the
 * object is named by the chain's first block key, so every block of one chain
 * lives in one object and a lookup is one round trip to one object.
 */
export class PrefixCache extends DurableObject<Env> {
  private readonly sql: SqlStorage;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(`
      CREATE TABLE IF NOT EXISTS blocks (
        key TEXT PRIMARY KEY,
        depth INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        checksum TEXT NOT NULL,
        payload BLOB NOT NULL,
        last_used INTEGER NOT NULL
      );
      CREATE INDEX IF NOT EXISTS blocks_lru ON blocks (last_used, depth);
      CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value INTEGER);
    `);
  }

  /**
   * The longest run of `keys` (a chain, in order) held here, with payloads,
   * in one call. A block whose payload fails its checksum is deleted and ends
   * the run: the caller recomputes from there.
   */
  async lookup(keys: string[]): Promise<LookupResult> {
    const blocks: LookupResult['blocks'] = [];
    let dropped = 0;
    for (const key of keys) {
      const row = this.sql.exec<{ payload: ArrayBuffer; checksum: string; bytes: number }>('SELECT payload, checksum, bytes FROM blocks WHERE key = ?', key).toArray()[0];
      if (!row) break;
      const payload = new Uint8Array(row.payload);
      if (payload.byteLength !== row.bytes || (await blockChecksum(key, payload)) !== row.checksum) {
        this.sql.exec('DELETE FROM blocks WHERE key = ?', key);
        dropped++;
        break;
      }
      blocks.push({ key, payload: row.payload });
    }
    const now = Date.now();
    for (const { key } of blocks) this.sql.exec('UPDATE blocks SET last_used = ? WHERE key = ?', now, key);
    return { blocks, dropped };
  }

  /**
   * Keep blocks (idempotent: a key names its content, so when two writers store
   * the same prefix the first row stays and the second only refreshes recency),
   * then evict down to the budget and make sure an expiry alarm is set.
   */
  async store(blocks: StoredBlock[], policy: BlockPolicy): Promise<StoreResult> {
    const now = Date.now();
    let stored = 0;
    let present = 0;
    let rejected = 0;
    for (const block of blocks) {
      const payload = new Uint8Array(block.payload);
      if ((await blockChecksum(block.key, payload)) !== block.checksum) {
        rejected++;
        continue;
      }
      const existing = this.sql.exec('SELECT 1 FROM blocks WHERE key = ?', block.key).toArray().length > 0;
      if (existing) {
        this.sql.exec('UPDATE blocks SET last_used = ? WHERE key = ?', now, block.key);
        present++;
      } else {
        this.sql.exec(
          'INSERT INTO blocks (key, depth, bytes, checksum, payload, last_used) VALUES (?, ?, ?, ?, ?, ?)',
          block.key, block.depth, payload.byteLength, block.checksum, arrayBuffer(payload), now,
        );
        stored++;
      }
    }
    this.setting('ttl_ms', policy.ttlMs);
    const evicted = this.evictTo(this.setting('max_bytes_override') ?? policy.maxBytes);
    if ((await this.ctx.storage.getAlarm()) === null) await this.ctx.storage.setAlarm(now + policy.ttlMs);
    return { stored, present, rejected, evicted, bytes: this.totalBytes() };
  }

  /** Expiry: drop blocks unused for the TTL, then wake again when the oldest remaining one would expire. */
  async alarm() {
    const ttlMs = this.setting('ttl_ms');
    if (ttlMs === null) return;
    this.sql.exec('DELETE FROM blocks WHERE last_used <= ?', Date.now() - ttlMs);
    const oldest = this.sql.exec<{ t: number | null }>('SELECT MIN(last_used) AS t FROM blocks').one().t;
    if (oldest !== null) await this.ctx.storage.setAlarm(Math.max(oldest + ttlMs, Date.now() + 1000));
  }

  // ---- Operations for tests and benchmarks (reached only through routes gated by TEST_ROUTES). ----

  async inspect(keys: string[]): Promise<ObjectStats> {
    const count = this.sql.exec<{ n: number }>('SELECT COUNT(*) AS n FROM blocks').one().n;
    return {
      blocks: count,
      bytes: this.totalBytes(),
      maxBytes: this.setting('max_bytes_override'),
      ttlMs: this.setting('ttl_ms'),
      alarm: await this.ctx.storage.getAlarm(),
      present: keys.map((key) => this.sql.exec<{ key: string; bytes: number }>('SELECT key, bytes FROM blocks WHERE key = ?', key).toArray()[0] ?? null),
    };
  }

  /** Damage a stored block the way storage can fail: flip a byte, cut the payload short, or lose the row. */
  async tamper(key: string, how: 'corrupt' | 'truncate' | 'delete'): Promise<boolean> {
    const row = this.sql.exec<{ payload: ArrayBuffer }>('SELECT payload FROM blocks WHERE key = ?', key).toArray()[0];
    if (!row) return false;
    if (how === 'delete') {
      this.sql.exec('DELETE FROM blocks WHERE key = ?', key);
      return true;
    }
    const payload = new Uint8Array(row.payload).slice();
    const damaged = how === 'corrupt' ? (payload[payload.length >> 1] ^= 0x40, payload) : payload.subarray(0, payload.length >> 1);
    this.sql.exec('UPDATE blocks SET payload = ? WHERE key = ?', arrayBuffer(damaged), key);
    return true;
  }

  /** Pin this object's budget (null: back to the caller's policy) and evict down to it now. */
  async setBudget(maxBytes: number | null): Promise<number> {
    this.setting('max_bytes_override', maxBytes);
    return maxBytes === null ? 0 : this.evictTo(maxBytes);
  }

  /** Expire now as if `ageMs` had passed (runs the alarm's rule without waiting). */
  async expireOlderThan(ageMs: number): Promise<number> {
    const before = this.sql.exec<{ n: number }>('SELECT COUNT(*) AS n FROM blocks').one().n;
    this.sql.exec('DELETE FROM blocks WHERE last_used <= ?', Date.now() - ageMs);
    return before - this.sql.exec<{ n: number }>('SELECT COUNT(*) AS n FROM blocks').one().n;
  }

  /** Least recently used first; among equally recent blocks the deepest first, so chains shrink from their tail. */
  private evictTo(maxBytes: number): number {
    let total = this.totalBytes();
    let evicted = 0;
    while (total > maxBytes) {
      const victims = this.sql.exec<{ key: string; bytes: number }>('SELECT key, bytes FROM blocks ORDER BY last_used ASC, depth DESC LIMIT 64').toArray();
      if (victims.length === 0) break;
      for (const { key, bytes } of victims) {
        if (total <= maxBytes) break;
        this.sql.exec('DELETE FROM blocks WHERE key = ?', key);
        total -= bytes;
        evicted++;
      }
    }
    return evicted;
  }

  private totalBytes(): number {
    return this.sql.exec<{ b: number }>('SELECT COALESCE(SUM(bytes), 0) AS b FROM blocks').one().b;
  }

  /** Read a setting, or write it when `value` is given (null deletes it). */
  private setting(name: string, value?: number | null): number | null {
    if (value === undefined) return this.sql.exec<{ value: number }>('SELECT value FROM settings WHERE name = ?', name).toArray()[0]?.value ?? null;
    if (value === null) this.sql.exec('DELETE FROM settings WHERE name = ?', name);
    else this.sql.exec('INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value', name, value);
    return value;
  }
}

/** SQLite binds BLOBs from an ArrayBuffer: copy out exactly the view's bytes. */
function arrayBuffer(bytes: Uint8Array): ArrayBuffer {
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
}
