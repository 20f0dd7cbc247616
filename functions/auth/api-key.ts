/**
 * API keys: random bearer tokens shown once at creation and stored only as
 * their SHA-256 (a key has 256 bits of entropy, so a fast hash is enough: no
 * guessing attack can use the speed; slow password hashes are for low-entropy secrets).
 */
import { hex, sha256Hex } from '../../shared/bearer';

const KEY_PREFIX = 'esk_';

export function newApiKey(): string {
  return KEY_PREFIX + base64url(crypto.getRandomValues(new Uint8Array(32)));
}

/** Ids are public (listed, logged, shown in errors); they are random so they reveal nothing. */
export function newId(kind: 'ten' | 'key'): string {
  return `${kind}_${hex(crypto.getRandomValues(new Uint8Array(10)))}`;
}

export { sha256Hex };
export const hashApiKey = sha256Hex;

/** The first characters of a key, shown in key lists so an operator can tell keys apart. */
export function keyPrefix(key: string): string {
  return key.slice(0, KEY_PREFIX.length + 6);
}

function base64url(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes)).replaceAll('+', '-').replaceAll('/', '_').replace(/=+$/, '');
}
