import { Hono } from 'hono';
import type { EdgeEnv } from '../context';
import { adminAuth } from '../middleware/admin-auth';
import { originPool } from '../upstream';

export const health = new Hono<EdgeEnv>();

/**
 * Liveness of the edge itself, for load balancers: says nothing about the
 * origins. `?deep=1` (admin secret required: it names every origin, its URL
 * and last error) also probes every origin (an active health check that feeds
 * the breakers) and reports each one's breaker state, latency and error rate
 * as this isolate sees them.
 */
health.get('/health', async (c, next) => {
  if (!c.req.query('deep')) return c.json({ status: 'ok', model: c.var.config.modelId });
  return adminAuth(c, next);
});

health.get('/health', async (c) => {
  const config = c.var.config;
  const pool = originPool(config);
  const probes = await Promise.all(pool.members.map((member) => pool.probe(member)));
  const healthy = probes.filter((p) => p !== null);
  const status = healthy.length === probes.length ? 'ok' : 'degraded';
  const origins = pool.status().map((member, i) => ({ ...member, health: probes[i] }));
  return c.json({ status, model: config.modelId, origin: healthy[0] ?? null, origins }, healthy.length ? 200 : 503);
});
