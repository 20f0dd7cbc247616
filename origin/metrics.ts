import type { MiddlewareHandler } from 'hono';
import { bearerToken, secretsEqual } from '../shared/bearer';
import { ApiError } from '../shared/errors';
import { Registry } from '../shared/metrics';
import type { KeyRing } from '../shared/origin-auth';
import type { ForwardQueue } from './queue';
import type { HoldStats } from './cost-model';

/**
 * The reference origin's own metrics (GET /metrics, Prometheus text format),
 * one registry per app, from the same module as the edge's (shared/metrics.ts).
 */
const MS_BUCKETS = [1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000];
/** Sequences per forward pass: up to the queue's max batch (origin/queue.ts, `--max-batch`). */
const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64];
/** New tokens per forward pass, all rows together (the cost model's compute term grows with it). */
const TOKEN_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];
const ENDPOINTS = new Set(['verify', 'generate', 'health', 'metrics']);

export function originMetrics() {
  const registry = new Registry();
  return {
    registry,
    requests: registry.counter('edgespec_origin_requests_total', 'HTTP requests answered, by endpoint and status.', ['endpoint', 'status']),
    queueDepth: registry.gauge('edgespec_origin_queue_depth', 'Forward passes waiting for a slot.'),
    queueRunning: registry.gauge('edgespec_origin_queue_running', 'Forward passes running.'),
    batchSize: registry.histogram('edgespec_origin_batch_size', 'Sequences per target forward pass.', BATCH_BUCKETS),
    batchTokens: registry.histogram('edgespec_origin_batch_tokens', 'New tokens per target forward pass, all its sequences together.', TOKEN_BUCKETS),
    modelledMs: registry.gauge('edgespec_origin_modelled_forward_ms', 'With a GPU cost model: the modelled durations of every forward pass so far, summed, ms.'),
    modelledPasses: registry.gauge('edgespec_origin_modelled_passes', 'With a GPU cost model: forward passes held to it so far.'),
    modelledOverruns: registry.gauge('edgespec_origin_modelled_overruns', 'With a GPU cost model: passes that took longer on this machine than modelled (not shortened).'),
    forwardMs: registry.histogram('edgespec_origin_forward_ms', 'Target forward pass time, ms.', MS_BUCKETS, ['endpoint']),
    tokensVerified: registry.counter('edgespec_origin_tokens_verified_total', 'Draft tokens judged by /v1/verify.'),
    tokensGenerated: registry.counter('edgespec_origin_tokens_generated_total', 'Tokens the target produced: accepted plus its own per verify round, or decoded by /v1/generate.', ['endpoint']),
    sessions: registry.gauge('edgespec_origin_sessions', 'WebSocket sessions open on /v1/session (their rounds count as verify).'),
  };
}

export type OriginMetrics = ReturnType<typeof originMetrics>;

/** Counts every response by endpoint (a fixed set; anything else is "other") and status. */
export function observeOriginRequests(metrics: OriginMetrics): MiddlewareHandler {
  return async (c, next) => {
    await next();
    const name = c.req.path.replace(/^\/(v1\/)?/, '');
    metrics.requests.inc({ endpoint: ENDPOINTS.has(name) ? name : 'other', status: String(c.res.status) });
  };
}

/** The queue's state at scrape time. */
export function readQueue(metrics: OriginMetrics, queue: ForwardQueue, held?: HoldStats | null): void {
  const stats = queue.stats();
  metrics.queueDepth.set({}, stats.waiting);
  metrics.queueRunning.set({}, stats.running);
  if (held) {
    metrics.modelledMs.set({}, held.modelledMs);
    metrics.modelledPasses.set({}, held.passes);
    metrics.modelledOverruns.set({}, held.overruns);
  }
}

/**
 * Who may read /metrics. With a key ring (ORIGIN_SECRET / ORIGIN_SECRETS) it
 * takes one of the ring's secrets as a bearer token, the way the edge's
 * /metrics takes ADMIN_SECRET: a scraper holds the origin's secret anyway in
 * any deployment where the operator runs both. Without a ring it is open,
 * like verify and generate then: origin/main.ts serves an unauthenticated
 * origin on loopback only, unless told otherwise (--allow-unauthenticated).
 */
export function metricsAuth(keys: KeyRing): MiddlewareHandler {
  return async (c, next) => {
    if (keys.size > 0) {
      const token = bearerToken(c.req.header('authorization'));
      const matches = token ? await Promise.all([...keys.values()].map((secret) => secretsEqual(token, secret))) : [];
      if (!matches.includes(true)) throw new ApiError(401, 'This origin is signed: /metrics needs "Authorization: Bearer <ORIGIN_SECRET>" (any key of its ring).', null, 'metrics_auth_required');
    }
    await next();
  };
}
