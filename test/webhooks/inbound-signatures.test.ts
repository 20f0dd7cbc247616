import { createHmac } from 'node:crypto';
import { Webhook } from 'standardwebhooks';
import { describe, expect, it } from 'vitest';
import { verifyInbound, type TriggerScheme } from '../../functions/triggers/verify';
import { isWebhookSecret, newWebhookSecret, signingSecrets, signWebhook } from '../../functions/webhooks/signing';

/**
 * Inbound signature checks (functions/triggers/verify.ts), each scheme signed
 * here the way its sender documents, with node:crypto (not the code under test).
 */
// The standardwebhooks library checks its own 5-minute window against the real clock: so does this test.
const now = Date.now();
const nowS = Math.floor(now / 1000);
const body = JSON.stringify({ id: 'evt_1', type: 'issues', event_id: 'Ev1', action: 'opened' });
const bytes = (text: string) => new TextEncoder().encode(text);
const hex = (key: string, data: string) => createHmac('sha256', key).update(data).digest('hex');

const secrets: Record<TriggerScheme, string> = {
  github: 'gh-secret-0123456789',
  stripe: 'whsec_stripe_secret_is_a_plain_string',
  slack: 'slack-signing-secret-0123',
  'standard-webhooks': newWebhookSecret(),
};

function signed(scheme: TriggerScheme, text: string, at = nowS): Headers {
  const secret = secrets[scheme];
  switch (scheme) {
    case 'github':
      return new Headers({ 'x-hub-signature-256': `sha256=${hex(secret, text)}`, 'x-github-delivery': 'gh-delivery-1', 'x-github-event': 'issues' });
    case 'stripe':
      return new Headers({ 'stripe-signature': `t=${at},v1=${hex(secret, `${at}.${text}`)}` });
    case 'slack':
      return new Headers({ 'x-slack-request-timestamp': String(at), 'x-slack-signature': `v0=${hex(secret, `v0:${at}:${text}`)}` });
    case 'standard-webhooks':
      return new Headers({ 'webhook-id': 'msg_1', 'webhook-timestamp': String(at), 'webhook-signature': new Webhook(secret).sign('msg_1', new Date(at * 1000), text) });
  }
}

const verify = (scheme: TriggerScheme, headers: Headers, text = body, secret = secrets[scheme]) => verifyInbound(scheme, secret, { headers, body: bytes(text), now }, 300);

describe.each(['github', 'stripe', 'slack', 'standard-webhooks'] as const)('%s signatures', (scheme) => {
  it('a valid signature passes and names the delivery id', async () => {
    const result = await verify(scheme, signed(scheme, body));
    expect(result).toMatchObject({ ok: true });
    const expectedId = { github: 'gh-delivery-1', stripe: 'evt_1', slack: 'Ev1', 'standard-webhooks': 'msg_1' }[scheme];
    if (result.ok) expect(result.deliveryId).toBe(expectedId);
  });

  it('a tampered body, a wrong secret or no signature is refused (401)', async () => {
    expect(await verify(scheme, signed(scheme, body), body.replace('opened', 'closed'))).toMatchObject({ ok: false, status: 401 });
    expect(await verify(scheme, signed(scheme, body), body, scheme === 'standard-webhooks' ? newWebhookSecret() : 'another-secret-value')).toMatchObject({ ok: false, status: 401 });
    expect(await verify(scheme, new Headers())).toMatchObject({ ok: false, status: 401 });
  });

  it.skipIf(scheme === 'github')('a timestamp outside the tolerance is refused, even correctly signed', async () => {
    expect(await verify(scheme, signed(scheme, body, nowS - 301))).toMatchObject({ ok: false, status: 401, reason: expect.stringMatching(/tolerance/) });
    expect(await verify(scheme, signed(scheme, body, nowS + 301))).toMatchObject({ ok: false, status: 401 });
    expect(await verify(scheme, signed(scheme, body, nowS - 299))).toMatchObject({ ok: true });
  });
});

describe('scheme details', () => {
  it('stripe: any of several v1 signatures (their rotation) passes; v0 is ignored', async () => {
    const good = hex(secrets.stripe, `${nowS}.${body}`);
    const header = `t=${nowS},v1=${'0'.repeat(64)},v1=${good},v0=${'1'.repeat(64)}`;
    expect(await verify('stripe', new Headers({ 'stripe-signature': header }))).toMatchObject({ ok: true });
    expect(await verify('stripe', new Headers({ 'stripe-signature': `t=${nowS},v0=${good}` }))).toMatchObject({ ok: false });
  });

  it('github: the signature covers the raw bytes, and a delivery id is required', async () => {
    const headers = signed('github', body);
    headers.delete('x-github-delivery');
    expect(await verify('github', headers)).toMatchObject({ ok: false, status: 400 });
    // Re-serialised JSON (same data, other bytes) does not verify.
    expect(await verify('github', signed('github', body), JSON.stringify(JSON.parse(body), null, 1))).toMatchObject({ ok: false, status: 401 });
  });

  it('slack: a form body is accepted once verified', async () => {
    const form = 'command=%2Fask&text=hello&trigger_id=T123';
    const result = await verify('slack', signed('slack', form), form);
    expect(result).toMatchObject({ ok: true, deliveryId: 'T123', payload: { command: '/ask', text: 'hello' } });
  });
});

describe('outbound signing (Standard Webhooks v1)', () => {
  it('secrets are whsec_ + base64 of 24 to 64 bytes', () => {
    expect(isWebhookSecret(newWebhookSecret())).toBe(true);
    expect(isWebhookSecret(`whsec_${Buffer.alloc(24).toString('base64')}`)).toBe(true);
    expect(isWebhookSecret(`whsec_${Buffer.alloc(23).toString('base64')}`)).toBe(false);
    expect(isWebhookSecret(`whsec_${Buffer.alloc(65).toString('base64')}`)).toBe(false);
    expect(isWebhookSecret(Buffer.alloc(32).toString('base64'))).toBe(false);
  });

  it('every secret signs; the standardwebhooks library verifies each one', () => {
    const [current, previous] = [newWebhookSecret(), newWebhookSecret()];
    const headers = signWebhook('evt_x', new Date(), '{"a":1}', [current, previous]);
    expect(headers['webhook-signature'].split(' ')).toHaveLength(2);
    for (const secret of [current, previous]) expect(new Webhook(secret).verify('{"a":1}', { ...headers })).toEqual({ a: 1 });
    expect(() => new Webhook(newWebhookSecret()).verify('{"a":1}', { ...headers })).toThrow();
  });

  it('the previous secret signs only until its overlap ends', () => {
    const endpoint = { secret: 'new', previous_secret: 'old', previous_secret_expires_at: 2_000 };
    expect(signingSecrets(endpoint, 1_999)).toEqual(['new', 'old']);
    expect(signingSecrets(endpoint, 2_000)).toEqual(['new']);
    expect(signingSecrets({ ...endpoint, previous_secret: null }, 0)).toEqual(['new']);
  });
});
