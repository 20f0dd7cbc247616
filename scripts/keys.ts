import { parseArgs } from 'node:util';
import { readLocalCredentials } from './local-credentials';

/**
 * `npm run keys -- <command>`: the operator's CLI over the edge's admin API
 * (functions/routes/admin.ts), so nobody edits SQL by hand.
 *
 *   create  --tenant NAME [--name KEY_NAME] [limits]   new key (creates the tenant if needed); prints the key once
 *   list    [--tenant NAME]                             keys (ids and prefixes) and tenants with their limits
 *   revoke  KEY_ID                                      revoke a key (in effect within seconds)
 *   limits  --tenant NAME [limits]                      show or change a tenant's limits
 *
 * limits: --rpm N --tpm N --tpd N --max-tokens N --max-draft-length N --max-depth N ("none" clears one)
 *
 * Talks to EDGESPEC_URL (default http://127.0.0.1:8787, the local `npm start`)
 * with ADMIN_SECRET from the environment, or the local stack's saved secret.
 */
const LIMIT_FLAGS = {
  rpm: 'requests_per_minute',
  tpm: 'tokens_per_minute',
  tpd: 'tokens_per_day',
  'max-tokens': 'max_tokens',
  'max-draft-length': 'max_draft_length',
  'max-depth': 'max_depth',
} as const;

const usage = `usage: npm run keys -- create --tenant NAME [--name KEY_NAME] [--rpm N --tpm N --tpd N --max-tokens N --max-draft-length N --max-depth N]
       npm run keys -- list [--tenant NAME]
       npm run keys -- revoke KEY_ID
       npm run keys -- limits --tenant NAME [--rpm N ...]     ("none" clears a limit)
env:   EDGESPEC_URL (default http://127.0.0.1:8787), ADMIN_SECRET (default: the local stack's, from npm start)`;

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    tenant: { type: 'string' },
    name: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
    ...Object.fromEntries(Object.keys(LIMIT_FLAGS).map((flag) => [flag, { type: 'string' as const }])),
  },
});

const [command, ...rest] = positionals;
if (values.help || !command) exit(values.help ? 0 : 2, usage);

const baseUrl = (process.env.EDGESPEC_URL ?? 'http://127.0.0.1:8787').replace(/\/+$/, '');
const adminSecret = process.env.ADMIN_SECRET || readLocalCredentials()?.adminSecret;
if (!adminSecret) exit(2, 'no admin secret: set ADMIN_SECRET (the value of the edge\'s ADMIN_SECRET secret), or run `npm start` once for the local stack');

async function call(method: string, path: string, body?: unknown): Promise<any> {
  let response: Response;
  try {
    response = await fetch(baseUrl + path, {
      method,
      headers: { authorization: `Bearer ${adminSecret}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(15_000),
    });
  } catch (err) {
    return exit(1, `cannot reach ${baseUrl} (${(err as Error).message}); is the edge running (npm start), or is EDGESPEC_URL right?`);
  }
  const json = (await response.json().catch(() => null)) as any;
  if (!response.ok) exit(1, `${method} ${path}: ${response.status} ${json?.error?.message ?? JSON.stringify(json)}`);
  return json;
}

function limitsFromFlags(): Record<string, number | null> {
  const limits: Record<string, number | null> = {};
  for (const [flag, field] of Object.entries(LIMIT_FLAGS)) {
    const raw = (values as Record<string, string | undefined>)[flag];
    if (raw === undefined) continue;
    if (raw === 'none') limits[field] = null;
    else if (/^\d+$/.test(raw)) limits[field] = Number(raw);
    else exit(2, `--${flag} takes a whole number or "none", got "${raw}"`);
  }
  return limits;
}

const formatLimits = (limits: Record<string, number | null>) =>
  Object.entries(limits)
    .map(([field, value]) => `${field}=${value ?? 'none'}`)
    .join(' ');

async function findTenant(name: string): Promise<{ id: string; name: string; limits: Record<string, number | null> } | undefined> {
  const tenants = await call('GET', '/admin/tenants');
  return tenants.data.find((t: { id: string; name: string }) => t.name === name || t.id === name);
}

switch (command) {
  case 'create': {
    if (!values.tenant) exit(2, `create needs --tenant NAME\n${usage}`);
    const limits = limitsFromFlags();
    let tenant = await findTenant(values.tenant!);
    if (!tenant) {
      tenant = await call('POST', '/admin/tenants', { name: values.tenant, limits });
      console.error(`created tenant ${tenant!.name} (${tenant!.id}): ${formatLimits(tenant!.limits)}`);
    } else if (Object.keys(limits).length) {
      tenant = await call('PATCH', `/admin/tenants/${tenant.id}`, { limits });
      console.error(`tenant ${tenant!.name} limits: ${formatLimits(tenant!.limits)}`);
    }
    const key = await call('POST', '/admin/keys', { tenant: tenant!.id, name: values.name ?? 'default' });
    console.error(`created key ${key.id} for tenant ${tenant!.name}; it is shown only now:`);
    console.log(key.key);
    break;
  }
  case 'list': {
    const tenants = (await call('GET', '/admin/tenants')).data as Array<{ id: string; name: string; limits: Record<string, number | null> }>;
    const shown = values.tenant ? tenants.filter((t) => t.name === values.tenant || t.id === values.tenant) : tenants;
    if (values.tenant && !shown.length) exit(1, `no tenant "${values.tenant}"`);
    const keys = (await call('GET', `/admin/keys${values.tenant ? `?tenant=${encodeURIComponent(shown[0].id)}` : ''}`)).data as any[];
    for (const tenant of shown) {
      console.log(`${tenant.name} (${tenant.id}) ${formatLimits(tenant.limits)}`);
      for (const key of keys.filter((k) => k.tenant_id === tenant.id)) {
        console.log(`  ${key.id}  ${key.prefix}…  ${key.name}  created ${key.created_at}${key.revoked_at ? `  REVOKED ${key.revoked_at}` : ''}`);
      }
    }
    break;
  }
  case 'revoke': {
    if (!rest[0]) exit(2, `revoke needs a key id (key_…), see \`npm run keys -- list\`\n${usage}`);
    await call('POST', `/admin/keys/${encodeURIComponent(rest[0])}/revoke`);
    console.log(`revoked ${rest[0]} (every edge isolate refuses it within a few seconds)`);
    break;
  }
  case 'limits': {
    if (!values.tenant) exit(2, `limits needs --tenant NAME\n${usage}`);
    const tenant = await findTenant(values.tenant!);
    if (!tenant) exit(1, `no tenant "${values.tenant}"`);
    const limits = limitsFromFlags();
    const updated = Object.keys(limits).length ? await call('PATCH', `/admin/tenants/${tenant!.id}`, { limits }) : tenant;
    console.log(`${updated.name} (${updated.id}) ${formatLimits(updated.limits)}`);
    break;
  }
  default:
    exit(2, `unknown command "${command}"\n${usage}`);
}

function exit(code: number, message: string): never {
  (code === 0 ? console.log : console.error)(message);
  process.exit(code);
}
