import { DurableObject } from 'cloudflare:workers';
import { edgeConfig } from '../config';
import type { Env } from '../env';
import { enqueueDelivery, enqueueJob } from './messages';

/**
 * The safety net under the queues: one Durable Object whose alarm, while any
 * background work is open, re-sends the message of every job and delivery
 * that should have moved by now and did not: a message lost with a local
 * runtime that was killed (`wrangler dev` keeps queues in memory), a send
 * that failed after its row was written, a run that died holding a lease.
 * Re-sending is always safe: consumers act only through conditional claims.
 * Its alarm survives restarts (it is in the object's storage); it goes quiet
 * when nothing is open, and job creation or an event wakes it.
 */
const BATCH = 200;
const IDEMPOTENCY_KEYS_MS = 24 * 3_600_000;
const TRIGGER_DELIVERIES_MS = 30 * 86_400_000;

export class Sweeper extends DurableObject<Env> {
  /** Arm the alarm unless it is armed. */
  async wake(): Promise<void> {
    if ((await this.ctx.storage.getAlarm()) === null) await this.ctx.storage.setAlarm(Date.now() + edgeConfig(this.env).jobs.sweepIntervalMs);
  }

  async alarm(): Promise<void> {
    const { open } = await sweep(this.env, Date.now());
    if (open) await this.ctx.storage.setAlarm(Date.now() + edgeConfig(this.env).jobs.sweepIntervalMs);
  }
}

/** One pass; `open` says whether anything is still open (so the alarm keeps going). */
export async function sweep(env: Env, now: number): Promise<{ open: boolean; resent: number }> {
  const config = edgeConfig(env);
  const grace = Math.max(2 * config.jobs.sweepIntervalMs, 5_000);
  const db = env.DB;
  const [jobs, deliveries, openJobs, openDeliveries] = await db.batch([
    // Queued and due for a while, or running under an expired lease; `updated_at` keeps one job from being re-sent every pass.
    db
      .prepare(
        `SELECT id FROM jobs WHERE status IN ('queued', 'in_progress') AND updated_at <= ?
           AND ((status = 'queued' AND run_after <= ?) OR (status = 'in_progress' AND lease_until <= ?)) LIMIT ?`,
      )
      .bind(now - grace, now - grace, now, BATCH),
    db
      .prepare(
        `SELECT id, status, attempts FROM webhook_deliveries WHERE status IN ('pending', 'delivering') AND updated_at <= ?
           AND ((status = 'pending' AND next_attempt_at <= ?) OR (status = 'delivering' AND lease_until <= ?)) LIMIT ?`,
      )
      .bind(now - grace, now - grace, now, BATCH),
    db.prepare("SELECT COUNT(*) AS n FROM jobs WHERE status IN ('queued', 'in_progress')"),
    db.prepare("SELECT COUNT(*) AS n FROM webhook_deliveries WHERE status IN ('pending', 'delivering')"),
  ]);
  const jobIds = (jobs.results as Array<{ id: string }>).map((r) => r.id);
  const deliveryRows = deliveries.results as Array<{ id: string; status: string; attempts: number }>;
  if (jobIds.length || deliveryRows.length) {
    await db.batch([
      ...jobIds.map((id) => db.prepare('UPDATE jobs SET updated_at = ? WHERE id = ?').bind(now, id)),
      ...deliveryRows.map((r) => db.prepare('UPDATE webhook_deliveries SET updated_at = ? WHERE id = ?').bind(now, r.id)),
    ]);
  }
  for (const id of jobIds) await enqueueJob(env, id).catch((err) => console.error(`[sweeper] re-queueing job ${id} failed`, err));
  for (const row of deliveryRows) {
    await enqueueDelivery(env, row.id, row.status === 'pending' ? row.attempts + 1 : row.attempts).catch((err) => console.error(`[sweeper] re-queueing delivery ${row.id} failed`, err));
  }
  if (jobIds.length || deliveryRows.length) console.log(`[sweeper] re-queued ${jobIds.length} job(s) and ${deliveryRows.length} delivery(ies)`);
  // Housekeeping: idempotency keys live 24 h; trigger delivery ids 30 days (replays older than that fail their timestamp check).
  await db.batch([
    db.prepare('DELETE FROM idempotency_keys WHERE created_at <= ?').bind(now - IDEMPOTENCY_KEYS_MS),
    db.prepare('DELETE FROM trigger_deliveries WHERE received_at <= ?').bind(now - TRIGGER_DELIVERIES_MS),
  ]);
  const count = (result: D1Result) => (result.results[0] as { n: number }).n;
  return { open: count(openJobs) + count(openDeliveries) > 0, resent: jobIds.length + deliveryRows.length };
}
