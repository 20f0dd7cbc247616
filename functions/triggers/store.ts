import { newId } from '../background/messages';
import { openSealedColumns } from '../webhooks/secret-box';
import { workerSecretBox } from '../webhooks/worker-secret-box';
import type { TriggerScheme } from './verify';

/**
 * Triggers in D1, per tenant. The secret is the one the sender signs with
 * (GitHub's webhook secret, Stripe's endpoint signing secret, Slack's signing
 * secret, a Standard Webhooks whsec_ key): it is shown when the trigger is
 * created, never again. D1 holds it sealed, as webhook endpoints' secrets
 * (functions/webhooks/secret-box.ts); every TriggerRow this store hands out
 * holds it in clear, and a row still in clear in D1 is re-sealed when read.
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
    const sealedSecret = await (await workerSecretBox()).seal(row.secret, row.id);
    await this.db
      .prepare('INSERT INTO triggers (id, tenant_id, name, scheme, secret, template, params, webhook_endpoint_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)')
      .bind(row.id, tenantId, row.name, row.scheme, sealedSecret, row.template, row.params, row.webhook_endpoint_id, now)
      .run();
    return row;
  }

  /** Any tenant's live trigger: the inbound route knows only the id, and the signature decides. */
  async byId(id: string): Promise<TriggerRow | null> {
    return this.opened(await this.db.prepare('SELECT * FROM triggers WHERE id = ? AND deleted_at IS NULL').bind(id).first<TriggerRow>());
  }

  async get(tenantId: string, id: string): Promise<TriggerRow | null> {
    return this.opened(await this.db.prepare('SELECT * FROM triggers WHERE id = ? AND tenant_id = ? AND deleted_at IS NULL').bind(id, tenantId).first<TriggerRow>());
  }

  async list(tenantId: string, limit: number, after?: string): Promise<{ rows: TriggerRow[]; hasMore: boolean }> {
    const cursor = after ? 'AND (created_at, id) < (SELECT created_at, id FROM triggers WHERE id = ? AND tenant_id = ?)' : '';
    const { results } = await this.db
      .prepare(`SELECT * FROM triggers WHERE tenant_id = ? AND deleted_at IS NULL ${cursor} ORDER BY created_at DESC, id DESC LIMIT ?`)
      .bind(...(after ? [tenantId, after, tenantId] : [tenantId]), limit + 1)
      .all<TriggerRow>();
    const rows = await Promise.all(results.slice(0, limit).map((row) => this.opened(row)));
    return { rows: rows as TriggerRow[], hasMore: results.length > limit };
  }

  async delete(tenantId: string, id: string, now = Date.now()): Promise<boolean> {
    const result = await this.db.prepare('UPDATE triggers SET deleted_at = ? WHERE id = ? AND tenant_id = ? AND deleted_at IS NULL').bind(now, id, tenantId).run();
    return result.meta.changes > 0;
  }

  /** A row as read from D1, with its secret opened (and re-sealed in D1 when it was clear or under a previous key). */
  private async opened(row: TriggerRow | null): Promise<TriggerRow | null> {
    if (!row) return null;
    return openSealedColumns(this.db, await workerSecretBox(), 'triggers', row, ['secret']);
  }
}
