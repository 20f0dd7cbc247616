import { newId } from '../background/messages';
import type { TriggerScheme } from './verify';

/**
 * Triggers in D1, per tenant. The secret is the one the sender signs with
 * (GitHub's webhook secret, Stripe's endpoint signing secret, Slack's signing
 * secret, a Standard Webhooks whsec_ key): it is shown when the trigger is
 * created, never again.
 */
export interface TriggerRow {
  id: string;
  tenant_id: string;
  name: string | null;
  scheme: TriggerScheme;
  secret: string;
  template: string;
  params: string;
  webhook_endpoint_id: string;
  created_at: number;
  deleted_at: number | null;
}

export function triggerJson(row: TriggerRow, baseUrl: string) {
  return {
    id: row.id,
    object: 'trigger',
    name: row.name,
    scheme: row.scheme,
    url: `${baseUrl}/v1/triggers/${row.id}/events`,
    template: row.template,
    params: JSON.parse(row.params) as Record<string, unknown>,
    webhook_endpoint_id: row.webhook_endpoint_id,
    created_at: Math.floor(row.created_at / 1000),
  };
}

export class TriggerStore {
  constructor(private readonly db: D1Database) {}

  async create(tenantId: string, spec: Omit<TriggerRow, 'id' | 'tenant_id' | 'created_at' | 'deleted_at'>, now = Date.now()): Promise<TriggerRow> {
    const row: TriggerRow = { id: newId('trg'), tenant_id: tenantId, created_at: now, deleted_at: null, ...spec };
    await this.db
      .prepare('INSERT INTO triggers (id, tenant_id, name, scheme, secret, template, params, webhook_endpoint_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)')
      .bind(row.id, tenantId, row.name, row.scheme, row.secret, row.template, row.params, row.webhook_endpoint_id, now)
      .run();
    return row;
  }

  /** Any tenant's live trigger: the inbound route knows only the id, and the signature decides. */
  byId(id: string): Promise<TriggerRow | null> {
    return this.db.prepare('SELECT * FROM triggers WHERE id = ? AND deleted_at IS NULL').bind(id).first<TriggerRow>();
  }

  get(tenantId: string, id: string): Promise<TriggerRow | null> {
    return this.db.prepare('SELECT * FROM triggers WHERE id = ? AND tenant_id = ? AND deleted_at IS NULL').bind(id, tenantId).first<TriggerRow>();
  }

  async list(tenantId: string, limit: number, after?: string): Promise<{ rows: TriggerRow[]; hasMore: boolean }> {
    const cursor = after ? 'AND (created_at, id) < (SELECT created_at, id FROM triggers WHERE id = ? AND tenant_id = ?)' : '';
    const { results } = await this.db
      .prepare(`SELECT * FROM triggers WHERE tenant_id = ? AND deleted_at IS NULL ${cursor} ORDER BY created_at DESC, id DESC LIMIT ?`)
      .bind(...(after ? [tenantId, after, tenantId] : [tenantId]), limit + 1)
      .all<TriggerRow>();
    return { rows: results.slice(0, limit), hasMore: results.length > limit };
  }

  async delete(tenantId: string, id: string, now = Date.now()): Promise<boolean> {
    const result = await this.db.prepare('UPDATE triggers SET deleted_at = ? WHERE id = ? AND tenant_id = ? AND deleted_at IS NULL').bind(now, id, tenantId).run();
    return result.meta.changes > 0;
  }
}
