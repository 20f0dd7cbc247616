import { describe, expect, it } from 'vitest';
import { SuffixIndexRegistry, SuffixProposer } from '../../functions/proposers/suffix';
import { TenantHistories, type HistoryObject, type HistoryObjectFor } from '../../functions/suffix-history';
import { MAX_TOKEN_ID, maxOutputTokens, OUTPUT_OVERHEAD_BYTES, OutputLog, outputBytes, TENANT_HISTORY_BYTES, type SyncKv } from '../../functions/suffix-history/log';
import { counterRng } from '../../shared/sampling';

/**
 * The tenant's suffix history (functions/suffix-history): the bounded log the
 * SuffixHistory Durable Object keeps (on a Map standing in for
 * `ctx.storage.kv`), and isolates keeping their in-memory indexes in step
 * with it (two registries = two isolates, sharing one object per salt).
 */

const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);
const sampling = { temperature: 0, top_p: 1, top_k: 0, seed: 0, offset: 0 };

/** `ctx.storage.kv` as a Map; values are copied in and out as storage would. */
function memoryKv(): SyncKv & { map: Map<string, unknown> } {
  const map = new Map<string, unknown>();
  return {
    map,
    get: <T>(key: string) => (map.has(key) ? (structuredClone(map.get(key)) as T) : undefined),
    put: (key, value) => void map.set(key, structuredClone(value)),
    delete: (key) => map.delete(key),
  };
}

describe('the stored history: bounded, ordered, validated', () => {
  it('keeps outputs in arrival order, newest last, numbered from 0', () => {
    const log = new OutputLog(memoryKv(), 4096);
    expect(log.append([1, 2, 3])).toBe(0);
    expect(log.append([4, 5])).toBe(1);
    expect(log.append([6])).toBe(2);
    expect(log.recent()).toEqual({ outputs: [{ seq: 0, tokens: [1, 2, 3] }, { seq: 1, tokens: [4, 5] }, { seq: 2, tokens: [6] }], next: 3 });
    // Only what is newer than the caller's last.
    expect(log.recent(1)).toEqual({ outputs: [{ seq: 2, tokens: [6] }], next: 3 });
    expect(log.recent(2)).toEqual({ outputs: [], next: 3 });
    // An empty output is not kept and takes no number.
    expect(log.append([])).toBe(-1);
    expect(log.append([7])).toBe(3);
  });

  it('evicts the oldest outputs first, by bytes, and never passes its bound over a long run', () => {
    const kv = memoryKv();
    const maxBytes = 2048;
    const log = new OutputLog(kv, maxBytes);
    const rng = counterRng(3);
    const appended: number[][] = [];
    for (let i = 0; i < 500; i++) {
      const tokens = Array.from({ length: 1 + Math.floor(rng.uniform(i, 'sample') * 120) }, (_, j) => (i * 1000 + j) % 50_000);
      log.append(tokens);
      appended.push(tokens);
      const { bytes, outputs } = log.stats();
      expect(bytes).toBeLessThanOrEqual(maxBytes);
      // What it says it holds is what it holds: its outputs' bytes, one stored row each (plus the meta row).
      const held = log.recent().outputs;
      expect(held.length).toBe(outputs);
      expect(held.reduce((sum, o) => sum + outputBytes(o.tokens.length), 0)).toBe(bytes);
      expect(kv.map.size).toBe(outputs + 1);
      // A suffix of what was appended, in order: the newest always, the oldest gone first.
      expect(held.map((o) => o.tokens)).toEqual(appended.slice(appended.length - held.length));
      expect(held.at(-1)!.seq).toBe(i);
      // Nothing older could also have fitted: the output just before the oldest kept would pass the bound.
      if (held.length < appended.length) expect(bytes + outputBytes(appended[appended.length - held.length - 1].length)).toBeGreaterThan(maxBytes);
    }
  });

  it('an output as long as the bound allows stays whole and pushes out everything else', () => {
    const log = new OutputLog(memoryKv(), 1024);
    const longest = maxOutputTokens(1024);
    expect(longest).toBe((1024 - OUTPUT_OVERHEAD_BYTES) / 4);
    log.append([1, 2, 3]);
    log.append(range(0, longest));
    expect(log.recent().outputs.map((o) => o.tokens.length)).toEqual([longest]);
    expect(log.stats().bytes).toBe(1024);
  });

  it('refuses anything but an array of token ids of bounded length, and changes nothing then', () => {
    const kv = memoryKv();
    const log = new OutputLog(kv, 1024);
    log.append([5, 6]);
    const before = [...kv.map.entries()];
    for (const bad of [null, undefined, 'abc', 7, { length: 1, 0: 1 }, [1, -1], [1.5], [NaN], [Infinity], ['1'], [1, null], [MAX_TOKEN_ID + 1], [2 ** 53], range(0, maxOutputTokens(1024) + 1)]) {
      expect(() => log.append(bad), JSON.stringify(bad)?.slice(0, 40)).toThrow(TypeError);
    }
    expect([...kv.map.entries()]).toEqual(before);
    expect(log.append([0, MAX_TOKEN_ID])).toBe(1);
    for (const bad of [-2, 0.5, '1', null, NaN]) expect(() => log.recent(bad)).toThrow(TypeError);
    expect(() => new OutputLog(memoryKv(), OUTPUT_OVERHEAD_BYTES)).toThrow(RangeError);
  });

  it('survives a restart of the object: the state is in storage only', () => {
    const kv = memoryKv();
    new OutputLog(kv, 4096).append([1, 2]);
    const again = new OutputLog(kv, 4096);
    expect(again.append([3])).toBe(1);
    expect(again.recent().outputs.map((o) => o.tokens)).toEqual([[1, 2], [3]]);
  });

  it("the tenant's bound holds about 32,000 token ids", () => {
    expect(maxOutputTokens(TENANT_HISTORY_BYTES)).toBeGreaterThan(32_000);
  });
});

/** One SuffixHistory object per salt, reached the way a stub is: async, arguments and results copied. */
function objects(options: { maxBytes?: number } = {}) {
  const logs = new Map<string, OutputLog>();
  const calls: string[] = [];
  let down = false;
  let hang = false;
  const log = (salt: string) => {
    if (!logs.has(salt)) logs.set(salt, new OutputLog(memoryKv(), options.maxBytes ?? TENANT_HISTORY_BYTES));
    return logs.get(salt)!;
  };
  const stub = (salt: string): HistoryObject => ({
    async append(tokens) {
      calls.push(`append ${salt}`);
      if (hang) return new Promise(() => {});
      if (down) throw new Error('object unreachable');
      return log(salt).append(structuredClone(tokens));
    },
    async recent(after) {
      calls.push(`recent ${salt} ${after}`);
      if (hang) return new Promise(() => {});
      if (down) throw new Error('object unreachable');
      return structuredClone(log(salt).recent(after));
    },
  });
  return {
    logs,
    calls,
    for: (salt: string): HistoryObjectFor => () => stub(salt),
    setDown: (value: boolean) => (down = value),
    setHang: (value: boolean) => (hang = value),
  };
}

/** An isolate: its own registry and clock, its waitUntil promises awaited by `settle`. */
function isolate(clock: { now: number }, options: { timeoutMs?: number } = {}) {
  const logged: string[] = [];
  const histories = new TenantHistories(new SuffixIndexRegistry(1 << 20, 8 << 20), { now: () => clock.now, log: (m) => logged.push(m), timeoutMs: options.timeoutMs ?? 1000 });
  const background: Promise<unknown>[] = [];
  const waitUntil = (p: Promise<unknown>) => void background.push(p);
  return {
    histories,
    logged,
    waitUntil,
    settle: async () => {
      while (background.length) await background.shift();
    },
  };
}

const draft = async (index: Awaited<ReturnType<TenantHistories['index']>>, context: number[]) =>
  (await new SuffixProposer(index).propose(context, 4, sampling, { maxMatchTokens: 8 })).map((d) => d.token);

describe("an isolate's index kept in step with the tenant's object", () => {
  const secret = range(1000, 1040);
  const probe = [1, 2, 1010, 1011, 1012];

  /** The tenant's `secret` output recorded through isolate one and settled into the object; isolate two has never seen the tenant. */
  async function recordedThroughOne() {
    const clock = { now: 0 };
    const store = objects();
    const one = isolate(clock);
    const two = isolate(clock);
    one.histories.record(store.for('salt-a'), 'salt-a', secret, one.waitUntil);
    await one.settle();
    return { clock, store, one, two };
  }

  it("an output recorded in one isolate drafts in another that never saw the tenant", async () => {
    const { clock, store, one, two } = await recordedThroughOne();
    expect(store.logs.get('salt-a')!.recent().outputs.map((o) => o.tokens)).toEqual([secret]);
    const index = await two.histories.index(store.for('salt-a'), 'salt-a', two.waitUntil);
    expect(await draft(index, probe)).toEqual(range(1013, 1021));
    // Filled once: the next requests within the refresh period ask nothing.
    const asked = store.calls.length;
    clock.now += 10_000;
    await two.histories.index(store.for('salt-a'), 'salt-a', two.waitUntil);
    expect(store.calls.length).toBe(asked);
  });

  it("never drafts one tenant's outputs for another, in memory or from storage", async () => {
    const clock = { now: 0 };
    const store = objects();
    const one = isolate(clock);
    const two = isolate(clock);
    one.histories.record(store.for('salt-a'), 'salt-a', secret, one.waitUntil);
    one.histories.record(store.for('salt-b'), 'salt-b', range(2000, 2040), one.waitUntil);
    await one.settle();
    for (const where of [one, two]) {
      const theirs = await where.histories.index(store.for('salt-b'), 'salt-b', where.waitUntil);
      expect((await draft(theirs, probe)).filter((t) => secret.includes(t))).toEqual([]);
      const nobody = await where.histories.index(store.for('salt-c'), 'salt-c', where.waitUntil);
      expect(await draft(nobody, probe)).toEqual([]);
    }
    // Each tenant's object holds its own outputs only.
    expect([...store.logs.keys()].sort()).toEqual(['salt-a', 'salt-b', 'salt-c']);
    expect(store.logs.get('salt-b')!.recent().outputs.flatMap((o) => o.tokens).some((t) => secret.includes(t))).toBe(false);
    expect(store.logs.get('salt-c')!.recent().outputs).toEqual([]);
  });

  it("outputs other isolates write arrive after the refresh period, in the background, and its own are not taken in twice", async () => {
    const clock = { now: 0 };
    const store = objects();
    const one = isolate(clock);
    const two = isolate(clock);
    const salt = 'salt-a';
    await two.histories.index(store.for(salt), salt, two.waitUntil);
    two.histories.record(store.for(salt), salt, range(500, 520), two.waitUntil);
    await two.settle();
    one.histories.record(store.for(salt), salt, secret, one.waitUntil);
    await one.settle();
    // Within the period: isolate two does not know yet.
    clock.now += 5_000;
    expect(await draft(await two.histories.index(store.for(salt), salt, two.waitUntil), probe)).toEqual([]);
    // After it: that request is not held up (it drafts from what the isolate has), the refresh lands behind it.
    clock.now += 30_000;
    const stale = await two.histories.index(store.for(salt), salt, two.waitUntil);
    await two.settle();
    expect(await draft(stale, probe)).toEqual(range(1013, 1021));
    // It asked for everything after the last it took in from the object (none: its own append was 0).
    expect(store.calls.filter((c) => c.startsWith('recent')).at(-1)).toBe(`recent ${salt} -1`);
    // Its own output came back in the page but was not added again: 20 + 40 tokens and two boundaries.
    expect(stale!.size().tokens).toBe(20 + 40 + 2);
    expect(await draft(stale, [9, 505, 506, 507])).toEqual(range(508, 516));
  });

  it('the first fill keeps the global order and adds outputs recorded meanwhile last, once', async () => {
    const clock = { now: 0 };
    const store = objects();
    const one = isolate(clock);
    const two = isolate(clock);
    const salt = 'salt-a';
    for (let i = 0; i < 3; i++) one.histories.record(store.for(salt), salt, range(100 * i, 100 * i + 10), one.waitUntil);
    await one.settle();
    // Isolate two records before it ever filled (a draft-model request does not wait for the history), then fills.
    two.histories.record(store.for(salt), salt, range(900, 910), two.waitUntil);
    const pendingAppend = two.settle();
    const index = (await two.histories.index(store.for(salt), salt, two.waitUntil))!;
    await pendingAppend;
    expect(index.size().tokens).toBe(4 * 11);
    const order = [];
    for (let p = 0; p < 100_000 && order.length < 4; p++) if (index.at(p) >= 0 && index.at(p - 1) < 0) order.push(index.at(p));
    expect(order).toEqual([0, 100, 200, 900]);
    // Later refreshes do not bring it in again.
    clock.now += 60_000;
    await two.histories.index(store.for(salt), salt, two.waitUntil);
    await two.settle();
    expect(index.size().tokens).toBe(4 * 11);
  });

  it('two requests filling the same tenant at once both draft from the filled index, holding each output once', async () => {
    const { clock, store, one, two } = await recordedThroughOne();
    const [a, b] = await Promise.all([two.histories.index(store.for('salt-a'), 'salt-a'), two.histories.index(store.for('salt-a'), 'salt-a')]);
    expect(a).toBe(b);
    expect(a!.size().tokens).toBe(secret.length + 1);
    expect(await draft(b, probe)).toEqual(range(1013, 1021));
  });

  it('an object whose numbers restarted (emptied) is taken as the truth again', async () => {
    const clock = { now: 0 };
    const store = objects();
    const one = isolate(clock);
    for (let i = 0; i < 3; i++) one.histories.record(store.for('salt-a'), 'salt-a', range(100 * i, 100 * i + 10), one.waitUntil);
    await one.settle();
    await one.histories.index(store.for('salt-a'), 'salt-a');
    store.logs.delete('salt-a');
    const other = isolate(clock);
    other.histories.record(store.for('salt-a'), 'salt-a', secret, other.waitUntil);
    await other.settle();
    clock.now += 30_000;
    await one.histories.index(store.for('salt-a'), 'salt-a', one.waitUntil);
    await one.settle();
    const index = await one.histories.index(store.for('salt-a'), 'salt-a');
    expect(await draft(index, probe)).toEqual(range(1013, 1021));
    expect(index!.size().tokens).toBe(secret.length + 1);
  });

  it('when the object fails, drafts use memory, the request goes on, one warning is logged, and it is asked again later', async () => {
    const clock = { now: 0 };
    const store = objects();
    const one = isolate(clock);
    const salt = 'salt-a';
    store.setDown(true);
    one.histories.record(store.for(salt), salt, secret, one.waitUntil);
    await one.settle();
    const index = await one.histories.index(store.for(salt), salt, one.waitUntil);
    expect(await draft(index, probe)).toEqual(range(1013, 1021));
    one.histories.record(store.for(salt), salt, range(3000, 3010), one.waitUntil);
    await one.settle();
    await one.histories.index(store.for(salt), salt, one.waitUntil);
    expect(one.logged.length).toBe(1);
    expect(one.logged[0]).toMatch(/memory only.*object unreachable/);
    // A failed fill is not retried on every request: only after the refresh period.
    const asked = store.calls.filter((c) => c.startsWith('recent')).length;
    await one.histories.index(store.for(salt), salt, one.waitUntil);
    expect(store.calls.filter((c) => c.startsWith('recent')).length).toBe(asked);
    store.setDown(false);
    clock.now += 30_000;
    const again = await one.histories.index(store.for(salt), salt, one.waitUntil);
    expect(store.calls.filter((c) => c.startsWith('recent')).length).toBe(asked + 1);
    // Memory still drafts (what the object never got is kept: nothing it holds replaced it).
    expect(await draft(again, probe)).toEqual(range(1013, 1021));
    // Failing again after an answer logs again, once.
    store.setDown(true);
    one.histories.record(store.for(salt), salt, [1, 2, 3], one.waitUntil);
    one.histories.record(store.for(salt), salt, [4, 5, 6], one.waitUntil);
    await one.settle();
    expect(one.logged.length).toBe(2);
  });

  it('an object that does not answer costs a request at most the timeout', async () => {
    const clock = { now: 0 };
    const store = objects();
    const one = isolate(clock, { timeoutMs: 50 });
    store.setHang(true);
    const started = Date.now();
    const index = await one.histories.index(store.for('salt-a'), 'salt-a', one.waitUntil);
    expect(Date.now() - started).toBeLessThan(1000);
    expect(index).not.toBeNull();
    expect(one.logged[0]).toMatch(/no answer within 50 ms/);
  });

  it('without the binding: memory only, as before', async () => {
    const one = isolate({ now: 0 });
    expect(await one.histories.index(null, 'salt-a')).toBeNull();
    one.histories.record(null, 'salt-a', secret, one.waitUntil);
    expect(await draft(await one.histories.index(null, 'salt-a'), probe)).toEqual(range(1013, 1021));
    expect(await one.histories.index(null, 'salt-b')).toBeNull();
  });

  it('sends the object at most the last tokens of an output it can keep', async () => {
    const store = objects();
    const one = isolate({ now: 0 });
    const long = range(0, one.histories.maxOutputTokens + 100);
    one.histories.record(store.for('salt-a'), 'salt-a', long, one.waitUntil);
    await one.settle();
    expect(one.logged).toEqual([]);
    expect(store.logs.get('salt-a')!.recent().outputs[0].tokens).toEqual(long.slice(100));
  });
});
