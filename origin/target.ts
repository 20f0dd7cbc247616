import type { CausalLM, ForwardResult } from '../shared/model';
import { TargetKvCache, type TargetKvCacheOptions } from './target-kv-cache';

export type TargetOptions = Partial<TargetKvCacheOptions>;

/** Defaults: 256 MiB of target KV (about 40k positions of the shipped target), blocks of 16 tokens. */
export const DEFAULT_TARGET_KV = { maxBytes: 256 * 2 ** 20, blockTokens: 16 } as const;

/**
 * The target model plus its KV memory (origin/target-kv-cache.ts): verify
 * rounds of one generation, and requests sharing a prefix, only run the
 * positions not already held. The cache is a pure optimisation: a miss means
 * recomputing from position 0.
 */
export class TargetModel {
  readonly kv: TargetKvCache;

  constructor(
    readonly lm: CausalLM,
    options: TargetOptions = {},
  ) {
    this.kv = new TargetKvCache({ ...DEFAULT_TARGET_KV, modelId: 'target', ...options });
  }

  get config() {
    return this.lm.config;
  }

  /**
   * Logits for every position of `tokens` from `firstRow` on (row r = the
   * distribution of the token after tokens[firstRow + r]). Reuses the longest
   * cached prefix under `cacheSalt`, but always runs at least the positions it
   * must return. Blocks are shared up to `firstRow + 1` positions: the tokens
   * after it are unverified draft tokens.
   */
  async logitsFrom(tokens: readonly number[], firstRow: number, cacheSalt = ''): Promise<ForwardResult & { cachedTokens: number }> {
    const hit = await this.kv.lookup(tokens, cacheSalt, firstRow);
    const base = hit.cache ?? this.lm.emptyCache();
    const result = await this.lm.forward(tokens.slice(base.length), base);
    await this.kv.remember(tokens, cacheSalt, result.cache, hit, firstRow + 1);
    const skip = firstRow - base.length;
    const vocab = this.config.vocabSize;
    return {
      logits: result.logits.subarray(skip * vocab),
      rows: result.rows - skip,
      cache: result.cache,
      cachedTokens: base.length,
    };
  }
}
