import { newId } from '../background/messages';
import { EndpointStore, type EndpointRow, type NewEndpoint } from '../webhooks/endpoints';
import { eventStatements, type EventRecord } from '../webhooks/events';
import type { JobRequest } from './request';
import { terminalEvent, type JobStatus, type TerminalStatus } from './state';

/**
 * Jobs in D1 (migrations/0002_jobs_and_webhooks.sql). Reads always name the
 * tenant (another tenant's job is a 404). Every transition is one
 * conditional UPDATE in a batch with the event it causes
 * (functions/webhooks/events.ts), guarded by a fresh `transition` token.
 */
export interface JobRow {
  id: string;
  tenant_id: string;
  api_key_id: string | null;
  status: JobStatus;
  request: string;
  metadata: string | null;
  webhook_endpoint_id: string | null;
  trigger_id: string | null;
  attempt: number;
  transition: string | null;
  run_after: number;
  lease_until: number | null;
  cancel_requested: number;
  charge: string | null;
  result_text: string | null;
  token_ids: string | null;
  finish_reason: string | null;
  usage: string | null;
  speculation: string | null;
  error: string | null;
  last_error: string | null;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  updated_at: number;
}

/** The columns of a job's endpoint that its JSON and events use. */
export type JobEndpoint = Pick<EndpointRow, 'id' | 'url' | 'inline' | 'event_types'>;

/** The open rate-limit reservation of a run, so a run that died is refunded when its job is taken over. */
export interface JobCharge {
  attempt: number;
  tokens: number;
  day: string;
  state: 'reserved' | 'settled';
}

const IDEMPOTENCY_WINDOW_MS = 24 * 3_600_000;
const seconds = (ms: number | null) => (ms === null ? null : Math.floor(ms / 1000));
const parse = <T>(text: string | null): T | null => (text === null ? null : (JSON.parse(text) as T));
const token = () => crypto.randomUUID();

export function jobJson(row: JobRow, endpoint?: Pick<EndpointRow, 'id' | 'url' | 'inline'> | null) {
  const request = JSON.parse(row.request) as { model?: string };
  const hasResult = row.result_text !== null;
  return {
    id: row.id,
    object: 'job' as const,
    status: row.status,
    model: request.model ?? null,
    created_at: seconds(row.created_at),
    started_at: seconds(row.started_at),
    finished_at: seconds(row.finished_at),
    attempts: row.attempt,
    cancel_requested: !!row.cancel_requested,
    metadata: parse<Record<string, string>>(row.metadata),
    webhook: row.webhook_endpoint_id ? { endpoint_id: row.webhook_endpoint_id, ...(endpoint ? { url: endpoint.url, inline: !!endpoint.inline } : {}) } : null,
    trigger_id: row.trigger_id,
    result: hasResult ? { text: row.result_text, finish_reason: row.finish_reason, ...(row.token_ids ? { token_ids: JSON.parse(row.token_ids) as number[] } : {}) } : null,
    usage: parse<Record<string, unknown>>(row.usage),
    speculation: parse<Record<string, unknown>>(row.speculation),
    error: parse<{ code: string; message: string }>(row.error),
  };
}

export type JobJson = ReturnType<typeof jobJson>;

export interface CreateJob {
  tenantId: string;
  apiKeyId: string | null;
  request: Pick<JobRequest, 'completionBody' | 'metadata'>;
  /** A registered endpoint, or an inline one to create with the job. */
  endpoint: { existing: EndpointRow } | { inline: NewEndpoint } | null;
  idempotency?: { key: string; hash: string } | null;
  /** An inbound trigger's delivery: the job exists once per (trigger, delivery id). */
  trigger?: { triggerId: string; deliveryId: string } | null;
  /** A job that fails at birth (a trigger whose template does not render). */
  failed?: { code: string; message: string } | null;
  now: number;
}

export type CreateResult =
  | { outcome: 'created'; job: JobRow; endpoint: EndpointRow | null; event: EventRecord | null }
  | { outcome: 'existing'; job: JobRow; sameRequest: boolean };

export class JobStore {
  constructor(private readonly db: D1Database) {}

  /**
   * One batch: the idempotency key (or trigger delivery) claims the new id
   * unless a live one holds the key (UNIQUE + ON CONFLICT … WHERE expired),
   * and the endpoint and job rows are inserted only if that claim took.
   */
  async create(spec: CreateJob): Promise<CreateResult> {
    const { db } = this;
    const { now, tenantId } = spec;
    const id = newId('job');
    const transition = token();
    const statements: D1PreparedStatement[] = [];
    let guard = 'WHERE 1';
    let guardArgs: unknown[] = [];
    let owner: D1PreparedStatement | null = null;
    if (spec.idempotency) {
      const { key, hash } = spec.idempotency;
      statements.push(
        db
          .prepare(
            `INSERT INTO idempotency_keys (tenant_id, key, request_hash, job_id, created_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (tenant_id, key) DO UPDATE SET request_hash = excluded.request_hash, job_id = excluded.job_id, created_at = excluded.created_at
             WHERE idempotency_keys.created_at <= ?`,
          )
          .bind(tenantId, key, hash, id, now, now - IDEMPOTENCY_WINDOW_MS),
      );
      guard = 'WHERE EXISTS (SELECT 1 FROM idempotency_keys WHERE tenant_id = ? AND key = ? AND job_id = ?)';
      guardArgs = [tenantId, key, id];
      owner = db.prepare('SELECT job_id, request_hash FROM idempotency_keys WHERE tenant_id = ? AND key = ?').bind(tenantId, key);
    } else if (spec.trigger) {
      const { triggerId, deliveryId } = spec.trigger;
      statements.push(db.prepare('INSERT OR IGNORE INTO trigger_deliveries (trigger_id, delivery_id, job_id, received_at) VALUES (?, ?, ?, ?)').bind(triggerId, deliveryId, id, now));
      guard = 'WHERE EXISTS (SELECT 1 FROM trigger_deliveries WHERE trigger_id = ? AND delivery_id = ? AND job_id = ?)';
      guardArgs = [triggerId, deliveryId, id];
      owner = db.prepare("SELECT job_id, '' AS request_hash FROM trigger_deliveries WHERE trigger_id = ? AND delivery_id = ?").bind(triggerId, deliveryId);
    }

    let endpoint: EndpointRow | null = null;
    if (spec.endpoint && 'inline' in spec.endpoint) {
      const inserted = await new EndpointStore(db).insert(tenantId, { ...spec.endpoint.inline, inline: true }, now);
      endpoint = inserted.row;
      statements.push(
        db
          .prepare(`INSERT INTO webhook_endpoints (id, tenant_id, url, description, event_types, inline, enabled, secret, created_at, updated_at) SELECT ?, ?, ?, ?, ?, 1, 1, ?, ?, ? ${guard}`)
          .bind(endpoint.id, tenantId, endpoint.url, endpoint.description, endpoint.event_types, inserted.sealedSecret, now, now, ...guardArgs),
      );
    } else if (spec.endpoint) endpoint = spec.endpoint.existing;

    const row: JobRow = {
      id,
      tenant_id: tenantId,
      api_key_id: spec.apiKeyId,
      status: spec.failed ? 'failed' : 'queued',
      request: JSON.stringify(spec.request.completionBody),
      metadata: spec.request.metadata ? JSON.stringify(spec.request.metadata) : null,
      webhook_endpoint_id: endpoint?.id ?? null,
      trigger_id: spec.trigger?.triggerId ?? null,
      attempt: 0,
      transition,
      run_after: now,
      lease_until: null,
      cancel_requested: 0,
      charge: null,
      result_text: null,
      token_ids: null,
      finish_reason: null,
      usage: null,
      speculation: null,
      error: spec.failed ? JSON.stringify(spec.failed) : null,
      last_error: null,
      created_at: now,
      started_at: null,
      finished_at: spec.failed ? now : null,
      updated_at: now,
    };
    statements.push(
      db
        .prepare(
          `INSERT INTO jobs (id, tenant_id, api_key_id, status, request, metadata, webhook_endpoint_id, trigger_id, attempt, transition, run_after, error, created_at, finished_at, updated_at)
           SELECT ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ? ${guard}`,
        )
        .bind(row.id, tenantId, row.api_key_id, row.status, row.request, row.metadata, row.webhook_endpoint_id, row.trigger_id, transition, now, row.error, now, row.finished_at, now, ...guardArgs),
    );
    const event = spec.failed ? eventStatements(db, { tenantId, jobId: id, type: 'job.failed', data: jobJson(row, endpoint), now }, endpoint, { transition }) : null;
    if (event) statements.push(...event.statements);
    if (owner) statements.push(owner);

    const results = await db.batch(statements);
    if (owner) {
      const holder = (results[results.length - 1].results as Array<{ job_id: string; request_hash: string }>)[0];
      if (holder.job_id !== id) {
        const existing = await this.byId(holder.job_id);
        if (!existing) throw new Error(`idempotency key names job ${holder.job_id}, which does not exist`);
        return { outcome: 'existing', job: existing, sameRequest: holder.request_hash === (spec.idempotency?.hash ?? '') };
      }
    }
    return { outcome: 'created', job: row, endpoint, event };
  }

  byId(id: string): Promise<JobRow | null> {
    return this.db.prepare('SELECT * FROM jobs WHERE id = ?').bind(id).first<JobRow>();
  }

  get(tenantId: string, id: string): Promise<JobRow | null> {
    return this.db.prepare('SELECT * FROM jobs WHERE id = ? AND tenant_id = ?').bind(id, tenantId).first<JobRow>();
  }

  /** The tenant's jobs, newest first, after the job `after` (OpenAI's cursor pagination). */
  async list(tenantId: string, limit: number, after?: string, status?: JobStatus): Promise<{ rows: JobRow[]; hasMore: boolean }> {
    const where = ['tenant_id = ?'];
    const args: unknown[] = [tenantId];
    if (after) where.push('(created_at, id) < (SELECT created_at, id FROM jobs WHERE id = ? AND tenant_id = ?)') && args.push(after, tenantId);
    if (status) where.push('status = ?') && args.push(status);
    const { results } = await this.db
      .prepare(`SELECT * FROM jobs WHERE ${where.join(' AND ')} ORDER BY created_at DESC, id DESC LIMIT ?`)
      .bind(...args, limit + 1)
      .all<JobRow>();
    return { rows: results.slice(0, limit), hasMore: results.length > limit };
  }

  /** What a job's JSON and its events need of its endpoint: never its secrets, so running a job never opens them. */
  endpointOf(job: Pick<JobRow, 'webhook_endpoint_id'>): Promise<JobEndpoint | null> {
    if (!job.webhook_endpoint_id) return Promise.resolve(null);
    return this.db.prepare('SELECT id, url, inline, event_types FROM webhook_endpoints WHERE id = ?').bind(job.webhook_endpoint_id).first<JobEndpoint>();
  }

  /**
   * Cancel: a queued job is cancelled at once (with its event); a running one
   * gets the flag its consumer reads between rounds. Returns the job as it is now.
   */
  async cancel(tenantId: string, id: string, now: number): Promise<{ job: JobRow; event: EventRecord | null } | null> {
    const job = await this.get(tenantId, id);
    if (!job) return null;
    if (job.status === 'queued') {
      const ended = await this.end(job, 'queued', 'cancelled', {}, now);
      if (ended) return ended;
    }
    await this.db.prepare("UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ? AND tenant_id = ? AND status IN ('queued', 'in_progress')").bind(now, id, tenantId).run();
    return { job: (await this.get(tenantId, id))!, event: null };
  }

  /**
   * A consumer's claim: queued and due, or in_progress with an expired lease
   * (its run died). Batched with `job.started` (once per job) when the
   * endpoint asks for it.
   */
  async claim(job: JobRow, now: number, leaseMs: number): Promise<{ job: JobRow; event: EventRecord | null } | null> {
    const transition = token();
    const claimed: JobRow = { ...job, status: 'in_progress', attempt: job.attempt + 1, lease_until: now + leaseMs, started_at: job.started_at ?? now, transition, updated_at: now };
    const endpoint = await this.endpointOf(job);
    const event = eventStatements(this.db, { tenantId: job.tenant_id, jobId: job.id, type: 'job.started', data: jobJson(claimed, endpoint), now }, endpoint, { transition });
    const [update] = await this.db.batch([
      this.db
        .prepare(
          `UPDATE jobs SET status = 'in_progress', attempt = attempt + 1, lease_until = ?, started_at = COALESCE(started_at, ?), transition = ?, updated_at = ?
           WHERE id = ? AND attempt = ? AND cancel_requested = 0 AND ((status = 'queued' AND run_after <= ?) OR (status = 'in_progress' AND lease_until <= ?))`,
        )
        .bind(now + leaseMs, now, transition, now, job.id, job.attempt, now + 1_000, now),
      ...event.statements,
    ]);
    return update.meta.changes ? { job: claimed, event } : null;
  }

  /** Between rounds: renew the lease of run `attempt`; null when the run lost its claim, else whether a cancel was asked. */
  async renew(jobId: string, attempt: number, now: number, leaseMs: number): Promise<{ cancelRequested: boolean } | null> {
    const row = await this.db
      .prepare("UPDATE jobs SET lease_until = ?, updated_at = ? WHERE id = ? AND status = 'in_progress' AND attempt = ? RETURNING cancel_requested")
      .bind(now + leaseMs, now, jobId, attempt)
      .first<{ cancel_requested: number }>();
    return row ? { cancelRequested: !!row.cancel_requested } : null;
  }

  async setCharge(jobId: string, attempt: number, charge: JobCharge | null): Promise<void> {
    await this.db.prepare("UPDATE jobs SET charge = ? WHERE id = ? AND status = 'in_progress' AND attempt = ?").bind(charge ? JSON.stringify(charge) : null, jobId, attempt).run();
  }

  /** Back to the queue after a transient failure or a rate limit: run again after `runAfter`. */
  async requeue(jobId: string, attempt: number, runAfter: number, lastError: { code: string; message: string }, now: number): Promise<boolean> {
    const result = await this.db
      .prepare("UPDATE jobs SET status = 'queued', lease_until = NULL, run_after = ?, last_error = ?, charge = NULL, transition = ?, updated_at = ? WHERE id = ? AND status = 'in_progress' AND attempt = ?")
      .bind(runAfter, JSON.stringify(lastError), token(), now, jobId, attempt)
      .run();
    return result.meta.changes > 0;
  }

  /**
   * The one terminal transition of a job, from `from` (with `attempt` for a
   * run), and its event, in one batch. Null when the job was no longer in
   * that state: someone else ended it, and nothing is written.
   */
  async end(
    job: JobRow,
    from: 'queued' | 'in_progress' | 'open',
    status: TerminalStatus,
    fields: Partial<Pick<JobRow, 'result_text' | 'token_ids' | 'finish_reason' | 'usage' | 'speculation' | 'error' | 'charge'>>,
    now: number,
    attempt?: number,
  ): Promise<{ job: JobRow; event: EventRecord } | null> {
    const transition = token();
    const ended: JobRow = { ...job, ...fields, status, transition, lease_until: null, finished_at: now, updated_at: now };
    const endpoint = await this.endpointOf(job);
    const event = eventStatements(this.db, { tenantId: job.tenant_id, jobId: job.id, type: terminalEvent(status), data: jobJson(ended, endpoint), now }, endpoint, { transition });
    const condition =
      from === 'in_progress'
        ? "status = 'in_progress' AND attempt = ?"
        : from === 'queued'
          ? "status = 'queued'"
          : "(status = 'queued' OR (status = 'in_progress' AND (lease_until IS NULL OR lease_until <= ?)))";
    const conditionArgs = from === 'in_progress' ? [attempt ?? job.attempt] : from === 'open' ? [now] : [];
    const [update] = await this.db.batch([
      this.db
        .prepare(
          `UPDATE jobs SET status = ?, result_text = ?, token_ids = ?, finish_reason = ?, usage = ?, speculation = ?, error = ?, charge = ?, transition = ?, lease_until = NULL, finished_at = ?, updated_at = ?
           WHERE id = ? AND ${condition}`,
        )
        .bind(status, ended.result_text, ended.token_ids, ended.finish_reason, ended.usage, ended.speculation, ended.error, ended.charge, transition, now, now, job.id, ...conditionArgs),
      ...event.statements,
    ]);
    return update.meta.changes ? { job: ended, event } : null;
  }
}
