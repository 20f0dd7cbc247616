import { Hono } from 'hono';
import { z } from 'zod';
import { ApiError } from '../../shared/errors';
import { parseRequest, readJsonBody } from '../../shared/validation';
import type { EdgeEnv } from '../context';

/**
 * Benchmark route, in the test Worker only (functions/testing/entry.ts): runs
 * the draft model for `steps` decode steps after a `context`-token prefill and
 * returns the decode time measured inside the isolate. Local workerd
 * (wrangler dev) advances performance.now() during computation, at 1 ms
 * resolution; deployed Workers freeze it between I/O events (a Spectre
 * mitigation), so there only an outside timing works.
 */
export const benchRoutes = new Hono<EdgeEnv>();

const draftBenchSchema = z.strictObject({
  context: z.number().int().min(1).max(4096),
  steps: z.number().int().min(0).max(1024),
});

benchRoutes.post('/internal/bench/draft', async (c) => {
  const { context, steps } = parseRequest(draftBenchSchema, await readJsonBody(c.req.raw));
  const { lm, config } = c.var.draftEngine;
  if (context + steps > config.maxPositions) throw new ApiError(413, `context + steps exceeds the draft context of ${config.maxPositions}`);
  const prompt = Array.from({ length: context }, (_, i) => (i * 31 + 7) % config.vocabSize);
  let result = await lm.forward(prompt, lm.emptyCache());
  const started = performance.now();
  for (let i = 0; i < steps; i++) result = await lm.forward([(i * 13 + 5) % config.vocabSize], result.cache);
  return c.json({ context, steps, cache_length: result.cache.length, decode_ms: performance.now() - started });
});
