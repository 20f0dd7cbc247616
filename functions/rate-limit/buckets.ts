import type { TenantLimits } from '../auth/tenants';

/**
 * The rules of a tenant's limits, pure (state and clock in, decision out), so
 * they are tested without a runtime. The RateLimiter Durable Object holds the
 * state; one object per tenant makes every isolate charge the same counters.
 *
 * Requests and tokens per minute are token buckets (OpenAI's model): capacity
 * = the per-minute limit, refilled continuously at limit/60 s, so a burst of
 * the whole minute's allowance passes and then the rate holds. Tokens per day
 * is a quota that resets at 00:00 UTC.
 *
 * A request reserves its prompt tokens plus max_tokens when it is admitted
 * (so concurrent requests cannot overspend), and `settle` gives back what it
 * did not generate: a tenant is charged for what was generated, including a
 * stream cut short.
 */
export interface Bucket {
  level: number;
  /** Unix ms at which `level` was measured. */
  at: number;
}

export interface LimiterState {
  requests: Bucket | null;
  tokens: Bucket | null;
  /** UTC day (YYYY-MM-DD) and tokens charged in it. */
  day: { date: string; used: number };
}

export type Limits = Pick<TenantLimits, 'requestsPerMinute' | 'tokensPerMinute' | 'tokensPerDay'>;

export interface LimitSnapshot {
  limit: number;
  remaining: number;
  /** Milliseconds until the bucket is full again. */
  resetMs: number;
}

export interface Admission {
  admitted: boolean;
  /** When refused: which limit, why, and when a retry can pass. */
  refusal?: { limit: 'requests' | 'tokens' | 'tokens_per_day'; message: string; retryAfterMs: number | null };
  requests: LimitSnapshot | null;
  tokens: LimitSnapshot | null;
  /** UTC day the reservation was charged to, for settling. */
  day: string;
}

const MINUTE_MS = 60_000;

export const emptyState = (now: number): LimiterState => ({ requests: null, tokens: null, day: { date: utcDay(now), used: 0 } });

export function utcDay(now: number): string {
  return new Date(now).toISOString().slice(0, 10);
}

function msToUtcMidnight(now: number): number {
  const next = new Date(now);
  next.setUTCHours(24, 0, 0, 0);
  return next.getTime() - now;
}

/** The bucket's level now: refilled at capacity per minute, never above capacity. */
export function refill(bucket: Bucket | null, capacity: number, now: number): Bucket {
  if (!bucket) return { level: capacity, at: now };
  const level = Math.min(capacity, bucket.level + (Math.max(0, now - bucket.at) * capacity) / MINUTE_MS);
  return { level, at: now };
}

function snapshot(bucket: Bucket, capacity: number): LimitSnapshot {
  return { limit: capacity, remaining: Math.max(0, Math.floor(bucket.level)), resetMs: Math.ceil(((capacity - bucket.level) * MINUTE_MS) / capacity) };
}

/** Admit one request that may use `tokens` tokens, or say which limit refuses it. */
export function admit(state: LimiterState, limits: Limits, tokens: number, now: number): { state: LimiterState; admission: Admission } {
  const rpm = limits.requestsPerMinute;
  const tpm = limits.tokensPerMinute;
  const tpd = limits.tokensPerDay;
  const requests = rpm !== null ? refill(state.requests, rpm, now) : null;
  const tokenBucket = tpm !== null ? refill(state.tokens, tpm, now) : null;
  const day = state.day.date === utcDay(now) ? state.day : { date: utcDay(now), used: 0 };
  const snapshots = () => ({ requests: requests && rpm !== null ? snapshot(requests, rpm) : null, tokens: tokenBucket && tpm !== null ? snapshot(tokenBucket, tpm) : null, day: day.date });
  const refuse = (refusal: NonNullable<Admission['refusal']>) => ({
    state: { requests, tokens: tokenBucket, day },
    admission: { admitted: false, refusal, ...snapshots() },
  });

  // A request that can never pass says so first, without a Retry-After that would only lead to another refusal.
  if (tpm !== null && tokens > tpm) {
    return refuse({ limit: 'tokens', message: `Request too large: it may use ${tokens} tokens (prompt + max_tokens), more than the limit of ${tpm} tokens per minute. Lower max_tokens or shorten the prompt.`, retryAfterMs: null });
  }
  if (tpd !== null && tokens > tpd) {
    return refuse({ limit: 'tokens_per_day', message: `Request too large: it may use ${tokens} tokens, more than the daily quota of ${tpd}.`, retryAfterMs: null });
  }
  if (requests && rpm !== null && requests.level < 1) {
    return refuse({ limit: 'requests', message: `Rate limit reached: ${rpm} requests per minute.`, retryAfterMs: Math.ceil(((1 - requests.level) * MINUTE_MS) / rpm) });
  }
  if (tokenBucket && tpm !== null) {
    if (tokenBucket.level < tokens) {
      return refuse({ limit: 'tokens', message: `Rate limit reached: ${tpm} tokens per minute; this request may use ${tokens}.`, retryAfterMs: Math.ceil(((tokens - tokenBucket.level) * MINUTE_MS) / tpm) });
    }
  }
  if (tpd !== null && day.used + tokens > tpd) {
    return refuse({ limit: 'tokens_per_day', message: `Daily quota reached: ${tpd} tokens per day (UTC), ${day.used} used; this request may use ${tokens}.`, retryAfterMs: msToUtcMidnight(now) });
  }
  if (requests) requests.level -= 1;
  if (tokenBucket) tokenBucket.level -= tokens;
  const next = { requests, tokens: tokenBucket, day: { date: day.date, used: day.used + tokens } };
  return { state: next, admission: { admitted: true, ...snapshots() } };
}

/**
 * After a request: it reserved `reserved` tokens and used `used`. The
 * difference goes back to the minute bucket and to the day it was charged to
 * (a reservation charged yesterday is not refunded into today's quota).
 */
export function settle(state: LimiterState, limits: Limits, reserved: number, used: number, day: string, now: number): LimiterState {
  const refund = reserved - used;
  if (refund === 0) return state;
  const tpm = limits.tokensPerMinute;
  const tokens = tpm !== null ? refill(state.tokens, tpm, now) : null;
  if (tokens && tpm !== null) tokens.level = Math.min(tpm, tokens.level + refund);
  const sameDay = state.day.date === day;
  return { ...state, tokens, day: sameDay ? { date: day, used: Math.max(0, state.day.used - refund) } : state.day };
}
