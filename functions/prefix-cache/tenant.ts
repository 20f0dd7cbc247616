import type { GenerateEvent } from '../../shared/protocol';
import type { OriginClient } from '../upstream';

/*
 * Who the caller is, as far as caching goes: the tenant's cache salt
 * (functions/auth/tenants.ts, derived from the tenant id) is mixed into every
 * block key (shared/prefix-cache/block-hash.ts), at the edge and at the
 * origin, so one tenant's requests can never hit, or time, another's blocks.
 */

/**
 * The origin client as one tenant sees it: every call carries the tenant's
 * cache salt (the origin keys its target KV by it), and each call's
 * `cached_tokens` (target positions the origin did not recompute) is reported
 * to `onCached`, one entry per verify round or generate stream.
 */
export function tenantOrigin(origin: OriginClient, cacheSalt: string, onCached: (tokens: number) => void): OriginClient {
  return {
    health: () => origin.health(),
    async verify(request, signal) {
      const verdict = await origin.verify({ ...request, cache_salt: cacheSalt }, signal);
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
