import { prefixBlockKeys } from '../../shared/prefix-cache/block-hash';

/**
 * The routing key of a prompt: the prefix-cache key of its first block
 * (shared/prefix-cache/block-hash.ts, the chain the KV caches use), so
 * prompts that share a first block, such as one system prompt, meet on the
 * origin that already holds its KV. The salt is left empty: origins' KV is
 * not per tenant, and routing reveals nothing to a client. A prompt shorter
 * than a block hashes as one short block.
 */
export function prefixAffinityKey(prompt: readonly number[], modelId: string, blockTokens: number): Promise<string> {
  const size = Math.max(1, Math.min(blockTokens, prompt.length));
  return prefixBlockKeys(prompt.slice(0, size), { modelId, cacheSalt: '', blockTokens: size }, 1).then((keys) => keys[0]);
}
