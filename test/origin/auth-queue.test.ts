import { beforeAll, describe, expect, it } from 'vitest';
import { createOriginApp } from '../../origin/app';
import { ForwardQueue } from '../../origin/queue';
import { TargetModel } from '../../origin/target';
import { checkSignature, SIGNATURE_HEADER, signRequest, TIMESTAMP_HEADER } from '../../shared/origin-auth';
import type { VerifyResponse } from '../../shared/protocol';
import { loadNodeModel, TARGET_DIR } from '../support/models';

const secret = 'test-secret-0123456789abcdef';
const body = JSON.stringify({ context: [10, 20, 30], draft: [{ token: 5 }], sampling: { temperature: 0, top_p: 1, top_k: 0, seed: 0, offset: 0 } });

describe('request signing (shared/origin-auth)', () => {
  const check = async (headers: Record<string, string>, overrides: Partial<{ body: string; path: string; method: string }> = {}, now = Date.now()) =>
    checkSignature(secret, { method: 'POST', path: '/v1/verify', body, timestamp: headers[TIMESTAMP_HEADER], signature: headers[SIGNATURE_HEADER], ...overrides }, now);

  it('accepts its own signature and rejects tampering, another path, another secret, age and malformed headers', async () => {
    const headers = await signRequest(secret, 'POST', '/v1/verify', body);
    expect(await check(headers)).toEqual({ ok: true });
    expect(await check(headers, { body: body.replace('"token":5', '"token":6') })).toMatchObject({ ok: false, code: 'signature_invalid' });
    expect(await check(headers, { path: '/v1/generate' })).toMatchObject({ ok: false, code: 'signature_invalid' });
    expect(await check(await signRequest('another-secret-000000000', 'POST', '/v1/verify', body))).toMatchObject({ ok: false, code: 'signature_invalid' });
    expect(await check(headers, {}, Date.now() + 61_000)).toMatchObject({ ok: false, code: 'signature_expired' });
    expect(await check({})).toMatchObject({ ok: false, code: 'signature_missing' });
    expect(await check({ ...headers, [SIGNATURE_HEADER]: 'sha1=abc' })).toMatchObject({ ok: false, code: 'signature_malformed' });
  });
});

describe('reference origin: authentication and the forward-pass queue', () => {
  let app: ReturnType<typeof createOriginApp>;
  let queue: ForwardQueue;
  beforeAll(async () => {
    const model = await loadNodeModel(TARGET_DIR);
    queue = new ForwardQueue(1, 64);
    app = createOriginApp({ id: 'auth-origin', modelName: 'edgespec-target', target: new TargetModel(model.lm), secret, queue });
  });
  const post = (path: string, text: string, headers: Record<string, string> = {}) => app.request(path, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: text });

  it('answers 401 in OpenAI shape to unsigned, tampered and expired requests, 200 to signed ones', async () => {
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
    const ok = await post('/v1/verify', body, signed);
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as VerifyResponse).origin).toMatchObject({ id: 'auth-origin', queue_ms: expect.any(Number) });
    // Liveness stays open and says what it requires.
    const health = await app.request('/health');
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ auth: 'hmac-sha256', device: 'cpu', queue: { concurrency: 1 } });
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
});
