/**
 * A webhook delivery's state machine, pure (test/webhooks/state.test.ts).
 * functions/webhooks/deliver.ts applies it with conditional UPDATEs.
 *
 *   pending ──claim (due)──▶ delivering ──2xx──▶ succeeded
 *      ▲                        ├─ failure, attempts left ──▶ pending (next_attempt_at = the schedule's)
 *      │                        ├─ failure, none left / 410 / refused URL / endpoint disabled ──▶ failed
 *      └────────────────────────┴─ lease expired (the sender died) ──claim──▶ delivering (same attempt)
 *
 * Queue messages are {delivery id, attempt number}. A message is a wake-up
 * call, not the state: duplicates and early arrivals are harmless because
 * only the message whose claim UPDATE matches runs an attempt.
 */
export const DELIVERY_STATUSES = ['pending', 'delivering', 'succeeded', 'failed'] as const;
export type DeliveryStatus = (typeof DELIVERY_STATUSES)[number];

const TRANSITIONS: Record<DeliveryStatus, readonly DeliveryStatus[]> = {
  pending: ['delivering', 'failed'],
  delivering: ['delivering', 'pending', 'succeeded', 'failed'],
  succeeded: [],
  failed: [],
};

export const canTransition = (from: DeliveryStatus, to: DeliveryStatus) => TRANSITIONS[from].includes(to);
export const isFinished = (status: DeliveryStatus) => status === 'succeeded' || status === 'failed';

export interface DeliveryClaimView {
  status: DeliveryStatus;
  attempts: number;
  next_attempt_at: number | null;
  lease_until: number | null;
}

export type DeliveryMessageDecision =
  | { action: 'ack'; reason: string }
  /** Run attempt `attempt` (attempts + 1 from pending; the same number again after an expired lease). */
  | { action: 'claim'; attempt: number; from: 'pending' | 'delivering' }
  | { action: 'wait'; ms: number; attempt: number }
  /** This message's attempt is recorded and the next is pending: make sure a message for it exists. */
  | { action: 'reschedule'; attempt: number; ms: number };

const EARLY_MS = 1_000;

export function decideDeliveryMessage(row: DeliveryClaimView | null, messageAttempt: number, now: number): DeliveryMessageDecision {
  if (!row) return { action: 'ack', reason: 'no such delivery' };
  if (isFinished(row.status)) return { action: 'ack', reason: `already ${row.status}` };
  if (row.status === 'delivering') {
    if (row.lease_until !== null && row.lease_until > now) return { action: 'wait', ms: row.lease_until - now + 500, attempt: row.attempts };
    return { action: 'claim', attempt: row.attempts, from: 'delivering' };
  }
  const next = row.attempts + 1;
  const dueIn = Math.max(0, (row.next_attempt_at ?? now) - now);
  // A sender that recorded attempt n and died before queueing n + 1: its redelivered message queues n + 1.
  if (messageAttempt === row.attempts) return { action: 'reschedule', attempt: next, ms: dueIn };
  if (messageAttempt < row.attempts) return { action: 'ack', reason: `attempt ${messageAttempt} is long done` };
  if (dueIn > EARLY_MS) return { action: 'wait', ms: dueIn, attempt: next };
  return { action: 'claim', attempt: next, from: 'pending' };
}
