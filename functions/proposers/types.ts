import type { DraftToken } from '../../shared/sampling';
import type { KvCache } from '../../shared/model';
import type { WireSampling } from '../../shared/protocol';

/**
 * One way of drafting (vLLM's proposer interface; ARCHITECTURE.md: Style rules). Given the context so
 * far, propose up to `maxTokens` draft tokens; the verifier never needs to
 * know where they came from. A proposer instance lives for one generation, so
 * it may keep state (a KV cache) between rounds.
 */
export interface Proposer {
  readonly name: string;
  propose(context: readonly number[], maxTokens: number, sampling: WireSampling, options?: ProposeOptions): Promise<DraftToken[]>;
  /** Proposers that run a model: the KV they hold now (positions of `tokens`), for the prefix cache to store. */
  draftKv?(): { tokens: readonly number[]; cache: KvCache };
}

export interface ProposeOptions {
  /**
   * Stop drafting once the proposer's own top probability for the next token
   * falls below this (after at least one token): a low-confidence draft token
   * is likely rejected and costs draft time, verify work and everything after
   * it (SVIP, Zhang et al. 2024; SpecKV). 0 = always draft maxTokens.
   */
  minConfidence?: number;
}
