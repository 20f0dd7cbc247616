import type { MetricsSnapshot } from '../../shared/metrics';
import type { Env } from '../env';
import { isolateMetrics } from './registry';

/**
 * Shipping the isolate's counts to the `Metrics` Durable Object. A busy
 * isolate must not call the object once per request, so the delta is sent at
 * most once per FLUSH_INTERVAL_MS: the first request that counts something
 * arms a timer (inside its own `waitUntil`, so its invocation lives until the
 * send is done: workerd runs no timers between requests, ARCHITECTURE.md:
 * Platform facts), and every request until it fires only adds to the delta.
 * A send that fails puts its delta back, to go with the next one.
 *
 * Without a METRICS binding nothing is ever sent and the isolate's registry
 * simply keeps its totals (what /metrics then shows).
 */
export const FLUSH_INTERVAL_MS = 1000;

/** When a timer was armed (null: none). A timer whose invocation was killed (a CPU limit) never fires: after STALE_MS another one is armed. */
let armedAt: number | null = null;
let lastSentAt = -Infinity;
const STALE_MS = 10 * FLUSH_INTERVAL_MS;

/** The one object every isolate reports to. */
function metricsObject(env: Env) {
  const namespace = env.METRICS!;
  return namespace.get(namespace.idFromName('global'));
}

export function flushSoon(env: Env, waitUntil: (promise: Promise<unknown>) => void): void {
  const now = Date.now();
  if (!env.METRICS || (armedAt !== null && now - armedAt < STALE_MS) || isolateMetrics.registry.isEmpty()) return;
  armedAt = now;
  const delayMs = Math.max(0, lastSentAt + FLUSH_INTERVAL_MS - now);
  waitUntil(
    new Promise((resolve) => setTimeout(resolve, delayMs)).then(async () => {
      // Disarmed before the send: what is counted while it is on the wire arms the next one.
      armedAt = null;
      const delta = takeDelta();
      if (!delta) return;
      lastSentAt = Date.now();
      try {
        await metricsObject(env).merge(delta);
      } catch (err) {
        isolateMetrics.registry.merge(delta);
        console.error('[metrics] flush to the Metrics object failed; kept for the next one', err);
      }
    }),
  );
}

/**
 * The deployment's totals for a scrape: this isolate's pending delta goes
 * with the request, so what this isolate counted is in the answer.
 */
export async function scrapeTotals(env: Env): Promise<MetricsSnapshot> {
  if (!env.METRICS) return isolateMetrics.registry.snapshot();
  const delta = takeDelta() ?? {};
  try {
    return await metricsObject(env).scrape(delta);
  } catch (err) {
    isolateMetrics.registry.merge(delta);
    throw err;
  }
}

function takeDelta(): MetricsSnapshot | null {
  if (isolateMetrics.registry.isEmpty()) return null;
  const delta = isolateMetrics.registry.snapshot();
  isolateMetrics.registry.reset();
  return delta;
}
