import type { Env } from '../env';
import type { ProposerKind } from '../proposers/kinds';
import { isolateSuffixIndexes, SuffixIndex, type SuffixIndexRegistry } from '../proposers/suffix';
import { maxOutputTokens, TENANT_HISTORY_BYTES, type HistoryPage } from './log';

export { TENANT_HISTORY_BYTES, type HistoryPage } from './log';

/*
 * The isolate's side of a tenant's suffix history. Suffix drafts match
 * against an in-memory index per tenant (functions/proposers/suffix.ts,
 * isolateSuffixIndexes); the tenant's SuffixHistory object
 * (./durable-object.ts, named by its cache salt) keeps the outputs every
 * isolate produced. An isolate that has not seen the tenant fills its index
 * from the object before the request drafts; after that it asks only for the
 * outputs numbered above the last it took in, in the background, at most every
 * HISTORY_REFRESH_MS, so other isolates' outputs arrive within about that long.
 * The history is an optimisation: when the object cannot be reached, drafts
 * use what the isolate holds, one warning is logged, and the request goes on.
 */

/** How old an isolate's copy may get before it asks the object for newer outputs (in the background). */
export const HISTORY_REFRESH_MS = 30_000;
/** How long a request waits for the object to fill an index it has never filled; after that it drafts without. */
export const HISTORY_TIMEOUT_MS = 2_000;

/** The SuffixHistory object's RPC methods, as a stub offers them. */
export interface HistoryObject {
  append(tokens: number[]): Promise<number>;
  recent(after: number): Promise<HistoryPage>;
}

/** How a request reaches its tenant's object; null = no SUFFIX_HISTORY binding (memory only). */
export type HistoryObjectFor = (() => HistoryObject) | null;

interface TenantSync {
  /** Whether the index was ever filled from the object. */
  filled: boolean;
  /** The highest output number the index has taken in (-1: none). */
  seen: number;
  /** When the object was last asked. */
  askedAt: number;
  /** When the last attempt to fill a never-filled index failed: the next waits HISTORY_REFRESH_MS. */
  failedAt: number | null;
  /** Numbers of this isolate's own appends above `seen`: already in the index, skipped when a page brings them. */
  own: Set<number>;
  /** This isolate's outputs whose append has not answered yet (already in the index). */
  pending: number[][];
  /** This isolate's outputs the object refused or never got: kept when a first fill rebuilds the index. */
  unsent: number[][];
}

export interface TenantHistoriesOptions {
  now?: () => number;
  refreshMs?: number;
  timeoutMs?: number;
  log?: (message: string) => void;
}

/** The tenants' indexes of one isolate, kept in step with their SuffixHistory objects. */
export class TenantHistories {
  private readonly sync = new WeakMap<SuffixIndex, TenantSync>();
  private readonly now: () => number;
  private readonly refreshMs: number;
  private readonly timeoutMs: number;
  private readonly log: (message: string) => void;
  /** The object failed and has not answered since: failures are logged once. */
  private failing = false;
  readonly maxOutputTokens = maxOutputTokens(TENANT_HISTORY_BYTES);

  constructor(
    readonly registry: SuffixIndexRegistry,
    options: TenantHistoriesOptions = {},
  ) {
    this.now = options.now ?? Date.now;
    this.refreshMs = options.refreshMs ?? HISTORY_REFRESH_MS;
    this.timeoutMs = options.timeoutMs ?? HISTORY_TIMEOUT_MS;
    this.log = options.log ?? ((m) => console.warn(`[suffix-history] ${m}`));
  }

  /**
   * The tenant's index for this request: filled from the object first when
   * this isolate never filled it (or it was dropped for memory); refreshed in
   * the background (`waitUntil`) when older than the refresh period. Never
   * throws; null only without a binding and before the tenant's first output.
   */
  async index(object: HistoryObjectFor, cacheSalt: string, waitUntil?: (promise: Promise<unknown>) => void): Promise<SuffixIndex | null> {
    if (!object) return this.registry.get(cacheSalt);
    const index = this.registry.getOrCreate(cacheSalt);
    const state = this.stateOf(index);
    const now = this.now();
    if (!state.filled) {
      if (state.failedAt !== null && now - state.failedAt < this.refreshMs) return index;
      return this.refresh(object, cacheSalt, index, state);
    }
    if (now - state.askedAt >= this.refreshMs) {
      const refreshing = this.refresh(object, cacheSalt, index, state);
      waitUntil?.(refreshing);
    }
    return index;
  }

  /** Adds a completed output to the tenant's index now and to its object in the background (`waitUntil`). */
  record(object: HistoryObjectFor, cacheSalt: string, output: readonly number[], waitUntil: (promise: Promise<unknown>) => void): void {
    if (output.length === 0) return;
    // The object keeps at most this many tokens of one output: its last ones, as the index does.
    const tokens = output.length > this.maxOutputTokens ? output.slice(output.length - this.maxOutputTokens) : output.slice();
    const index = this.registry.record(cacheSalt, tokens)!;
    if (!object) return;
    const state = this.stateOf(index);
    remember(state.pending, tokens, this.maxOutputTokens);
    waitUntil(this.append(object, state, tokens));
  }

  private stateOf(index: SuffixIndex): TenantSync {
    let state = this.sync.get(index);
    if (!state) this.sync.set(index, (state = { filled: false, seen: -1, askedAt: -Infinity, failedAt: null, own: new Set(), pending: [], unsent: [] }));
    return state;
  }

  private async append(object: () => HistoryObject, state: TenantSync, tokens: number[]): Promise<void> {
    try {
      const seq = await object().append(tokens);
      this.failing = false;
      // Unless a page already brought it (then it was matched and taken off `pending`), skip it when one does.
      if (forget(state.pending, tokens) && Number.isInteger(seq) && seq > state.seen) state.own.add(seq);
    } catch (err) {
      if (forget(state.pending, tokens)) remember(state.unsent, tokens, this.maxOutputTokens);
      this.fail('appending an output', err);
    }
  }

  /** Asks the object for the outputs above `seen` and takes them in; the tenant's index afterwards. Never throws. */
  private async refresh(object: () => HistoryObject, cacheSalt: string, index: SuffixIndex, state: TenantSync): Promise<SuffixIndex> {
    const askedAt = (state.askedAt = this.now());
    try {
      let page = await withTimeout(object().recent(state.seen), this.timeoutMs);
      if (!Array.isArray(page?.outputs) || !Number.isInteger(page.next)) throw new Error('malformed answer');
      if (state.filled && page.next - 1 < state.seen) {
        // The object was emptied and its numbers restarted: fill again from all it holds.
        page = await withTimeout(object().recent(-1), this.timeoutMs);
        if (!Array.isArray(page?.outputs) || !Number.isInteger(page.next)) throw new Error('malformed answer');
        state.filled = false;
      }
      this.failing = false;
      state.failedAt = null;
      return this.apply(cacheSalt, index, state, page);
    } catch (err) {
      if (!state.filled) state.failedAt = askedAt;
      this.fail('reading the history', err);
      return index;
    }
  }

  private apply(cacheSalt: string, index: SuffixIndex, state: TenantSync, page: HistoryPage): SuffixIndex {
    // Two requests asked at once and the other's page rebuilt the index meanwhile: continue on that one.
    const current = this.registry.get(cacheSalt);
    if (current && this.sync.get(current) === state) index = current;
    if (!state.filled) {
      // First fill (or again after the object was emptied): the object's order is the truth, oldest
      // first, so the index evicts what is globally oldest; this isolate's outputs it does not hold yet go last.
      const fresh = new SuffixIndex(index.maxBytes, index.n);
      for (const { tokens } of page.outputs) {
        fresh.add(tokens);
        forget(state.pending, tokens, true);
      }
      for (const tokens of [...state.unsent, ...state.pending]) fresh.add(tokens);
      state.unsent = [];
      state.own.clear();
      state.filled = true;
      state.seen = page.next - 1;
      this.sync.set(fresh, state);
      this.sync.delete(index);
      // A concurrent request may still hold the old index: it drafts from it, stale but the tenant's own.
      return this.registry.set(cacheSalt, fresh);
    }
    for (const { seq, tokens } of page.outputs) {
      if (seq <= state.seen || state.own.delete(seq) || forget(state.pending, tokens, true)) continue;
      index.add(tokens);
    }
    state.seen = Math.max(state.seen, page.next - 1);
    for (const seq of state.own) if (seq <= state.seen) state.own.delete(seq);
    // Counted against the isolate's total again (it grew); unless memory pressure dropped it meanwhile.
    if (this.registry.get(cacheSalt) === index) this.registry.set(cacheSalt, index);
    return index;
  }

  private fail(what: string, err: unknown) {
    if (this.failing) return;
    this.failing = true;
    this.log(`${what} failed; suffix drafts use this isolate's memory only until the object answers again: ${(err as Error)?.message ?? String(err)}`);
  }
}

/**
 * Appends `tokens` to a list of outputs, dropping the oldest beyond `maxTokens`
 * tokens in all (an entry whose request ended before its append answered would
 * otherwise stay forever).
 */
function remember(list: number[][], tokens: number[], maxTokens: number) {
  list.push(tokens);
  let total = 0;
  for (const t of list) total += t.length;
  while (total > maxTokens && list.length > 1) total -= list.shift()!.length;
}

/** Takes `tokens` off `pending`: the same array (`byContent` false) or an equal one; whether it was there. */
function forget(pending: number[][], tokens: readonly number[], byContent = false): boolean {
  const i = byContent ? pending.findIndex((p) => p.length === tokens.length && p.every((t, j) => t === tokens[j])) : pending.indexOf(tokens as number[]);
  if (i < 0) return false;
  pending.splice(i, 1);
  return true;
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms)));
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** This isolate's tenants (the registry every suffix draft reads). */
export const isolateTenantHistories = new TenantHistories(isolateSuffixIndexes);

/** The tenant's SuffixHistory object (one per cache salt), or null without the binding (unit tests: memory only). */
function historyObject(env: Pick<Env, 'SUFFIX_HISTORY'>, cacheSalt: string): HistoryObjectFor {
  const namespace = env.SUFFIX_HISTORY;
  // A stub belongs to the request that made it: a new one per call.
  return namespace ? () => namespace.get(namespace.idFromName(cacheSalt)) : null;
}

/**
 * The caller's tenant's suffix index (only ever its own: keyed by its cache
 * salt in memory and in storage), filled from its SuffixHistory object when
 * this isolate has not seen the tenant yet.
 */
export function tenantSuffixIndex(env: Pick<Env, 'SUFFIX_HISTORY'>, cacheSalt: string, waitUntil?: (promise: Promise<unknown>) => void): Promise<SuffixIndex | null> {
  return isolateTenantHistories.index(historyObject(env, cacheSalt), cacheSalt, waitUntil);
}

/** Adds a completed output (the target's, not a draft-only fallback's) to the tenant's history: memory now, its object via `waitUntil`. */
export function recordTenantOutput(env: Pick<Env, 'SUFFIX_HISTORY'>, cacheSalt: string, output: readonly number[], waitUntil: (promise: Promise<unknown>) => void): void {
  isolateTenantHistories.record(historyObject(env, cacheSalt), cacheSalt, output, waitUntil);
}

/** Proposers that read the tenant's history: only their requests wait for it. */
export function usesTenantHistory(kind: ProposerKind): boolean {
  return kind === 'suffix' || kind === 'hybrid';
}
