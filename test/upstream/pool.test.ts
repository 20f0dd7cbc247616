import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { CircuitBreaker } from '../../functions/upstream/breaker';
import { HttpOriginClient, type OriginClient } from '../../functions/upstream/client';
import { OriginPool, type PoolSettings } from '../../functions/upstream/pool';
import { chooseOrigin, rendezvousOrder } from '../../functions/upstream/routing';
import { ApiError } from '../../shared/errors';
import { generateEventProblem, MAX_SAMPLING_OFFSET, verifyReplyProblem, verifyRequestSchema, type GenerateEvent, type GenerateRequest, type VerifyRequest } from '../../shared/protocol';

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

  it('reports each successful probe round trip (the link the speculation controller learns from), never a failed one', async () => {
    const origin = new FakeOrigin('a');
    let clock = 1000;
    const roundTrips: number[] = [];
    origin.health = async function () {
      clock += 7; // the probe's round trip on the pool's clock
      return FakeOrigin.prototype.health.call(this);
    };
    const pool = new OriginPool([{ id: 'a', url: 'http://a', kind: 'reference', weight: 1, client: origin }], undefined, { now: () => clock, onProbeRoundTrip: (ms) => roundTrips.push(ms) });
    await pool.probe(pool.members[0]);
    expect(roundTrips).toEqual([7]);
    origin.down = true;
    await pool.probe(pool.members[0]);
    expect(roundTrips).toEqual([7]);
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

/**
 * The pool over real HTTP: HttpOriginClient members talking to node:http servers on loopback,
 * answering the way good, refusing, failing and malformed origins do. These are about what a reply
 * on the wire means for the caller and for the origin's breaker (the table at isRetryableOriginError).
 */
const VOCAB = 97;
const GARBAGE = 'GARBAGE-c0ffee';
const LEAK_URL = 'http://leak.internal:9999/secret';

interface WireRequest {
  method: string;
  path: string;
  body: any;
}
type Handler = (request: WireRequest, res: ServerResponse) => void | Promise<void>;

interface HttpOrigin {
  id: string;
  url: string;
  calls: WireRequest[];
  close(): Promise<void>;
}

/** A node:http server on 127.0.0.1:0 whose every request goes to `handler` (unhandled paths: the good origin's answers). */
async function httpOrigin(id: string, handler: Handler | null = null): Promise<HttpOrigin> {
  const calls: WireRequest[] = [];
  const server: Server = createServer(async (req, res) => {
    let text = '';
    for await (const chunk of req) text += chunk;
    const request = { method: req.method ?? 'GET', path: req.url ?? '/', body: text ? JSON.parse(text) : null };
    calls.push(request);
    try {
      await (handler ?? goodOrigin(id))(request, res);
    } catch {
      res.destroy();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    id,
    url: `http://127.0.0.1:${port}`,
    calls,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

const json = (res: ServerResponse, status: number, body: unknown) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(typeof body === 'string' ? body : JSON.stringify(body));
};

/** The protocol answered correctly from the nextToken stand-in target. */
function goodOrigin(id: string): Handler {
  return (request, res) => {
    if (request.path === '/health') return json(res, 200, { status: 'ok', id, model: 'fake', vocab_size: VOCAB, max_positions: 1024 });
    if (request.path === '/v1/verify') return json(res, 200, verdict(request.body, id));
    if (request.path === '/v1/generate') {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      const tokens = greedyRun(request.body.context, request.body.max_tokens);
      for (const token of tokens) res.write(JSON.stringify({ type: 'token', token, forward_ms: 1 }) + '\n');
      res.end(JSON.stringify({ type: 'done', finish_reason: 'length', origin: { id, forward_ms: tokens.length, cached_tokens: 0 } }) + '\n');
      return;
    }
    json(res, 404, { error: { message: 'no route', type: 'not_found_error', param: null, code: null } });
  };
}

function verdict(request: VerifyRequest, id: string) {
  const tokens: number[] = [];
  for (const { token } of request.draft) {
    if (token !== nextToken([...request.context, ...tokens])) break;
    tokens.push(token);
  }
  const accepted = tokens.length;
  tokens.push(nextToken([...request.context, ...tokens]));
  return { accepted, tokens, origin: { id, forward_ms: 1, cached_tokens: 0 } };
}

/** A good origin except for one route. */
function except(id: string, path: string, answer: Handler): Handler {
  const good = goodOrigin(id);
  return (request, res) => (request.path === path ? answer(request, res) : good(request, res));
}

function httpPool(origins: HttpOrigin[], settings: Partial<PoolSettings> = {}) {
  return new OriginPool(
    origins.map((o) => ({ id: o.id, url: o.url, kind: 'reference', weight: 1, client: new HttpOriginClient(o.url, 2000, { name: o.id, vocabSize: VOCAB }) })),
    { retries: 2, backoffBaseMs: 1, backoffMaxMs: 1, breaker: { failureThreshold: 3, cooldownMs: 5_000, maxCooldownMs: 60_000 }, healthIntervalMs: 10_000, ...settings },
    { sleep: async () => {} },
  );
}

/** A session key whose first choice (rendezvous order) is `id`, so the origin under test is always asked first. */
function keyFirstOn(pool: OriginPool, id: string): string {
  for (let i = 0; ; i++) if (rendezvousOrder(`key-${i}`, pool.members)[0].id === id) return `key-${i}`;
}

const member = (pool: OriginPool, id: string) => pool.status().find((m) => m.id === id)!;
const verifyCalls = (origin: HttpOrigin) => origin.calls.filter((c) => c.path === '/v1/verify').length;
const context = [5, 6, 7, 8];
const greedyVerify = (draft: number[]): VerifyRequest => ({ context, draft: draft.map((token) => ({ token })), sampling: { ...greedy, offset: 0 }, method: 'token' });
/** Three drafts, the first two right: the good origin accepts 2 and corrects the third. */
const draft = (() => {
  const right = greedyRun(context, 2);
  return [...right, (nextToken([...context, ...right]) + 1) % VOCAB];
})();
const expectClean = (message: string, origin: HttpOrigin) => {
  expect(message).not.toContain(GARBAGE);
  expect(message).not.toMatch(/https?:\/\//);
  expect(message).not.toContain(origin.url.replace('http://', ''));
};

describe('origin pool over HTTP: whose error an origin reply is', () => {
  const servers: HttpOrigin[] = [];
  const serve = async (id: string, handler: Handler | null = null) => {
    const origin = await httpOrigin(id, handler);
    servers.push(origin);
    return origin;
  };
  // The client logs every misbehaving reply (with the URL, for operators); expected here, so kept off the test output.
  beforeEach(() => void vi.spyOn(console, 'error').mockImplementation(() => {}));
  afterEach(async () => {
    vi.restoreAllMocks();
    await Promise.all(servers.splice(0).map((s) => s.close()));
  });

  for (const status of [400, 413, 422]) {
    it(`an origin's ${status} is the client's error: returned as a 4xx without the origin's URL, not retried, no breaker failure`, async () => {
      const refusing = await serve('a', except('a', '/v1/verify', (_req, res) =>
        json(res, status, { error: { message: `token id 999 is outside the target vocabulary (${VOCAB}); see ${LEAK_URL}`, type: 'invalid_request_error', param: 'context', code: 'invalid_token' } }),
      ));
      const good = await serve('b');
      const pool = httpPool([refusing, good]);
      const error = await pool.session(keyFirstOn(pool, 'a')).verify(greedyVerify(draft)).catch((e) => e);
      expect(error).toBeInstanceOf(ApiError);
      expect(error).toMatchObject({ status: status === 422 ? 400 : status, code: 'invalid_token' });
      expect(error.message).toMatch(/^the origin refused the request as invalid: token id 999 is outside the target vocabulary \(97\)/);
      expectClean(error.message, refusing);
      expect(verifyCalls(good)).toBe(0);
      expect(member(pool, 'a')).toMatchObject({ state: 'closed', failures: 0, consecutive_failures: 0 });
    });
  }

  it('a refusal without an OpenAI-shaped body says only that, with code origin_refused_request', async () => {
    const refusing = await serve('a', except('a', '/v1/verify', (_req, res) => json(res, 400, `${GARBAGE} ${LEAK_URL}`)));
    const pool = httpPool([refusing, await serve('b')]);
    const error = await pool.session(keyFirstOn(pool, 'a')).verify(greedyVerify(draft)).catch((e) => e);
    expect(error).toMatchObject({ status: 400, code: 'origin_refused_request', message: 'the origin refused the request as invalid (HTTP 400)' });
    expect(member(pool, 'a').failures).toBe(0);
  });

  for (const [status, code] of [
    [500, 'origin_error'],
    [502, 'origin_error'],
    [503, 'origin_overloaded'],
    [429, 'origin_overloaded'],
    [401, 'origin_auth_failed'],
    [403, 'origin_auth_failed'],
    [405, 'origin_error'],
    // A 404 means a wrong origin URL, not a bad request: it counts and fails over.
    [404, 'origin_error'],
  ] as const) {
    it(`an origin's ${status} counts against it (${code}) and the call fails over to a healthy origin`, async () => {
      const failing = await serve('a', except('a', '/v1/verify', (_req, res) => json(res, status, `<html>${GARBAGE} at ${LEAK_URL}</html>`)));
      const good = await serve('b');
      const pool = httpPool([failing, good]);
      const reply = await pool.session(keyFirstOn(pool, 'a')).verify(greedyVerify(draft));
      expect(reply).toEqual(verdict(greedyVerify(draft), 'b'));
      expect(member(pool, 'a')).toMatchObject({ failures: 1, consecutive_failures: 1 });
      expect(member(pool, 'b').failures).toBe(0);
      expectClean(member(pool, 'a').last_error!, failing);
      // The error itself, as the only origin: its status class and code, nothing of the body.
      const client = new HttpOriginClient(failing.url, 2000, { name: 'a' });
      const error = await client.verify(greedyVerify(draft)).catch((e) => e);
      expect(error).toMatchObject({ code });
      expect(error.status).toBeGreaterThanOrEqual(500);
      expectClean(error.message, failing);
    });
  }

  const k = draft.length;
  const malformed: Array<[string, Handler]> = [
    ['not JSON', (_req, res) => json(res, 200, `<html>${GARBAGE} ${LEAK_URL}</html>`)],
    ['truncated JSON', (_req, res) => json(res, 200, '{"accepted": 1, "tokens": [1,')],
    ['an empty body', (_req, res) => json(res, 200, '')],
    ['the wrong shape', (_req, res) => json(res, 200, { accepted: GARBAGE, tokens: LEAK_URL })],
    ['accepted > draft length', (req, res) => json(res, 200, { accepted: k + 1, tokens: [...req.body.draft.map((d: { token: number }) => d.token), 1, 2], origin: { id: 'a', forward_ms: 1, cached_tokens: 0 } })],
    ['tokens.length ≠ accepted + 1', (req, res) => json(res, 200, { ...verdict(req.body, 'a'), tokens: [1, 2, 3, 4, 5] })],
    ['a token ≥ the vocabulary', (req, res) => json(res, 200, { ...verdict(req.body, 'a'), accepted: 0, tokens: [VOCAB + 3] })],
    ['tokens not matching the draft', (req, res) => json(res, 200, { accepted: 2, tokens: [(draft[0] + 1) % VOCAB, draft[1], 0], origin: { id: 'a', forward_ms: 1, cached_tokens: 0 } })],
    ['a negative forward_ms', (req, res) => json(res, 200, { ...verdict(req.body, 'a'), origin: { id: 'a', forward_ms: -1, cached_tokens: 0 } })],
  ];
  for (const [what, answer] of malformed) {
    it(`a verify reply with ${what} is origin_bad_reply: counted, failed over, never quoted`, async () => {
      const broken = await serve('a', except('a', '/v1/verify', answer));
      const good = await serve('b');
      const pool = httpPool([broken, good]);
      const reply = await pool.session(keyFirstOn(pool, 'a')).verify(greedyVerify(draft));
      expect(reply).toEqual(verdict(greedyVerify(draft), 'b'));
      expect(member(pool, 'a')).toMatchObject({ failures: 1 });
      expect(member(pool, 'a').last_error).toMatch(/^origin a sent a malformed \/v1\/verify reply: /);
      expectClean(member(pool, 'a').last_error!, broken);
      const alone = httpPool([broken]);
      const error = await alone.session('k').verify(greedyVerify(draft)).catch((e) => e);
      expect(error).toMatchObject({ status: 503, code: 'origin_unreachable' });
      expectClean(error.message, broken);
      await expect(new HttpOriginClient(broken.url, 2000, { name: 'a', vocabSize: VOCAB }).verify(greedyVerify(draft))).rejects.toMatchObject({ status: 502, code: 'origin_bad_reply' });
    });
  }

  it('checks tokens against the vocabulary learned from /health when none is configured', async () => {
    const broken = await serve('a', except('a', '/v1/verify', (req, res) => json(res, 200, { ...verdict(req.body, 'a'), accepted: 0, tokens: [VOCAB] })));
    const client = new HttpOriginClient(broken.url, 2000, { name: 'a' });
    expect((await client.verify(greedyVerify(draft))).tokens).toEqual([VOCAB]); // nothing known yet: not checked
    expect((await client.health()).vocab_size).toBe(VOCAB);
    await expect(client.verify(greedyVerify(draft))).rejects.toMatchObject({ status: 502, code: 'origin_bad_reply', message: expect.stringContaining('outside the vocabulary (97)') });
  });

  it('a probe counts any non-2xx and a malformed or mismatched /health against the origin', async () => {
    for (const [what, answer] of [
      ['404', (_req: WireRequest, res: ServerResponse) => json(res, 404, { error: { message: `nothing at ${LEAK_URL}` } })],
      ['not JSON', (_req: WireRequest, res: ServerResponse) => json(res, 200, GARBAGE)],
      ['another vocabulary', (_req: WireRequest, res: ServerResponse) => json(res, 200, { status: 'ok', id: 'a', model: 'other', vocab_size: VOCAB + 1, max_positions: 1024 })],
    ] as const) {
      const broken = await serve('a', except('a', '/health', answer));
      const pool = httpPool([broken]);
      expect(await pool.probe(pool.members[0]), what).toBeNull();
      expect(member(pool, 'a').failures, what).toBe(1);
      expectClean(member(pool, 'a').last_error!, broken);
    }
  });

  it('a generate stream that turns malformed mid-stream resumes on another origin: no token lost or repeated', async () => {
    const request: GenerateRequest = { context, max_tokens: 10, sampling: { ...greedy, offset: 0 }, stop_token_ids: [] };
    for (const tail of [`${GARBAGE} ${LEAK_URL}\n`, JSON.stringify({ type: 'token', token: VOCAB + 1, forward_ms: 1 }) + '\n', JSON.stringify({ type: 'error', message: `${GARBAGE} at ${LEAK_URL}` }) + '\n', '{"type":"token","tok', 'x'.repeat(70_000)]) {
      const broken = await serve('a', except('a', '/v1/generate', (req, res) => {
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        for (const token of greedyRun(req.body.context, 3)) res.write(JSON.stringify({ type: 'token', token, forward_ms: 1 }) + '\n');
        res.end(tail);
      }));
      const good = await serve('b');
      const pool = httpPool([broken, good]);
      const { tokens, done } = await collect(pool.session(keyFirstOn(pool, 'a')).generate(request));
      expect(tokens).toEqual(greedyRun(context, 10));
      expect(done).toMatchObject({ type: 'done', origin: { id: 'a,b' } });
      expect(good.calls.find((c) => c.path === '/v1/generate')!.body).toMatchObject({ context: [...context, ...tokens.slice(0, 3)], max_tokens: 7 });
      expect(member(pool, 'a').failures).toBe(1);
      expectClean(member(pool, 'a').last_error!, broken);
    }
  });

  it('an aborted call records nothing: no breaker failure, no retry elsewhere, the abort reaches the caller', async () => {
    const hanging = await serve('a', except('a', '/v1/verify', () => {}));
    const good = await serve('b');
    const pool = httpPool([hanging, good]);
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    const error = await pool.session(keyFirstOn(pool, 'a')).verify(greedyVerify(draft), controller.signal).catch((e) => e);
    expect(error).toMatchObject({ name: 'AbortError' });
    expect(verifyCalls(hanging)).toBe(1);
    expect(verifyCalls(good)).toBe(0);
    expect(member(pool, 'a')).toMatchObject({ state: 'closed', failures: 0, successes: 0 });
    // Already aborted: nothing is sent at all.
    await expect(pool.session(keyFirstOn(pool, 'a')).verify(greedyVerify(draft), controller.signal)).rejects.toMatchObject({ name: 'AbortError' });
    expect(verifyCalls(hanging) + verifyCalls(good)).toBe(1);
  });

  it('an aborted half-open trial is handed back, not counted as a failed trial', async () => {
    const hanging = await serve('a', except('a', '/v1/verify', () => {}));
    let now = 1_000_000;
    const pool = new OriginPool(
      [{ id: 'a', url: hanging.url, kind: 'reference', weight: 1, client: new HttpOriginClient(hanging.url, 2000, { name: 'a', vocabSize: VOCAB }) }],
      { retries: 0, backoffBaseMs: 1, backoffMaxMs: 1, breaker: { failureThreshold: 1, cooldownMs: 1000, maxCooldownMs: 8000 }, healthIntervalMs: 10_000 },
      { now: () => now, sleep: async () => {} },
    );
    pool.members[0].breaker.recordFailure(now, 'down');
    now += 1001;
    expect(member(pool, 'a').state).toBe('half-open');
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    await expect(pool.session('k').verify(greedyVerify(draft), controller.signal)).rejects.toMatchObject({ name: 'AbortError' });
    expect(member(pool, 'a')).toMatchObject({ state: 'half-open', failures: 1 });
    expect(pool.members[0].breaker.tryAcquireTrial(now)).toBe(true);
  });

  it('an aborted generate stream records nothing either', async () => {
    const stalling = await serve('a', except('a', '/v1/generate', (req, res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      for (const token of greedyRun(req.body.context, 2)) res.write(JSON.stringify({ type: 'token', token, forward_ms: 1 }) + '\n');
    }));
    const good = await serve('b');
    const pool = httpPool([stalling, good]);
    const controller = new AbortController();
    const events = pool.session(keyFirstOn(pool, 'a')).generate({ context, max_tokens: 10, sampling: { ...greedy, offset: 0 }, stop_token_ids: [] }, controller.signal);
    const seen: number[] = [];
    const error = await (async () => {
      for await (const event of events) {
        if (event.type === 'token') seen.push(event.token);
        if (seen.length === 2) controller.abort();
      }
    })().catch((e) => e);
    expect(error).toMatchObject({ name: 'AbortError' });
    expect(seen).toEqual(greedyRun(context, 2));
    expect(good.calls.filter((c) => c.path === '/v1/generate')).toHaveLength(0);
    expect(member(pool, 'a')).toMatchObject({ failures: 0 });
  });

  it('error messages name origins by id, never by URL', async () => {
    const dead = await serve('a');
    const url = dead.url;
    await dead.close();
    const pool = httpPool([{ ...dead, url }]);
    const error = await pool.session('k').verify(greedyVerify(draft)).catch((e) => e);
    expect(error).toMatchObject({ status: 503, code: 'origin_unreachable' });
    expect(error.message).toContain('a: ');
    expectClean(error.message, dead);
    const direct = await new HttpOriginClient(url, 2000, { name: 'a' }).verify(greedyVerify(draft)).catch((e) => e);
    expect(direct.message).toMatch(/^origin a is unreachable/);
    expectClean(direct.message, dead);
  });
});

describe('verifyReplyProblem / generateEventProblem (shared/protocol)', () => {
  const request = { draft: [{ token: 4 }, { token: 5 }] };
  it('accepts exactly the accepted drafts plus one token inside the vocabulary', () => {
    expect(verifyReplyProblem(request, { accepted: 0, tokens: [9] }, 10)).toBeNull();
    expect(verifyReplyProblem(request, { accepted: 1, tokens: [4, 9] }, 10)).toBeNull();
    expect(verifyReplyProblem(request, { accepted: 2, tokens: [4, 5, 9] }, 10)).toBeNull();
    expect(verifyReplyProblem(request, { accepted: 2, tokens: [4, 5, 10] })).toBeNull(); // no vocabulary: not checked
  });
  it('names each contradiction', () => {
    expect(verifyReplyProblem(request, { accepted: 3, tokens: [4, 5, 6, 7] }, 10)).toMatch(/accepted 3 is not an integer in 0\.\.2/);
    expect(verifyReplyProblem(request, { accepted: -1, tokens: [] }, 10)).toMatch(/accepted -1/);
    expect(verifyReplyProblem(request, { accepted: 1.5, tokens: [4, 9] }, 10)).toMatch(/accepted 1.5/);
    expect(verifyReplyProblem(request, { accepted: 1, tokens: [4] }, 10)).toMatch(/1 tokens for 1 accepted/);
    expect(verifyReplyProblem(request, { accepted: 1, tokens: [4, 5, 6] }, 10)).toMatch(/3 tokens for 1 accepted/);
    expect(verifyReplyProblem(request, { accepted: 2, tokens: [4, 6, 9] }, 10)).toMatch(/token 1 is not the accepted draft token/);
    expect(verifyReplyProblem(request, { accepted: 0, tokens: [10] }, 10)).toMatch(/token 10 is outside the vocabulary \(10\)/);
    expect(generateEventProblem({ type: 'token', token: 10, forward_ms: 1 }, 10)).toMatch(/outside the vocabulary/);
    expect(generateEventProblem({ type: 'token', token: 9, forward_ms: 1 }, 10)).toBeNull();
  });
});

describe('verifyRequestSchema refuses what verification cannot use (a 400 at the origin, not a 500 mid-verification)', () => {
  const base = { context: [1, 2], sampling: { temperature: 0.8, top_p: 1, top_k: 0, seed: 0, offset: 0 } };
  const ok = (draft: unknown[], sampling = base.sampling) => verifyRequestSchema.safeParse({ ...base, draft, sampling }).success;
  it('a sparse q must be a distribution over distinct tokens that gives the drafted token mass', () => {
    expect(ok([{ token: 3, q: [[3, 0.75], [4, 0.25]] }])).toBe(true);
    expect(ok([{ token: 3 }])).toBe(true);
    expect(ok([{ token: 3, q: [[3, 0.5], [4, 0.25]] }])).toBe(false); // sums to 0.75
    expect(ok([{ token: 3, q: [[3, 0.5], [3, 0.5]] }])).toBe(false); // duplicate
    expect(ok([{ token: 3, q: [[4, 1]] }])).toBe(false); // the drafted token has no mass
    expect(ok([{ token: 3, q: [[3, 0], [4, 1]] }])).toBe(false);
  });
  it(`the RNG offset is at most MAX_SAMPLING_OFFSET (2^52), so every position stays a safe integer`, () => {
    expect(ok([], { ...base.sampling, offset: MAX_SAMPLING_OFFSET })).toBe(true);
    expect(ok([], { ...base.sampling, offset: MAX_SAMPLING_OFFSET + 1 })).toBe(false);
    expect(ok([], { ...base.sampling, temperature: 5e-324, top_p: 5e-324, top_k: 2 ** 31, seed: 2 ** 32 - 1 })).toBe(true);
  });
});
