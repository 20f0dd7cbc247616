/**
 * Signatures already accepted, so a captured request cannot be sent again
 * (shared/origin-auth.ts: every legitimate request carries a fresh nonce, so
 * its signature is unique). An entry only has to outlive its timestamp window:
 * after `expiresAtMs` the timestamp check refuses the replay anyway.
 *
 * Bounded: only signatures that verified are recorded, so it fills at the rate
 * of legitimate traffic. The default 65,536 entries (about 10 MiB) cover
 * 65,536 / 120 s ≈ 540 signed requests/s over a full ±60 s window, more than
 * one origin's forward-pass queue serves. When full, expired entries go first,
 * then the ones closest to expiring (the oldest timestamps): past that point a
 * replay of an evicted signature would pass, which is the price of a fixed
 * memory bound.
 *
 * A min-heap on expiry finds both in O(log n); the map answers "seen?".
 */
export const DEFAULT_REPLAY_ENTRIES = 65_536;

export class SeenSignatures {
  private readonly expiry = new Map<string, number>();
  /** [expiresAtMs, signature], smallest expiry first. */
  private readonly heap: Array<[number, string]> = [];

  constructor(readonly maxEntries = DEFAULT_REPLAY_ENTRIES) {
    if (!Number.isInteger(maxEntries) || maxEntries < 1) throw new RangeError(`replay cache size must be a positive integer, got ${maxEntries}`);
  }

  get size(): number {
    return this.expiry.size;
  }

  /** Record a signature; false when it was already seen (a replay) and still unexpired. */
  recordOnce(signature: string, expiresAtMs: number, nowMs = Date.now()): boolean {
    this.evictExpired(nowMs);
    if (this.expiry.has(signature)) return false;
    while (this.expiry.size >= this.maxEntries) this.pop();
    this.expiry.set(signature, expiresAtMs);
    this.push([expiresAtMs, signature]);
    return true;
  }

  private evictExpired(nowMs: number) {
    while (this.heap.length && this.heap[0][0] < nowMs) this.pop();
  }

  private pop() {
    const heap = this.heap;
    const top = heap[0];
    const last = heap.pop()!;
    if (heap.length) {
      heap[0] = last;
      this.siftDown(0);
    }
    this.expiry.delete(top[1]);
  }

  private push(entry: [number, string]) {
    const heap = this.heap;
    heap.push(entry);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (heap[parent][0] <= heap[i][0]) break;
      [heap[parent], heap[i]] = [heap[i], heap[parent]];
      i = parent;
    }
  }

  private siftDown(i: number) {
    const heap = this.heap;
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let smallest = i;
      if (left < heap.length && heap[left][0] < heap[smallest][0]) smallest = left;
      if (right < heap.length && heap[right][0] < heap[smallest][0]) smallest = right;
      if (smallest === i) return;
      [heap[smallest], heap[i]] = [heap[i], heap[smallest]];
      i = smallest;
    }
  }
}
