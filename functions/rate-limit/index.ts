import { ApiError } from '../../shared/errors';
import type { Caller } from '../auth/tenants';
import type { Env } from '../env';
import type { Admission, LimitSnapshot, Limits } from './buckets';

export { RateLimiter } from './durable-object';

/** Tokens reserved for one request; `settle` charges what it really used (once). */
export interface UsageReservation {
  /** OpenAI's x-ratelimit-* headers as of the admission. */
  headers: Record<string, string>;
  settle(usedTokens: number): Promise<void>;
}

/**
 * Admit a request of the caller's tenant that may use `tokens` tokens (prompt
 * + max_tokens), or throw a 429 with Retry-After and the x-ratelimit headers.
 * A tenant with no rate limits costs no Durable Object call.
 */
export async function reserveUsage(env: Env, caller: Caller, tokens: number): Promise<UsageReservation> {
  const { requestsPerMinute, tokensPerMinute, tokensPerDay } = caller.tenant.limits;
  const limits: Limits = { requestsPerMinute, tokensPerMinute, tokensPerDay };
  if (requestsPerMinute === null && tokensPerMinute === null && tokensPerDay === null) {
    return { headers: {}, settle: async () => {} };
  }
  const limiter = env.RATE_LIMITER.get(env.RATE_LIMITER.idFromName(caller.tenant.id));
  const admission = await limiter.admit(limits, tokens);
  const headers = rateLimitHeaders(admission);
  if (!admission.admitted) {
    const refusal = admission.refusal!;
    const error = new ApiError(429, refusal.message, null, refusal.retryAfterMs === null ? 'request_too_large' : refusal.limit === 'tokens_per_day' ? 'insufficient_quota' : 'rate_limit_exceeded');
    error.headers = { ...headers, ...(refusal.retryAfterMs !== null ? { 'retry-after': String(Math.max(1, Math.ceil(refusal.retryAfterMs / 1000))) } : {}) };
    throw error;
  }
  let settled = false;
  return {
    headers,
    async settle(usedTokens) {
      if (settled) return;
      settled = true;
      await limiter.settle(limits, tokens, usedTokens, admission.day);
    },
  };
}

/** OpenAI's names: x-ratelimit-{limit,remaining,reset}-{requests,tokens}; reset as a duration like "6m0s" or "1.5s". */
export function rateLimitHeaders(admission: Pick<Admission, 'requests' | 'tokens'>): Record<string, string> {
  const headers: Record<string, string> = {};
  const add = (kind: 'requests' | 'tokens', snapshot: LimitSnapshot | null) => {
    if (!snapshot) return;
    headers[`x-ratelimit-limit-${kind}`] = String(snapshot.limit);
    headers[`x-ratelimit-remaining-${kind}`] = String(snapshot.remaining);
    headers[`x-ratelimit-reset-${kind}`] = formatDuration(snapshot.resetMs);
  };
  add('requests', admission.requests);
  add('tokens', admission.tokens);
  return headers;
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.ceil(ms))}ms`;
  const seconds = ms / 1000;
  if (seconds < 60) return `${Math.round(seconds * 1000) / 1000}s`;
  const minutes = Math.floor(seconds / 60);
  return `${minutes}m${Math.round(seconds - minutes * 60)}s`;
}
