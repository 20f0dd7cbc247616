import { beforeAll, describe, expect, it } from 'vitest';
import { createOriginApp } from '../../origin/app';
import { ForwardQueue } from '../../origin/queue';
import { TargetModel } from '../../origin/target';
import type { LoadedModel } from '../../shared/model';
import { signRequest } from '../../shared/origin-auth';
import { parseExposition, sampleValue } from '../metrics/prometheus-text';
import { loadNodeModel, TARGET_DIR } from '../support/models';

/** The reference origin's GET /metrics (origin/metrics.ts), in-process on the shipped target. */
let model: LoadedModel;
const greedy = { temperature: 0, top_p: 1, top_k: 0, seed: 0, offset: 0 };
const verifyBody = JSON.stringify({ context: [10, 20, 30], draft: [{ token: 5 }, { token: 6 }], sampling: greedy });
const generateBody = JSON.stringify({ context: [10, 20, 30], max_tokens: 3, sampling: greedy });

beforeAll(async () => {
  model = await loadNodeModel(TARGET_DIR);
});

const post = (app: ReturnType<typeof createOriginApp>, path: string, body: string, headers: Record<string, string> = {}) =>
  app.request(path, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });

describe('origin /metrics', () => {
  it('moves as verify and generate run: requests by endpoint and status, forward passes, batch size, tokens, queue depth', async () => {
    const queue = new ForwardQueue(1, 8);
    const app = createOriginApp({ id: 'metrics-origin', modelName: 'edgespec-target', target: new TargetModel(model.lm), queue });
    const scrape = async () => {
      const response = await app.request('/metrics');
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
      return parseExposition(await response.text());
    };
    const before = await scrape();
    expect(sampleValue(before, 'edgespec_origin_queue_depth')).toBe(0);
    expect(before.types.get('edgespec_origin_forward_ms')).toBe('histogram');

    const verified = await post(app, '/v1/verify', verifyBody);
    expect(verified.status).toBe(200);
    const { tokens } = (await verified.json()) as { tokens: number[] };
    const generated = await post(app, '/v1/generate', generateBody);
    expect(generated.status).toBe(200);
    const tokenEvents = (await generated.text()).trim().split('\n').filter((line) => JSON.parse(line).type === 'token').length;
    expect((await post(app, '/v1/verify', '{"context": [')).status).toBe(400);

    const after = await scrape();
    expect(sampleValue(after, 'edgespec_origin_requests_total', { endpoint: 'verify', status: '200' })).toBe(1);
    expect(sampleValue(after, 'edgespec_origin_requests_total', { endpoint: 'verify', status: '400' })).toBe(1);
    expect(sampleValue(after, 'edgespec_origin_requests_total', { endpoint: 'generate', status: '200' })).toBe(1);
    // The scrape before this one counted too.
    expect(sampleValue(after, 'edgespec_origin_requests_total', { endpoint: 'metrics', status: '200' })).toBe(1);
    expect(sampleValue(after, 'edgespec_origin_tokens_verified_total')).toBe(2);
    expect(sampleValue(after, 'edgespec_origin_tokens_generated_total', { endpoint: 'verify' })).toBe(tokens.length);
    expect(sampleValue(after, 'edgespec_origin_tokens_generated_total', { endpoint: 'generate' })).toBe(tokenEvents);
    // One pass per verify, one per generated token; one sequence each (one pass at a time).
    const passes = 1 + tokenEvents;
    expect(sampleValue(after, 'edgespec_origin_forward_ms_count', { endpoint: 'verify' })).toBe(1);
    expect(sampleValue(after, 'edgespec_origin_forward_ms_count', { endpoint: 'generate' })).toBe(tokenEvents);
    expect(sampleValue(after, 'edgespec_origin_forward_ms_sum', { endpoint: 'verify' })).toBeGreaterThan(0);
    expect(sampleValue(after, 'edgespec_origin_batch_size_bucket', { le: '1' })).toBe(passes);
    expect(sampleValue(after, 'edgespec_origin_batch_size_sum')).toBe(passes);
    expect(sampleValue(after, 'edgespec_origin_queue_depth')).toBe(0);
  });

  it('reports the queue depth while passes wait', async () => {
    const queue = new ForwardQueue(1, 8);
    const app = createOriginApp({ id: 'queue-origin', modelName: 'edgespec-target', target: new TargetModel(model.lm), queue });
    let release!: () => void;
    const held = queue.run(() => new Promise<void>((resolve) => (release = resolve)));
    const waiting = [post(app, '/v1/verify', verifyBody), post(app, '/v1/verify', verifyBody)];
    const scrape = async () => parseExposition(await (await app.request('/metrics')).text());
    await expect.poll(async () => sampleValue(await scrape(), 'edgespec_origin_queue_depth')).toBe(2);
    expect(sampleValue(await scrape(), 'edgespec_origin_queue_running')).toBe(1);
    release();
    await held;
    for (const response of await Promise.all(waiting)) expect(response.status).toBe(200);
    expect(sampleValue(await scrape(), 'edgespec_origin_queue_depth')).toBe(0);
  });

  it('with a key ring, takes one of its secrets as a bearer token and refuses anything else without a metric in the answer', async () => {
    const keys = new Map([
      ['default', 'metrics-secret-0123456789'],
      ['next', 'metrics-secret-next-98765'],
    ]);
    const app = createOriginApp({ id: 'signed-origin', modelName: 'edgespec-target', target: new TargetModel(model.lm), keys });
    const scrape = (authorization?: string) => app.request('/metrics', { headers: authorization ? { authorization } : {} });
    for (const refused of [await scrape(), await scrape('Bearer wrong-secret-0000000000'), await scrape('metrics-secret-0123456789')]) {
      expect(refused.status).toBe(401);
      const text = await refused.text();
      expect(JSON.parse(text)).toMatchObject({ error: { type: 'authentication_error', code: 'metrics_auth_required' } });
      expect(text).not.toContain('edgespec_origin_');
    }
    for (const secret of keys.values()) {
      const ok = await scrape(`Bearer ${secret}`);
      expect(ok.status).toBe(200);
      expect(await ok.text()).toContain('# TYPE edgespec_origin_requests_total counter');
    }
    // The signed routes still want signatures, and count their refusals.
    expect((await post(app, '/v1/verify', verifyBody)).status).toBe(401);
    expect((await post(app, '/v1/verify', verifyBody, await signRequest(keys.get('default')!, 'POST', '/v1/verify', verifyBody))).status).toBe(200);
    const m = parseExposition(await (await scrape(`Bearer ${keys.get('next')}`)).text());
    expect(sampleValue(m, 'edgespec_origin_requests_total', { endpoint: 'verify', status: '401' })).toBe(1);
    expect(sampleValue(m, 'edgespec_origin_requests_total', { endpoint: 'metrics', status: '401' })).toBe(3);
  });
});
