import { Hono } from 'hono';
import { z } from 'zod';
import { ApiError } from '../../shared/errors';
import { fullBlocks } from '../../shared/prefix-cache';
import { parseRequest, readJsonBody } from '../../shared/validation';
import type { EdgeEnv } from '../context';
import { draftPrefixCache } from '../prefix-cache';

/**
 * Test and benchmark hooks for the prefix cache, in the test Worker only
 * (functions/testing/entry.ts): look at, damage, shrink or expire the
 * PrefixCache object that holds a prompt's blocks for the caller's tenant,
 * through the same hashing and sharding the generation pipeline uses.
 */
export const prefixCacheRoutes = new Hono<EdgeEnv>();

const promptSchema = z.union([z.string(), z.array(z.number().int().nonnegative()).min(1)]);
const actionSchema = z.discriminatedUnion('action', [
  z.strictObject({ action: z.literal('inspect'), prompt: promptSchema }),
  z.strictObject({ action: z.enum(['corrupt', 'truncate', 'delete']), prompt: promptSchema, block: z.number().int().nonnegative() }),
  /** Delete blocks [from, end): a cache evicted halfway. */
  z.strictObject({ action: z.literal('evict-from'), prompt: promptSchema, from: z.number().int().nonnegative() }),
  z.strictObject({ action: z.literal('budget'), prompt: promptSchema, max_bytes: z.number().int().nonnegative().nullable() }),
  z.strictObject({ action: z.literal('expire'), prompt: promptSchema, older_than_ms: z.number().int().nonnegative() }),
]);

prefixCacheRoutes.post('/internal/prefix-cache', async (c) => {
  const request = parseRequest(actionSchema, await readJsonBody(c.req.raw));
  const { config, draftEngine: engine } = c.var;
  const cache = draftPrefixCache(c.env, config, engine, c.var.caller.cacheSalt);
  if (!cache) throw new ApiError(404, 'no PREFIX_CACHE binding');
  const tokens = typeof request.prompt === 'string' ? engine.tokenizer.encode(request.prompt) : request.prompt;
  const keys = await cache.keysFor(tokens);
  if (keys.length === 0) throw new ApiError(400, `the prompt has ${tokens.length} tokens: no full block of ${config.prefixCache.blockTokens}`);
  const object = cache.object(keys);
  const block = (i: number) => {
    if (i >= keys.length) throw new ApiError(400, `block ${i} out of range: the prompt has ${keys.length} full blocks`);
    return keys[i];
  };
  const base = { tokens: tokens.length, block_tokens: config.prefixCache.blockTokens, full_blocks: fullBlocks(tokens.length, config.prefixCache.blockTokens) };
  switch (request.action) {
    case 'inspect': {
      const stats = await object.inspect(keys);
      return c.json({ ...base, ...stats, present: stats.present.map((p) => p !== null), block_bytes: stats.present.map((p) => p?.bytes ?? 0), default_max_bytes: config.prefixCache.maxBytes });
    }
    case 'corrupt':
    case 'truncate':
    case 'delete':
      return c.json({ ...base, changed: await object.tamper(block(request.block), request.action) });
    case 'evict-from': {
      let deleted = 0;
      for (const key of keys.slice(request.from)) if (await object.tamper(key, 'delete')) deleted++;
      return c.json({ ...base, deleted });
    }
    case 'budget':
      return c.json({ ...base, evicted: await object.setBudget(request.max_bytes) });
    case 'expire':
      return c.json({ ...base, expired: await object.expireOlderThan(request.older_than_ms) });
  }
});
