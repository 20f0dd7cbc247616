import { newId } from '../background/messages';
import { DEFAULT_EVENT_TYPES } from './event-types';
import { openSealedColumns } from './secret-box';
import { newWebhookSecret } from './signing';
import { workerSecretBox } from './worker-secret-box';

export { DEFAULT_EVENT_TYPES, EVENT_TYPES, type EventType } from './event-types';

/**
 * Webhook endpoints in D1 (migrations/0002_jobs_and_webhooks.sql), always
 * within one tenant: every query names the tenant, so another tenant's
 * endpoint is simply not found. The secret is returned when an endpoint is
 * created or its secret rotated, never again.
 *
 * Secrets are sealed at rest (functions/webhooks/secret-box.ts): in D1,
 * `secret` and `previous_secret` hold "sbx1:…" values; every EndpointRow this
 * store hands out holds them in clear, and a row still in clear in D1 (or
 * sealed under a previous key) is re-sealed when it is read.
 */

export interface EndpointRow {
  id: string;
  tenant_id: string;
  url: string;
  description: string | null;
  event_types: string;
  inline: number;
  enabled: number;
  disabled_reason: string | null;
  disabled_at: number | null;
  failing_since: number | null;
  secret: string;
  previous_secret: string | null;
  previous_secret_expires_at: number | null;
  created_at: number;
  updated_at: number;
  deleted_at: number | null;
}

export const subscribes = (endpoint: Pick<EndpointRow, 'event_types'>, type: string) => (JSON.parse(endpoint.event_types) as string[]).includes(type);

const seconds = (ms: number | null) => (ms === null ? null : Math.floor(ms / 1000));

export function endpointJson(row: EndpointRow, now = Date.now()) {
  return {
    id: row.id,
    object: 'webhook_endpoint',
    url: row.url,
    description: row.description,
    event_types: JSON.parse(row.event_types) as string[],
    inline: !!row.inline,
    enabled: !!row.enabled,
    disabled_reason: row.disabled_reason,
    disabled_at: seconds(row.disabled_at),
    failing_since: seconds(row.failing_since),
    previous_secret_expires_at: row.previous_secret && (row.previous_secret_expires_at ?? 0) > now ? seconds(row.previous_secret_expires_at) : null,
    created_at: seconds(row.created_at),
    updated_at: seconds(row.updated_at),
  };
}

export interface NewEndpoint {
  url: string;
  description?: string | null;
  eventTypes?: readonly string[];
  inline?: boolean;
  /** A secret the caller brings (whsec_…); else a new one. */
  secret?: string;
}

export class EndpointStore {
  constructor(private readonly db: D1Database) {}

  /**
   * A new endpoint: its row (secret in clear), the secret as D1 stores it
   * (sealed), and its INSERT, for a batch (a job's inline endpoint is created with its job).
   */
  async insert(tenantId: string, spec: NewEndpoint, now: number): Promise<{ row: EndpointRow; sealedSecret: string; statement: D1PreparedStatement }> {
    const row: EndpointRow = {
      id: newId('whe'),
      tenant_id: tenantId,
      url: spec.url,
      description: spec.description ?? null,
      event_types: JSON.stringify(spec.eventTypes ?? DEFAULT_EVENT_TYPES),
      inline: spec.inline ? 1 : 0,
      enabled: 1,
      disabled_reason: null,
      disabled_at: null,
      failing_since: null,
      secret: spec.secret ?? newWebhookSecret(),
      previous_secret: null,
      previous_secret_expires_at: null,
      created_at: now,
      updated_at: now,
      deleted_at: null,
    };
    const sealedSecret = await (await workerSecretBox()).seal(row.secret, row.id);
    const statement = this.db
      .prepare('INSERT INTO webhook_endpoints (id, tenant_id, url, description, event_types, inline, enabled, secret, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?)')
      .bind(row.id, tenantId, row.url, row.description, row.event_types, row.inline, sealedSecret, now, now);
    return { row, sealedSecret, statement };
  }

  async create(tenantId: string, spec: NewEndpoint, now = Date.now()): Promise<EndpointRow> {
    const { row, statement } = await this.insert(tenantId, spec, now);
    await statement.run();
    return row;
  }

  async get(tenantId: string, id: string): Promise<EndpointRow | null> {
    return this.opened(await this.db.prepare('SELECT * FROM webhook_endpoints WHERE id = ? AND tenant_id = ? AND deleted_at IS NULL').bind(id, tenantId).first<EndpointRow>());
  }

  /** Any tenant's endpoint, deleted ones too: the sender's view (a delivery names its endpoint; the attempt decides what a deleted one means). */
  async byId(id: string): Promise<EndpointRow | null> {
    return this.opened(await this.db.prepare('SELECT * FROM webhook_endpoints WHERE id = ?').bind(id).first<EndpointRow>());
  }

  /** Registered (not inline) endpoints, newest first, after the cursor endpoint `after`. */
  async list(tenantId: string, limit: number, after?: string): Promise<{ rows: EndpointRow[]; hasMore: boolean }> {
    const cursor = after ? 'AND (created_at, id) < (SELECT created_at, id FROM webhook_endpoints WHERE id = ? AND tenant_id = ?)' : '';
    const { results } = await this.db
      .prepare(`SELECT * FROM webhook_endpoints WHERE tenant_id = ? AND inline = 0 AND deleted_at IS NULL ${cursor} ORDER BY created_at DESC, id DESC LIMIT ?`)
      .bind(...(after ? [tenantId, after, tenantId] : [tenantId]), limit + 1)
      .all<EndpointRow>();
    const rows = await Promise.all(results.slice(0, limit).map((row) => this.opened(row)));
    return { rows: rows as EndpointRow[], hasMore: results.length > limit };
  }

  /** Changes what `patch` names; enabling again clears the reason it was disabled and its failure streak. */
  async update(tenantId: string, id: string, patch: { url?: string; description?: string | null; eventTypes?: readonly string[]; enabled?: boolean }, now = Date.now()): Promise<EndpointRow | null> {
    const sets: string[] = ['updated_at = ?'];
    const values: unknown[] = [now];
    if (patch.url !== undefined) sets.push('url = ?') && values.push(patch.url);
    if (patch.description !== undefined) sets.push('description = ?') && values.push(patch.description);
    if (patch.eventTypes !== undefined) sets.push('event_types = ?') && values.push(JSON.stringify(patch.eventTypes));
    if (patch.enabled === true) sets.push('enabled = 1, disabled_reason = NULL, disabled_at = NULL, failing_since = NULL');
    if (patch.enabled === false) sets.push("enabled = 0, disabled_reason = 'user', disabled_at = ?") && values.push(now);
    const result = await this.db
      .prepare(`UPDATE webhook_endpoints SET ${sets.join(', ')} WHERE id = ? AND tenant_id = ? AND deleted_at IS NULL`)
      .bind(...values, id, tenantId)
      .run();
    return result.meta.changes ? this.get(tenantId, id) : null;
  }

  async delete(tenantId: string, id: string, now = Date.now()): Promise<boolean> {
    const result = await this.db.prepare('UPDATE webhook_endpoints SET deleted_at = ?, enabled = 0, updated_at = ? WHERE id = ? AND tenant_id = ? AND deleted_at IS NULL').bind(now, now, id, tenantId).run();
    return result.meta.changes > 0;
  }

  /** A new secret; the old one keeps signing (next to it) for `overlapMs`. */
  async rotate(tenantId: string, id: string, overlapMs: number, now = Date.now()): Promise<{ row: EndpointRow; secret: string } | null> {
    const secret = newWebhookSecret();
    // The current value moves to previous_secret as stored (sealed for this row, so it opens there too).
    const result = await this.db
      .prepare('UPDATE webhook_endpoints SET previous_secret = secret, previous_secret_expires_at = ?, secret = ?, updated_at = ? WHERE id = ? AND tenant_id = ? AND deleted_at IS NULL')
      .bind(now + overlapMs, await (await workerSecretBox()).seal(secret, id), now, id, tenantId)
      .run();
    if (!result.meta.changes) return null;
    return { row: (await this.get(tenantId, id))!, secret };
  }

  /** A row as read from D1, with its secrets opened (and re-sealed in D1 when they were clear or under a previous key). */
  private async opened(row: EndpointRow | null): Promise<EndpointRow | null> {
    if (!row) return null;
    return openSealedColumns(this.db, await workerSecretBox(), 'webhook_endpoints', row, ['secret', 'previous_secret']);
  }
}
