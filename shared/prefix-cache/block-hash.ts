/**
 * The prefix-cache hash chain both sides use (ARCHITECTURE.md: Prefix KV in Durable
 * Objects; vLLM's automatic prefix caching): block i's key is
 * SHA-256(key of block i-1, model id, cache salt, tokens of block i).
 * A key therefore names the whole prefix up to the end of its block, under
 * one model and one tenant: equal keys mean equal KV, and a tenant whose salt
 * differs can never produce (or probe) another tenant's keys.
 * Only full blocks have keys; a prompt's last partial block is always recomputed.
 */
export interface PrefixScope {
  /** Identifies the weights whose KV is cached: KV of one model is meaningless to another. */
  modelId: string;
  /** Per tenant; "" is a valid salt (one tenant). */
  cacheSalt: string;
  /** Tokens per block (B). */
  blockTokens: number;
}

export type PrefixBlockKey = string;

const encoder = new TextEncoder();

/** Number of full blocks in `tokenCount` tokens. */
export const fullBlocks = (tokenCount: number, blockTokens: number) => Math.floor(tokenCount / blockTokens);

/**
 * Keys of the first `blockCount` full blocks of `tokens` (all full blocks by default).
 * `known` may hold already computed keys of a prefix of the same chain; they are reused, not rehashed.
 */
export async function prefixBlockKeys(
  tokens: readonly number[],
  scope: PrefixScope,
  blockCount = fullBlocks(tokens.length, scope.blockTokens),
  known: readonly PrefixBlockKey[] = [],
): Promise<PrefixBlockKey[]> {
  const { blockTokens } = scope;
  if (!Number.isInteger(blockTokens) || blockTokens < 1) throw new RangeError(`blockTokens must be a positive integer, got ${blockTokens}`);
  const count = Math.min(blockCount, fullBlocks(tokens.length, blockTokens));
  const keys = known.slice(0, count);
  const scopeBytes = lengthPrefixed([encoder.encode(scope.modelId), encoder.encode(scope.cacheSalt)]);
  for (let i = keys.length; i < count; i++) {
    const block = tokens.slice(i * blockTokens, (i + 1) * blockTokens);
    keys.push(await prefixBlockHash(i === 0 ? null : keys[i - 1], scopeBytes, block));
  }
  return keys;
}

/** One link of the chain: 32 parent bytes (zeros for the root), the length-prefixed scope, then the block's tokens as uint32 LE. */
async function prefixBlockHash(parent: PrefixBlockKey | null, scopeBytes: Uint8Array, block: readonly number[]): Promise<PrefixBlockKey> {
  const input = new Uint8Array(32 + scopeBytes.length + 4 * block.length);
  if (parent) input.set(hexToBytes(parent), 0);
  input.set(scopeBytes, 32);
  const view = new DataView(input.buffer, 32 + scopeBytes.length);
  block.forEach((token, i) => view.setUint32(i * 4, token, true));
  return bytesToHex(new Uint8Array(await crypto.subtle.digest('SHA-256', input)));
}

/** u32 length + bytes for each part, so ("ab", "c") and ("a", "bc") hash differently. */
function lengthPrefixed(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + 4 + p.length, 0));
  const view = new DataView(out.buffer);
  let at = 0;
  for (const part of parts) {
    view.setUint32(at, part.length, true);
    out.set(part, at + 4);
    at += 4 + part.length;
  }
  return out;
}

export function bytesToHex(bytes: Uint8Array): string {
  let hex = '';
  for (const b of bytes) hex += b.toString(16).padStart(2, '0');
  return hex;
}

export function hexToBytes(hex: string): Uint8Array {
  if (!/^[0-9a-f]*$/.test(hex) || hex.length % 2) throw new Error(`not a hex string: ${hex.slice(0, 16)}`);
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}
