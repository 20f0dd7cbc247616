import { describe, expect, it } from 'vitest';
import { CircuitBreaker } from '../../functions/origin/breaker';
import type { OriginClient } from '../../functions/origin/client';
import { OriginPool, type PoolSettings } from '../../functions/origin/pool';
import { chooseOrigin, rendezvousOrder } from '../../functions/origin/routing';
import { ApiError } from '../../shared/errors';
import type { GenerateEvent, GenerateRequest, VerifyRequest } from '../../shared/protocol';

/** A deterministic stand-in target: the greedy next token is a hash of the context. */
const nextToken = (context: readonly number[]) => context.reduce((h, t) => (h * 31 + t + 7) % 997, context.length) % 97;
const greedy = { temperature: 0, top_p: 1, top_k: 0, seed: 1 };

function greedyRun(context: number[], n: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(nextToken([...context, ...out]));
  return out;
}

const unreachable = (id: string) => new ApiError(503, `origin ${id} is unreachable (connection refused); is it running?`, null, 'origin_unreachable');

/** A fake origin: `down` refuses everything; `breakAfter` breaks a generate stream after that many tokens. */
class FakeOrigin implements OriginClient {
  down = false;
  breakAfter: number | null = null;
  calls = 0;
  generateRequests: GenerateRequest[] = [];
  constructor(readonly id: string) {}
  async health() {
    this.calls++;
    if (this.down) throw unreachable(this.id);
    return { status: 'ok' as const, id: this.id, model: 'fake', vocab_size: 97, max_positions: 1024 };
  }
  async verify(request: VerifyRequest) {
    this.calls++;
    if (this.down) throw unreachable(this.id);
    const drafted = request.draft.map((d) => d.token);
    const tokens: number[] = [];
    for (const token of drafted) {
      const expected = nextToken([...request.context, ...tokens]);
      if (token !== expected) break;
      tokens.push(token);
    }
    const accepted = tokens.length;
    tokens.push(nextToken([...request.context, ...tokens]));
    return { accepted, tokens, origin: { id: this.id, forward_ms: 1, cached_tokens: 0 } };
  }
  async *generate(request: GenerateRequest): AsyncGenerator<GenerateEvent> {
    this.calls++;
    this.generateRequests.push(request);
    if (this.down) throw unreachable(this.id);
    const context = [...request.context];
    for (let i = 0; i < request.max_tokens; i++) {
      if (this.breakAfter !== null && i === this.breakAfter) {
        this.down = true;
        throw new ApiError(502, `origin ${this.id} stream broke: connection reset`, null, 'origin_error');
      }
      const token = nextToken(context);
      context.push(token);
      yield { type: 'token', token, forward_ms: 1 };
    }
    yield { type: 'done', finish_reason: 'length', origin: { id: this.id, forward_ms: request.max_tokens, cached_tokens: 0 } };
  }
}

function makePool(ids: string[], settings: Partial<PoolSettings> = {}) {
  let now = 1_000_000;
  const fakes = Object.fromEntries(ids.map((id) => [id, new FakeOrigin(id)]));
  const pool = new OriginPool(
    ids.map((id) => ({ id, url: `http://${id}`, kind: 'reference', weight: 1, client: fakes[id] })),
    {
      retries: 2,
      backoffBaseMs: 50,
      backoffMaxMs: 400,
      breaker: { failureThreshold: 3, cooldownMs: 5_000, maxCooldownMs: 60_000 },
      healthIntervalMs: 10_000,
      ...settings,
    },
    { now: () => now, random: () => 0.5, sleep: async () => {} },
  );
  return { pool, fakes, advance: (ms: number) => (now += ms) };
}

async function collect(events: AsyncGenerator<GenerateEvent>) {
  const tokens: number[] = [];
  let done: GenerateEvent | null = null;
  for await (const event of events) {
    if (event.type === 'token') tokens.push(event.token);
    else done = event;
  }
  return { tokens, done };
}

describe('rendezvous routing with bounded load', () => {
  const origins = ['a', 'b', 'c'].map((id) => ({ id, weight: 1, inflight: 0 }));

  it('is stable per key, spreads keys, and only moves the keys of a removed origin', () => {
    const keys = Array.from({ length: 600 }, (_, i) => `key-${i}`);
    const before = new Map(keys.map((k) => [k, rendezvousOrder(k, origins)[0].id]));
    const counts = { a: 0, b: 0, c: 0 } as Record<string, number>;
    for (const id of before.values()) counts[id]++;
    for (const n of Object.values(counts)) expect(n).toBeGreaterThan(150);
    const without = origins.filter((o) => o.id !== 'b');
    for (const k of keys) {
      const after = rendezvousOrder(k, without)[0].id;
      if (before.get(k) !== 'b') expect(after).toBe(before.get(k));
    }
  });

  it('weights shares and spills a hot key once its origin is over (1+ε) of its share', () => {
    const weighted = [{ id: 'a', weight: 3, inflight: 0 }, { id: 'b', weight: 1, inflight: 0 }];
    const share = Array.from({ length: 2000 }, (_, i) => rendezvousOrder(`k${i}`, weighted)[0].id).filter((id) => id === 'a').length / 2000;
    expect(share).toBeGreaterThan(0.68);
    expect(share).toBeLessThan(0.82);
    const key = 'hot';
    const home = rendezvousOrder(key, origins)[0];
    const loaded = origins.map((o) => ({ ...o, inflight: o.id === home.id ? 3 : 0 }));
    expect(chooseOrigin(key, loaded)!.id).not.toBe(home.id);
    const light = origins.map((o) => ({ ...o, inflight: o.id === home.id ? 1 : 0 }));
    expect(chooseOrigin(key, light)!.id).toBe(home.id);
  });
});

describe('circuit breaker', () => {
  it('opens after consecutive failures, lets one half-open trial through, and closes or backs off', () => {
    const breaker = new CircuitBreaker({ failureThreshold: 3, cooldownMs: 1000, maxCooldownMs: 8000 });
    breaker.recordFailure(0, 'x');
    breaker.recordFailure(1, 'x');
    expect(breaker.state(2)).toBe('closed');
    breaker.recordFailure(2, 'x');
    expect(breaker.state(3)).toBe('open');
    expect(breaker.retryInMs(502)).toBe(500);
    expect(breaker.tryAcquireTrial(1001)).toBe(false);
    expect(breaker.tryAcquireTrial(1002)).toBe(true);
    expect(breaker.tryAcquireTrial(1003)).toBe(false);
    breaker.recordFailure(1004, 'still down');
    expect(breaker.state(1005)).toBe('open');
    expect(breaker.retryInMs(1004)).toBe(2000);
    expect(breaker.tryAcquireTrial(3004)).toBe(true);
    breaker.recordSuccess(12);
    expect(breaker.state(3005)).toBe('closed');
    expect(breaker.snapshot(3005)).toMatchObject({ state: 'closed', consecutive_failures: 0, latency_ms: 12 });
  });
});

describe('origin pool', () => {
  const context = [5, 6, 7, 8];
  const verifyRequest = (draft: number[]) => ({ context, draft: draft.map((token) => ({ token })), sampling: { ...greedy, offset: 0 }, method: 'token' as const });

  it('keeps a prefix on one origin, and retries a failed verify on another with the same answer', async () => {
    const { pool, fakes } = makePool(['a', 'b', 'c']);
    const first = await pool.session('prefix-1').verify(verifyRequest([]));
    const home = first.origin.id;
    for (let i = 0; i < 5; i++) expect((await pool.session('prefix-1').verify(verifyRequest([]))).origin.id).toBe(home);
    fakes[home].down = true;
    const failed = await pool.session('prefix-1').verify(verifyRequest([]));
    expect(failed.origin.id).not.toBe(home);
    expect(failed.tokens).toEqual(first.tokens);
  });

  it('opens the breaker of a dead origin, stops calling it, and recovers through a half-open probe', async () => {
    const { pool, fakes, advance } = makePool(['a', 'b']);
    const key = 'prefix-2';
    const home = (await pool.session(key).verify(verifyRequest([]))).origin.id;
    const other = home === 'a' ? 'b' : 'a';
    fakes[home].down = true;
    for (let i = 0; i < 3; i++) expect((await pool.session(key).verify(verifyRequest([]))).origin.id).toBe(other);
    expect(pool.status().find((m) => m.id === home)!.state).toBe('open');
    const callsWhileOpen = fakes[home].calls;
    for (let i = 0; i < 3; i++) await pool.session(key).verify(verifyRequest([]));
    expect(fakes[home].calls).toBe(callsWhileOpen);
    // Cooldown over: the next request's maintenance probes it (half-open trial); it is back, so it closes.
    fakes[home].down = false;
    advance(5_001);
    const probes: Promise<unknown>[] = [];
    pool.maintain((p) => probes.push(p));
    await Promise.all(probes);
    expect(pool.status().find((m) => m.id === home)!.state).toBe('closed');
    expect((await pool.session(key).verify(verifyRequest([]))).origin.id).toBe(home);
  });

  it('answers 503 with Retry-After when every origin is down, without calling open origins again', async () => {
    const { pool, fakes } = makePool(['a', 'b']);
    fakes.a.down = fakes.b.down = true;
    const error = await pool.session('p').verify(verifyRequest([])).catch((e) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect(error).toMatchObject({ status: 503, code: 'origin_unreachable' });
    expect(error.message).toMatch(/unreachable/);
    expect(Number(error.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    // Trip both breakers, then the pool refuses without any origin call.
    await pool.session('p').verify(verifyRequest([])).catch(() => {});
    await pool.session('q').verify(verifyRequest([])).catch(() => {});
    const calls = fakes.a.calls + fakes.b.calls;
    const fast = await pool.session('r').verify(verifyRequest([])).catch((e) => e);
    expect(fast).toMatchObject({ status: 503 });
    expect(fast.headers['retry-after']).toBe('5');
    expect(fakes.a.calls + fakes.b.calls).toBe(calls);
  });

  it('resumes a broken origin-only stream on another origin: no token lost or repeated, RNG offset advanced', async () => {
    const { pool, fakes } = makePool(['a', 'b']);
    const request: GenerateRequest = { context, max_tokens: 12, sampling: { ...greedy, offset: 0 }, stop_token_ids: [] };
    const key = 'prefix-3';
    const home = (await pool.session(key).verify(verifyRequest([]))).origin.id;
    const other = home === 'a' ? 'b' : 'a';
    fakes[home].breakAfter = 5;
    const { tokens, done } = await collect(pool.session(key).generate(request));
    expect(tokens).toEqual(greedyRun(context, 12));
    expect(done).toMatchObject({ type: 'done', finish_reason: 'length', origin: { id: `${home},${other}` } });
    const resumed = fakes[other].generateRequests.at(-1)!;
    expect(resumed.context).toEqual([...context, ...tokens.slice(0, 5)]);
    expect(resumed.max_tokens).toBe(7);
    expect(resumed.sampling.offset).toBe(5);
  });

  it('does not retry a request error (400) on other origins', async () => {
    const { pool, fakes } = makePool(['a', 'b']);
    for (const fake of Object.values(fakes)) fake.verify = async () => Promise.reject(new ApiError(400, 'bad token', 'context'));
    await expect(pool.session('p').verify(verifyRequest([]))).rejects.toMatchObject({ status: 400 });
    expect(pool.status().every((m) => m.failures === 0)).toBe(true);
  });
});
