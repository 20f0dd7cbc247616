import type { Context } from 'hono';
import type { GenerateEvent } from '../../shared/protocol';
import { edgeConfig } from '../config';
import type { Env } from '../env';
import type { OriginClient } from '../origin';

/**
 * Who the caller is, as far as caching goes. The cache salt is mixed into
 * every block key (shared/prefix-cache/block-hash.ts), at the edge and at the
 * origin, so one tenant's requests can never hit, or time, another's blocks.
 *
 * Today the deployment is one tenant: the salt is PREFIX_CACHE_SALT. The auth
 * layer only has to resolve the API key's tenant and `c.set('cacheSalt', …)`
 * in a middleware before the routes; nothing here changes.
 */
export interface TenantVariables {
  cacheSalt?: string;
}

export type TenantContext = Context<{ Bindings: Env; Variables: TenantVariables }>;

export function tenantCacheSalt(c: TenantContext): string {
  return c.var.cacheSalt ?? edgeConfig(c.env).prefixCache.cacheSalt;
}

/**
 * The origin client as one tenant sees it: every call carries the tenant's
 * cache salt (the origin keys its target KV by it), and each call's
 * `cached_tokens` (target positions the origin did not recompute) is reported
 * to `onCached`, one entry per verify round or generate stream.
 */
export function tenantOrigin(origin: OriginClient, cacheSalt: string, onCached: (tokens: number) => void): OriginClient {
  return {
    health: () => origin.health(),
    async verify(request) {
      const verdict = await origin.verify({ ...request, cache_salt: cacheSalt });
      onCached(verdict.origin.cached_tokens);
      return verdict;
    },
    async *generate(request, signal): AsyncGenerator<GenerateEvent> {
      for await (const event of origin.generate({ ...request, cache_salt: cacheSalt }, signal)) {
        if (event.type === 'done') onCached(event.origin.cached_tokens);
        yield event;
      }
    },
  };
}
