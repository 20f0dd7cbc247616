import { Hono } from 'hono';
import { z } from 'zod';
import { ApiError } from '../../shared/errors';
import { parseRequest, readJsonBody } from '../../shared/validation';
import { limitsSchema, limitsToJson, TenantStore, type ApiKeyRecord, type Tenant } from '../auth/tenants';
import type { EdgeEnv } from '../context';

/**
 * The operator's API (ADMIN_SECRET bearer, functions/middleware/admin-auth.ts),
 * which `npm run keys` (scripts/keys.ts) drives, so nobody edits SQL by hand:
 *
 *   POST   /admin/tenants                 {name, limits?}       create a tenant
 *   GET    /admin/tenants                                       list tenants
 *   PATCH  /admin/tenants/:tenant         {limits}              change limits (null clears one)
 *   POST   /admin/keys                    {tenant, name?}       new key: the clear key is in this answer only
 *   GET    /admin/keys[?tenant=]                                list keys (ids and prefixes, never the keys)
 *   POST   /admin/keys/:id/revoke                               revoke (in effect within KEY_CACHE_MS)
 *
 * `:tenant` and `tenant` take a tenant's id or its name.
 */
export const admin = new Hono<EdgeEnv>();

const name = z.string().regex(/^[A-Za-z0-9._@-]{1,64}$/, 'letters, digits, ".", "_", "@" or "-" (1-64)');
const createTenantSchema = z.strictObject({ name, limits: limitsSchema.optional() });
const patchTenantSchema = z.strictObject({ limits: limitsSchema });
const createKeySchema = z.strictObject({ tenant: z.string().min(1), name: name.optional() });

const tenantJson = (tenant: Tenant) => ({ id: tenant.id, name: tenant.name, limits: limitsToJson(tenant.limits) });
const keyJson = (key: ApiKeyRecord) => ({
  id: key.id,
  tenant_id: key.tenantId,
  name: key.name,
  prefix: key.prefix,
  created_at: new Date(key.createdAt).toISOString(),
  revoked_at: key.revokedAt === null ? null : new Date(key.revokedAt).toISOString(),
});

async function tenantOr404(store: TenantStore, idOrName: string): Promise<Tenant> {
  const tenant = await store.tenant(idOrName);
  if (!tenant) throw new ApiError(404, `No tenant with id or name '${idOrName}'.`, 'tenant', 'tenant_not_found');
  return tenant;
}

admin.post('/admin/tenants', async (c) => {
  const store = new TenantStore(c.env.DB);
  const request = parseRequest(createTenantSchema, await readJsonBody(c.req.raw));
  if (await store.tenant(request.name)) throw new ApiError(400, `A tenant named '${request.name}' exists.`, 'name', 'tenant_exists');
  return c.json(tenantJson(await store.createTenant(request.name, request.limits ?? {})), 201);
});

admin.get('/admin/tenants', async (c) => c.json({ object: 'list', data: (await new TenantStore(c.env.DB).tenants()).map(tenantJson) }));

admin.patch('/admin/tenants/:tenant', async (c) => {
  const store = new TenantStore(c.env.DB);
  const request = parseRequest(patchTenantSchema, await readJsonBody(c.req.raw));
  const tenant = await tenantOr404(store, c.req.param('tenant'));
  return c.json(tenantJson((await store.setLimits(tenant.id, request.limits))!));
});

admin.post('/admin/keys', async (c) => {
  const store = new TenantStore(c.env.DB);
  const request = parseRequest(createKeySchema, await readJsonBody(c.req.raw));
  const tenant = await tenantOr404(store, request.tenant);
  const { key, record } = await store.createKey(tenant.id, request.name ?? 'default');
  return c.json({ ...keyJson(record), key, tenant: tenantJson(tenant) }, 201);
});

admin.get('/admin/keys', async (c) => {
  const store = new TenantStore(c.env.DB);
  const tenantParam = c.req.query('tenant');
  const tenantId = tenantParam ? (await tenantOr404(store, tenantParam)).id : undefined;
  return c.json({ object: 'list', data: (await store.keys(tenantId)).map(keyJson) });
});

admin.post('/admin/keys/:id/revoke', async (c) => {
  const revoked = await new TenantStore(c.env.DB).revokeKey(c.req.param('id'));
  if (!revoked) throw new ApiError(404, `No active key with id '${c.req.param('id')}'.`, 'id', 'key_not_found');
  return c.json({ id: c.req.param('id'), revoked: true });
});
