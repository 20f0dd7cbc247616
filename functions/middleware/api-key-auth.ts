import type { MiddlewareHandler } from 'hono';
import { ApiError } from '../../shared/errors';
import { bearerToken } from '../../shared/bearer';
import { cacheSaltFor, TenantStore, type Caller } from '../auth/tenants';
import type { EdgeEnv } from '../context';

/**
 * `Authorization: Bearer <key>` (OpenAI's convention; the openai SDK sends it)
 * → `c.var.caller`: the key's tenant, its limits and its cache salt.
 *
 * Lookups are cached per isolate for KEY_CACHE_MS, so a hot key costs no D1
 * read per request and a revoked key stops working within that time. Unknown
 * keys are cached too: a caller spraying guesses costs one D1 read per guess
 * per isolate at most, and never learns more than "invalid".
 */
export const KEY_CACHE_MS = 5_000;
const MAX_CACHED_KEYS = 10_000;
const cache = new Map<string, { caller: Caller | null; until: number }>();

const HOW_TO_GET_A_KEY =
  'Send "Authorization: Bearer <API key>". Locally, `npm start` prints a working key; an operator creates keys with `npm run keys -- create --tenant <name>`.';

export const apiKeyAuth: MiddlewareHandler<EdgeEnv> = async (c, next) => {
  const key = bearerToken(c.req.header('authorization'));
  if (!key) throw new ApiError(401, `Missing API key. ${HOW_TO_GET_A_KEY}`, null, 'missing_api_key');
  const caller = await lookup(c.env.DB, key);
  if (!caller) throw new ApiError(401, `Incorrect or revoked API key. ${HOW_TO_GET_A_KEY}`, null, 'invalid_api_key');
  c.set('caller', caller);
  await next();
};

async function lookup(db: D1Database, key: string): Promise<Caller | null> {
  const now = Date.now();
  const hit = cache.get(key);
  if (hit && hit.until > now) return hit.caller;
  const found = await new TenantStore(db).findByKey(key);
  const caller = found ? { ...found, cacheSalt: await cacheSaltFor(found.tenant.id) } : null;
  if (cache.size >= MAX_CACHED_KEYS) cache.clear();
  cache.set(key, { caller, until: now + KEY_CACHE_MS });
  return caller;
}
