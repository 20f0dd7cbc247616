import { enqueueDelivery, newId, wakeSweeper } from '../background/messages';
import type { Env } from '../env';
import { subscribes, type EndpointRow } from './endpoints';

/**
 * Events ("job.completed", …) and their deliveries. An event is recorded in
 * the same db.batch() as the job transition that caused it, guarded by that
 * transition's token, and at most once per job and type (UNIQUE), one
 * terminal event per job (a partial UNIQUE index): a consumer retried after
 * a crash, or racing another, can never send a second `job.completed`.
 */
export interface EventRecord {
  id: string;
  type: string;
  /** The exact JSON body every attempt sends and signs. */
  payload: string;
  statements: D1PreparedStatement[];
  /** The delivery to queue once the batch is in, when the endpoint subscribes to this type. */
  deliveryId: string | null;
}

export function eventStatements(
  db: D1Database,
  spec: { tenantId: string; jobId: string; type: string; data: unknown; now: number },
  endpoint: Pick<EndpointRow, 'id' | 'event_types'> | null,
  guard: { transition: string },
): EventRecord {
  const id = newId('evt');
  const payload = JSON.stringify({ type: spec.type, timestamp: new Date(spec.now).toISOString(), data: spec.data });
  const terminal = spec.type === 'job.started' ? 0 : 1;
  const statements = [
    db
      .prepare('INSERT OR IGNORE INTO events (id, tenant_id, job_id, type, terminal, payload, created_at) SELECT ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM jobs WHERE id = ? AND transition = ?)')
      .bind(id, spec.tenantId, spec.jobId, spec.type, terminal, payload, spec.now, spec.jobId, guard.transition),
  ];
  let deliveryId: string | null = null;
  if (endpoint && subscribes(endpoint, spec.type)) {
    deliveryId = newId('whd');
    statements.push(
      db
        .prepare(
          `INSERT OR IGNORE INTO webhook_deliveries (id, tenant_id, event_id, endpoint_id, job_id, replay, status, attempts, next_attempt_at, created_at, updated_at)
           SELECT ?, ?, ?, ?, ?, 0, 'pending', 0, ?, ?, ? WHERE EXISTS (SELECT 1 FROM events WHERE id = ?)`,
        )
        .bind(deliveryId, spec.tenantId, id, endpoint.id, spec.jobId, spec.now, spec.now, spec.now, id),
    );
  }
  return { id, type: spec.type, payload, statements, deliveryId };
}

/** After the batch: queue the first attempt of the event's delivery, if the event was recorded by this batch. */
export async function dispatchEvent(env: Env, event: EventRecord): Promise<void> {
  if (!event.deliveryId) return;
  const exists = await env.DB.prepare('SELECT 1 AS found FROM webhook_deliveries WHERE id = ?').bind(event.deliveryId).first();
  if (!exists) return;
  await wakeSweeper(env);
  await enqueueDelivery(env, event.deliveryId, 1).catch((err) => console.error(`[webhooks] queueing delivery ${event.deliveryId} failed; the sweeper will`, err));
}

/** Queue a message for every delivery of a job that is due and waiting (after a crash between recording and queueing). */
export async function redispatchJobDeliveries(env: Env, jobId: string, now: number): Promise<void> {
  const { results } = await env.DB.prepare("SELECT id, attempts FROM webhook_deliveries WHERE job_id = ? AND status = 'pending' AND next_attempt_at <= ?")
    .bind(jobId, now)
    .all<{ id: string; attempts: number }>();
  for (const row of results) await enqueueDelivery(env, row.id, row.attempts + 1);
}

interface DeliveryListRow {
  id: string;
  event_id: string;
  event_type: string;
  endpoint_id: string;
  job_id: string | null;
  replay: number;
  status: string;
  attempts: number;
  next_attempt_at: number | null;
  last_status: number | null;
  last_error: string | null;
  created_at: number;
  finished_at: number | null;
}

interface AttemptRow {
  delivery_id: string;
  attempt: number;
  started_at: number;
  latency_ms: number;
  status_code: number | null;
  outcome: string;
  error: string | null;
  response_snippet: string | null;
}

const seconds = (ms: number | null) => (ms === null ? null : Math.floor(ms / 1000));

/** Every delivery of a job, each with every attempt (oldest first). */
export async function jobDeliveries(db: D1Database, tenantId: string, jobId: string) {
  const [deliveries, attempts] = await db.batch([
    db
      .prepare(
        `SELECT d.id, d.event_id, ev.type AS event_type, d.endpoint_id, d.job_id, d.replay, d.status, d.attempts, d.next_attempt_at, d.last_status, d.last_error, d.created_at, d.finished_at
         FROM webhook_deliveries d JOIN events ev ON ev.id = d.event_id WHERE d.job_id = ? AND d.tenant_id = ? ORDER BY d.created_at, d.id`,
      )
      .bind(jobId, tenantId),
    db
      .prepare('SELECT a.* FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id WHERE d.job_id = ? AND d.tenant_id = ? ORDER BY a.attempt')
      .bind(jobId, tenantId),
  ]);
  const byDelivery = new Map<string, AttemptRow[]>();
  for (const attempt of attempts.results as unknown as AttemptRow[]) {
    byDelivery.set(attempt.delivery_id, [...(byDelivery.get(attempt.delivery_id) ?? []), attempt]);
  }
  return (deliveries.results as unknown as DeliveryListRow[]).map((row) => ({
    id: row.id,
    object: 'webhook.delivery',
    event_id: row.event_id,
    event_type: row.event_type,
    endpoint_id: row.endpoint_id,
    job_id: row.job_id,
    replay: row.replay,
    status: row.status,
    next_attempt_at: row.status === 'pending' ? seconds(row.next_attempt_at) : null,
    last_status: row.last_status,
    last_error: row.last_error,
    created_at: seconds(row.created_at),
    finished_at: seconds(row.finished_at),
    attempts: (byDelivery.get(row.id) ?? []).map((a) => ({
      attempt: a.attempt,
      started_at: a.started_at / 1000,
      latency_ms: a.latency_ms,
      status_code: a.status_code,
      outcome: a.outcome,
      error: a.error,
      response_snippet: a.response_snippet,
    })),
  }));
}

/**
 * Replay: the events of jobs sent to this endpoint in [since, until) (of the
 * types it subscribes to), each as a new delivery with the same event id
 * (so a receiver that deduplicates on webhook-id sees a replay as the same
 * event). `onlyFailed` picks events whose last delivery failed. At most 1000.
 */
export async function replayEvents(env: Env, endpoint: EndpointRow, range: { since: number; until: number; onlyFailed: boolean }, now: number): Promise<number> {
  const { results } = await env.DB.prepare(
    `SELECT ev.id, ev.type, ev.job_id, (SELECT MAX(replay) FROM webhook_deliveries d WHERE d.event_id = ev.id AND d.endpoint_id = ?) AS last_replay,
            (SELECT status FROM webhook_deliveries d WHERE d.event_id = ev.id AND d.endpoint_id = ? ORDER BY replay DESC LIMIT 1) AS last_status
     FROM events ev JOIN jobs j ON j.id = ev.job_id
     WHERE ev.tenant_id = ? AND j.webhook_endpoint_id = ? AND ev.created_at >= ? AND ev.created_at < ?
     ORDER BY ev.created_at LIMIT 1000`,
  )
    .bind(endpoint.id, endpoint.id, endpoint.tenant_id, endpoint.id, range.since, range.until)
    .all<{ id: string; type: string; job_id: string; last_replay: number | null; last_status: string | null }>();
  const chosen = results.filter((e) => subscribes(endpoint, e.type) && (!range.onlyFailed || e.last_status === 'failed'));
  if (!chosen.length) return 0;
  const ids = chosen.map(() => newId('whd'));
  await env.DB.batch(
    chosen.map((event, i) =>
      env.DB.prepare(
        `INSERT OR IGNORE INTO webhook_deliveries (id, tenant_id, event_id, endpoint_id, job_id, replay, status, attempts, next_attempt_at, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?)`,
      ).bind(ids[i], endpoint.tenant_id, event.id, endpoint.id, event.job_id, (event.last_replay ?? -1) + 1, now, now, now),
    ),
  );
  await wakeSweeper(env);
  for (const id of ids) await enqueueDelivery(env, id, 1).catch((err) => console.error(`[webhooks] queueing replay ${id} failed; the sweeper will`, err));
  return chosen.length;
}
