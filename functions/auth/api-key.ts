/**
 * API keys: random bearer tokens shown once at creation and stored only as
 * their SHA-256 (a key has 256 bits of entropy, so a fast hash is enough: no
 * guessing attack can use the speed; slow password hashes are for low-entropy secrets).
 */
const KEY_PREFIX = 'esk_';
const encoder = new TextEncoder();

export function newApiKey(): string {
  return KEY_PREFIX + base64url(crypto.getRandomValues(new Uint8Array(32)));
}

/** Ids are public (listed, logged, shown in errors); they are random so they reveal nothing. */
export function newId(kind: 'ten' | 'key'): string {
  return `${kind}_${hex(crypto.getRandomValues(new Uint8Array(10)))}`;
}

export async function sha256Hex(text: string): Promise<string> {
  return hex(new Uint8Array(await crypto.subtle.digest('SHA-256', encoder.encode(text))));
}

export const hashApiKey = sha256Hex;

/** The first characters of a key, shown in key lists so an operator can tell keys apart. */
export function keyPrefix(key: string): string {
  return key.slice(0, KEY_PREFIX.length + 6);
}

/** Equality of two secrets in time independent of where they differ: compare their digests. */
export async function secretsEqual(given: string, expected: string): Promise<boolean> {
  const [a, b] = await Promise.all([sha256Hex(given), sha256Hex(expected)]);
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

/** `Authorization: Bearer <token>` → token, or null. */
export function bearerToken(header: string | undefined): string | null {
  const match = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
  return match ? match[1] : null;
}

function hex(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
}

function base64url(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes)).replaceAll('+', '-').replaceAll('/', '_').replace(/=+$/, '');
}
