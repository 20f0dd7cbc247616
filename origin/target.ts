import type { CausalLM, ForwardResult } from '../shared/model';
import { TargetKvCache, type TargetKvCacheOptions, type TargetKvHit } from './target-kv-cache';

/** One sequence's part of a forward pass: logits from `firstRow` on of `tokens`, KV under `cacheSalt`. */
export interface TargetRow {
  tokens: readonly number[];
  firstRow: number;
  cacheSalt?: string;
}

/**
 * A pass's result for one row. Through the batching queue (origin/batcher.ts)
 * it also says how long the row waited, how many rows shared its pass, and
 * the pass's own time (what `forward_ms` reports, queue excluded).
 */
export type TargetPass = ForwardResult & { cachedTokens: number; queueMs?: number; batchSize?: number; passMs?: number };

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
  async logitsFrom(tokens: readonly number[], firstRow: number, cacheSalt = ''): Promise<TargetPass> {
    const hit = await this.kv.lookup(tokens, cacheSalt, firstRow);
    const base = hit.cache ?? this.lm.emptyCache();
    const result = await this.lm.forward(tokens.slice(base.length), base);
    return this.keep({ tokens, firstRow, cacheSalt }, hit, base.length, result);
  }

  /**
   * `logitsFrom` for several sequences in one batched forward pass
   * (CausalLM.forwardBatch; origin/queue.ts batches the rows): each row
   * looks up and stores its own target KV, exactly as it would alone.
   */
  async logitsFromBatch(rows: readonly TargetRow[]): Promise<TargetPass[]> {
    const hits: TargetKvHit[] = [];
    for (const row of rows) hits.push(await this.kv.lookup(row.tokens, row.cacheSalt ?? '', row.firstRow));
    const bases = hits.map((hit) => hit.cache ?? this.lm.emptyCache());
    const results = await this.lm.forwardBatch(rows.map((row, r) => ({ tokens: row.tokens.slice(bases[r].length), cache: bases[r] })));
    const passes: TargetPass[] = [];
    for (const [r, row] of rows.entries()) passes.push(await this.keep(row, hits[r], bases[r].length, results[r]));
    return passes;
  }

  /** Store the row's KV (blocks up to `firstRow + 1`, the whole as its live sequence) and cut its logits to the rows asked for. */
  private async keep(row: TargetRow, hit: TargetKvHit, cached: number, result: ForwardResult): Promise<TargetPass> {
    await this.kv.remember(row.tokens, row.cacheSalt ?? '', result.cache, hit, row.firstRow + 1);
    const skip = row.firstRow - cached;
    const vocab = this.config.vocabSize;
    return {
      logits: result.logits.subarray(skip * vocab),
      rows: result.rows - skip,
      cache: result.cache,
      cachedTokens: cached,
    };
  }
}
