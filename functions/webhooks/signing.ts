import { Webhook } from 'standardwebhooks';

/**
 * Standard Webhooks v1 (https://www.standardwebhooks.com), signed with the
 * `standardwebhooks` library itself so receivers using it (or svix's) verify
 * us exactly: `webhook-id` (the event id, the same on every retry and replay,
 * so receivers deduplicate on it), `webhook-timestamp` (Unix seconds of this
 * attempt), `webhook-signature` = "v1," + base64 HMAC-SHA256 over
 * "id.timestamp.body" with the secret's bytes; during a rotation both the new
 * and the previous secret sign, space-separated.
 */
const PREFIX = 'whsec_';
const MIN_SECRET_BYTES = 24;
const MAX_SECRET_BYTES = 64;

export function newWebhookSecret(): string {
  return PREFIX + btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))));
}

/** "whsec_" + standard base64 of 24 to 64 bytes. */
export function isWebhookSecret(secret: string): boolean {
  if (!secret.startsWith(PREFIX)) return false;
  const body = secret.slice(PREFIX.length);
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(body) || body.length % 4 !== 0) return false;
  try {
    const bytes = atob(body).length;
    return bytes >= MIN_SECRET_BYTES && bytes <= MAX_SECRET_BYTES;
  } catch {
    return false;
  }
}

export interface SignedHeaders {
  'webhook-id': string;
  'webhook-timestamp': string;
  'webhook-signature': string;
}

/** Headers of one attempt: every given secret signs (the current one first). */
export function signWebhook(msgId: string, at: Date, body: string, secrets: readonly string[]): SignedHeaders {
  if (!secrets.length) throw new Error('signWebhook needs at least one secret');
  return {
    'webhook-id': msgId,
    'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
    'webhook-signature': secrets.map((secret) => new Webhook(secret).sign(msgId, at, body)).join(' '),
  };
}

/** The secrets that sign now: the current one, and the previous one while its overlap window lasts. */
export function signingSecrets(endpoint: { secret: string; previous_secret: string | null; previous_secret_expires_at: number | null }, now: number): string[] {
  const previous = endpoint.previous_secret && (endpoint.previous_secret_expires_at ?? 0) > now ? [endpoint.previous_secret] : [];
  return [endpoint.secret, ...previous];
}
