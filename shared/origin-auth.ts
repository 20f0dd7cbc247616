/**
 * Edge → origin request signing (DESIGN: Verify protocol, "Requests are
 * authenticated"). The edge and each reference origin share a secret; every
 * verify/generate request carries
 *
 *   x-edgespec-timestamp: <unix ms>
 *   x-edgespec-signature: v1=<hex HMAC-SHA256(secret, "v1\n<timestamp>\n<METHOD>\n<path>\n<body>")>
 *
 * Method and path are signed too, so a signed verify body cannot be replayed
 * against /v1/generate. The origin rejects a request whose timestamp is more
 * than `maxAgeMs` from its own clock (a replay window, not a nonce store: verify
 * is stateless and idempotent, so a replay inside the window only costs a
 * forward pass). WebCrypto only, so the same code runs in workerd and Node.
 */
export const TIMESTAMP_HEADER = 'x-edgespec-timestamp';
export const SIGNATURE_HEADER = 'x-edgespec-signature';
export const SIGNATURE_VERSION = 'v1';
export const DEFAULT_MAX_AGE_MS = 60_000;

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

function signedBytes(timestamp: string, method: string, path: string, body: string): Uint8Array {
  return encoder.encode(`${SIGNATURE_VERSION}\n${timestamp}\n${method.toUpperCase()}\n${path}\n${body}`);
}

/** Headers to add to a request to `path` with this exact body text. */
export async function signRequest(secret: string, method: string, path: string, body: string, nowMs = Date.now()): Promise<Record<string, string>> {
  const timestamp = String(Math.floor(nowMs));
  const mac = new Uint8Array(await crypto.subtle.sign('HMAC', await hmacKey(secret), signedBytes(timestamp, method, path, body)));
  return { [TIMESTAMP_HEADER]: timestamp, [SIGNATURE_HEADER]: `${SIGNATURE_VERSION}=${toHex(mac)}` };
}

export type SignatureCheck =
  | { ok: true }
  | { ok: false; code: 'signature_missing' | 'signature_malformed' | 'signature_expired' | 'signature_invalid'; message: string };

/** Check a request's signature headers against the body text it arrived with. */
export async function checkSignature(
  secret: string,
  request: { method: string; path: string; body: string; timestamp: string | null | undefined; signature: string | null | undefined },
  nowMs = Date.now(),
  maxAgeMs = DEFAULT_MAX_AGE_MS,
): Promise<SignatureCheck> {
  const { timestamp, signature } = request;
  if (!timestamp || !signature) {
    return {
      ok: false,
      code: 'signature_missing',
      message: `This origin requires signed requests: missing ${!timestamp ? TIMESTAMP_HEADER : SIGNATURE_HEADER} header. Configure the same ORIGIN_SECRET at the edge and the origin.`,
    };
  }
  const match = /^v1=([0-9a-f]{64})$/.exec(signature);
  if (!/^\d{1,16}$/.test(timestamp) || !match) {
    return { ok: false, code: 'signature_malformed', message: `Malformed signature headers: expected ${TIMESTAMP_HEADER}: <unix ms> and ${SIGNATURE_HEADER}: v1=<64 hex digits>.` };
  }
  const ageMs = nowMs - Number(timestamp);
  if (Math.abs(ageMs) > maxAgeMs) {
    const what = ageMs > 0 ? `${Math.round(ageMs / 1000)} s old` : `${Math.round(-ageMs / 1000)} s in the future`;
    return { ok: false, code: 'signature_expired', message: `Request signature expired: its timestamp is ${what} (limit ${maxAgeMs / 1000} s). Check the clocks of edge and origin, or this is a replay.` };
  }
  // crypto.subtle.verify compares in constant time.
  const valid = await crypto.subtle.verify('HMAC', await hmacKey(secret), fromHex(match[1]), signedBytes(timestamp, request.method, request.path, request.body));
  if (!valid) {
    return { ok: false, code: 'signature_invalid', message: 'Request signature does not match: the body was altered in transit, or the edge and the origin hold different ORIGIN_SECRET values.' };
  }
  return { ok: true };
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
