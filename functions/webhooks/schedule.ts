/**
 * When a webhook delivery is tried again, and what an answer means. Pure
 * (clock, randomness and scale are arguments) so the rules are unit-tested
 * (test/webhooks/schedule.test.ts) and the edge tests run the real schedule
 * on a compressed clock (WEBHOOK_RETRY_SCALE in the test Worker).
 *
 * Svix's schedule: attempt 1 at once, then 5 s, 5 min, 30 min, 2 h, 5 h,
 * 10 h, 10 h after the previous failure: 8 attempts over about 27.6 hours.
 * Each delay gets ±10 % jitter so a receiver that came back is not hit by
 * every retry at the same instant. A 429 or 503 with Retry-After is never
 * retried sooner than it asks (capped at a day).
 */
export const RETRY_DELAYS_MS: readonly number[] = [5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000];
export const MAX_ATTEMPTS = RETRY_DELAYS_MS.length + 1;
const JITTER = 0.1;
const MAX_RETRY_AFTER_MS = 86_400_000;

export interface ScheduleOptions {
  /** Multiplies every delay (1 in production; a small fraction in the test Worker). */
  scale: number;
  /** A number in [0, 1); Math.random in production. */
  random: () => number;
}

/** Delay before attempt `attemptsMade + 1` after `attemptsMade` failed ones, or null when none is left. */
export function retryDelayMs(attemptsMade: number, options: ScheduleOptions, retryAfterMs: number | null = null): number | null {
  if (attemptsMade < 1 || attemptsMade >= MAX_ATTEMPTS) return null;
  const base = RETRY_DELAYS_MS[attemptsMade - 1] * options.scale;
  const jittered = base * (1 + JITTER * (2 * options.random() - 1));
  return Math.max(Math.round(jittered), retryAfterMs === null ? 0 : Math.min(retryAfterMs, MAX_RETRY_AFTER_MS));
}

/** Retry-After as delta-seconds or an HTTP date → ms from `now`, or null when absent or unreadable. */
export function parseRetryAfter(value: string | null, now: number): number | null {
  if (value === null) return null;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const date = Date.parse(text);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}

export type AttemptOutcome = 'success' | 'failure' | 'timeout' | 'network' | 'redirect' | 'gone' | 'blocked';

/**
 * What one attempt's result means: `success` is a 2xx within the timeout;
 * `gone` (410) disables the endpoint; `blocked` (the URL failed the SSRF
 * guard at send time) ends the delivery; everything else is retried.
 */
export function classifyResponse(status: number): AttemptOutcome {
  if (status >= 200 && status < 300) return 'success';
  if (status === 410) return 'gone';
  if (status >= 300 && status < 400) return 'redirect';
  return 'failure';
}

export const isRetryable = (outcome: AttemptOutcome) => outcome === 'failure' || outcome === 'timeout' || outcome === 'network' || outcome === 'redirect';

/** Retry-After counts only on 429 and 503, the statuses that define it for "come back later". */
export const honoursRetryAfter = (status: number | null) => status === 429 || status === 503;

/**
 * Svix's rule: an endpoint whose every attempt has failed for `windowMs`
 * (since the first failure after its last success) is disabled.
 */
export function shouldDisable(failingSince: number | null, now: number, windowMs: number): boolean {
  return failingSince !== null && now - failingSince >= windowMs;
}

/** Seconds for a queue message delay (Queues take whole seconds, at most 12 h); under a second = now. */
export const MAX_QUEUE_DELAY_S = 43_200;
export function queueDelaySeconds(ms: number): number {
  if (ms < 1000) return 0;
  return Math.min(MAX_QUEUE_DELAY_S, Math.ceil(ms / 1000));
}
