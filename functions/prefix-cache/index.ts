import type { DraftEngine } from '../draft/engine';
import type { EdgeConfig } from '../config';
import type { Env } from '../env';
import { DraftPrefixCache } from './client';

export { DraftPrefixCache, type DraftPrefix, type RestoredPrefix } from './client';
export { PrefixCache } from './durable-object';
export { tenantOrigin } from './tenant';

/** The draft prefix cache for one request, or null when the PREFIX_CACHE binding is absent. */
export function draftPrefixCache(env: Env, config: EdgeConfig, engine: DraftEngine, cacheSalt: string): DraftPrefixCache | null {
  if (!env.PREFIX_CACHE) return null;
  const { numLayers, numKvHeads, headDim } = engine.config;
  return new DraftPrefixCache(env.PREFIX_CACHE, { id: engine.fingerprint, numLayers, numKvHeads, headDim }, cacheSalt, config.prefixCache);
}
