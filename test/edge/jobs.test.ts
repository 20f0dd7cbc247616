import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, request as httpRequest, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { seedModels } from '../../scripts/seed-models';
import { adminApi, applyMigrations, supervise } from '../../scripts/stack';
import { api, apiKey, complete, createTenantKey, edgeUrl, originUrl, queryLocalD1, sleep, waitFor } from '../support/edge-client';
import { DRAFT_DIR } from '../support/models';
import { eventOf, recordsFor, startReceiver, type Receiver } from '../support/webhook-receiver';

/**
 * Background jobs against the real thing: the test Worker in workerd
 * (`wrangler dev`) with its local Queues, D1 and Durable Objects, the real
 * origin, and a real receiver process verifying every webhook with the
 * standardwebhooks library (and svix's). The test Worker runs webhooks on a
 * compressed clock and short leases (wrangler.toml [env.test.vars]).
 *
 * The last block starts a second edge (its own `wrangler dev`, reaching the
 * origin through a proxy this file can switch off) to show what only a
 * process of one's own can: a job whose origin stays down ends in the
 * dead-letter queue as `failed` with the reason, and killing the runtime
 * (SIGKILL, queues and all) while jobs run still completes each job exactly
 * once, charging the tenant for exactly one run of each.
 */
const RECEIVER_PORT = 25790;
const EXTRA_EDGE_PORT = 25791;
const PROXY_PORT = 25792;

const waitJob = (id: string, statuses: string[], key = apiKey(), timeoutMs = 30_000, base = edgeUrl()) =>
  waitFor(`job ${id} to be ${statuses.join(' or ')}`, async () => {
    const job = await api('GET', `/v1/jobs/${id}`, undefined, key, {}, base);
    return statuses.includes(job.json?.status) ? job.json : null;
  }, timeoutMs);

const parsed = eventOf;
const forJob = recordsFor;

let receiver: Receiver;
beforeAll(async () => {
  receiver = await startReceiver(RECEIVER_PORT);
});
afterAll(async () => {
  await receiver?.stop();
});

/** A registered endpoint on the receiver path `name`, answering as told and verifying with its secret. */
async function endpoint(name: string, eventTypes?: string[], key = apiKey(), mode: 'ok' | 'fail' = 'ok', base = edgeUrl()) {
  const created = await api('POST', '/v1/webhook_endpoints', { url: receiver.hook(name), ...(eventTypes ? { event_types: eventTypes } : {}) }, key, {}, base);
  expect(created.status, JSON.stringify(created.json)).toBe(201);
  await receiver.configure(name, { secrets: [created.json.secret], mode });
  return { id: created.json.id as string, secret: created.json.secret as string };
}

const greedy = (prompt: string, maxTokens: number) => ({ prompt, max_tokens: maxTokens, temperature: 0 });

describe('jobs with webhooks', () => {
  it('a job with a webhook: the receiver gets exactly one verified job.completed whose text is /v1/completions’ for the same greedy request', async () => {
    const request = greedy('export function debounce(fn, ms) {', 24);
    const reference = await complete(request);
    expect(reference.status).toBe(200);
    const hook = await endpoint('completed-once');

    const created = await api('POST', '/v1/jobs', { ...request, webhook: hook.id, metadata: { order: '42' } });
    expect(created.status, JSON.stringify(created.json)).toBe(202);
    expect(created.json).toMatchObject({ id: expect.stringMatching(/^job_[0-9a-f]{24}$/), object: 'job', status: 'queued', attempts: 0, metadata: { order: '42' }, webhook: { endpoint_id: hook.id }, result: null });

    const job = await waitJob(created.json.id, ['completed', 'failed']);
    expect(job.status, JSON.stringify(job.error)).toBe('completed');
    expect(job.result.text).toBe(reference.json.choices[0].text);
    expect(job.result.finish_reason).toBe(reference.json.choices[0].finish_reason);
    expect(job.usage).toMatchObject({ prompt_tokens: reference.json.usage.prompt_tokens, completion_tokens: reference.json.usage.completion_tokens });
    expect(job.speculation).toMatchObject({ rounds: expect.any(Number) });
    expect(job.attempts).toBe(1);
    expect(job.started_at).toBeGreaterThanOrEqual(job.created_at);
    expect(job.finished_at).toBeGreaterThanOrEqual(job.started_at);

    const first = await waitFor('the webhook', async () => forJob(await receiver.received('completed-once'), job.id, 'job.completed')[0]);
    await sleep(2_500); // time for a duplicate to show up, if the sender made one
    const all = forJob(await receiver.received('completed-once'), job.id);
    expect(all, 'job.started is not in the endpoint filter').toHaveLength(1);
    expect(first.verified).toEqual([true]);
    if (first.svixVerified) expect(first.svixVerified).toEqual([true]);
    const event = parsed(first);
    expect(event).toMatchObject({ type: 'job.completed', data: { id: job.id, object: 'job', status: 'completed', metadata: { order: '42' } } });
    expect(event.data.result.text).toBe(reference.json.choices[0].text);
    expect(Math.abs(Date.parse(event.timestamp) / 1000 - Number(first.timestamp))).toBeLessThan(30);

    const deliveries = await api('GET', `/v1/jobs/${job.id}/deliveries`);
    expect(deliveries.status).toBe(200);
    expect(deliveries.json.data).toHaveLength(1);
    expect(deliveries.json.data[0]).toMatchObject({ event_id: first.id, event_type: 'job.completed', endpoint_id: hook.id, status: 'succeeded', attempts: [{ attempt: 1, status_code: 200, outcome: 'success', response_snippet: '{"ok":true}' }] });
    expect(deliveries.json.data[0].attempts[0].latency_ms).toBeGreaterThanOrEqual(0);
  });

  it('an inline webhook URL: with the caller’s secret it signs with it; without one a secret is made and shown once', async () => {
    const secret = `whsec_${randomBytes(32).toString('base64')}`;
    await receiver.configure('inline', { secrets: [secret], mode: 'ok' });
    const mine = await api('POST', '/v1/jobs', { ...greedy('let total = 0;', 6), webhook: { url: receiver.hook('inline'), secret, event_types: ['job.started', 'job.completed'] } });
    expect(mine.status, JSON.stringify(mine.json)).toBe(202);
    expect(mine.json.webhook).toMatchObject({ inline: true, url: receiver.hook('inline') });
    expect(mine.json.webhook.secret, 'the caller knows its own secret').toBeUndefined();
    await waitJob(mine.json.id, ['completed']);
    const records = await waitFor('both events', async () => {
      const got = forJob(await receiver.received('inline'), mine.json.id);
      return got.length >= 2 ? got : null;
    });
    expect(records.map((r) => parsed(r).type).sort()).toEqual(['job.completed', 'job.started']);
    expect(records.every((r) => r.verified[0])).toBe(true);

    // Without a secret: the 202 shows a generated one, once; GET never does.
    const generated = await api('POST', '/v1/jobs', { ...greedy('x', 1), webhook: { url: receiver.hook('inline-generated') } });
    expect(generated.json.webhook.secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    const again = await api('GET', `/v1/jobs/${generated.json.id}`);
    expect(again.json.webhook).toMatchObject({ inline: true });
    expect(JSON.stringify(again.json)).not.toContain(generated.json.webhook.secret);
    // Inline endpoints' secrets, the caller's and the generated one, are sealed at rest like registered ones.
    const inline: Array<[any, string]> = [[mine.json, secret], [generated.json, generated.json.webhook.secret]];
    for (const [created, known] of inline) {
      const endpointId = created.webhook.endpoint_id as string;
      expect(endpointId).toMatch(/^whe_[0-9a-f]{24}$/);
      const [row] = await queryLocalD1<{ secret: string }>(`SELECT secret FROM webhook_endpoints WHERE id = '${endpointId}'`);
      expect(row.secret).toMatch(/^sbx1:[0-9a-f]{16}:/);
      expect(row.secret).not.toContain(known.slice('whsec_'.length));
    }
    // Inline endpoints are not in the endpoint list.
    const endpoints = await api('GET', '/v1/webhook_endpoints?limit=100');
    expect((endpoints.json.data as any[]).some((e) => e.url === receiver.hook('inline'))).toBe(false);
  });
});

describe('Idempotency-Key', () => {
  it('the same key and body within 24 h is the same job; another body is a 409; racing requests make one job', async () => {
    const tenant = await createTenantKey();
    const body = { prompt: 'const a = [1, 2, 3];', max_tokens: 2, temperature: 0, metadata: { a: '1', b: '2' } };
    const key = `order-${randomBytes(4).toString('hex')}`;
    const first = await api('POST', '/v1/jobs', body, tenant.key, { 'idempotency-key': key });
    expect(first.status).toBe(202);
    const again = await api('POST', '/v1/jobs', body, tenant.key, { 'idempotency-key': key });
    expect(again.status).toBe(202);
    expect(again.json.id).toBe(first.json.id);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    // Same JSON with its keys in another order is the same body.
    const reordered = await api('POST', '/v1/jobs', { metadata: { b: '2', a: '1' }, temperature: 0, max_tokens: 2, prompt: 'const a = [1, 2, 3];' }, tenant.key, { 'idempotency-key': key });
    expect(reordered.json.id).toBe(first.json.id);
    const conflict = await api('POST', '/v1/jobs', { ...body, max_tokens: 3 }, tenant.key, { 'idempotency-key': key });
    expect(conflict.status).toBe(409);
    expect(conflict.json.error).toMatchObject({ type: 'invalid_request_error', code: 'idempotency_key_reused', param: 'Idempotency-Key' });
    // Another tenant's identical key is its own.
    const other = await api('POST', '/v1/jobs', body, apiKey(), { 'idempotency-key': key });
    expect(other.status).toBe(202);
    expect(other.json.id).not.toBe(first.json.id);

    const raceKey = `race-${randomBytes(4).toString('hex')}`;
    const raced = await Promise.all(Array.from({ length: 6 }, () => api('POST', '/v1/jobs', body, tenant.key, { 'idempotency-key': raceKey })));
    expect(raced.map((r) => r.status)).toEqual(Array(6).fill(202));
    expect(new Set(raced.map((r) => r.json.id)).size).toBe(1);

    const listed = await api('GET', '/v1/jobs?limit=100', undefined, tenant.key);
    expect(listed.json.data.map((j: any) => j.id).sort()).toEqual([first.json.id, raced[0].json.id].sort());
    const bad = await api('POST', '/v1/jobs', body, tenant.key, { 'idempotency-key': 'has a space' });
    expect(bad.status).toBe(400);
    await waitJob(first.json.id, ['completed'], tenant.key);
    // A finished job is still what its key returns.
    expect((await api('POST', '/v1/jobs', body, tenant.key, { 'idempotency-key': key })).json).toMatchObject({ id: first.json.id, status: 'completed' });
  });
});

describe('cancel', () => {
  it('a running job stops within a round (job.cancelled, partial result, charged for what ran); a queued one is cancelled at once', async () => {
    const tenant = await createTenantKey();
    const hook = await endpoint('cancel', ['job.started', 'job.completed', 'job.cancelled', 'job.failed'], tenant.key);
    const long = await api('POST', '/v1/jobs', { ...greedy('// A long file of utilities\nexport function', 900), webhook: hook.id }, tenant.key);
    expect(long.status).toBe(202);
    await waitJob(long.json.id, ['in_progress'], tenant.key);
    await sleep(500);
    // The local queue hands out one batch at a time: this job waits behind the running one.
    const waiting = await api('POST', '/v1/jobs', { ...greedy('let x = 1;', 4), webhook: hook.id }, tenant.key);
    const cancelledQueued = await api('POST', `/v1/jobs/${waiting.json.id}/cancel`, undefined, tenant.key);
    expect(cancelledQueued.status).toBe(200);
    expect(cancelledQueued.json).toMatchObject({ status: 'cancelled', attempts: 0, result: null });

    const asked = Date.now();
    const cancelling = await api('POST', `/v1/jobs/${long.json.id}/cancel`, undefined, tenant.key);
    expect(cancelling.status).toBe(200);
    expect(['in_progress', 'cancelled']).toContain(cancelling.json.status);
    const cancelled = await waitJob(long.json.id, ['cancelled', 'completed', 'failed'], tenant.key, 10_000, edgeUrl());
    const tookMs = Date.now() - asked;
    expect(cancelled.status).toBe('cancelled');
    expect(tookMs, 'a cancel takes effect between rounds').toBeLessThan(2_500);
    expect(cancelled.cancel_requested).toBe(true);
    expect(cancelled.usage.completion_tokens).toBeGreaterThan(0);
    expect(cancelled.usage.completion_tokens).toBeLessThan(900);
    expect(cancelled.result.text.length).toBeGreaterThan(0);
    expect(cancelled.result.finish_reason).toBeNull();

    const events = await waitFor('the cancel events', async () => {
      const got = await receiver.received('cancel');
      return forJob(got, long.json.id, 'job.cancelled').length && forJob(got, waiting.json.id, 'job.cancelled').length ? got : null;
    });
    expect(forJob(events, long.json.id).map((r) => parsed(r).type)).toEqual(['job.started', 'job.cancelled']);
    expect(forJob(events, waiting.json.id).map((r) => parsed(r).type)).toEqual(['job.cancelled']);
    expect(parsed(forJob(events, long.json.id, 'job.cancelled')[0]).data.usage.completion_tokens).toBe(cancelled.usage.completion_tokens);

    // Cancelling again is a no-op; a finished job cannot be cancelled.
    expect((await api('POST', `/v1/jobs/${long.json.id}/cancel`, undefined, tenant.key)).json.status).toBe('cancelled');
    const done = await api('POST', '/v1/jobs', greedy('x', 1), tenant.key);
    await waitJob(done.json.id, ['completed'], tenant.key);
    const refused = await api('POST', `/v1/jobs/${done.json.id}/cancel`, undefined, tenant.key);
    expect(refused.status).toBe(409);
    expect(refused.json.error.code).toBe('job_not_cancellable');
  });
});

describe('tenants and limits', () => {
  it('a tenant never sees another’s jobs or endpoints (404), and lists page by cursor', async () => {
    const a = await createTenantKey();
    const b = await createTenantKey();
    const hook = await endpoint('isolation', undefined, a.key);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await api('POST', '/v1/jobs', { ...greedy(`let v${i} = ${i};`, 1), webhook: hook.id }, a.key)).json.id);

    for (const [method, path] of [
      ['GET', `/v1/jobs/${ids[0]}`],
      ['POST', `/v1/jobs/${ids[0]}/cancel`],
      ['GET', `/v1/jobs/${ids[0]}/deliveries`],
      ['GET', `/v1/webhook_endpoints/${hook.id}`],
      ['DELETE', `/v1/webhook_endpoints/${hook.id}`],
      ['POST', `/v1/webhook_endpoints/${hook.id}/rotate_secret`],
    ]) {
      const answer = await api(method, path, undefined, b.key);
      expect(answer.status, `${method} ${path}`).toBe(404);
    }
    expect((await api('PATCH', `/v1/webhook_endpoints/${hook.id}`, { enabled: false }, b.key)).status).toBe(404);
    const borrowed = await api('POST', '/v1/jobs', { ...greedy('x', 1), webhook: hook.id }, b.key);
    expect(borrowed.status).toBe(400);
    expect(borrowed.json.error).toMatchObject({ param: 'webhook', code: 'webhook_endpoint_not_found' });
    expect((await api('GET', '/v1/jobs', undefined, b.key)).json.data).toEqual([]);
    expect((await api('GET', '/v1/webhook_endpoints', undefined, b.key)).json.data).toEqual([]);
    // A's endpoint is untouched by B's attempts.
    expect((await api('GET', `/v1/webhook_endpoints/${hook.id}`, undefined, a.key)).json).toMatchObject({ id: hook.id, enabled: true });

    const page1 = await api('GET', '/v1/jobs?limit=2', undefined, a.key);
    expect(page1.json).toMatchObject({ object: 'list', has_more: true, first_id: ids[2], last_id: ids[1] });
    const page2 = await api('GET', `/v1/jobs?limit=2&after=${page1.json.last_id}`, undefined, a.key);
    expect(page2.json).toMatchObject({ has_more: false, first_id: ids[0], last_id: ids[0] });
    // A cursor from another tenant's list finds nothing.
    expect((await api('GET', `/v1/jobs?after=${ids[2]}`, undefined, b.key)).json.data).toEqual([]);
    expect((await api('GET', '/v1/jobs?limit=0', undefined, a.key)).status).toBe(400);
    expect((await api('GET', '/v1/jobs?status=bogus', undefined, a.key)).status).toBe(400);
    for (const id of ids) await waitJob(id, ['completed'], a.key);
    expect((await api('GET', '/v1/jobs?status=completed&limit=10', undefined, a.key)).json.data).toHaveLength(3);
  });

  it('rate limits apply to jobs: one that can never fit fails with request_too_large (and says so to its webhook); the tenant’s max_tokens too', async () => {
    const tenant = await createTenantKey({ tokens_per_minute: 50, max_tokens: 100 });
    const hook = await endpoint('limits', undefined, tenant.key);
    const tooLarge = await api('POST', '/v1/jobs', { ...greedy('let a = 1;', 90), webhook: hook.id }, tenant.key);
    const overCap = await api('POST', '/v1/jobs', { ...greedy('let a = 1;', 101), webhook: hook.id }, tenant.key);
    const failed = await waitJob(tooLarge.json.id, ['failed', 'completed'], tenant.key);
    expect(failed).toMatchObject({ status: 'failed', error: { code: 'request_too_large' }, result: null, usage: null });
    expect((await waitJob(overCap.json.id, ['failed', 'completed'], tenant.key)).error).toMatchObject({ code: 'limit_exceeded' });
    const event = await waitFor('job.failed', async () => forJob(await receiver.received('limits'), tooLarge.json.id, 'job.failed')[0]);
    expect(parsed(event).data.error.code).toBe('request_too_large');
    // A job that fits runs.
    const fits = await api('POST', '/v1/jobs', greedy('let a = 1;', 8), tenant.key);
    expect((await waitJob(fits.json.id, ['completed', 'failed'], tenant.key)).status).toBe('completed');
  });

  it('drafts from a prediction like /v1/completions does (the consumer passes it on)', async () => {
    const request = greedy('function clamp(value, low, high) {', 24);
    const reference = await complete(request);
    const created = await api('POST', '/v1/jobs', { ...request, prediction: { type: 'content', content: reference.json.choices[0].text } });
    expect(created.status).toBe(202);
    const job = await waitJob(created.json.id, ['completed', 'failed']);
    expect(job.result.text).toBe(reference.json.choices[0].text);
    expect(job.usage.completion_tokens_details.accepted_prediction_tokens).toBeGreaterThan(0);
    expect(job.speculation.proposers.prediction.accepted).toBeGreaterThan(0);
  });

  it('refuses what a job cannot be: streaming, per-token details, bad metadata, another model, a refused webhook URL', async () => {
    const cases: Array<[unknown, number, string | null]> = [
      [{ prompt: 'x', stream: true }, 400, 'stream'],
      [{ prompt: 'x', metadata: { k: 'v'.repeat(600) } }, 400, 'metadata.k'],
      [{ prompt: 'x', model: 'gpt-4' }, 404, 'model'],
      [{ prompt: 'x', webhook: { url: 'https://169.254.169.254/latest' } }, 400, 'webhook.url'],
      [{ prompt: 'x', webhook: { url: 'http://example.com/hook' } }, 400, 'webhook.url'],
      [{ prompt: 'x', webhook: 'whe_000000000000000000000000' }, 400, 'webhook'],
      [{ prompt: 'x', n: 2 }, 400, 'n'],
      // Per-token details are not kept in a job's result: refused, never silently dropped.
      [{ prompt: 'x', logprobs: 2 }, 400, 'logprobs'],
      [{ prompt: 'x', speculation: { record: true } }, 400, 'speculation.record'],
    ];
    for (const [body, status, param] of cases) {
      const answer = await api('POST', '/v1/jobs', body);
      expect(answer.status, JSON.stringify(body)).toBe(status);
      expect(answer.json.error.param).toBe(param);
    }
    expect((await fetch(`${edgeUrl()}/v1/jobs`, { method: 'POST', body: '{}' })).status).toBe(401);
  });
});

// ---------------------------------------------------------------------------------------------
// A second edge of our own: its origin behind a switch, and a process we may kill.

/** A TCP-level switch in front of the origin: "up" forwards, "down" refuses connections. */
class OriginSwitch {
  private server: Server | null = null;
  constructor(private readonly port: number, private readonly target: string) {}
  async up(): Promise<void> {
    if (this.server) return;
    const target = new URL(this.target);
    const server = createServer((req, res) => {
      const upstream = httpRequest({ host: target.hostname, port: target.port, path: req.url, method: req.method, headers: req.headers }, (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      });
      upstream.on('error', () => res.destroy());
      req.pipe(upstream);
    });
    server.listen(this.port, '127.0.0.1');
    await once(server, 'listening');
    this.server = server;
  }
  async down(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (!server) return;
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
}

interface ExtraEdge {
  url: string;
  process: ChildProcess;
  output(): string;
  kill(): Promise<void>;
  stop(): Promise<void>;
}

const extra = {
  persistTo: `.wrangler/test-state-${EXTRA_EDGE_PORT}`,
  adminSecret: randomBytes(24).toString('hex'),
  work: '',
};

/** `wrangler dev --env test` in a process group of its own, so SIGKILL takes workerd with it. */
async function startExtraEdge(): Promise<ExtraEdge> {
  if (!extra.work) {
    extra.work = await mkdtemp(join(tmpdir(), 'edgespec-jobs-'));
    await mkdir(join(extra.work, 'registry'));
    await writeFile(join(extra.work, 'secrets.env'), `ADMIN_SECRET=${extra.adminSecret}\n`, { mode: 0o600 });
    await seedModels({ persistTo: extra.persistTo, modelDirs: [DRAFT_DIR] });
    await applyMigrations(extra.persistTo, 'test');
  }
  const url = `http://127.0.0.1:${EXTRA_EDGE_PORT}`;
  const draftName = DRAFT_DIR.split(/[\\/]/).filter(Boolean).pop()!;
  const child = spawn(
    process.execPath,
    [
      'node_modules/wrangler/bin/wrangler.js', 'dev', '--env', 'test', '--ip', '127.0.0.1', '--port', String(EXTRA_EDGE_PORT), '--persist-to', extra.persistTo,
      '--inspector-port', '0', '--show-interactive-dev-session=false', '--env-file', join(extra.work, 'secrets.env'),
      '--var', `ORIGIN_URL:http://127.0.0.1:${PROXY_PORT}`, '--var', `DRAFT_MODEL:${draftName}`, '--var', 'WEBHOOK_ALLOW_HTTP_LOOPBACK:on',
      // Breakers reopen fast, so an origin that comes back is used again soon.
      '--var', 'ORIGIN_BREAKER_COOLDOWN_MS:500', '--var', 'ORIGIN_TIMEOUT_MS:5000',
    ],
    {
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, WRANGLER_SEND_METRICS: 'false', CLOUDFLARE_CF_FETCH_ENABLED: 'false', CI: '1', WRANGLER_REGISTRY_PATH: join(extra.work, 'registry'), WRANGLER_LOG: 'warn' },
    },
  );
  const service = await supervise(child, `${url}/health`, url, '[jobs-edge]', 120_000, {});
  return {
    url,
    process: child,
    output: service.output,
    async kill() {
      const exited = once(child, 'exit');
      process.kill(-child.pid!, 'SIGKILL');
      await exited;
      // workerd is gone with its group when the port is free again.
      await waitFor('the killed edge to let go of its port', async () => !(await fetch(`${url}/health`).then(() => true, () => false)), 10_000, 100);
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = once(child, 'exit');
        try {
          process.kill(-child.pid!, 'SIGTERM');
        } catch {
          /* gone */
        }
        const timer = setTimeout(() => process.kill(-child.pid!, 'SIGKILL'), 5_000);
        await exited;
        clearTimeout(timer);
      }
      void service;
    },
  };
}

describe('a second edge: dead letters, and a runtime killed mid-job', () => {
  const origin = new OriginSwitch(PROXY_PORT, originUrl());
  let edge: ExtraEdge | null = null;
  // It boots (seed, migrations, wrangler dev) while the tests above run.
  const booting = origin.up().then(startExtraEdge);
  booting.catch(() => {});
  afterAll(async () => {
    await (edge ?? (await booting.catch(() => null)))?.stop();
    await origin.down();
    if (extra.work) await rm(extra.work, { recursive: true, force: true });
  });

  it('an origin that stays down: the job is retried max_retries times, then the dead-letter queue fails it with the reason', async () => {
    edge = await booting;
    const { createTenantKey: createKey } = adminApi(edge.url, extra.adminSecret);
    const tenant = await createKey();
    const hook = await endpoint('dead-letter', undefined, tenant.key, 'ok', edge.url);
    await origin.down();
    try {
      const job = await api('POST', '/v1/jobs', { ...greedy('let a = 1;', 4), webhook: hook.id }, tenant.key, {}, edge.url);
      expect(job.status).toBe(202);
      const failed = await waitJob(job.json.id, ['failed', 'completed'], tenant.key, 45_000, edge.url);
      expect(failed.status).toBe('failed');
      // wrangler.toml [env.test]: max_retries = 3, so at least 4 runs, then the dead-letter queue. (A run that hangs on the
      // dead origin past its lease is taken over by the sweeper's message, so there may be more; JOB_MAX_ATTEMPTS bounds them.)
      expect(failed.attempts).toBeGreaterThanOrEqual(4);
      expect(failed.attempts).toBeLessThanOrEqual(10);
      expect(failed.error.code).toMatch(/^origin_/);
      expect(failed.error.message).toMatch(new RegExp(`^Gave up after ${failed.attempts} run\\(s\\): `));
      expect(failed.error.message).not.toMatch(/127\.0\.0\.1|http:/);
      const event = await waitFor('job.failed', async () => forJob(await receiver.received('dead-letter'), job.json.id, 'job.failed')[0]);
      expect(parsed(event).data.error).toEqual(failed.error);
    } finally {
      await origin.up();
    }
  });

  it('SIGKILL of the runtime while jobs run: after a restart every job completes exactly once, and the tenant pays for one run of each', async () => {
    edge ??= await booting;
    const { createTenantKey: createKey } = adminApi(edge.url, extra.adminSecret);
    // Small enough that a probe can ask for one token more than what is left, large enough never to stop these jobs.
    const DAILY = 4_000;
    const tenant = await createKey({ tokens_per_day: DAILY });
    const hook = await endpoint('restart', ['job.started', 'job.completed', 'job.failed', 'job.cancelled'], tenant.key, 'ok', edge.url);
    const prompts = Array.from({ length: 5 }, (_, i) => `// helper ${i}\nexport function helper${i}(input) {`);
    const references = await Promise.all(prompts.map((p) => complete(greedy(p, 160))));
    const ids: string[] = [];
    for (const prompt of prompts) ids.push((await api('POST', '/v1/jobs', { ...greedy(prompt, 160), webhook: hook.id }, tenant.key, {}, edge.url)).json.id);
    await waitFor('jobs to be running', async () => {
      const list = await api('GET', '/v1/jobs?status=in_progress', undefined, tenant.key, {}, edge!.url);
      return list.json.data.length >= 2;
    }, 30_000, 50);
    await sleep(300);
    await edge.kill();
    edge = await startExtraEdge();

    const finished = await Promise.all(ids.map((id) => waitJob(id, ['completed', 'failed', 'cancelled'], tenant.key, 60_000, edge!.url)));
    finished.forEach((job, i) => {
      expect(job.status, JSON.stringify(job.error)).toBe('completed');
      expect(job.result.text, `job ${i}`).toBe(references[i].json.choices[0].text);
    });
    expect(finished.some((job) => job.attempts >= 2), 'a run was interrupted and taken over').toBe(true);

    await sleep(3_000); // time for duplicates to arrive
    const records = await receiver.received('restart');
    for (const job of finished) {
      const completed = forJob(records, job.id, 'job.completed');
      expect(completed.length, `job.completed of ${job.id}`).toBeGreaterThanOrEqual(1);
      expect(new Set(completed.map((r) => r.id)).size, 'one event, however often delivered').toBe(1);
      expect(completed.every((r) => r.verified[0])).toBe(true);
      const deliveries = (await api('GET', `/v1/jobs/${job.id}/deliveries`, undefined, tenant.key, {}, edge.url)).json.data as any[];
      expect(deliveries.filter((d) => d.event_type === 'job.completed')).toHaveLength(1);
      expect(deliveries.filter((d) => d.event_type === 'job.started')).toHaveLength(1);
    }

    // Charged once: the day's quota holds exactly DAILY minus what the completed runs used.
    // A request reserving one token more than that is refused; the interrupted runs' reservations were given back.
    const used = finished.reduce((sum, job) => sum + job.usage.total_tokens, 0);
    const left = DAILY - used;
    const probe = (maxTokens: number) => api('POST', '/v1/completions', { prompt: [1], max_tokens: maxTokens, temperature: 0, stream: true }, tenant.key, {}, edge!.url);
    const over = await probe(left); // reserves 1 + left
    expect(over.status, JSON.stringify(over.json)).toBe(429);
    expect(over.json.error.code).toBe('insufficient_quota');
    expect(over.json.error.message).toContain(`${used} used`);
  });
});
