import { Webhook, WebhookVerificationError } from 'standardwebhooks';

/**
 * Signature checks of inbound trigger events, over the raw bytes of the body
 * before anything parses it. Comparisons are constant-time (WebCrypto's HMAC
 * verify; the standardwebhooks library's timing-safe compare). Each scheme
 * also names the delivery id that replays repeat, which the caller records
 * under a UNIQUE constraint so one delivery runs once.
 *
 *   github             X-Hub-Signature-256: sha256=<hex HMAC(body)>; id X-GitHub-Delivery (no timestamp to check)
 *   stripe             Stripe-Signature: t=<unix>,v1=<hex HMAC("t.body")>[,v1=…]; id = the event's `id`
 *   slack              X-Slack-Signature: v0=<hex HMAC("v0:ts:body")>, X-Slack-Request-Timestamp; id = `event_id`
 *   standard-webhooks  webhook-id / webhook-timestamp / webhook-signature (standardwebhooks library); id = webhook-id
 */
export const TRIGGER_SCHEMES = ['github', 'stripe', 'slack', 'standard-webhooks'] as const;
export type TriggerScheme = (typeof TRIGGER_SCHEMES)[number];

export interface InboundEvent {
  headers: Headers;
  body: Uint8Array;
  /** Unix ms. */
  now: number;
}

export type Verification =
  | { ok: true; deliveryId: string; eventType: string | null; payload: unknown }
  | { ok: false; status: 400 | 401; reason: string };

const encoder = new TextEncoder();

export async function verifyInbound(scheme: TriggerScheme, secret: string, event: InboundEvent, toleranceS: number): Promise<Verification> {
  switch (scheme) {
    case 'github':
      return verifyGithub(secret, event);
    case 'stripe':
      return verifyStripe(secret, event, toleranceS);
    case 'slack':
      return verifySlack(secret, event, toleranceS);
    case 'standard-webhooks':
      return verifyStandard(secret, event, toleranceS);
  }
}

const deny = (reason: string): Verification => ({ ok: false, status: 401, reason });
const bad = (reason: string): Verification => ({ ok: false, status: 400, reason });

async function verifyGithub(secret: string, { headers, body }: InboundEvent): Promise<Verification> {
  const signature = /^sha256=([0-9a-f]{64})$/i.exec(headers.get('x-hub-signature-256')?.trim() ?? '');
  if (!signature) return deny('missing or malformed X-Hub-Signature-256');
  if (!(await hmacMatches(secret, body, [signature[1]]))) return deny('signature mismatch');
  const deliveryId = headers.get('x-github-delivery')?.trim();
  if (!deliveryId) return bad('missing X-GitHub-Delivery');
  const payload = parseJson(body);
  if (payload === undefined) return bad('the body is not JSON');
  return { ok: true, deliveryId, eventType: headers.get('x-github-event'), payload };
}

async function verifyStripe(secret: string, { headers, body, now }: InboundEvent, toleranceS: number): Promise<Verification> {
  const header = headers.get('stripe-signature') ?? '';
  let timestamp: string | null = null;
  const signatures: string[] = [];
  for (const item of header.split(',')) {
    const [key, value] = item.trim().split('=', 2);
    if (key === 't' && value && /^\d+$/.test(value)) timestamp = value;
    else if (key === 'v1' && value && /^[0-9a-f]{64}$/i.test(value)) signatures.push(value);
  }
  if (timestamp === null || !signatures.length) return deny('missing or malformed Stripe-Signature');
  if (!withinTolerance(Number(timestamp), now, toleranceS)) return deny('timestamp outside the tolerance window');
  if (!(await hmacMatches(secret, concat(encoder.encode(`${timestamp}.`), body), signatures))) return deny('signature mismatch');
  const payload = parseJson(body);
  if (payload === undefined) return bad('the body is not JSON');
  const record = payload as { id?: unknown; type?: unknown };
  return { ok: true, deliveryId: typeof record?.id === 'string' ? record.id : `sig:${signatures[0]}`, eventType: typeof record?.type === 'string' ? record.type : null, payload };
}

async function verifySlack(secret: string, { headers, body, now }: InboundEvent, toleranceS: number): Promise<Verification> {
  const timestamp = headers.get('x-slack-request-timestamp')?.trim() ?? '';
  const signature = /^v0=([0-9a-f]{64})$/i.exec(headers.get('x-slack-signature')?.trim() ?? '');
  if (!/^\d+$/.test(timestamp) || !signature) return deny('missing or malformed X-Slack-Signature / X-Slack-Request-Timestamp');
  if (!withinTolerance(Number(timestamp), now, toleranceS)) return deny('timestamp outside the tolerance window');
  if (!(await hmacMatches(secret, concat(encoder.encode(`v0:${timestamp}:`), body), [signature[1]]))) return deny('signature mismatch');
  // Slack's Events API sends JSON; slash commands and interactivity send a form. Both are accepted.
  const payload = parseJson(body) ?? Object.fromEntries(new URLSearchParams(new TextDecoder().decode(body)));
  const record = payload as { event_id?: unknown; type?: unknown; event?: { type?: unknown }; trigger_id?: unknown };
  const eventId = typeof record?.event_id === 'string' ? record.event_id : typeof record?.trigger_id === 'string' ? record.trigger_id : `sig:${signature[1]}`;
  const eventType = typeof record?.event?.type === 'string' ? record.event.type : typeof record?.type === 'string' ? record.type : null;
  return { ok: true, deliveryId: eventId, eventType, payload };
}

async function verifyStandard(secret: string, { headers, body, now }: InboundEvent, toleranceS: number): Promise<Verification> {
  const id = headers.get('webhook-id');
  const timestamp = headers.get('webhook-timestamp');
  const signature = headers.get('webhook-signature');
  if (!id || !timestamp || !signature || !/^\d+$/.test(timestamp.trim())) return deny('missing webhook-id / webhook-timestamp / webhook-signature');
  if (!withinTolerance(Number(timestamp), now, toleranceS)) return deny('timestamp outside the tolerance window');
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(body);
  } catch {
    return deny('signature mismatch');
  }
  let payload: unknown;
  try {
    payload = new Webhook(secret).verify(text, { 'webhook-id': id, 'webhook-timestamp': timestamp, 'webhook-signature': signature });
  } catch (err) {
    if (err instanceof WebhookVerificationError) return deny(err.message === 'No matching signature found' ? 'signature mismatch' : err.message);
    // Verified, but the body is not JSON.
    if (err instanceof SyntaxError) return bad('the body is not JSON');
    throw err;
  }
  const record = payload as { type?: unknown };
  return { ok: true, deliveryId: id, eventType: typeof record?.type === 'string' ? record.type : null, payload };
}

function withinTolerance(unixSeconds: number, now: number, toleranceS: number): boolean {
  return Math.abs(now / 1000 - unixSeconds) <= toleranceS;
}

/** True when one of the hex signatures is HMAC-SHA256(secret, data): WebCrypto's verify compares in constant time. */
async function hmacMatches(secret: string, data: Uint8Array, hexSignatures: string[]): Promise<boolean> {
  const key = await crypto.subtle.importKey('raw', encoder.encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['verify']);
  let matched = false;
  for (const hex of hexSignatures) {
    // Every candidate is checked, so the time does not depend on which one matches.
    if (await crypto.subtle.verify('HMAC', key, hexBytes(hex), data)) matched = true;
  }
  return matched;
}

function hexBytes(hex: string): Uint8Array {
  const bytes = new Uint8Array(hex.length / 2);
  for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return bytes;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function parseJson(body: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder().decode(body));
  } catch {
    return undefined;
  }
}

/** A new secret for a trigger whose sender lets us choose one (GitHub, a Standard Webhooks sender). */
export function newTriggerSecret(scheme: TriggerScheme): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  if (scheme === 'standard-webhooks') return 'whsec_' + btoa(String.fromCharCode(...bytes));
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
}
