import { describe, expect, it } from 'vitest';
import { canonicalJson, idempotencyKey, parseJobRequest } from '../../functions/jobs/request';
import { canTransition, classifyJobError, decideJobMessage, isTerminal, JOB_STATUSES, transientDelayMs } from '../../functions/jobs/state';
import { ApiError } from '../../shared/errors';

const now = 5_000_000;
const queued = { status: 'queued' as const, run_after: now, lease_until: null, cancel_requested: 0, attempt: 0 };

describe('job state machine', () => {
  it('allows exactly the transitions of the diagram; terminal states are final', () => {
    const allowed = JOB_STATUSES.flatMap((from) => JOB_STATUSES.filter((to) => canTransition(from, to)).map((to) => `${from}→${to}`));
    expect(allowed).toEqual([
      'queued→in_progress',
      'queued→failed',
      'queued→cancelled',
      'in_progress→queued',
      'in_progress→in_progress',
      'in_progress→completed',
      'in_progress→failed',
      'in_progress→cancelled',
    ]);
    expect(JOB_STATUSES.filter(isTerminal)).toEqual(['completed', 'failed', 'cancelled']);
  });

  it('a queue message claims a due queued job, and cancels one whose cancel was asked', () => {
    expect(decideJobMessage(queued, now)).toEqual({ action: 'claim' });
    expect(decideJobMessage({ ...queued, cancel_requested: 1 }, now)).toEqual({ action: 'cancel' });
  });

  it('a message for a job not due yet waits (a rate limit, a backoff)', () => {
    expect(decideJobMessage({ ...queued, run_after: now + 30_000 }, now)).toEqual({ action: 'wait', ms: 30_000 });
    expect(decideJobMessage({ ...queued, run_after: now + 900 }, now)).toEqual({ action: 'claim' });
  });

  it('a running job is left to its run until the lease runs out; then it is taken over', () => {
    const running = { ...queued, status: 'in_progress' as const, attempt: 1, lease_until: now + 4_000 };
    expect(decideJobMessage(running, now)).toEqual({ action: 'wait', ms: 4_500 });
    expect(decideJobMessage({ ...running, lease_until: now }, now)).toEqual({ action: 'claim' });
  });

  it('finished and unknown jobs are acknowledged and never run again', () => {
    for (const status of ['completed', 'failed', 'cancelled'] as const) expect(decideJobMessage({ ...queued, status }, now)).toMatchObject({ action: 'ack' });
    expect(decideJobMessage(null, now)).toMatchObject({ action: 'ack' });
  });

  it('classifies failures: 4xx permanent, 429 with Retry-After waits, the rest transient (without leaking details)', () => {
    expect(classifyJobError(new ApiError(413, 'too long', 'prompt', 'context_length_exceeded'))).toEqual({ kind: 'permanent', code: 'context_length_exceeded', message: 'too long' });
    const limited = new ApiError(429, 'slow down', null, 'rate_limit_exceeded');
    limited.headers = { 'retry-after': '7' };
    expect(classifyJobError(limited)).toMatchObject({ kind: 'rate_limited', retryAfterMs: 7_000 });
    expect(classifyJobError(new ApiError(429, 'never fits', null, 'request_too_large'))).toMatchObject({ kind: 'permanent', code: 'request_too_large' });
    const down = classifyJobError(new ApiError(503, 'origin http://10.0.0.5 refused', null, 'origin_unreachable'));
    expect(down).toEqual({ kind: 'transient', code: 'origin_unreachable', message: 'No verifier could serve the job.' });
    expect(classifyJobError(new Error('secret stack'))).toEqual({ kind: 'transient', code: 'internal_error', message: 'Internal error while running the job.' });
    expect([1, 2, 3, 20].map((n) => transientDelayMs(n, 1_000))).toEqual([1_000, 2_000, 4_000, 3_600_000]);
  });
});

describe('job requests', () => {
  it('takes a completion request plus webhook and metadata', () => {
    const parsed = parseJobRequest({ prompt: 'hi', max_tokens: 4, webhook: { url: 'https://example.com/h' }, metadata: { a: 'b' } });
    expect(parsed.completionBody).toEqual({ prompt: 'hi', max_tokens: 4 });
    expect(parsed.webhook).toEqual({ url: 'https://example.com/h' });
    expect(parsed.metadata).toEqual({ a: 'b' });
    expect(parseJobRequest({ prompt: 'hi', webhook: 'whe_0123456789abcdef01234567' }).webhook).toBe('whe_0123456789abcdef01234567');
  });

  it.each([
    [{ prompt: 'hi', stream: true }, 'stream'],
    [{ prompt: 'hi', metadata: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v'])) }, 'metadata'],
    [{ prompt: 'hi', metadata: { k: 'v'.repeat(513) } }, 'metadata.k'],
    [{ prompt: 'hi', metadata: { k: 1 } }, 'metadata.k'],
    [{ prompt: 'hi', webhook: 'https://example.com' }, 'webhook'],
    [{ prompt: 'hi', webhook: { url: 'https://example.com', secret: 'whsec_short' } }, 'webhook.secret'],
    [{ prompt: 'hi', webhook: { url: 'https://example.com', extra: 1 } }, 'webhook'],
    [{ prompt: 'hi', bogus: 1 }, null],
  ])('refuses %j naming %s', (body, param) => {
    try {
      parseJobRequest(body);
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ApiError);
      expect((err as ApiError).status).toBe(400);
      if (param) expect((err as ApiError).param).toBe(param);
    }
  });

  it('hashes bodies canonically: key order does not matter, values do', () => {
    expect(canonicalJson({ b: 1, a: [1, { d: 2, c: 3 }] })).toBe(canonicalJson({ a: [1, { c: 3, d: 2 }], b: 1 }));
    expect(canonicalJson({ a: 1 })).not.toBe(canonicalJson({ a: 2 }));
  });

  it('Idempotency-Key is 1-255 printable ASCII', () => {
    expect(idempotencyKey(undefined)).toBeNull();
    expect(idempotencyKey('order-42')).toBe('order-42');
    expect(() => idempotencyKey('has space')).toThrow(ApiError);
    expect(() => idempotencyKey('x'.repeat(256))).toThrow(ApiError);
    expect(() => idempotencyKey('')).toThrow(ApiError);
  });
});
