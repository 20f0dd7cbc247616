import { z } from 'zod';
import { hashApiKey, keyPrefix, newApiKey, newId, sha256Hex } from './api-key';

/**
 * Tenants and API keys in D1 (migrations/0001_tenants_and_api_keys.sql). A
 * tenant carries the limits every one of its keys shares; its id derives the
 * prefix-cache salt, so no tenant's requests can hit (or time) another's cache.
 */
export interface TenantLimits {
  requestsPerMinute: number | null;
  tokensPerMinute: number | null;
  tokensPerDay: number | null;
  maxTokens: number | null;
  maxDraftLength: number | null;
  maxDepth: number | null;
}

export interface Tenant {
  id: string;
  name: string;
  limits: TenantLimits;
}

/** The caller of a request, as the auth middleware resolved it from the API key. */
export interface Caller {
  tenant: Tenant;
  apiKeyId: string;
  /** Mixed into every prefix-cache block key, at the edge and at the origin. */
  cacheSalt: string;
}

export interface ApiKeyRecord {
  id: string;
  tenantId: string;
  name: string;
  prefix: string;
  createdAt: number;
  revokedAt: number | null;
}

/** Limits as the admin API and CLI speak them (snake_case, null = no limit). */
export const limitsSchema = z.strictObject({
  requests_per_minute: z.number().int().positive().nullable().optional(),
  tokens_per_minute: z.number().int().positive().nullable().optional(),
  tokens_per_day: z.number().int().positive().nullable().optional(),
  max_tokens: z.number().int().positive().nullable().optional(),
  max_draft_length: z.number().int().min(0).max(16).nullable().optional(),
  max_depth: z.number().int().min(1).max(8).nullable().optional(),
});
export type LimitsInput = z.infer<typeof limitsSchema>;

const COLUMNS = {
  requestsPerMinute: 'requests_per_minute',
  tokensPerMinute: 'tokens_per_minute',
  tokensPerDay: 'tokens_per_day',
  maxTokens: 'max_tokens',
  maxDraftLength: 'max_draft_length',
  maxDepth: 'max_depth',
} as const satisfies Record<keyof TenantLimits, string>;

type TenantRow = { id: string; name: string } & Record<(typeof COLUMNS)[keyof TenantLimits], number | null>;
type KeyRow = { id: string; tenant_id: string; name: string; key_prefix: string; created_at: number; revoked_at: number | null };

function tenantFromRow(row: TenantRow): Tenant {
  const limits = Object.fromEntries(Object.entries(COLUMNS).map(([field, column]) => [field, row[column] ?? null])) as unknown as TenantLimits;
  return { id: row.id, name: row.name, limits };
}

export function limitsToJson(limits: TenantLimits): Record<string, number | null> {
  return Object.fromEntries(Object.entries(COLUMNS).map(([field, column]) => [column, limits[field as keyof TenantLimits]]));
}

const keyFromRow = (row: KeyRow): ApiKeyRecord => ({ id: row.id, tenantId: row.tenant_id, name: row.name, prefix: row.key_prefix, createdAt: row.created_at, revokedAt: row.revoked_at });

export function cacheSaltFor(tenantId: string): Promise<string> {
  return sha256Hex(`edgespec prefix-cache salt\n${tenantId}`);
}

export class TenantStore {
  constructor(private readonly db: D1Database) {}

  /** The tenant of an active key, or null for an unknown or revoked key. */
  async findByKey(key: string): Promise<{ tenant: Tenant; apiKeyId: string } | null> {
    const row = await this.db
      .prepare(`SELECT t.*, k.id AS key_id FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.key_hash = ? AND k.revoked_at IS NULL`)
      .bind(await hashApiKey(key))
      .first<TenantRow & { key_id: string }>();
    return row ? { tenant: tenantFromRow(row), apiKeyId: row.key_id } : null;
  }

  async createTenant(name: string, limits: LimitsInput): Promise<Tenant> {
    const id = newId('ten');
    const columns = Object.values(COLUMNS);
    const values = columns.map((column) => limits[column] ?? null);
    await this.db
      .prepare(`INSERT INTO tenants (id, name, created_at, ${columns.join(', ')}) VALUES (?, ?, ?, ${columns.map(() => '?').join(', ')})`)
      .bind(id, name, Date.now(), ...values)
      .run();
    return (await this.tenant(id))!;
  }

  async tenant(idOrName: string): Promise<Tenant | null> {
    const row = await this.db.prepare('SELECT * FROM tenants WHERE id = ? OR name = ?').bind(idOrName, idOrName).first<TenantRow>();
    return row ? tenantFromRow(row) : null;
  }

  async tenants(): Promise<Tenant[]> {
    const { results } = await this.db.prepare('SELECT * FROM tenants ORDER BY created_at').all<TenantRow>();
    return results.map(tenantFromRow);
  }

  /** Changes only the limits named in `limits` (null clears one). */
  async setLimits(tenantId: string, limits: LimitsInput): Promise<Tenant | null> {
    const changed = Object.values(COLUMNS).filter((column) => limits[column] !== undefined);
    if (changed.length) {
      await this.db
        .prepare(`UPDATE tenants SET ${changed.map((column) => `${column} = ?`).join(', ')} WHERE id = ?`)
        .bind(...changed.map((column) => limits[column] ?? null), tenantId)
        .run();
    }
    return this.tenant(tenantId);
  }

  /** A new key for the tenant; the clear key is returned here and never again. */
  async createKey(tenantId: string, name: string): Promise<{ key: string; record: ApiKeyRecord }> {
    const key = newApiKey();
    const row: KeyRow = { id: newId('key'), tenant_id: tenantId, name, key_prefix: keyPrefix(key), created_at: Date.now(), revoked_at: null };
    await this.db
      .prepare('INSERT INTO api_keys (id, tenant_id, name, key_hash, key_prefix, created_at) VALUES (?, ?, ?, ?, ?, ?)')
      .bind(row.id, row.tenant_id, row.name, await hashApiKey(key), row.key_prefix, row.created_at)
      .run();
    return { key, record: keyFromRow(row) };
  }

  async keys(tenantId?: string): Promise<ApiKeyRecord[]> {
    const statement = tenantId
      ? this.db.prepare('SELECT * FROM api_keys WHERE tenant_id = ? ORDER BY created_at').bind(tenantId)
      : this.db.prepare('SELECT * FROM api_keys ORDER BY created_at');
    return (await statement.all<KeyRow>()).results.map(keyFromRow);
  }

  /** Revokes a key; false when no active key has this id. */
  async revokeKey(keyId: string): Promise<boolean> {
    const result = await this.db.prepare('UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL').bind(Date.now(), keyId).run();
    return result.meta.changes > 0;
  }
}
