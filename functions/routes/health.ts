import { Hono } from 'hono';
import { edgeConfig } from '../config';
import type { Env } from '../env';

export const health = new Hono<{ Bindings: Env }>();

/** Liveness of the edge itself; `?deep=1` also asks the origin, which a load balancer should not do on every probe. */
health.get('/health', async (c) => {
  const config = edgeConfig(c.env);
  if (!c.req.query('deep')) return c.json({ status: 'ok', model: config.modelId });
  try {
    const response = await fetch(`${config.originUrl}/health`, { signal: AbortSignal.timeout(2000) });
    return c.json({ status: response.ok ? 'ok' : 'degraded', model: config.modelId, origin: response.ok ? await response.json() : null }, response.ok ? 200 : 503);
  } catch (err) {
    return c.json({ status: 'degraded', model: config.modelId, origin: null, error: (err as Error).message }, 503);
  }
});
