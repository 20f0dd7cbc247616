/**
 * Edge → origin request signing (ARCHITECTURE.md: Verify protocol, "Requests are
 * authenticated"). The edge and each reference origin share secrets, each
 * named by a key id; every verify/generate request carries
 *
 *   x-edgespec-key-id:    <key id>           which secret signed it ("default" = ORIGIN_SECRET)
 *   x-edgespec-timestamp: <unix ms>
 *   x-edgespec-nonce:     <32+ hex digits>   fresh random bytes per request
 *   x-edgespec-signature: v2=<hex HMAC-SHA256(secret, "v2\n<key id>\n<timestamp>\n<nonce>\n<METHOD>\n<path>\n<body>")>
 *
 * Method and path are signed too, so a signed verify body cannot be replayed
 * against /v1/generate. The key id is signed so a request cannot be re-labelled
 * to another key. The nonce makes every legitimate signature unique, so an
 * origin can refuse any signature it has already seen (origin/replay.ts) while
 * the timestamp bounds how long it has to remember them. Several key ids let a
 * secret rotate without downtime: origins hold old and new, then the edge
 * switches, then origins drop the old one. WebCrypto only, so the same code
 * runs in workerd and Node.
 */
export const KEY_ID_HEADER = 'x-edgespec-key-id';
export const TIMESTAMP_HEADER = 'x-edgespec-timestamp';
export const NONCE_HEADER = 'x-edgespec-nonce';
export const SIGNATURE_HEADER = 'x-edgespec-signature';
export const SIGNATURE_VERSION = 'v2';
export const DEFAULT_MAX_AGE_MS = 60_000;
/** The key id of the single ORIGIN_SECRET (the configuration before key ids existed). */
export const DEFAULT_KEY_ID = 'default';
/** Key ids travel in a header and in the signed string: no newline, no separator, short. */
export const KEY_ID_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;
/** Shortest secret accepted at either end: HMAC-SHA256's strength is the secret's entropy. */
export const MIN_SECRET_LENGTH = 16;
/** 128 random bits: two requests sharing a nonce (and so possibly a signature) is out of reach. */
export const NONCE_BYTES = 16;

/** Secrets by key id. */
export type KeyRing = ReadonlyMap<string, string>;

const encoder = new TextEncoder();
/** Imported keys per secret: importKey costs more than the HMAC of a small body. CryptoKeys are plain values, safe to share across requests. */
const keys = new Map<string, Promise<CryptoKey>>();

function hmacKey(secret: string): Promise<CryptoKey> {
  let key = keys.get(secret);
  if (!key) {
    key = crypto.subtle.importKey('raw', encoder.encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign', 'verify']);
    keys.set(secret, key);
  }
  return key;
}

interface SignedFields {
  keyId: string;
  timestamp: string;
  nonce: string;
  method: string;
  path: string;
  body: string;
}

// Every field before the body is newline-free (checked), so the string parses back one way only.
function signedBytes({ keyId, timestamp, nonce, method, path, body }: SignedFields): Uint8Array {
  return encoder.encode(`${SIGNATURE_VERSION}\n${keyId}\n${timestamp}\n${nonce}\n${method.toUpperCase()}\n${path}\n${body}`);
}

/** Headers to add to a request to `path` with this exact body text. */
export async function signRequest(
  secret: string,
  method: string,
  path: string,
  body: string,
  nowMs = Date.now(),
  keyId = DEFAULT_KEY_ID,
): Promise<Record<string, string>> {
  if (!KEY_ID_PATTERN.test(keyId)) throw new RangeError(`origin key id must match ${KEY_ID_PATTERN.source}`);
  const timestamp = String(Math.floor(nowMs));
  const nonce = toHex(crypto.getRandomValues(new Uint8Array(NONCE_BYTES)));
  const mac = new Uint8Array(await crypto.subtle.sign('HMAC', await hmacKey(secret), signedBytes({ keyId, timestamp, nonce, method, path, body })));
  return {
    [KEY_ID_HEADER]: keyId,
    [TIMESTAMP_HEADER]: timestamp,
    [NONCE_HEADER]: nonce,
    [SIGNATURE_HEADER]: `${SIGNATURE_VERSION}=${toHex(mac)}`,
  };
}

export type SignatureFailure = 'signature_missing' | 'signature_malformed' | 'signature_expired' | 'signature_unknown_key' | 'signature_invalid';

export type SignatureCheck =
  | { ok: true; keyId: string; signature: string; expiresAtMs: number }
  | { ok: false; code: SignatureFailure; message: string };

/** A request's signature headers (absent ones as null/undefined) and the body text it arrived with. */
export interface SignedRequest {
  method: string;
  path: string;
  body: string;
  keyId: string | null | undefined;
  timestamp: string | null | undefined;
  nonce: string | null | undefined;
  signature: string | null | undefined;
}

/**
 * Check a request's signature against the key ring. On success also says
 * until when this signature would pass the timestamp check (`expiresAtMs`):
 * the replay cache only has to remember it that long.
 */
export async function checkSignature(ring: KeyRing, request: SignedRequest, nowMs = Date.now(), maxAgeMs = DEFAULT_MAX_AGE_MS): Promise<SignatureCheck> {
  const missing = ([[KEY_ID_HEADER, request.keyId], [TIMESTAMP_HEADER, request.timestamp], [NONCE_HEADER, request.nonce], [SIGNATURE_HEADER, request.signature]] as const)
    .filter(([, value]) => !value)
    .map(([name]) => name);
  if (missing.length) {
    return {
      ok: false,
      code: 'signature_missing',
      message: `This origin requires signed requests: missing ${missing.join(', ')} header${missing.length > 1 ? 's' : ''}. Configure the edge's ORIGIN_SECRET (and ORIGIN_SECRET_ID) to match a key of the origin.`,
    };
  }
  const keyId = request.keyId!;
  const timestamp = request.timestamp!;
  const nonce = request.nonce!;
  const match = /^v2=([0-9a-f]{64})$/.exec(request.signature!);
  if (!KEY_ID_PATTERN.test(keyId) || !/^\d{1,16}$/.test(timestamp) || !/^[0-9a-f]{32,128}$/.test(nonce) || !match) {
    return {
      ok: false,
      code: 'signature_malformed',
      message:
        `Malformed signature headers: expected ${KEY_ID_HEADER}: <${KEY_ID_PATTERN.source}>, ${TIMESTAMP_HEADER}: <unix ms>, ` +
        `${NONCE_HEADER}: <32-128 hex digits> and ${SIGNATURE_HEADER}: v2=<64 hex digits> (an edge sending v1 signatures predates key ids and nonces: update it).`,
    };
  }
  const ageMs = nowMs - Number(timestamp);
  if (Math.abs(ageMs) > maxAgeMs) {
    const what = ageMs > 0 ? `${Math.round(ageMs / 1000)} s old` : `${Math.round(-ageMs / 1000)} s in the future`;
    return { ok: false, code: 'signature_expired', message: `Request signature expired: its timestamp is ${what} (limit ${maxAgeMs / 1000} s). Check the clocks of edge and origin, or this is a replay.` };
  }
  const secret = ring.get(keyId);
  // Which ids this origin does hold is not said: that would map the rotation state for anyone asking.
  if (secret === undefined) {
    return { ok: false, code: 'signature_unknown_key', message: `Request signed with key id "${keyId}", which is not configured on this origin (ORIGIN_SECRET / ORIGIN_SECRETS).` };
  }
  // crypto.subtle.verify compares in constant time.
  const valid = await crypto.subtle.verify('HMAC', await hmacKey(secret), fromHex(match[1]), signedBytes({ keyId, timestamp, nonce, method: request.method, path: request.path, body: request.body }));
  if (!valid) {
    return {
      ok: false,
      code: 'signature_invalid',
      message: `Request signature does not match: the request was altered in transit, or the edge and the origin hold different secrets for key id "${keyId}".`,
    };
  }
  return { ok: true, keyId, signature: match[1], expiresAtMs: Number(timestamp) + maxAgeMs };
}

function toHex(bytes: Uint8Array): string {
  let hex = '';
  for (const b of bytes) hex += b.toString(16).padStart(2, '0');
  return hex;
}

function fromHex(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}
