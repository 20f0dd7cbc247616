import { DurableObject } from 'cloudflare:workers';
import type { Env } from '../env';
import { admit, emptyState, settle, type Admission, type Limits, type LimiterState } from './buckets';

/**
 * RateLimiter: one object per tenant (named by its id) holding its buckets
 * (functions/rate-limit/buckets.ts). A Durable Object handles one call at a
 * time, so admissions from any number of isolates are exact; the state is
 * written to the object's SQLite storage on every change, so eviction or a
 * restart of the object never forgets what was spent.
 */
export class RateLimiter extends DurableObject<Env> {
  private state: LimiterState | null = null;

  private load(now: number): LimiterState {
    this.state ??= (this.ctx.storage.kv.get<LimiterState>('state') ?? emptyState(now));
    return this.state;
  }

  private save(state: LimiterState): void {
    this.state = state;
    this.ctx.storage.kv.put('state', state);
  }

  async admit(limits: Limits, tokens: number): Promise<Admission> {
    const now = Date.now();
    const { state, admission } = admit(this.load(now), limits, tokens, now);
    this.save(state);
    return admission;
  }

  async settle(limits: Limits, reserved: number, used: number, day: string): Promise<void> {
    const now = Date.now();
    this.save(settle(this.load(now), limits, reserved, used, day, now));
  }
}
