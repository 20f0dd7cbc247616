import { ApiError } from '../shared/errors';

/**
 * One batched forward pass over several callers' rows (origin/batcher.ts):
 * `run` gets the rows in arrival order and answers one result per row, in
 * the same order. Rows of the same runner waiting together share a pass.
 */
export interface BatchRunner<R, T> {
  run(rows: R[]): Promise<T[]>;
}

/** What a batched row's caller learns besides its value: its wait, and the pass it rode in. */
export interface RowOutcome<T> {
  value: T;
  queueMs: number;
  /** Rows in the pass (1 = it ran alone). */
  batchSize: number;
  /** Wall time of the whole pass, ms (cost-model hold included). */
  passMs: number;
}

interface PassWaiter {
  kind: 'pass';
  wake(): void;
}

interface RowWaiter {
  kind: 'row';
  runner: BatchRunner<unknown, unknown>;
  row: unknown;
  enqueued: number;
  signal?: AbortSignal;
  onAbort(): void;
  resolve(outcome: RowOutcome<unknown>): void;
  reject(error: unknown): void;
}

type Waiter = PassWaiter | RowWaiter;

/**
 * Admission for target forward passes, with continuous batching. One ONNX
 * session serves every request; concurrent `run` calls on it would fight
 * over the same cores (or the same GPU stream), so passes run `concurrency`
 * at a time (1 by default) and the rest wait in arrival order. Rows queued
 * with `runBatched` are batched: when a slot frees, the first waiter goes,
 * and if it is a row, every other waiting row of the same runner goes with it
 * in ONE forward pass, up to `maxBatch` rows (Orca's iteration-level
 * scheduling, Yu et al. 2022; vLLM's continuous batching). `maxBatch` 1 is
 * the plain FIFO of one pass per caller. The wait is measured and reported
 * (`queue_ms`), so the edge can tell a slow GPU from a busy one. Past
 * `maxWaiting` a request is refused with 503 + Retry-After instead of
 * queueing without bound.
 */
export class ForwardQueue {
  private running = 0;
  private readonly waiting: Waiter[] = [];
  /** Totals since start, for /health: callers' passes run (a batched pass serves several). */
  private served = 0;
  /** Passes whose client left while they waited: never run. */
  private dropped = 0;
  private queuedMsTotal = 0;
  /** Forward passes run for batched rows, and the rows they carried. */
  private batches = 0;
  private batchedRows = 0;
  /** Rows the next pass should carry: those waiting when the last pass ended, plus its own callers, who usually come back. */
  private expected = 0;
  private gathering = false;
  /** Ends the current gather early (enough rows arrived). */
  private gathered: (() => void) | null = null;
  private gatherTarget = 0;
  /** The gather before this launch is over: the next group goes whatever its size. */
  private launchNow = false;

  constructor(
    readonly concurrency = 1,
    readonly maxWaiting = 256,
    readonly maxBatch = 1,
    /**
     * How long a free model may wait for more rows before a pass (`--batch-wait-ms`; 0 = only a few
     * event-loop turns): like Triton's dynamic batcher's max queue delay, latency traded for fuller passes.
     */
    readonly batchWaitMs = 0,
  ) {
    if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError(`queue concurrency must be a positive integer, got ${concurrency}`);
    if (!Number.isInteger(maxBatch) || maxBatch < 1) throw new RangeError(`max batch must be a positive integer, got ${maxBatch}`);
    if (!(batchWaitMs >= 0)) throw new RangeError(`batch wait must be >= 0 ms, got ${batchWaitMs}`);
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
    if (this.running >= this.concurrency || this.waiting.length > 0) {
      this.refuseWhenFull();
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

  /**
   * Queue one row for `runner` and resolve with its own result when the pass
   * that carried it ends. Same admission as `run` (503 when full, dropped
   * unrun when `signal` fires first); rows waiting together share a pass.
   */
  runBatched<R, T>(runner: BatchRunner<R, T>, row: R, signal?: AbortSignal): Promise<RowOutcome<T>> {
    if (signal?.aborted) return Promise.reject(this.dropError(signal));
    if (this.running >= this.concurrency || this.waiting.length > 0) this.refuseWhenFull();
    return new Promise<RowOutcome<T>>((resolve, reject) => {
      const waiter: RowWaiter = {
        kind: 'row',
        runner: runner as BatchRunner<unknown, unknown>,
        row,
        enqueued: performance.now(),
        signal,
        onAbort: () => {
          const index = this.waiting.indexOf(waiter);
          if (index < 0) return;
          this.waiting.splice(index, 1);
          reject(this.dropError(signal!));
        },
        resolve: resolve as (outcome: RowOutcome<unknown>) => void,
        reject,
      };
      this.waiting.push(waiter);
      signal?.addEventListener('abort', waiter.onAbort, { once: true });
      this.pump();
    });
  }

  private refuseWhenFull() {
    if (this.waiting.length < this.maxWaiting) return;
    const error = new ApiError(503, `origin is saturated: ${this.waiting.length} forward passes already waiting`, null, 'origin_overloaded');
    error.headers = { 'retry-after': '1' };
    throw error;
  }

  /** True when a finishing pass hands this waiter its slot; false when the signal fires first (it leaves the line). */
  private waitForSlot(signal?: AbortSignal): Promise<boolean> {
    return new Promise<boolean>((resolve) => {
      const onAbort = () => {
        const index = this.waiting.indexOf(waiter);
        if (index >= 0) this.waiting.splice(index, 1);
        resolve(false);
      };
      const waiter: PassWaiter = {
        kind: 'pass',
        wake: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve(true);
        },
      };
      this.waiting.push(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  private drop(signal: AbortSignal): never {
    throw this.dropError(signal);
  }

  private dropError(signal: AbortSignal): Error {
    this.dropped++;
    return abortError(signal);
  }

  private release() {
    this.running--;
    this.pump();
  }

  /**
   * Start waiters while slots are free. When a pass of rows ends, the model
   * waits for its callers to come back (a generate stream writes its token,
   * then asks again; an edge drafts, then verifies) to join the rows already
   * waiting, for a few event-loop turns (microseconds), or up to
   * `batchWaitMs` when set, and goes as soon as they are all there. So a
   * steady set of streams keeps sharing passes instead of splitting into
   * groups that take turns. Nothing waits when `maxBatch` is 1, or when the
   * model was idle.
   */
  private pump() {
    if (this.gathering) {
      if (this.gathered && this.rowsWaitingAll() >= this.gatherTarget) this.gathered();
      return;
    }
    while (this.running < this.concurrency && this.waiting.length > 0) {
      const head = this.waiting[0];
      const target = Math.min(this.maxBatch, this.expected);
      if (head.kind === 'row' && !this.launchNow && this.rowsWaiting(head.runner) < target) {
        this.gathering = true;
        this.gatherTarget = target;
        void this.gather(() => this.rowsWaiting(head.runner) >= target).then(() => {
          this.gathering = false;
          this.gathered = null;
          this.launchNow = true;
          this.pump();
        });
        return;
      }
      this.launchNow = false;
      this.expected = 0;
      this.waiting.shift();
      this.running++;
      if (head.kind === 'pass') head.wake();
      else void this.runGroup(this.takeGroup(head));
    }
  }

  private gather(enough: () => boolean): Promise<void> {
    if (this.batchWaitMs <= 0) return gatherTurns(GATHER_TURNS, enough);
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => resolve(), this.batchWaitMs);
      this.gathered = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  private rowsWaitingAll(): number {
    let n = 0;
    for (const w of this.waiting) if (w.kind === 'row') n++;
    return n;
  }

  private rowsWaiting(runner: BatchRunner<unknown, unknown>): number {
    let n = 0;
    for (const w of this.waiting) if (w.kind === 'row' && w.runner === runner) n++;
    return n;
  }

  /** `head` and the rows of its runner behind it, in arrival order, up to maxBatch; removed from the line. */
  private takeGroup(head: RowWaiter): RowWaiter[] {
    const group = [head];
    for (let i = 0; i < this.waiting.length && group.length < this.maxBatch; ) {
      const w = this.waiting[i];
      if (w.kind === 'row' && w.runner === head.runner) {
        group.push(w);
        this.waiting.splice(i, 1);
      } else i++;
    }
    return group;
  }

  private async runGroup(group: RowWaiter[]) {
    const started = performance.now();
    for (const w of group) w.signal?.removeEventListener('abort', w.onAbort);
    // Picked in the same tick the client left: not run for nobody.
    const live = group.filter((w) => {
      if (!w.signal?.aborted) return true;
      w.reject(this.dropError(w.signal));
      return false;
    });
    try {
      if (live.length === 0) return;
      for (const w of live) {
        this.served++;
        this.queuedMsTotal += started - w.enqueued;
      }
      this.batches++;
      this.batchedRows += live.length;
      let values: unknown[];
      try {
        values = await live[0].runner.run(live.map((w) => w.row));
      } catch (err) {
        if (live.length === 1) throw err;
        // One bad row must not fail its batch-mates: run each alone, so only its own caller sees the error.
        for (const w of live) {
          const alone = performance.now();
          await w.runner.run([w.row]).then(
            ([value]) => w.resolve({ value, queueMs: started - w.enqueued, batchSize: 1, passMs: performance.now() - alone }),
            (error) => w.reject(error),
          );
        }
        return;
      }
      const passMs = performance.now() - started;
      live.forEach((w, i) => w.resolve({ value: values[i], queueMs: started - w.enqueued, batchSize: live.length, passMs }));
    } catch (err) {
      for (const w of live) w.reject(err);
    } finally {
      if (live.length) this.expected = this.rowsWaitingAll() + live.length;
      this.release();
    }
  }

  stats() {
    return {
      concurrency: this.concurrency,
      running: this.running,
      waiting: this.waiting.length,
      served: this.served,
      dropped: this.dropped,
      mean_queue_ms: this.served ? Math.round((this.queuedMsTotal / this.served) * 100) / 100 : 0,
      max_batch: this.maxBatch,
      /** Forward passes of batched rows, and their mean rows per pass. */
      batches: this.batches,
      mean_batch: this.batches ? Math.round((this.batchedRows / this.batches) * 100) / 100 : 0,
    };
  }
}

/**
 * origin/main.ts's default `--max-batch`: 16 sequences share a pass. At the
 * GPU cost model's ridge (~184 tokens per pass, origin/cost-model.ts) that is
 * 16 verify rounds of k ≤ 10 still inside one memory-bound pass.
 */
export const DEFAULT_MAX_BATCH = 16;

/** Event-loop turns a freed model waits for the last batch's callers to come back (see pump). */
const GATHER_TURNS = 4;

async function gatherTurns(turns: number, enough: () => boolean) {
  for (let i = 0; i < turns && !enough(); i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

/** The rejection of a dropped pass: an AbortError whatever the signal's reason (Node's server aborts with a string). */
function abortError(signal: AbortSignal): Error {
  const reason = signal.reason;
  if (reason instanceof Error && reason.name === 'AbortError') return reason;
  return new DOMException(`forward pass dropped before it started: ${reason instanceof Error ? reason.message : String(reason ?? 'aborted')}`, 'AbortError');
}
