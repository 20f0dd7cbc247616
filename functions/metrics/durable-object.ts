import { DurableObject } from 'cloudflare:workers';
import { Registry, type MetricsSnapshot } from '../../shared/metrics';
import type { Env } from '../env';

/**
 * Metrics: one object for the whole deployment (named "global") adding up
 * the deltas every isolate sends (functions/metrics/flush.ts, at most one
 * call per isolate per second), so a scrape of any isolate sees every
 * isolate's counts. A Durable Object runs one call at a time, so merges never
 * interleave; the totals are written to its SQLite storage after each one, so
 * eviction or a restart forgets nothing (counters only ever reset when a
 * metric's definition changes, which Prometheus reads as a counter reset).
 */
export class Metrics extends DurableObject<Env> {
  private totals: Registry | null = null;

  private load(): Registry {
    if (!this.totals) {
      this.totals = new Registry();
      const saved = this.ctx.storage.kv.get<MetricsSnapshot>('totals');
      if (saved) this.totals.merge(saved);
    }
    return this.totals;
  }

  async merge(delta: MetricsSnapshot): Promise<void> {
    const totals = this.load();
    totals.merge(delta);
    this.ctx.storage.kv.put('totals', totals.snapshot());
  }

  /** The scraping isolate's own pending delta in, the deployment's totals out: a scrape is current without a second call. */
  async scrape(delta: MetricsSnapshot): Promise<MetricsSnapshot> {
    if (Object.keys(delta).length) await this.merge(delta);
    return this.load().snapshot();
  }
}
