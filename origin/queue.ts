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
  /** Passes whose client left while they waited: never run. */
  private dropped = 0;
  private queuedMsTotal = 0;

  constructor(
    readonly concurrency = 1,
    readonly maxWaiting = 256,
  ) {
    if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError(`queue concurrency must be a positive integer, got ${concurrency}`);
  }

  /**
   * Run `pass` when a slot is free; resolves with its value and how long it
   * waited. When `signal` fires before the pass starts (the client went away,
   * e.g. a pipelined verify block the edge discarded), the pass is dropped:
   * it rejects with the abort and costs no forward pass. A pass already
   * running is not interrupted (an ONNX run cannot be).
   */
  async run<T>(pass: () => Promise<T>, signal?: AbortSignal): Promise<{ value: T; queueMs: number }> {
    const enqueued = performance.now();
    if (signal?.aborted) return this.drop(signal);
    if (this.running >= this.concurrency) {
      if (this.waiting.length >= this.maxWaiting) {
        const error = new ApiError(503, `origin is saturated: ${this.waiting.length} forward passes already waiting`, null, 'origin_overloaded');
        error.headers = { 'retry-after': '1' };
        throw error;
      }
      if (!(await this.waitForSlot(signal))) return this.drop(signal!);
      // Handed a slot in the same tick the client left: pass it on rather than run for nobody.
      if (signal?.aborted) {
        this.release();
        return this.drop(signal);
      }
    } else {
      this.running++;
    }
    const queueMs = performance.now() - enqueued;
    this.served++;
    this.queuedMsTotal += queueMs;
    try {
      return { value: await pass(), queueMs };
    } finally {
      this.release();
    }
  }

  /** True when a finishing pass hands this waiter its slot; false when the signal fires first (it leaves the line). */
  private waitForSlot(signal?: AbortSignal): Promise<boolean> {
    return new Promise<boolean>((resolve) => {
      const onAbort = () => {
        const index = this.waiting.indexOf(wake);
        if (index >= 0) this.waiting.splice(index, 1);
        resolve(false);
      };
      const wake = () => {
        signal?.removeEventListener('abort', onAbort);
        resolve(true);
      };
      this.waiting.push(wake);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  private drop(signal: AbortSignal): never {
    this.dropped++;
    throw abortError(signal);
  }

  /** Hand the slot straight to the next waiter (running stays the same), or free it. */
  private release() {
    const next = this.waiting.shift();
    if (next) next();
    else this.running--;
  }

  stats() {
    return {
      concurrency: this.concurrency,
      running: this.running,
      waiting: this.waiting.length,
      served: this.served,
      dropped: this.dropped,
      mean_queue_ms: this.served ? Math.round((this.queuedMsTotal / this.served) * 100) / 100 : 0,
    };
  }
}

/** The rejection of a dropped pass: an AbortError whatever the signal's reason (Node's server aborts with a string). */
function abortError(signal: AbortSignal): Error {
  const reason = signal.reason;
  if (reason instanceof Error && reason.name === 'AbortError') return reason;
  return new DOMException(`forward pass dropped before it started: ${reason instanceof Error ? reason.message : String(reason ?? 'aborted')}`, 'AbortError');
}
