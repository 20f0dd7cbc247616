import { describe, expect, it } from 'vitest';
import { canTransition, decideDeliveryMessage, DELIVERY_STATUSES } from '../../functions/webhooks/state';

const now = 1_000_000;
const pending = (attempts: number, dueIn = 0) => ({ status: 'pending' as const, attempts, next_attempt_at: now + dueIn, lease_until: null });

describe('webhook delivery state machine', () => {
  it('allows exactly the transitions of the diagram', () => {
    const allowed = DELIVERY_STATUSES.flatMap((from) => DELIVERY_STATUSES.filter((to) => canTransition(from, to)).map((to) => `${from}→${to}`));
    expect(allowed).toEqual(['pending→delivering', 'pending→failed', 'delivering→pending', 'delivering→delivering', 'delivering→succeeded', 'delivering→failed']);
  });

  it('a due message claims the next attempt', () => {
    expect(decideDeliveryMessage(pending(0), 1, now)).toEqual({ action: 'claim', attempt: 1, from: 'pending' });
    expect(decideDeliveryMessage(pending(3, 500), 4, now)).toEqual({ action: 'claim', attempt: 4, from: 'pending' });
  });

  it('an early message waits (re-sent with the remaining delay, so delays beyond a queue’s limit work in steps)', () => {
    expect(decideDeliveryMessage(pending(2, 30_000), 3, now)).toEqual({ action: 'wait', ms: 30_000, attempt: 3 });
    expect(decideDeliveryMessage(pending(6, 36_000_000), 7, now)).toEqual({ action: 'wait', ms: 36_000_000, attempt: 7 });
  });

  it('finished deliveries and stale duplicates are acknowledged and do nothing', () => {
    expect(decideDeliveryMessage(null, 1, now)).toMatchObject({ action: 'ack' });
    expect(decideDeliveryMessage({ ...pending(1), status: 'succeeded' }, 1, now)).toMatchObject({ action: 'ack' });
    expect(decideDeliveryMessage({ ...pending(8), status: 'failed' }, 8, now)).toMatchObject({ action: 'ack' });
    expect(decideDeliveryMessage(pending(4), 2, now)).toMatchObject({ action: 'ack' });
  });

  it('a redelivered message whose attempt is recorded makes sure the next one is queued', () => {
    expect(decideDeliveryMessage(pending(2, 5_000), 2, now)).toEqual({ action: 'reschedule', attempt: 3, ms: 5_000 });
  });

  it('an attempt in flight is left alone until its lease ends; then the same attempt runs again', () => {
    const delivering = { status: 'delivering' as const, attempts: 3, next_attempt_at: null, lease_until: now + 10_000 };
    expect(decideDeliveryMessage(delivering, 3, now)).toEqual({ action: 'wait', ms: 10_500, attempt: 3 });
    expect(decideDeliveryMessage({ ...delivering, lease_until: now - 1 }, 3, now)).toEqual({ action: 'claim', attempt: 3, from: 'delivering' });
  });
});
