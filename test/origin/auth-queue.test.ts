import { beforeAll, describe, expect, it } from 'vitest';
import { createOriginApp } from '../../origin/app';
import { parseOriginKeys } from '../../origin/auth';
import { ForwardQueue } from '../../origin/queue';
import { SeenSignatures } from '../../origin/replay';
import { TargetModel } from '../../origin/target';
import {
  checkSignature,
  KEY_ID_HEADER,
  NONCE_HEADER,
  SIGNATURE_HEADER,
  signRequest,
  TIMESTAMP_HEADER,
  type SignedRequest,
} from '../../shared/origin-auth';
import type { VerifyResponse } from '../../shared/protocol';
import { loadNodeModel, TARGET_DIR } from '../support/models';

const secret = 'test-secret-0123456789abcdef';
const keys = new Map([['default', secret]]);
const body = JSON.stringify({ context: [10, 20, 30], draft: [{ token: 5 }], sampling: { temperature: 0, top_p: 1, top_k: 0, seed: 0, offset: 0 } });

describe('request signing (shared/origin-auth)', () => {
  const fromHeaders = (headers: Record<string, string>): Pick<SignedRequest, 'keyId' | 'timestamp' | 'nonce' | 'signature'> => ({
    keyId: headers[KEY_ID_HEADER],
    timestamp: headers[TIMESTAMP_HEADER],
    nonce: headers[NONCE_HEADER],
    signature: headers[SIGNATURE_HEADER],
  });
  const check = async (headers: Record<string, string>, overrides: Partial<SignedRequest> = {}, now = Date.now(), ring: ReadonlyMap<string, string> = keys) =>
    checkSignature(ring, { method: 'POST', path: '/v1/verify', body, ...fromHeaders(headers), ...overrides }, now);

  it('accepts its own signature and rejects tampering, another path, another secret, age and malformed headers', async () => {
    const headers = await signRequest(secret, 'POST', '/v1/verify', body);
    expect(headers[KEY_ID_HEADER]).toBe('default');
    expect(await check(headers)).toMatchObject({ ok: true, keyId: 'default', signature: headers[SIGNATURE_HEADER].slice(3), expiresAtMs: Number(headers[TIMESTAMP_HEADER]) + 60_000 });
    expect(await check(headers, { body: body.replace('"token":5', '"token":6') })).toMatchObject({ ok: false, code: 'signature_invalid' });
    expect(await check(headers, { path: '/v1/generate' })).toMatchObject({ ok: false, code: 'signature_invalid' });
    expect(await check(await signRequest('another-secret-000000000', 'POST', '/v1/verify', body))).toMatchObject({ ok: false, code: 'signature_invalid' });
    expect(await check(headers, {}, Date.now() + 61_000)).toMatchObject({ ok: false, code: 'signature_expired' });
    expect(await check({})).toMatchObject({ ok: false, code: 'signature_missing' });
    expect(await check({ ...headers, [SIGNATURE_HEADER]: 'sha1=abc' })).toMatchObject({ ok: false, code: 'signature_malformed' });
    // A v1 signature (no key id, no nonce) of the same bytes is refused as malformed, not silently accepted.
    expect(await check({ ...headers, [SIGNATURE_HEADER]: headers[SIGNATURE_HEADER].replace('v2=', 'v1=') })).toMatchObject({ ok: false, code: 'signature_malformed' });
    expect(await check({ ...headers, [NONCE_HEADER]: 'abc' })).toMatchObject({ ok: false, code: 'signature_malformed' });
    expect(await check({ ...headers, [KEY_ID_HEADER]: 'bad id!' })).toMatchObject({ ok: false, code: 'signature_malformed' });
  });

  it('signs the key id and the nonce: each request is unique, and neither can be swapped', async () => {
    const a = await signRequest(secret, 'POST', '/v1/verify', body, 1_000);
    const b = await signRequest(secret, 'POST', '/v1/verify', body, 1_000);
    expect(a[NONCE_HEADER]).toMatch(/^[0-9a-f]{32}$/);
    expect(a[NONCE_HEADER]).not.toBe(b[NONCE_HEADER]);
    expect(a[SIGNATURE_HEADER]).not.toBe(b[SIGNATURE_HEADER]);
    const fresh = await signRequest(secret, 'POST', '/v1/verify', body);
    expect(await check({ ...fresh, [NONCE_HEADER]: b[NONCE_HEADER] })).toMatchObject({ ok: false, code: 'signature_invalid' });
    // Both ids hold the same secret: only the signed key id is the one that verifies.
    const twoIds = new Map([['default', secret], ['other', secret]]);
    expect(await check(fresh, {}, Date.now(), twoIds)).toMatchObject({ ok: true, keyId: 'default' });
    expect(await check({ ...fresh, [KEY_ID_HEADER]: 'other' }, {}, Date.now(), twoIds)).toMatchObject({ ok: false, code: 'signature_invalid' });
  });

  it('refuses a key id the origin does not hold without listing the ones it does', async () => {
    const ring = new Map([['k-2025', 'a-secret-of-sixteen+'], ['k-2026', 'another-secret-16+']]);
    const headers = await signRequest('yet-another-secret-16', 'POST', '/v1/verify', body, Date.now(), 'k-2024');
    const result = await check(headers, {}, Date.now(), ring);
    expect(result).toMatchObject({ ok: false, code: 'signature_unknown_key', message: expect.stringMatching(/"k-2024".*not configured on this origin/) });
    expect(result.ok === false && result.message).not.toMatch(/k-2025|k-2026/);
    await expect(signRequest(secret, 'POST', '/v1/verify', body, Date.now(), 'no spaces')).rejects.toThrow(RangeError);
  });
});

describe('reference origin: authentication and the forward-pass queue', () => {
  let app: ReturnType<typeof createOriginApp>;
  let queue: ForwardQueue;
  beforeAll(async () => {
    const model = await loadNodeModel(TARGET_DIR);
    queue = new ForwardQueue(1, 64);
    app = createOriginApp({ id: 'auth-origin', modelName: 'edgespec-target', target: new TargetModel(model.lm), keys, queue });
  });
  const post = (path: string, text: string, headers: Record<string, string> = {}) => app.request(path, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: text });

  it('answers 401 in OpenAI shape to unsigned, tampered and expired requests, 200 to signed ones', async () => {
    const servedBefore = queue.stats().served;
    const unsigned = await post('/v1/verify', body);
    expect(unsigned.status).toBe(401);
    expect(await unsigned.json()).toMatchObject({ error: { type: 'authentication_error', code: 'signature_missing', message: expect.stringMatching(/ORIGIN_SECRET/) } });
    const signed = await signRequest(secret, 'POST', '/v1/verify', body);
    const tampered = await post('/v1/verify', body.replace('"token":5', '"token":6'), signed);
    expect(tampered.status).toBe(401);
    expect(((await tampered.json()) as { error: { code: string } }).error.code).toBe('signature_invalid');
    const old = await signRequest(secret, 'POST', '/v1/verify', body, Date.now() - 120_000);
    const expired = await post('/v1/verify', body, old);
    expect(expired.status).toBe(401);
    expect(((await expired.json()) as { error: { message: string } }).error.message).toMatch(/expired: its timestamp is 120 s old/);
    const generateUnsigned = await post('/v1/generate', JSON.stringify({ context: [1, 2], max_tokens: 2, sampling: { temperature: 0, top_p: 1, top_k: 0, seed: 0, offset: 0 } }));
    expect(generateUnsigned.status).toBe(401);
    // None of the refused requests reached the model.
    expect(queue.stats().served).toBe(servedBefore);
    const ok = await post('/v1/verify', body, signed);
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as VerifyResponse).origin).toMatchObject({ id: 'auth-origin', queue_ms: expect.any(Number) });
    // Liveness stays open and says what it requires.
    const health = await app.request('/health');
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ auth: 'hmac-sha256', device: 'cpu', queue: { concurrency: 1 } });
  });

  const errorCode = async (response: Response) => ((await response.json()) as { error: { code: string } }).error.code;

  it('refuses a replay (the same headers and body sent again) with signature_replayed, and the replay runs no forward pass', async () => {
    const headers = await signRequest(secret, 'POST', '/v1/verify', body);
    const first = await post('/v1/verify', body, headers);
    expect(first.status).toBe(200);
    const served = queue.stats().served;
    const replay = await post('/v1/verify', body, headers);
    expect(replay.status).toBe(401);
    expect(await replay.json()).toMatchObject({ error: { type: 'authentication_error', code: 'signature_replayed' } });
    // Concurrent copies of one fresh signature: exactly one passes.
    const fresh = await signRequest(secret, 'POST', '/v1/verify', body);
    const copies = await Promise.all([post('/v1/verify', body, fresh), post('/v1/verify', body, fresh), post('/v1/verify', body, fresh)]);
    expect(copies.map((r) => r.status).sort()).toEqual([200, 401, 401]);
    expect(queue.stats().served).toBe(served + 1);
  });

  it('refuses an unknown key id with signature_unknown_key before any forward pass', async () => {
    const served = queue.stats().served;
    const headers = await signRequest('some-other-secret-0123', 'POST', '/v1/verify', body, Date.now(), 'retired-2024');
    const response = await post('/v1/verify', body, headers);
    expect(response.status).toBe(401);
    expect(await response.json()).toMatchObject({ error: { code: 'signature_unknown_key', message: expect.stringMatching(/"retired-2024".*not configured on this origin/) } });
    // Signed with the right secret but relabelled: the key id is part of the signed string.
    const relabelled = { ...(await signRequest(secret, 'POST', '/v1/verify', body)), [KEY_ID_HEADER]: 'retired-2024' };
    expect(await errorCode(await post('/v1/verify', body, relabelled))).toBe('signature_unknown_key');
    expect(queue.stats().served).toBe(served);
  });

  it('checks the signature before parsing: a signed-over-nothing malformed body is a 401, the same body signed is a 400', async () => {
    const broken = '{"context": [1,';
    expect(await errorCode(await post('/v1/verify', broken))).toBe('signature_missing');
    expect(await errorCode(await post('/v1/verify', broken, await signRequest(secret, 'POST', '/v1/verify', broken)))).toBe('invalid_json');
  });

  it('queues concurrent verifies one forward pass at a time and reports the wait', async () => {
    const requests = Array.from({ length: 6 }, (_, i) => {
      const text = JSON.stringify({ context: Array.from({ length: 40 }, (_, j) => (i * 97 + j * 13) % 4000), draft: [{ token: 1 }, { token: 2 }], sampling: { temperature: 0, top_p: 1, top_k: 0, seed: 0, offset: 0 } });
      return signRequest(secret, 'POST', '/v1/verify', text).then((headers) => post('/v1/verify', text, headers));
    });
    const responses = await Promise.all(requests);
    const bodies = (await Promise.all(responses.map((r) => r.json()))) as VerifyResponse[];
    expect(responses.every((r) => r.status === 200)).toBe(true);
    const waits = bodies.map((b) => b.origin.queue_ms!).sort((a, b) => a - b);
    expect(waits[0]).toBeLessThan(waits[waits.length - 1]);
    // Serialized: the last one waited for at least the forward passes before it.
    const forward = bodies.map((b) => b.origin.forward_ms).sort((a, b) => a - b)[0];
    expect(waits[waits.length - 1]).toBeGreaterThanOrEqual(forward * 2);
  });
});

describe('ForwardQueue', () => {
  it('runs in arrival order, one at a time, and refuses past its waiting limit with 503 + Retry-After', async () => {
    const queue = new ForwardQueue(1, 2);
    const order: number[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const first = queue.run(async () => {
      await gate;
      order.push(0);
    });
    const rest = [1, 2].map((i) => queue.run(async () => void order.push(i)));
    await expect(queue.run(async () => {})).rejects.toMatchObject({ status: 503, code: 'origin_overloaded', headers: { 'retry-after': '1' } });
    expect(queue.stats()).toMatchObject({ running: 1, waiting: 2 });
    release();
    const results = await Promise.all([first, ...rest]);
    expect(order).toEqual([0, 1, 2]);
    expect(results[2].queueMs).toBeGreaterThanOrEqual(0);
    expect(queue.stats()).toMatchObject({ running: 0, waiting: 0, served: 3 });
  });

  it('drops a pass whose signal fires while it waits (it never runs), and never interrupts a running one', async () => {
    const queue = new ForwardQueue(1, 8);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const ran: string[] = [];
    const running = new AbortController();
    const first = queue.run(async () => {
      await gate;
      ran.push('first');
    }, running.signal);
    const cancelled = new AbortController();
    const dropped = queue.run(async () => void ran.push('dropped'), cancelled.signal);
    const kept = queue.run(async () => void ran.push('kept'));
    expect(queue.stats()).toMatchObject({ running: 1, waiting: 2 });
    cancelled.abort('client closed');
    await expect(dropped).rejects.toMatchObject({ name: 'AbortError', message: expect.stringMatching(/client closed/) });
    expect(queue.stats()).toMatchObject({ waiting: 1, dropped: 1 });
    running.abort(); // already running: runs to the end
    release();
    await Promise.all([first, kept]);
    expect(ran).toEqual(['first', 'kept']);
    expect(queue.stats()).toMatchObject({ running: 0, waiting: 0, served: 2, dropped: 1 });
    // Already aborted: refused at once, without taking a slot.
    await expect(queue.run(async () => void ran.push('late'), AbortSignal.abort())).rejects.toMatchObject({ name: 'AbortError' });
    expect(queue.stats()).toMatchObject({ running: 0, served: 2, dropped: 2 });
  });
});

describe('SeenSignatures (replay cache)', () => {
  it('remembers a signature until its expiry, then forgets it', () => {
    const seen = new SeenSignatures(10);
    expect(seen.recordOnce('a', 1_000, 0)).toBe(true);
    expect(seen.recordOnce('a', 1_000, 500)).toBe(false);
    expect(seen.recordOnce('a', 1_000, 1_000)).toBe(false);
    // Past its expiry the timestamp check refuses it anyway; the entry is gone.
    expect(seen.recordOnce('b', 5_000, 1_001)).toBe(true);
    expect(seen.size).toBe(1);
  });

  it('when full evicts expired entries first, then the ones closest to expiry, and never exceeds its bound', () => {
    const seen = new SeenSignatures(3);
    seen.recordOnce('x', 3_000, 0);
    seen.recordOnce('y', 1_000, 0);
    seen.recordOnce('z', 2_000, 0);
    // Full, nothing expired: the closest to expiry (y) goes.
    expect(seen.recordOnce('w', 4_000, 10)).toBe(true);
    expect(seen.size).toBe(3);
    expect(seen.recordOnce('y', 1_000, 10)).toBe(true); // forgotten: evicted (the price of the bound)
    expect(seen.recordOnce('x', 3_000, 10)).toBe(false);
    expect(seen.recordOnce('w', 4_000, 10)).toBe(false);
    // At 2 500 z (2 000) and the re-recorded y (1 000) are expired: both go, x and w stay.
    expect(seen.recordOnce('v', 9_000, 2_500)).toBe(true);
    expect(seen.size).toBe(3);
    expect(seen.recordOnce('x', 3_000, 2_500)).toBe(false);
    expect(seen.recordOnce('w', 4_000, 2_500)).toBe(false);
    for (let i = 0; i < 1_000; i++) seen.recordOnce(`s${i}`, 10_000 + (i % 7) * 100, 2_600);
    expect(seen.size).toBe(3);
  });
});

describe('origin key ring (ORIGIN_SECRET, ORIGIN_SECRETS)', () => {
  const a = 'aaaaaaaaaaaaaaaa-secret';
  const b = 'bbbbbbbbbbbbbbbb:with:colons';
  it('reads ORIGIN_SECRET as key id "default" and ORIGIN_SECRETS as id:secret pairs', () => {
    expect(parseOriginKeys({})).toEqual(new Map());
    expect(parseOriginKeys({ ORIGIN_SECRET: a })).toEqual(new Map([['default', a]]));
    expect(parseOriginKeys({ ORIGIN_SECRET: a, ORIGIN_SECRETS: `new-2026.1:${b}, old_2025:${a}` })).toEqual(
      new Map([['default', a], ['new-2026.1', b], ['old_2025', a]]),
    );
  });

  it.each([
    ['a short ORIGIN_SECRET', { ORIGIN_SECRET: 'short-secret' }, /ORIGIN_SECRET: the secret of key id "default" is shorter than 16/],
    ['an entry without a colon', { ORIGIN_SECRETS: `k1:${a},${b.replace(/:/g, '')}` }, /ORIGIN_SECRETS entry 2 of 2 is not of the form id:secret/],
    ['a bad key id', { ORIGIN_SECRETS: `bad id:${a}` }, /entry 1 of 1: the key id .* must match/],
    ['a too long key id', { ORIGIN_SECRETS: `${'k'.repeat(65)}:${a}` }, /entry 1 of 1: the key id/],
    ['a short secret', { ORIGIN_SECRETS: `k1:${a},k2:tooshort-secret` }, /entry 2 of 2: the secret of key id "k2" is shorter than 16/],
    ['a duplicate id', { ORIGIN_SECRET: a, ORIGIN_SECRETS: `default:${b}` }, /key id "default" is configured twice/],
    ['an empty entry', { ORIGIN_SECRETS: `k1:${a},` }, /entry 2 of 2 is not of the form/],
  ])('refuses %s with a message that never contains a secret', (_, env, message) => {
    let error: Error | undefined;
    try {
      parseOriginKeys(env);
    } catch (err) {
      error = err as Error;
    }
    expect(error?.message).toMatch(message);
    for (const secretText of [a, b, 'short-secret', 'tooshort-secret', b.replace(/:/g, '')]) expect(error?.message).not.toContain(secretText);
  });
});
