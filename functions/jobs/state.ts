import { ApiError } from '../../shared/errors';

/**
 * A job's state machine, pure (unit-tested in test/jobs/state.test.ts). The
 * store (functions/jobs/store.ts) applies each transition as one conditional
 * UPDATE whose WHERE clause is the "from" side below, so two consumers, a
 * consumer and a cancel, or a retried message can never both win.
 *
 *   queued ──claim──▶ in_progress ──▶ completed | failed | cancelled
 *     │                 │  ├─ transient failure / rate limit ──▶ queued (run_after later)
 *     │                 │  └─ lease expired (consumer died) ──claim──▶ in_progress (attempt + 1)
 *     └─ cancel ──▶ cancelled        (a dead-letter message or a template error ──▶ failed)
 */
export const JOB_STATUSES = ['queued', 'in_progress', 'completed', 'failed', 'cancelled'] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];
export type TerminalStatus = 'completed' | 'failed' | 'cancelled';

const TRANSITIONS: Record<JobStatus, readonly JobStatus[]> = {
  queued: ['in_progress', 'cancelled', 'failed'],
  in_progress: ['in_progress', 'queued', 'completed', 'failed', 'cancelled'],
  completed: [],
  failed: [],
  cancelled: [],
};

export const isTerminal = (status: JobStatus): status is TerminalStatus => status === 'completed' || status === 'failed' || status === 'cancelled';
export const canTransition = (from: JobStatus, to: JobStatus) => TRANSITIONS[from].includes(to);

/** Event type of a terminal status. */
export const terminalEvent = (status: TerminalStatus) => `job.${status}` as const;

/** What a job's row looks like to the decisions below. */
export interface JobClaimView {
  status: JobStatus;
  run_after: number;
  lease_until: number | null;
  cancel_requested: number;
  attempt: number;
}

export type JobMessageDecision =
  | { action: 'ack'; reason: string }
  | { action: 'claim' }
  | { action: 'cancel' }
  /** Not now: the message comes back after `ms` (a delay longer than a queue's is re-sent in steps). */
  | { action: 'wait'; ms: number };

/** A message may arrive up to this early and still run (queue delays are whole seconds). */
export const EARLY_MS = 1_000;

/** What a consumer does with a queue message naming this job. */
export function decideJobMessage(job: JobClaimView | null, now: number): JobMessageDecision {
  if (!job) return { action: 'ack', reason: 'no such job' };
  if (isTerminal(job.status)) return { action: 'ack', reason: `already ${job.status}` };
  if (job.status === 'queued') {
    if (job.cancel_requested) return { action: 'cancel' };
    if (job.run_after > now + EARLY_MS) return { action: 'wait', ms: job.run_after - now };
    return { action: 'claim' };
  }
  // in_progress: another run holds the lease; if that run died, the lease runs out and this message takes over.
  if (job.lease_until !== null && job.lease_until > now) return { action: 'wait', ms: job.lease_until - now + 500 };
  return { action: 'claim' };
}

export type JobFailure =
  | { kind: 'permanent'; code: string; message: string }
  | { kind: 'transient'; code: string; message: string }
  | { kind: 'rate_limited'; code: string; message: string; retryAfterMs: number };

/**
 * How a failed run ends: the request's own fault (4xx) fails the job; a rate
 * limit with a Retry-After waits for it; anything else (origin down, draft
 * not loaded, a broken stream) is retried by the queue and, after its
 * max_retries, fails through the dead-letter queue with this reason.
 */
export function classifyJobError(err: unknown): JobFailure {
  if (err instanceof ApiError) {
    const code = err.code ?? `http_${err.status}`;
    if (err.status === 429) {
      const retryAfter = Number(err.headers?.['retry-after']);
      if (Number.isFinite(retryAfter) && retryAfter > 0) return { kind: 'rate_limited', code, message: err.message, retryAfterMs: retryAfter * 1000 };
      return { kind: 'permanent', code, message: err.message };
    }
    if (err.status < 500) return { kind: 'permanent', code, message: err.message };
    return { kind: 'transient', code, message: publicMessage(code) };
  }
  return { kind: 'transient', code: 'internal_error', message: publicMessage('internal_error') };
}

/** Server-side failures say what kind they were, never an origin URL or an exception (as functions/openai/public-error.ts). */
function publicMessage(code: string): string {
  if (code === 'origin_unreachable') return 'No verifier could serve the job.';
  if (code === 'origin_timeout') return 'The verifier did not answer in time.';
  if (code === 'draft_unavailable') return 'The draft model was not available.';
  if (code.startsWith('origin_')) return 'The verifier failed while generating.';
  return 'Internal error while running the job.';
}

/** Backoff of a transient failure before the queue's next try: base · 2^(n−1), at most an hour. */
export function transientDelayMs(queueAttempts: number, baseMs: number): number {
  return Math.min(3_600_000, baseMs * 2 ** Math.max(0, queueAttempts - 1));
}
