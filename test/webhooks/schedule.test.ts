import { describe, expect, it } from 'vitest';
import { classifyResponse, isRetryable, MAX_ATTEMPTS, parseRetryAfter, queueDelaySeconds, retryDelayMs, shouldDisable } from '../../functions/webhooks/schedule';

const noJitter = { scale: 1, random: () => 0.5 };

describe('the retry schedule (Svix)', () => {
  it('is immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: 8 attempts', () => {
    expect(MAX_ATTEMPTS).toBe(8);
    const delays = [1, 2, 3, 4, 5, 6, 7].map((n) => retryDelayMs(n, noJitter));
    expect(delays).toEqual([5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000]);
    expect(retryDelayMs(8, noJitter)).toBeNull();
    expect(retryDelayMs(0, noJitter)).toBeNull();
  });

  it('jitters each delay by at most ±10 %', () => {
    expect(retryDelayMs(1, { scale: 1, random: () => 0 })).toBe(4_500);
    expect(retryDelayMs(1, { scale: 1, random: () => 0.999999 })).toBeCloseTo(5_500, -1);
    const seen = new Set(Array.from({ length: 50 }, () => retryDelayMs(2, { scale: 1, random: Math.random })));
    expect(seen.size).toBeGreaterThan(1);
    for (const delay of seen) expect(delay! >= 270_000 && delay! <= 330_000).toBe(true);
  });

  it('runs on a compressed clock with the same shape', () => {
    const scaled = [1, 2, 3, 4, 5, 6, 7].map((n) => retryDelayMs(n, { scale: 0.0001, random: () => 0.5 }));
    expect(scaled).toEqual([1, 30, 180, 720, 1_800, 3_600, 3_600]);
  });

  it('never retries sooner than a Retry-After asks (capped at a day)', () => {
    expect(retryDelayMs(1, noJitter, 60_000)).toBe(60_000);
    expect(retryDelayMs(3, noJitter, 60_000)).toBe(1_800_000);
    expect(retryDelayMs(1, noJitter, 10 * 86_400_000)).toBe(86_400_000);
    expect(parseRetryAfter('120', 0)).toBe(120_000);
    expect(parseRetryAfter(new Date(90_000).toUTCString(), 30_000)).toBe(60_000);
    expect(parseRetryAfter('soon', 0)).toBeNull();
    expect(parseRetryAfter(null, 0)).toBeNull();
  });

  it('classifies answers: 2xx success, 410 gone, 3xx a redirect not followed, the rest failures', () => {
    expect([200, 201, 204, 299].map(classifyResponse)).toEqual(['success', 'success', 'success', 'success']);
    expect(classifyResponse(410)).toBe('gone');
    expect(classifyResponse(302)).toBe('redirect');
    expect([400, 404, 429, 500, 503].map(classifyResponse)).toEqual(['failure', 'failure', 'failure', 'failure', 'failure']);
    expect(['failure', 'timeout', 'network', 'redirect'].every((o) => isRetryable(o as never))).toBe(true);
    expect(['success', 'gone', 'blocked'].some((o) => isRetryable(o as never))).toBe(false);
  });

  it('disables an endpoint failing for the whole window, not before', () => {
    const day = 86_400_000;
    expect(shouldDisable(null, 10 * day, 5 * day)).toBe(false);
    expect(shouldDisable(0, 5 * day - 1, 5 * day)).toBe(false);
    expect(shouldDisable(0, 5 * day, 5 * day)).toBe(true);
  });

  it('turns delays into queue delays: whole seconds, under a second is now, at most 12 h', () => {
    expect(queueDelaySeconds(0)).toBe(0);
    expect(queueDelaySeconds(999)).toBe(0);
    expect(queueDelaySeconds(1_001)).toBe(2);
    expect(queueDelaySeconds(36_000_000)).toBe(36_000);
    expect(queueDelaySeconds(86_400_000)).toBe(43_200);
  });
});
