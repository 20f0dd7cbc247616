import { Hono } from 'hono';
import { edgeConfig } from '../config';
import type { Env } from '../env';
import { originPool } from '../origin';

export const health = new Hono<{ Bindings: Env }>();

/**
 * Liveness of the edge itself; `?deep=1` also probes every origin (an active
 * health check that feeds the breakers) and reports the pool: each origin's
 * breaker state, latency and error rate as this isolate sees them. A load
 * balancer should not send deep probes on every check.
 */
health.get('/health', async (c) => {
  const config = edgeConfig(c.env);
  if (!c.req.query('deep')) return c.json({ status: 'ok', model: config.modelId });
  const pool = originPool(config);
  const probes = await Promise.all(pool.members.map((member) => pool.probe(member)));
  const healthy = probes.filter((p) => p !== null);
  const status = healthy.length === probes.length ? 'ok' : 'degraded';
  const origins = pool.status().map((member, i) => ({ ...member, health: probes[i] }));
  return c.json({ status, model: config.modelId, origin: healthy[0] ?? null, origins }, healthy.length ? 200 : 503);
});
