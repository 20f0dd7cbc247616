import type { CausalLM, ForwardResult, KvCache } from '../shared/model';
import { truncateKvCache } from '../shared/model';

interface RecentCache {
  tokens: number[];
  cache: KvCache;
}

/**
 * The target model plus a small memory of recent KV caches, so consecutive
 * verify rounds of one generation only run the new tokens. The cache is a
 * pure optimisation: a miss means recomputing from position 0.
 */
export class TargetModel {
  private recent: RecentCache[] = [];

  constructor(
    readonly lm: CausalLM,
    private readonly maxRecent = 16,
  ) {}

  get config() {
    return this.lm.config;
  }

  /**
   * Logits for every position of `tokens` from `firstRow` on (row r = the
   * distribution of the token after tokens[firstRow + r]). Reuses the longest
   * cached prefix, but always runs at least the positions it must return.
   */
  async logitsFrom(tokens: readonly number[], firstRow: number): Promise<ForwardResult & { cachedTokens: number }> {
    const { entry, shared } = this.longestPrefix(tokens);
    const reuse = Math.min(shared, firstRow);
    const base = entry && reuse > 0 ? truncateKvCache(entry.cache, reuse) : this.lm.emptyCache();
    const result = await this.lm.forward(tokens.slice(base.length), base);
    this.remember([...tokens], result.cache);
    const skip = firstRow - base.length;
    const vocab = this.config.vocabSize;
    return {
      logits: result.logits.subarray(skip * vocab),
      rows: result.rows - skip,
      cache: result.cache,
      cachedTokens: base.length,
    };
  }

  private longestPrefix(tokens: readonly number[]) {
    let best: { entry: RecentCache | null; shared: number } = { entry: null, shared: 0 };
    for (const entry of this.recent) {
      const limit = Math.min(entry.tokens.length, entry.cache.length, tokens.length);
      let shared = 0;
      while (shared < limit && entry.tokens[shared] === tokens[shared]) shared++;
      if (shared > best.shared) best = { entry, shared };
    }
    return best;
  }

  private remember(tokens: number[], cache: KvCache) {
    this.recent = [{ tokens, cache }, ...this.recent.filter((e) => !isPrefix(e.tokens, tokens))].slice(0, this.maxRecent);
  }
}

function isPrefix(short: readonly number[], long: readonly number[]): boolean {
  if (short.length > long.length) return false;
  for (let i = 0; i < short.length; i++) if (short[i] !== long[i]) return false;
  return true;
}
