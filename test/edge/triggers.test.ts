import { createHmac, randomBytes } from 'node:crypto';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, complete, createTenantKey, edgeUrl, queryLocalD1, waitFor } from '../support/edge-client';
import { eventOf, recordsFor, startReceiver, type Receiver } from '../support/webhook-receiver';

/**
 * Inbound triggers against the real test Worker: a sender signs an event
 * the way GitHub, Stripe, Slack or a Standard Webhooks sender does (here with
 * node:crypto and the standardwebhooks library, not the code under test),
 * POSTs it to /v1/triggers/<id>/events without an API key, and the
 * rendered prompt runs as a job whose result reaches the trigger's
 * destination endpoint on a real receiver.
 */
const RECEIVER_PORT = 25794;
type Scheme = 'github' | 'stripe' | 'slack' | 'standard-webhooks';

const hex = (key: string, data: string) => createHmac('sha256', key).update(data).digest('hex');
const nowS = () => Math.floor(Date.now() / 1000);

/** Headers a sender of `scheme` puts on `body`, signed with `secret` at `at` (Unix seconds). */
function sign(scheme: Scheme, secret: string, body: string, deliveryId: string, at = nowS()): Record<string, string> {
  const json = { 'content-type': 'application/json' };
  switch (scheme) {
    case 'github':
      return { ...json, 'x-hub-signature-256': `sha256=${hex(secret, body)}`, 'x-github-delivery': deliveryId, 'x-github-event': 'issues' };
    case 'stripe':
      return { ...json, 'stripe-signature': `t=${at},v1=${hex(secret, `${at}.${body}`)}` };
    case 'slack':
      return { ...json, 'x-slack-request-timestamp': String(at), 'x-slack-signature': `v0=${hex(secret, `v0:${at}:${body}`)}` };
    case 'standard-webhooks':
      return { ...json, 'webhook-id': deliveryId, 'webhook-timestamp': String(at), 'webhook-signature': new Webhook(secret).sign(deliveryId, new Date(at * 1000), body) };
  }
}

/** An event body; Stripe and Slack carry their delivery id inside it. */
const eventBody = (deliveryId: string, number: number, title: string) =>
  JSON.stringify({ id: deliveryId, event_id: deliveryId, type: 'issues.opened', action: 'opened', issue: { number, title } });

const TEMPLATE = '// Issue #{{ payload.issue.number }}: {{ payload.issue.title }} ({{ event }})\nexport function fix{{ payload.issue.number }}() {';
const rendered = (number: number, title: string, event: string) => `// Issue #${number}: ${title} (${event})\nexport function fix${number}() {`;
const eventName: Record<Scheme, string> = { github: 'issues', stripe: 'issues.opened', slack: 'issues.opened', 'standard-webhooks': 'issues.opened' };

let receiver: Receiver;
let tenant: { key: string };
let destination: { id: string; secret: string };
beforeAll(async () => {
  receiver = await startReceiver(RECEIVER_PORT);
  tenant = await createTenantKey();
  const created = await api('POST', '/v1/webhook_endpoints', { url: receiver.hook('triggers'), event_types: ['job.completed', 'job.failed'] }, tenant.key);
  destination = { id: created.json.id, secret: created.json.secret };
  await receiver.configure('triggers', { secrets: [destination.secret], mode: 'ok' });
});
afterAll(async () => {
  await receiver?.stop();
});

async function createTrigger(scheme: Scheme, extra: Record<string, unknown> = {}) {
  const created = await api('POST', '/v1/triggers', { scheme, name: `${scheme} issues`, template: TEMPLATE, params: { max_tokens: 8, temperature: 0 }, webhook_endpoint_id: destination.id, ...extra }, tenant.key);
  expect(created.status, JSON.stringify(created.json)).toBe(201);
  return created.json as { id: string; secret: string; url: string };
}

const post = async (url: string, body: string | Uint8Array, headers: Record<string, string>) => {
  const started = Date.now();
  const response = await fetch(url, { method: 'POST', headers, body });
  return { status: response.status, json: (await response.json().catch(() => null)) as any, ms: Date.now() - started };
};

const jobCount = async () => (await api('GET', '/v1/jobs?limit=100', undefined, tenant.key)).json.data.length as number;

describe.each(['github', 'stripe', 'slack', 'standard-webhooks'] as const)('%s trigger', (scheme) => {
  it('valid → 202 within a second and one job from the rendered template; tampered, stale, unsigned → 401; a replay → acknowledged, not run again', async () => {
    const trigger = await createTrigger(scheme, scheme === 'github' ? { secret: `gh-${randomBytes(12).toString('hex')}` } : {});
    expect(trigger.url).toBe(`${edgeUrl()}/v1/triggers/${trigger.id}/events`);
    if (scheme === 'standard-webhooks') expect(trigger.secret).toMatch(/^whsec_/);
    const deliveryId = `${scheme}-${randomBytes(6).toString('hex')}`;
    const number = 100 + Math.floor(Math.random() * 800);
    const body = eventBody(deliveryId, number, 'Crash on start');
    const before = await jobCount();

    // Refused: nothing is enqueued.
    const tampered = await post(trigger.url, body.replace('Crash', 'Hang!'), sign(scheme, trigger.secret, body, deliveryId));
    expect(tampered.status).toBe(401);
    expect(tampered.json.error).toMatchObject({ type: 'authentication_error', code: 'invalid_signature' });
    const wrongSecret = await post(trigger.url, body, sign(scheme, scheme === 'standard-webhooks' ? `whsec_${randomBytes(32).toString('base64')}` : 'not-the-secret-0000', body, deliveryId));
    expect(wrongSecret.status).toBe(401);
    expect((await post(trigger.url, body, { 'content-type': 'application/json' })).status).toBe(401);
    if (scheme !== 'github') {
      // GitHub signs no timestamp: its replays are stopped by the delivery id alone.
      const stale = await post(trigger.url, body, sign(scheme, trigger.secret, body, deliveryId, nowS() - 301));
      expect(stale.status).toBe(401);
      expect(stale.json.error.message).toMatch(/tolerance/);
    }
    expect(await jobCount()).toBe(before);

    const accepted = await post(trigger.url, body, sign(scheme, trigger.secret, body, deliveryId));
    expect(accepted.status, JSON.stringify(accepted.json)).toBe(202);
    expect(accepted.ms).toBeLessThan(1_000);
    expect(accepted.json).toMatchObject({ received: true, duplicate: false, job_id: expect.stringMatching(/^job_/), status: 'queued' });

    // The same delivery again (the sender's retry, or an attacker's replay, even freshly signed): acknowledged, the same job.
    const replays = await Promise.all([0, 1, 2].map(() => post(trigger.url, body, sign(scheme, trigger.secret, body, deliveryId))));
    for (const replay of replays) {
      expect(replay.status).toBe(200);
      expect(replay.json).toMatchObject({ received: true, duplicate: true, job_id: accepted.json.job_id });
    }
    expect(await jobCount()).toBe(before + 1);

    const job = await waitFor('the job', async () => {
      const got = await api('GET', `/v1/jobs/${accepted.json.job_id}`, undefined, tenant.key);
      return ['completed', 'failed'].includes(got.json.status) ? got.json : null;
    });
    expect(job.status, JSON.stringify(job.error)).toBe('completed');
    expect(job).toMatchObject({ trigger_id: trigger.id, metadata: { trigger_id: trigger.id, delivery_id: deliveryId, event: eventName[scheme] }, webhook: { endpoint_id: destination.id } });
    const reference = await complete({ prompt: rendered(number, 'Crash on start', eventName[scheme]), max_tokens: 8, temperature: 0 });
    expect(job.result.text, 'the prompt is the template rendered from the payload').toBe(reference.json.choices[0].text);
    expect(job.usage.prompt_tokens).toBe(reference.json.usage.prompt_tokens);

    const delivered = await waitFor('the job.completed webhook', async () => recordsFor(await receiver.received('triggers'), job.id, 'job.completed')[0]);
    expect(delivered.verified).toEqual([true]);
    expect(eventOf(delivered).data.result.text).toBe(job.result.text);
  });
});

describe('triggers', () => {
  it('an unknown or deleted trigger is a 404, and its events never need an API key', async () => {
    expect((await post(`${edgeUrl()}/v1/triggers/trg_000000000000000000000000/events`, '{}', { 'content-type': 'application/json' })).status).toBe(404);
    expect((await post(`${edgeUrl()}/v1/triggers/not-an-id/events`, '{}', {})).status).toBe(404);
    const trigger = await createTrigger('github');
    expect((await api('DELETE', `/v1/triggers/${trigger.id}`, undefined, tenant.key)).json).toMatchObject({ id: trigger.id, deleted: true });
    const body = eventBody('gone-1', 1, 'x');
    expect((await post(trigger.url, body, sign('github', trigger.secret, body, 'gone-1'))).status).toBe(404);
    // The management routes need the API key; another tenant sees none of ours.
    expect((await fetch(`${edgeUrl()}/v1/triggers`)).status).toBe(401);
    const other = await createTenantKey();
    expect((await api('GET', `/v1/triggers/${trigger.id}`, undefined, other.key)).status).toBe(404);
    const listed = await api('GET', '/v1/triggers?limit=100', undefined, tenant.key);
    expect(listed.json.data.some((t: any) => t.id === trigger.id)).toBe(false);
    expect(JSON.stringify(listed.json)).not.toMatch(/"secret"/);
  });

  it('trigger secrets are sealed at rest, and events signed with them still verify', async () => {
    const secret = `gh-${randomBytes(16).toString('hex')}`;
    const trigger = await createTrigger('github', { secret });
    expect(trigger.id).toMatch(/^trg_[0-9a-f]{24}$/);
    const [row] = await queryLocalD1<{ secret: string }>(`SELECT secret FROM triggers WHERE id = '${trigger.id}'`);
    expect(row.secret).toMatch(/^sbx1:[0-9a-f]{16}:[A-Za-z0-9_-]{16}:[A-Za-z0-9_-]+$/);
    expect(row.secret).not.toContain(secret);
    const body = eventBody(`sealed-${randomBytes(4).toString('hex')}`, 7, 'x');
    const accepted = await post(trigger.url, body, sign('github', secret, body, JSON.parse(body).id));
    expect(accepted.status, JSON.stringify(accepted.json)).toBe(202);
  });

  it('bounds the body (413 before verifying) and answers the senders’ handshakes (Slack url_verification, GitHub ping)', async () => {
    const github = await createTrigger('github');
    const huge = new Uint8Array(300 * 1024).fill(0x61);
    expect((await post(github.url, huge, { 'content-type': 'application/json', 'x-hub-signature-256': `sha256=${'0'.repeat(64)}` })).status).toBe(413);
    const ping = JSON.stringify({ zen: 'Keep it logically awesome.', hook_id: 1 });
    const pinged = await post(github.url, ping, { ...sign('github', github.secret, ping, 'ping-1'), 'x-github-event': 'ping' });
    expect(pinged).toMatchObject({ status: 200, json: { ok: true, ignored: 'ping' } });

    const slack = await createTrigger('slack', { secret: 'slack-signing-secret-for-tests' });
    const challenge = JSON.stringify({ type: 'url_verification', challenge: 'c-123', token: 'x' });
    expect((await post(slack.url, challenge, sign('slack', slack.secret, challenge, '')))).toMatchObject({ status: 200, json: { challenge: 'c-123' } });
  });

  it('a template that does not render fails the job (job.failed to the destination), once', async () => {
    const trigger = await createTrigger('standard-webhooks', { template: '{{ payload.issue.title.nope() }}' });
    const body = eventBody('msg_bad_template', 3, 'x');
    const answer = await post(trigger.url, body, sign('standard-webhooks', trigger.secret, body, 'msg_bad_template'));
    expect(answer.status).toBe(202);
    expect(answer.json.status).toBe('failed');
    const job = (await api('GET', `/v1/jobs/${answer.json.job_id}`, undefined, tenant.key)).json;
    expect(job).toMatchObject({ status: 'failed', error: { code: 'template_error' }, attempts: 0 });
    const event = await waitFor('job.failed', async () => recordsFor(await receiver.received('triggers'), job.id, 'job.failed')[0]);
    expect(eventOf(event).data.error.code).toBe('template_error');
  });

  it('refuses a bad trigger: unknown scheme, unparsable template, a prompt in params, another tenant’s endpoint, a non-whsec secret for standard-webhooks', async () => {
    const base = { scheme: 'github', template: 'hi {{ payload.x }}', webhook_endpoint_id: destination.id };
    const other = await createTenantKey();
    const cases: Array<[Record<string, unknown>, string, string?]> = [
      [{ ...base, scheme: 'gitlab' }, 'scheme'],
      [{ ...base, template: '{% if %}' }, 'template'],
      [{ ...base, params: { prompt: 'x' } }, 'params.prompt'],
      [{ ...base, params: { max_tokens: -1 } }, 'max_tokens'],
      [{ ...base, scheme: 'standard-webhooks', secret: 'plain-secret-123' }, 'secret'],
    ];
    for (const [body, param] of cases) {
      const answer = await api('POST', '/v1/triggers', body, tenant.key);
      expect(answer.status, JSON.stringify(body)).toBe(400);
      expect(answer.json.error.param).toBe(param);
    }
    const foreign = await api('POST', '/v1/triggers', base, other.key);
    expect(foreign.status).toBe(400);
    expect(foreign.json.error.code).toBe('webhook_endpoint_not_found');
  });
});
