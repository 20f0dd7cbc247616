import type { Env } from '../env';
import { queueDelaySeconds } from '../webhooks/schedule';

/**
 * What travels on the queues: ids only (a message is at most 128 KB and is
 * delivered at least once, in no particular order); the state is in D1.
 * JOBS_QUEUE carries `job`, WEBHOOKS_QUEUE carries `delivery`; each has a
 * dead-letter queue whose name ends in "-dlq" (wrangler.toml).
 */
export type BackgroundMessage = { kind: 'job'; job_id: string } | { kind: 'delivery'; delivery_id: string; attempt: number };

/** Queue a run of the job, `delayMs` from now (longer than a queue allows: it comes back early and waits again). */
export async function enqueueJob(env: Env, jobId: string, delayMs = 0): Promise<void> {
  if (!env.JOBS_QUEUE) throw new Error('JOBS_QUEUE is not bound (wrangler.toml [[queues.producers]])');
  await env.JOBS_QUEUE.send({ kind: 'job', job_id: jobId }, { contentType: 'json', delaySeconds: queueDelaySeconds(delayMs) });
}

export async function enqueueDelivery(env: Env, deliveryId: string, attempt: number, delayMs = 0): Promise<void> {
  if (!env.WEBHOOKS_QUEUE) throw new Error('WEBHOOKS_QUEUE is not bound (wrangler.toml [[queues.producers]])');
  await env.WEBHOOKS_QUEUE.send({ kind: 'delivery', delivery_id: deliveryId, attempt }, { contentType: 'json', delaySeconds: queueDelaySeconds(delayMs) });
}

/** Random public ids, as functions/auth's: they reveal nothing. */
export function newId(kind: 'job' | 'evt' | 'whe' | 'whd' | 'trg'): string {
  return `${kind}_${[...crypto.getRandomValues(new Uint8Array(12))].map((b) => b.toString(16).padStart(2, '0')).join('')}`;
}

/** Wake the sweeper (functions/background/sweeper.ts) so open work is re-queued if a message is lost. Never throws. */
export async function wakeSweeper(env: Env): Promise<void> {
  if (!env.SWEEPER) return;
  try {
    await env.SWEEPER.get(env.SWEEPER.idFromName('sweeper')).wake();
  } catch (err) {
    console.error('[background] could not wake the sweeper', err);
  }
}

/** Queue a new job's first run; if the send fails, the sweeper (woken first) sends it later. */
export async function startJob(env: Env, jobId: string): Promise<void> {
  await wakeSweeper(env);
  await enqueueJob(env, jobId).catch((err) => console.error(`[jobs] queueing ${jobId} failed; the sweeper will`, err));
}
