import type { MiddlewareHandler } from 'hono';
import { ApiError } from '../shared/errors';
import {
  checkSignature,
  DEFAULT_KEY_ID,
  DEFAULT_MAX_AGE_MS,
  KEY_ID_HEADER,
  KEY_ID_PATTERN,
  MIN_SECRET_LENGTH,
  NONCE_HEADER,
  SIGNATURE_HEADER,
  TIMESTAMP_HEADER,
  type KeyRing,
} from '../shared/origin-auth';
import { SeenSignatures } from './replay';

/**
 * The origin's key ring from its environment: ORIGIN_SECRET is key id
 * "default" (the configuration before key ids), ORIGIN_SECRETS adds
 * comma-separated `id:secret` pairs. Throws with a message that names the
 * offending entry by position or key id, never by its secret (a malformed
 * entry may be nothing but a secret). Empty ring = unauthenticated origin.
 */
export function parseOriginKeys(env: { ORIGIN_SECRET?: string; ORIGIN_SECRETS?: string }): Map<string, string> {
  const ring = new Map<string, string>();
  const add = (keyId: string, secret: string, where: string) => {
    if (secret.length < MIN_SECRET_LENGTH) throw new Error(`${where}: the secret of key id "${keyId}" is shorter than ${MIN_SECRET_LENGTH} characters (use a random 32-byte hex string)`);
    if (ring.has(keyId)) throw new Error(`${where}: key id "${keyId}" is configured twice`);
    ring.set(keyId, secret);
  };
  if (env.ORIGIN_SECRET) add(DEFAULT_KEY_ID, env.ORIGIN_SECRET, 'ORIGIN_SECRET');
  const entries = (env.ORIGIN_SECRETS ?? '').split(',').map((e) => e.trim());
  if (entries.length === 1 && entries[0] === '') return ring;
  entries.forEach((entry, i) => {
    const where = `ORIGIN_SECRETS entry ${i + 1} of ${entries.length}`;
    const colon = entry.indexOf(':');
    if (colon < 0) throw new Error(`${where} is not of the form id:secret`);
    const keyId = entry.slice(0, colon);
    if (!KEY_ID_PATTERN.test(keyId)) throw new Error(`${where}: the key id (before the first ":") must match ${KEY_ID_PATTERN.source}`);
    add(keyId, entry.slice(colon + 1), where);
  });
  return ring;
}

export interface SignatureOptions {
  keys: KeyRing;
  /** Signatures already accepted (replay protection); shared by every signed route. */
  seen?: SeenSignatures;
  maxAgeMs?: number;
}

/**
 * Rejects verify/generate requests that are not signed by a key of the ring
 * (shared/origin-auth.ts), or whose signature was already used: 401 in
 * OpenAI's error shape, naming what is wrong. Reads the body through
 * `c.req.text()`, which Hono caches, so handlers read the same text again
 * without a second buffer.
 */
export function requireSignature({ keys, seen = new SeenSignatures(), maxAgeMs = DEFAULT_MAX_AGE_MS }: SignatureOptions): MiddlewareHandler {
  return async (c, next) => {
    const check = await checkSignature(
      keys,
      {
        method: c.req.method,
        path: c.req.path,
        body: await c.req.text(),
        keyId: c.req.header(KEY_ID_HEADER),
        timestamp: c.req.header(TIMESTAMP_HEADER),
        nonce: c.req.header(NONCE_HEADER),
        signature: c.req.header(SIGNATURE_HEADER),
      },
      Date.now(),
      maxAgeMs,
    );
    if (!check.ok) throw new ApiError(401, check.message, null, check.code);
    // Recorded only after it verified, and synchronously after the check: two copies in flight cannot both pass.
    if (!seen.recordOnce(check.signature, check.expiresAtMs)) {
      throw new ApiError(401, 'Request signature was already used: this is a replay (every request the edge signs carries a fresh nonce).', null, 'signature_replayed');
    }
    await next();
  };
}
