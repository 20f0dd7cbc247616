/**
 * Health of one origin as this isolate sees it: a circuit breaker driven by
 * passive observations (every call's outcome and latency) and active probes
 * (GET /health). Pure state, clock passed in, so it is unit-tested without
 * timers.
 *
 * closed ──(failureThreshold consecutive failures)──▶ open
 * open ──(cooldown elapsed)──▶ half-open: exactly one trial call (a probe or a real request)
 * half-open ──trial succeeds──▶ closed      half-open ──trial fails──▶ open, cooldown doubled (capped)
 */
export type BreakerState = 'closed' | 'open' | 'half-open';

export interface BreakerSettings {
  /** Consecutive failures that open the breaker. */
  failureThreshold: number;
  /** First open period; doubles on each failed half-open trial up to maxCooldownMs. */
  cooldownMs: number;
  maxCooldownMs: number;
}

/** Weight of the newest sample in the moving averages (about the last ten calls). */
const EWMA_ALPHA = 0.2;

export class CircuitBreaker {
  private stateValue: BreakerState = 'closed';
  private consecutiveFailures = 0;
  private currentCooldownMs: number;
  private openUntil = 0;
  private trialInFlight = false;
  /** Moving averages of call latency (successes) and of the error rate (0..1). */
  latencyMs: number | null = null;
  errorRate = 0;
  lastError: string | null = null;
  successes = 0;
  failures = 0;

  constructor(private readonly settings: BreakerSettings) {
    this.currentCooldownMs = settings.cooldownMs;
  }

  state(now: number): BreakerState {
    if (this.stateValue === 'open' && now >= this.openUntil) this.stateValue = 'half-open';
    return this.stateValue;
  }

  /** Closed: serve freely. */
  isClosed(now: number): boolean {
    return this.state(now) === 'closed';
  }

  /** Half-open with no trial under way: the caller may send the one trial call (and must report its outcome). */
  tryAcquireTrial(now: number): boolean {
    if (this.state(now) !== 'half-open' || this.trialInFlight) return false;
    this.trialInFlight = true;
    return true;
  }

  /** Milliseconds until an open breaker lets a trial through (0 when it already would). */
  retryInMs(now: number): number {
    return this.state(now) === 'open' ? this.openUntil - now : 0;
  }

  recordSuccess(latencyMs: number | null): void {
    this.successes++;
    this.consecutiveFailures = 0;
    this.errorRate = (1 - EWMA_ALPHA) * this.errorRate;
    if (latencyMs !== null) this.latencyMs = this.latencyMs === null ? latencyMs : (1 - EWMA_ALPHA) * this.latencyMs + EWMA_ALPHA * latencyMs;
    this.stateValue = 'closed';
    this.trialInFlight = false;
    this.currentCooldownMs = this.settings.cooldownMs;
  }

  recordFailure(now: number, reason: string): void {
    this.failures++;
    this.consecutiveFailures++;
    this.errorRate = (1 - EWMA_ALPHA) * this.errorRate + EWMA_ALPHA;
    this.lastError = reason;
    const state = this.state(now);
    if (state === 'half-open') {
      // The trial failed: back off harder before the next one.
      this.currentCooldownMs = Math.min(this.currentCooldownMs * 2, this.settings.maxCooldownMs);
      this.open(now);
    } else if (state === 'closed' && this.consecutiveFailures >= this.settings.failureThreshold) {
      this.open(now);
    }
    this.trialInFlight = false;
  }

  /** A trial that ended without a verdict (cancelled by the client): let another one through. */
  releaseTrial(): void {
    this.trialInFlight = false;
  }

  private open(now: number) {
    this.stateValue = 'open';
    this.openUntil = now + this.currentCooldownMs;
  }

  snapshot(now: number) {
    return {
      state: this.state(now),
      consecutive_failures: this.consecutiveFailures,
      retry_in_ms: Math.max(0, Math.round(this.retryInMs(now))),
      latency_ms: this.latencyMs === null ? null : Math.round(this.latencyMs * 100) / 100,
      error_rate: Math.round(this.errorRate * 1000) / 1000,
      successes: this.successes,
      failures: this.failures,
      last_error: this.lastError,
    };
  }
}
