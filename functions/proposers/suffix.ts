import type { DraftToken } from '../../shared/sampling';
import { matchDraft, matchLimit, type Match, type Matcher, type ProposeOptions } from './types';

/**
 * SuffixDecoding (Oliaro, Jia, Campos, Qiao 2024, "SuffixDecoding: A
 * Model-Free Approach to Speeding Up Large Language Model Inference"):
 * match the context's tail against the request's own prompt and output AND
 * the tenant's recent outputs, and draft the most frequent continuation of
 * the matched pattern, scored by its empirical frequencies. No model step.
 */
export interface SuffixOptions {
  /** Shortest pattern matched; also the n of the tenant index's n-gram keys. */
  minMatch: number;
  /** Longest pattern compared. */
  maxMatch: number;
  /** Stop extending the draft when the path's estimated probability falls below this (SuffixDecoding's threshold). */
  minProbability: number;
}

export const SUFFIX_DEFAULTS: SuffixOptions = { minMatch: 3, maxMatch: 32, minProbability: 0.2 };

/** Occurrences kept per n-gram key in a tenant index, and used per match from each source: the most recent ones. */
const OCCURRENCES_PER_KEY = 64;

/** One place the pattern occurs: its continuation starts at `end + 1` of `source`. */
interface Occurrence {
  source: TokenSource;
  end: number;
  /** Pattern tokens matched, ending at `end` (≤ maxMatch). */
  length: number;
}

/** Tokens by position; -1 = a boundary (between documents, or out of range). */
interface TokenSource {
  at(position: number): number;
}

export class SuffixProposer implements Matcher {
  readonly name = 'suffix';

  constructor(
    /** The tenant's recent outputs (per isolate, never another tenant's); null = the request alone. */
    private readonly history: SuffixIndex | null,
    private readonly options: SuffixOptions = SUFFIX_DEFAULTS,
  ) {}

  match(context: readonly number[], limit: number): Match | null {
    if (limit <= 0 || context.length < this.options.minMatch) return null;
    const own: TokenSource = { at: (p) => (p >= 0 && p < context.length ? context[p] : -1) };
    const occurrences: Occurrence[] = contextOccurrences(context, this.options).map((o) => ({ source: own, ...o }));
    if (this.history) occurrences.push(...this.history.occurrences(context, this.options.maxMatch));
    if (occurrences.length === 0) return null;
    // SuffixDecoding tries several pattern lengths and keeps the best-scoring draft: a long pattern is
    // specific, a shorter one has more occurrences to estimate frequencies from.
    const lengths = [...new Set(occurrences.map((o) => o.length))].sort((a, b) => b - a);
    let best: Match | null = null;
    for (const length of lengths) {
      const draft = greedyPath(
        occurrences.filter((o) => o.length >= length),
        limit,
        this.options.minProbability,
      );
      if (draft && (!best || draft.expectedAccepted > best.expectedAccepted)) best = { ...draft, matchLength: length };
    }
    return best;
  }

  async propose(context: readonly number[], maxTokens: number, _sampling: unknown, options: ProposeOptions = {}): Promise<DraftToken[]> {
    return matchDraft(this.match(context, matchLimit(maxTokens, options)));
  }
}

/**
 * The draft along the most frequent continuation of a set of occurrences:
 * at each step the token most of the remaining occurrences continue with
 * (ties: the most recent occurrence's), its conditional frequency multiplied
 * into the path probability; stops below `minProbability`. The score is
 * Σ of the path probabilities, the expected accepted length if the
 * frequencies were the target's (SuffixDecoding's tree score, for one path).
 */
function greedyPath(occurrences: Occurrence[], limit: number, minProbability: number): Omit<Match, 'matchLength'> | null {
  let alive = occurrences.map((o) => ({ source: o.source, next: o.end + 1, order: o.end }));
  const tokens: number[] = [];
  let probability = 1;
  let expectedAccepted = 0;
  let support = { agree: 0, total: 0 };
  while (tokens.length < limit && alive.length > 0) {
    const counts = new Map<number, { count: number; latest: number }>();
    for (const o of alive) {
      const token = o.source.at(o.next);
      if (token < 0) continue;
      const entry = counts.get(token);
      if (!entry) counts.set(token, { count: 1, latest: o.order });
      else {
        entry.count++;
        entry.latest = Math.max(entry.latest, o.order);
      }
    }
    let choice = -1;
    let chosen = { count: 0, latest: -Infinity };
    for (const [token, entry] of counts) {
      if (entry.count > chosen.count || (entry.count === chosen.count && entry.latest > chosen.latest)) {
        choice = token;
        chosen = entry;
      }
    }
    // Occurrences that ended (a document boundary) count against every continuation.
    const next = probability * (chosen.count / alive.length);
    if (choice < 0 || next < minProbability) break;
    if (tokens.length === 0) support = { agree: chosen.count, total: alive.length };
    probability = next;
    expectedAccepted += probability;
    tokens.push(choice);
    alive = alive.filter((o) => o.source.at(o.next) === choice).map((o) => ({ ...o, next: o.next + 1 }));
  }
  return tokens.length ? { tokens, expectedAccepted, support } : null;
}

/** Every earlier occurrence of the context's last minMatch..maxMatch tokens in the context itself (the most recent OCCURRENCES_PER_KEY), overlap allowed as in prompt lookup. */
function contextOccurrences(context: readonly number[], options: SuffixOptions): Array<{ end: number; length: number }> {
  const last = context.length - 1;
  const found: Array<{ end: number; length: number }> = [];
  for (let end = last - 1; end >= 0 && found.length < OCCURRENCES_PER_KEY; end--) {
    if (context[end] !== context[last]) continue;
    let length = 1;
    while (length < options.maxMatch && end - length >= 0 && context[end - length] === context[last - length]) length++;
    if (length >= options.minMatch) found.push({ end, length });
  }
  return found;
}

/** FNV-1a over n token ids, 31 bits (-1 marks "no key"). */
function ngramKey(at: (position: number) => number, end: number, n: number): number {
  let hash = 0x811c9dc5;
  for (let i = end - n + 1; i <= end; i++) hash = Math.imul(hash ^ at(i), 0x01000193);
  return (hash >>> 1) & 0x3fffffff;
}

/** Estimated bytes of one index key (a Map entry and its small array) and of one stored occurrence: what the byte bound counts. */
const KEY_BYTES = 96;
const ENTRY_BYTES = 8;
/** Each position costs its token and its key slot (two Int32Array entries). */
const SLOT_BYTES = 8;

/**
 * A tenant's recent outputs, bounded in bytes: a ring of token ids (outputs
 * separated by a boundary, so no match spans two) and an index from every
 * n-gram (n = minMatch) to the positions where it ends, the most recent
 * OCCURRENCES_PER_KEY per key. The oldest tokens leave first, together with
 * their index entries, whenever the estimate (ring + entries + keys) would
 * pass `maxBytes`. It answers what a depth-bounded suffix tree over the same
 * text answers for a draft: where the context's tail occurs and what followed.
 */
export class SuffixIndex {
  private tokens = new Int32Array(0);
  private keys = new Int32Array(0);
  /** Global positions: [base, head) are live; position p sits at slot p % capacity. */
  private base = 0;
  private head = 0;
  private readonly index = new Map<number, number[]>();
  private entries = 0;
  private readonly maxCapacity: number;

  constructor(
    readonly maxBytes: number,
    readonly n: number = SUFFIX_DEFAULTS.minMatch,
  ) {
    // The ring may take at most half the budget; the index the rest.
    this.maxCapacity = Math.max(64, Math.floor(maxBytes / 2 / SLOT_BYTES));
  }

  /** Estimated bytes held now (ring + index); never above maxBytes after `add`. */
  bytes(): number {
    return this.tokens.length * SLOT_BYTES + this.entries * ENTRY_BYTES + this.index.size * KEY_BYTES;
  }

  /** Live tokens, index keys, index entries: what `bytes` estimates (tests check them against the bound). */
  size() {
    let entries = 0;
    for (const list of this.index.values()) entries += list.length;
    return { tokens: this.head - this.base, keys: this.index.size, entries };
  }

  /** Appends one output (its last tokens only, if it alone is longer than the ring), then a boundary. */
  add(output: readonly number[]): void {
    const tokens = output.length + 1 > this.maxCapacity ? output.slice(output.length - this.maxCapacity + 1) : output;
    if (tokens.length === 0) return;
    this.reserve(tokens.length + 1);
    const start = this.head;
    for (const token of [...tokens, -1]) {
      const slot = this.head % this.tokens.length;
      this.tokens[slot] = token;
      this.keys[slot] = -1;
      const position = this.head++;
      if (token < 0 || position - start + 1 < this.n) continue;
      const key = ngramKey((p) => this.at(p), position, this.n);
      this.keys[slot] = key;
      let list = this.index.get(key);
      if (!list) this.index.set(key, (list = []));
      list.push(position);
      this.entries++;
      if (list.length > OCCURRENCES_PER_KEY) {
        list.shift();
        this.entries--;
      }
    }
    while (this.bytes() > this.maxBytes && this.head > this.base) this.evict(Math.max(1, Math.ceil((this.head - this.base) / 8)));
  }

  at(position: number): number {
    if (position < this.base || position >= this.head) return -1;
    return this.tokens[position % this.tokens.length];
  }

  /** Where the context's tail (≥ n tokens, compared up to maxMatch) occurs, most recent first. */
  occurrences(context: readonly number[], maxMatch: number): Occurrence[] {
    const last = context.length - 1;
    if (context.length < this.n) return [];
    const list = this.index.get(ngramKey((p) => context[p], last, this.n));
    if (!list) return [];
    const found: Occurrence[] = [];
    for (let j = list.length - 1; j >= 0; j--) {
      const end = list[j];
      let length = 0;
      while (length < maxMatch && last - length >= 0 && this.at(end - length) === context[last - length]) length++;
      // A hash collision shows as a short compare.
      if (length >= this.n) found.push({ source: this, end, length });
    }
    return found;
  }

  /** Room for `count` more tokens: grow the ring (doubling, up to maxCapacity), else evict the oldest. */
  private reserve(count: number) {
    const live = this.head - this.base;
    if (live + count <= this.tokens.length) return;
    const capacity = Math.min(this.maxCapacity, Math.max(1024, this.tokens.length * 2, live + count));
    if (capacity > this.tokens.length) {
      const tokens = new Int32Array(capacity);
      const keys = new Int32Array(capacity);
      for (let p = this.base; p < this.head; p++) {
        tokens[p % capacity] = this.tokens[p % this.tokens.length];
        keys[p % capacity] = this.keys[p % this.tokens.length];
      }
      this.tokens = tokens;
      this.keys = keys;
    }
    if (live + count > this.tokens.length) this.evict(live + count - this.tokens.length);
  }

  /** Drops the `count` oldest tokens and their index entries (they are the oldest of each list, so at its front). */
  private evict(count: number) {
    const until = Math.min(this.head, this.base + count);
    for (let p = this.base; p < until; p++) {
      const key = this.keys[p % this.tokens.length];
      if (key < 0) continue;
      const list = this.index.get(key);
      if (list && list[0] === p) {
        list.shift();
        this.entries--;
        if (list.length === 0) this.index.delete(key);
      }
    }
    this.base = until;
  }
}

/**
 * The isolate's tenant indexes, keyed by the tenant's cache salt (never
 * shared between tenants), least recently used dropped first beyond
 * `maxBytes` in all. In memory, per isolate: functions/suffix-history keeps
 * each tenant's recent outputs in a Durable Object and hydrates these from it,
 * so a new isolate starts from the tenant's history, not empty.
 */
export class SuffixIndexRegistry {
  private readonly tenants = new Map<string, SuffixIndex>();

  constructor(
    readonly tenantBytes: number,
    readonly maxBytes: number,
  ) {}

  /** The tenant's index, or null when it has none yet (a draft may only ever read the caller's own). */
  get(cacheSalt: string): SuffixIndex | null {
    const index = this.tenants.get(cacheSalt);
    if (!index) return null;
    this.tenants.delete(cacheSalt);
    this.tenants.set(cacheSalt, index);
    return index;
  }

  /** The tenant's index, a new empty one when it has none yet. */
  getOrCreate(cacheSalt: string): SuffixIndex {
    const index = this.get(cacheSalt);
    if (index) return index;
    return this.set(cacheSalt, new SuffixIndex(this.tenantBytes));
  }

  /** Puts `index` in the tenant's place (a fresh one built from its stored history), most recently used. */
  set(cacheSalt: string, index: SuffixIndex): SuffixIndex {
    this.tenants.delete(cacheSalt);
    this.tenants.set(cacheSalt, index);
    this.trim(cacheSalt);
    return index;
  }

  /** Adds one completed output of this tenant; returns its index (null: an empty output and no index yet). */
  record(cacheSalt: string, output: readonly number[]): SuffixIndex | null {
    if (output.length === 0) return this.get(cacheSalt);
    const index = this.getOrCreate(cacheSalt);
    index.add(output);
    this.trim(cacheSalt);
    return index;
  }

  /** Least recently used tenants leave until the total fits (never `keep`, the one in use). */
  private trim(keep: string) {
    let total = 0;
    for (const i of this.tenants.values()) total += i.bytes();
    for (const [salt, i] of this.tenants) {
      if (total <= this.maxBytes || salt === keep) break;
      total -= i.bytes();
      this.tenants.delete(salt);
    }
  }

  bytes(): number {
    let total = 0;
    for (const i of this.tenants.values()) total += i.bytes();
    return total;
  }

  get size(): number {
    return this.tenants.size;
  }
}

/** 2 MiB per tenant (about 40,000 tokens of code), 16 MiB per isolate (of its 128 MB). */
export const TENANT_SUFFIX_BYTES = 2 * 2 ** 20;
export const ISOLATE_SUFFIX_BYTES = 16 * 2 ** 20;

/** The isolate's registry: every request of a tenant served by this isolate reads and feeds its index. */
export const isolateSuffixIndexes = new SuffixIndexRegistry(TENANT_SUFFIX_BYTES, ISOLATE_SUFFIX_BYTES);
