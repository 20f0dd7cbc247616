import { ApiError } from '../../shared/errors';
import type { GenerateEvent, GenerateRequest, OriginHealth, VerifyRequest, VerifyResponse, WireSampling } from '../../shared/protocol';
import { CircuitBreaker, type BreakerSettings } from './breaker';
import { isRetryableOriginError, publicText, type OriginClient } from './client';
import { chooseOrigin, rendezvousOrder } from './routing';

/**
 * Several origins behind one OriginClient. Per generation the route asks for a
 * session keyed by the prompt's first prefix block; the session routes each
 * call to the origin that prefix has affinity with (routing.ts), retries
 * idempotent calls elsewhere with jittered backoff, and resumes a broken
 * origin-only stream on another origin from the tokens already emitted.
 *
 * Verify is idempotent: the protocol is stateless (the whole context travels
 * in every call) and a round's random draws are keyed by (seed, offset), so
 * replaying a failed round on another origin returns what the first would
 * have, and the speculation loop above never sees the failure. A resumed
 * /v1/generate carries context + emitted tokens and offset + emitted, and the
 * origin's draws are keyed by position, so the continuation is the one the
 * first origin would have produced (identical greedy output; identical seeded
 * samples).
 *
 * State (breakers, in-flight counts) is per Worker isolate: each isolate
 * learns origin health from its own traffic and probes. That is the usual
 * trade of edge load balancers; a Durable Object could share it at the cost
 * of a round trip per request.
 */
export interface PoolMember {
  id: string;
  url: string;
  kind: string;
  weight: number;
  client: OriginClient & { unsupportedSampling?(sampling: Omit<WireSampling, 'offset'>): string | null };
}

export interface PoolSettings {
  /** Extra attempts for an idempotent call after the first fails (and consecutive failed attempts allowed when resuming a stream). */
  retries: number;
  /** Full-jitter backoff: attempt n waits uniform(0, min(maxMs, baseMs · 2^(n−1))). */
  backoffBaseMs: number;
  backoffMaxMs: number;
  breaker: BreakerSettings;
  /** Active probe (GET /health) period of a closed origin; an origin whose breaker turned half-open is probed at once. */
  healthIntervalMs: number;
}

export const DEFAULT_POOL_SETTINGS: PoolSettings = {
  retries: 2,
  backoffBaseMs: 50,
  backoffMaxMs: 400,
  breaker: { failureThreshold: 3, cooldownMs: 5_000, maxCooldownMs: 60_000 },
  healthIntervalMs: 10_000,
};

export interface PoolDeps {
  now?: () => number;
  random?: () => number;
  sleep?: (ms: number) => Promise<void>;
  /**
   * A successful GET /health's round trip (ms): the one wall time with no edge computation and next
   * to no origin work inside, so the speculation controller can learn the link from it even where
   * the Worker's clock stands still during computation (functions/speculation/controller.ts).
   */
  onProbeRoundTrip?: (ms: number) => void;
}

interface Member extends PoolMember {
  breaker: CircuitBreaker;
  inflight: number;
  lastProbeAt: number;
}

export class OriginPool {
  readonly members: Member[];
  private readonly now: () => number;
  private readonly random: () => number;
  readonly sleep: (ms: number) => Promise<void>;
  private readonly onProbeRoundTrip: (ms: number) => void;

  constructor(
    members: PoolMember[],
    readonly settings: PoolSettings = DEFAULT_POOL_SETTINGS,
    deps: PoolDeps = {},
  ) {
    if (members.length === 0) throw new Error('an origin pool needs at least one origin');
    const ids = new Set(members.map((m) => m.id));
    if (ids.size !== members.length) throw new Error(`origin ids must be unique, got ${members.map((m) => m.id).join(', ')}`);
    this.members = members.map((m) => ({ ...m, breaker: new CircuitBreaker(settings.breaker), inflight: 0, lastProbeAt: -Infinity }));
    this.now = deps.now ?? Date.now;
    this.random = deps.random ?? Math.random;
    this.sleep = deps.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
    this.onProbeRoundTrip = deps.onProbeRoundTrip ?? (() => {});
  }

  /** A client for one generation. `affinityKey` (the prompt's first block hash) pins it to that prefix's origin; null spreads load. */
  session(affinityKey: Promise<string> | string | null): PoolSession {
    return new PoolSession(this, affinityKey ?? `random:${this.random()}`);
  }

  /**
   * Active health checks that are due: closed origins every healthIntervalMs,
   * and the half-open trial of an origin whose breaker cooled down. Workers
   * have no background timers between requests, so requests drive the probes;
   * `waitUntil` lets them finish after the response.
   */
  maintain(waitUntil?: (promise: Promise<unknown>) => void): void {
    const now = this.now();
    for (const member of this.members) {
      const state = member.breaker.state(now);
      const due = state === 'half-open' ? member.breaker.tryAcquireTrial(now) : state === 'closed' && now - member.lastProbeAt >= this.settings.healthIntervalMs;
      if (!due) continue;
      member.lastProbeAt = now;
      const probe = this.probe(member);
      if (waitUntil) waitUntil(probe);
    }
  }

  /** One GET /health; the outcome feeds the breaker (a half-open trial must already be acquired). */
  async probe(member: Member): Promise<OriginHealth | null> {
    const started = this.now();
    try {
      const health = await member.client.health();
      member.breaker.recordSuccess(null);
      this.onProbeRoundTrip(this.now() - started);
      return health;
    } catch (err) {
      member.breaker.recordFailure(this.now(), `probe: ${failureText(err)}`);
      return null;
    } finally {
      member.lastProbeAt = Math.max(member.lastProbeAt, started);
    }
  }

  /**
   * The origin for the next call: the best closed origin for `key` not yet
   * tried (bounded load), else a closed one already tried (a retry after
   * backoff), else the single trial of a half-open one. Null when none can take it.
   */
  pick(key: string, tried: ReadonlySet<string>, sampling: Omit<WireSampling, 'offset'> | null, pinned: Member | null): { member: Member; trial: boolean } | null {
    const now = this.now();
    const eligible = sampling ? this.members.filter((m) => !m.client.unsupportedSampling?.(sampling)) : this.members;
    if (pinned && eligible.includes(pinned) && !tried.has(pinned.id) && pinned.breaker.isClosed(now)) return { member: pinned, trial: false };
    const closed = eligible.filter((m) => m.breaker.isClosed(now));
    const fresh = chooseOrigin(key, closed.filter((m) => !tried.has(m.id)));
    if (fresh) return { member: fresh, trial: false };
    for (const member of rendezvousOrder(key, eligible)) {
      if (member.breaker.state(now) === 'half-open' && member.breaker.tryAcquireTrial(now)) return { member, trial: true };
    }
    const again = chooseOrigin(key, closed);
    return again ? { member: again, trial: false } : null;
  }

  /** Why no origin can take a call, as the client should see it. */
  unavailable(sampling: Omit<WireSampling, 'offset'> | null, lastError: unknown): ApiError {
    const now = this.now();
    if (sampling) {
      const reasons = this.members.map((m) => m.client.unsupportedSampling?.(sampling)).filter((r): r is string => !!r);
      if (reasons.length === this.members.length) return new ApiError(400, `${reasons[0]}; no configured origin can verify this sampling exactly`, 'top_k', 'sampling_unsupported_by_origin');
    }
    const waits = this.members.map((m) => m.breaker.retryInMs(now)).filter((ms) => ms > 0);
    const retryAfter = Math.max(1, Math.ceil((waits.length ? Math.min(...waits) : 1000) / 1000));
    const detail = this.members.map((m) => `${m.id}: ${m.breaker.state(now)}${m.breaker.lastError ? ` (${publicText(m.breaker.lastError, 160)})` : ''}`).join('; ');
    const last = lastError instanceof Error ? ` Last error: ${failureText(lastError)}` : '';
    const error = new ApiError(503, `No origin can serve this request: every origin is unreachable or failing [${detail}]. Retry in ${retryAfter} s.${last}`, null, 'origin_unreachable');
    error.headers = { 'retry-after': String(retryAfter) };
    return error;
  }

  /** Jittered wait before attempt n (n ≥ 1). */
  backoffMs(attempt: number): number {
    const ceiling = Math.min(this.settings.backoffMaxMs, this.settings.backoffBaseMs * 2 ** (attempt - 1));
    return this.random() * ceiling;
  }

  clock(): number {
    return this.now();
  }

  status() {
    const now = this.now();
    return this.members.map((m) => ({ id: m.id, url: m.url, kind: m.kind, weight: m.weight, inflight: m.inflight, ...m.breaker.snapshot(now) }));
  }
}

/**
 * Where a generation's session (functions/upstream/session.ts) goes: the
 * reference origin its verify calls would go to first. `begin` counts one
 * round in flight there, as an HTTP call is counted (bounded-load routing),
 * until the round is `served` (a success for the breaker) or `dropped`
 * (handed to HTTP or discarded; a `failure` counts against the origin and
 * unpins it, so HTTP fallbacks try elsewhere first).
 */
export interface SessionRoute {
  id: string;
  url: string;
  begin(): SessionRound;
}

export interface SessionRound {
  served(): void;
  dropped(failure?: string): void;
}

export class PoolSession implements OriginClient {
  private pinned: Member | null = null;

  constructor(
    private readonly pool: OriginPool,
    private readonly affinityKey: Promise<string> | string,
  ) {}

  /**
   * The origin for this generation's session, picked as a verify call picks
   * (prefix affinity, breakers, bounded load), or null: none is closed, or it
   * is an engine (SGLang and vLLM speak no session protocol). A half-open
   * origin's one trial is left to an HTTP call or a probe.
   */
  async sessionRoute(): Promise<SessionRoute | null> {
    const pool = this.pool;
    const choice = pool.pick(await this.affinityKey, new Set(), null, this.pinned);
    if (!choice) return null;
    const { member } = choice;
    if (choice.trial) member.breaker.releaseTrial();
    if (choice.trial || member.kind !== 'reference') return null;
    // HTTP fallbacks go to the session's origin first: its KV is warm.
    this.pinned = member;
    return {
      id: member.id,
      url: member.url,
      begin: () => {
        member.inflight++;
        let inflight = true;
        /** True the first time only: a round ends once. */
        const end = (): boolean => {
          if (!inflight) return false;
          inflight = false;
          member.inflight--;
          return true;
        };
        return {
          served: () => {
            if (end()) member.breaker.recordSuccess(null);
          },
          dropped: (failure) => {
            if (!end() || failure === undefined) return;
            member.breaker.recordFailure(pool.clock(), failure);
            if (this.pinned === member) this.pinned = null;
          },
        };
      },
    };
  }

  async health(): Promise<OriginHealth> {
    return this.call(null, (client) => client.health());
  }

  verify(request: VerifyRequest, signal?: AbortSignal): Promise<VerifyResponse> {
    return this.call(request.sampling, (client) => client.verify(request, signal), signal);
  }

  /**
   * An idempotent call with failover: on a failure that is the origin's, try the next origin after a
   * jittered backoff. Once `signal` aborts nothing more is sent, and the aborted call counts for nothing.
   */
  private async call<T>(sampling: Omit<WireSampling, 'offset'> | null, send: (client: OriginClient) => Promise<T>, signal?: AbortSignal): Promise<T> {
    const pool = this.pool;
    const key = await this.affinityKey;
    const tried = new Set<string>();
    let lastError: unknown = null;
    for (let attempt = 0; attempt <= pool.settings.retries; attempt++) {
      if (attempt > 0) await pool.sleep(pool.backoffMs(attempt));
      signal?.throwIfAborted();
      const choice = pool.pick(key, tried, sampling, this.pinned);
      if (!choice) break;
      const { member } = choice;
      const started = pool.clock();
      member.inflight++;
      try {
        const result = await send(member.client);
        member.breaker.recordSuccess(sampling ? pool.clock() - started : null);
        this.pinned = member;
        return result;
      } catch (err) {
        this.recordFailure(choice, err, tried, signal?.aborted);
        lastError = err;
      } finally {
        member.inflight--;
      }
    }
    throw this.exhausted(sampling, lastError);
  }

  /**
   * After a failed call: an error that is not the origin's fault (bad input,
   * the client went away) is rethrown as it is and recorded nowhere (a
   * half-open trial is handed back); otherwise it counts against the origin's
   * breaker and the origin is not asked again this round. Which errors are
   * which: the table at isRetryableOriginError (client.ts).
   */
  private recordFailure(choice: { member: Member; trial: boolean }, err: unknown, tried: Set<string>, aborted = false): void {
    const { member } = choice;
    if (aborted || !isRetryableOriginError(err)) {
      if (choice.trial) member.breaker.releaseTrial();
      throw err;
    }
    member.breaker.recordFailure(this.pool.clock(), failureText(err));
    tried.add(member.id);
    if (this.pinned === member) this.pinned = null;
  }

  /**
   * Origin-only decoding with mid-stream failover: when the origin's stream
   * breaks, the rest is asked of the next origin with the emitted tokens
   * appended to the context, max_tokens reduced and the RNG offset advanced by
   * as many, so no token is lost, repeated, or drawn differently.
   */
  async *generate(request: GenerateRequest, signal?: AbortSignal): AsyncGenerator<GenerateEvent> {
    const pool = this.pool;
    const key = await this.affinityKey;
    const stopIds = new Set(request.stop_token_ids);
    const emitted: number[] = [];
    const servedBy: string[] = [];
    let forwardMs = 0;
    let cachedTokens: number | null = null;
    const finish = (reason: 'stop' | 'length'): GenerateEvent => ({
      type: 'done',
      finish_reason: reason,
      origin: { id: servedBy.join(','), forward_ms: forwardMs, cached_tokens: cachedTokens ?? 0 },
    });
    const tried = new Set<string>();
    let failuresWithoutProgress = 0;
    let lastError: unknown = null;
    for (;;) {
      // The previous origin may have died right after the last token.
      if (emitted.length >= request.max_tokens || (emitted.length && stopIds.has(emitted[emitted.length - 1]))) {
        yield finish(emitted.length && stopIds.has(emitted[emitted.length - 1]) ? 'stop' : 'length');
        return;
      }
      if (failuresWithoutProgress > pool.settings.retries) break;
      if (failuresWithoutProgress > 0) await pool.sleep(pool.backoffMs(failuresWithoutProgress));
      signal?.throwIfAborted();
      const choice = pool.pick(key, tried, request.sampling, this.pinned);
      if (!choice) break;
      const { member } = choice;
      const segment: GenerateRequest = {
        ...request,
        context: [...request.context, ...emitted],
        max_tokens: request.max_tokens - emitted.length,
        sampling: { ...request.sampling, offset: request.sampling.offset + emitted.length },
      };
      // Listed once it delivers something: an origin that failed before its first event served nothing.
      const serving = () => {
        if (servedBy.at(-1) !== member.id) servedBy.push(member.id);
      };
      member.inflight++;
      let progressed = false;
      try {
        for await (const event of member.client.generate(segment, signal)) {
          if (event.type === 'token') {
            serving();
            emitted.push(event.token);
            progressed = true;
            yield event;
          } else if (event.type === 'done') {
            serving();
            member.breaker.recordSuccess(null);
            this.pinned = member;
            forwardMs += event.origin.forward_ms;
            cachedTokens ??= event.origin.cached_tokens;
            yield { ...event, origin: { ...event.origin, id: servedBy.join(','), forward_ms: forwardMs, cached_tokens: cachedTokens } };
            return;
          } else {
            // The origin's own words go to the log only: they may hold anything (paths, URLs, stack traces).
            console.error(`[edge] origin ${member.id} reported a failure mid-stream: ${event.message.slice(0, 500)}`);
            throw new ApiError(502, `origin ${member.id} reported a failure mid-stream`, null, 'origin_error');
          }
        }
        throw new ApiError(502, `origin ${member.id} stream ended without a done event`, null, 'origin_error');
      } catch (err) {
        this.recordFailure(choice, err, tried, signal?.aborted);
        lastError = err;
        failuresWithoutProgress = progressed ? 1 : failuresWithoutProgress + 1;
        // A failover that made progress starts a fresh round of candidates.
        if (progressed) {
          tried.clear();
          tried.add(member.id);
        }
      } finally {
        member.inflight--;
      }
    }
    throw this.exhausted(request.sampling, lastError);
  }

  private exhausted(sampling: Omit<WireSampling, 'offset'> | null, lastError: unknown): ApiError {
    // Every failure was the origins' (or none could be tried): unavailable, 503 with Retry-After.
    if (lastError instanceof ApiError && lastError.code === 'origin_timeout') return lastError;
    return this.pool.unavailable(sampling, lastError);
  }
}

/** An error as breaker state and messages may hold it: our own messages, with anything URL-like removed as a last guard. */
function failureText(err: unknown): string {
  return publicText(err instanceof Error ? err.message : String(err), 300);
}
