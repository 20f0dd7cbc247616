import { ApiError } from '../shared/errors';

/**
 * FIFO admission for target forward passes. One ONNX session serves every
 * request; concurrent `run` calls on it would interleave their KV-cache
 * bookkeeping and fight over the same cores (or the same GPU stream), so
 * passes run `concurrency` at a time (1 by default) and the rest wait in
 * arrival order. The wait is measured and reported (`queue_ms`), so the edge
 * can tell a slow GPU from a busy one. Past `maxWaiting` a request is refused
 * with 503 + Retry-After instead of queueing without bound.
 */
export class ForwardQueue {
  private running = 0;
  private readonly waiting: Array<() => void> = [];
  /** Totals since start, for /health. */
  private served = 0;
  private queuedMsTotal = 0;

  constructor(
    readonly concurrency = 1,
    readonly maxWaiting = 256,
  ) {
    if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError(`queue concurrency must be a positive integer, got ${concurrency}`);
  }

  /** Run `pass` when a slot is free; resolves with its value and how long it waited. */
  async run<T>(pass: () => Promise<T>): Promise<{ value: T; queueMs: number }> {
    const enqueued = performance.now();
    if (this.running >= this.concurrency) {
      if (this.waiting.length >= this.maxWaiting) {
        const error = new ApiError(503, `origin is saturated: ${this.waiting.length} forward passes already waiting`, null, 'origin_overloaded');
        error.headers = { 'retry-after': '1' };
        throw error;
      }
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    } else {
      this.running++;
    }
    const queueMs = performance.now() - enqueued;
    this.served++;
    this.queuedMsTotal += queueMs;
    try {
      return { value: await pass(), queueMs };
    } finally {
      // Hand the slot straight to the next waiter (running stays the same), or free it.
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
    }
  }

  stats() {
    return {
      concurrency: this.concurrency,
      running: this.running,
      waiting: this.waiting.length,
      served: this.served,
      mean_queue_ms: this.served ? Math.round((this.queuedMsTotal / this.served) * 100) / 100 : 0,
    };
  }
}
