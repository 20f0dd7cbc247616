import { Hono } from 'hono';
import { PROMETHEUS_CONTENT_TYPE } from '../../shared/metrics';
import type { EdgeEnv } from '../context';
import { adminAuth } from '../middleware/admin-auth';
import { scrapeTotals } from './flush';
import { edgeMetrics } from './registry';

/**
 * GET /metrics: the deployment's totals (every isolate's, from the Metrics
 * Durable Object) in the Prometheus text format, for the operator only: the
 * admin secret as for /admin/* (off without one). Rendered through a fresh
 * set of definitions, so every edgespec_ metric shows its HELP and TYPE
 * lines before it first moves.
 */
export const metricsRoute = new Hono<EdgeEnv>();

metricsRoute.get('/metrics', adminAuth, async (c) => {
  const view = edgeMetrics();
  view.registry.merge(await scrapeTotals(c.env));
  return c.body(view.registry.render(), 200, { 'content-type': PROMETHEUS_CONTENT_TYPE, 'cache-control': 'no-store' });
});
