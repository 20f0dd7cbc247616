import type { DraftToken } from '../../shared/sampling';
import type { KvCache } from '../../shared/model';
import type { WireSampling } from '../../shared/protocol';

/**
 * One way of drafting (vLLM's proposer interface; ARCHITECTURE.md: Style rules). Given the context so
 * far, propose up to `maxTokens` draft tokens; the verifier never needs to
 * know where they came from. A proposer instance lives for one generation, so
 * it may keep state (a KV cache, an alignment) between rounds.
 */
export interface Proposer {
  readonly name: string;
  /**
   * Up to `maxTokens` drafts; a proposer whose draft costs no model step (a
   * match) may propose up to `options.maxMatchTokens` instead. Deterministic
   * proposals carry no q (q = δ(token): ARCHITECTURE.md, Speculative decoding, exactly).
   */
  propose(context: readonly number[], maxTokens: number, sampling: WireSampling, options?: ProposeOptions): Promise<DraftToken[]>;
  /** Which proposer drafted the last proposal: a hybrid's chosen member; absent = `name`. Read right after `propose`. */
  readonly lastSource?: string;
  /**
   * Proposers that run a model, after a `propose` with `options.confidence`: per drafted
   * token, how sure the model was and its second choice (branch-ahead drafting guesses the
   * target's correction from it: functions/speculation/branch-ahead.ts). Absent for a match.
   */
  readonly lastConfidence?: readonly DraftConfidence[];
  /**
   * Proposers that run a model, right after a `propose` for `context`: continue a branch that leaves
   * that proposal (`prefix`: its tokens before the branch point, then the branch's own first token)
   * by up to `steps` tokens, drawing with row `row`'s generator (multi-path drafts:
   * functions/speculation/draft-tree.ts). The proposer's own state is left as it was.
   */
  extendBranch?(context: readonly number[], prefix: readonly number[], steps: number, sampling: WireSampling, row: number): Promise<DraftToken[]>;
  /** The verdict on one of its proposals, in the order they were verified (a hybrid adapts to it). */
  observe?(outcome: ProposalOutcome): void;
  /** Proposers that run a model: the KV they hold now (positions of `tokens`), for the prefix cache to store. */
  draftKv?(): { tokens: readonly number[]; cache: KvCache };
  /** Proposers that run a model: bring that KV up to all of `context` (rounds other proposers drafted left it behind). */
  syncKv?(context: readonly number[]): Promise<void>;
}

export interface ProposeOptions {
  /**
   * Stop drafting once the proposer's own top probability for the next token
   * falls below this (after at least one token): a low-confidence draft token
   * is likely rejected and costs draft time, verify work and everything after
   * it (SVIP, Zhang et al. 2024; SpecKV). 0 = always draft maxTokens.
   */
  minConfidence?: number;
  /**
   * The most tokens a draft that costs no model step (a match in the context,
   * the tenant's history or the user's prediction) may propose, ≥ maxTokens:
   * a long right match saves target passes, a wrong one costs only verify
   * work. Within the verify protocol's 64. Absent = maxTokens.
   */
  maxMatchTokens?: number;
  /** Record `lastConfidence` for this proposal (a pass over the vocabulary per token, so only when asked). */
  confidence?: boolean;
  /**
   * Checked before each model step after the first: true stops the draft where it is. Branch-ahead
   * drafting stops when the verdict it drafts for arrives; the draft is then only shorter, which
   * verification handles like any other length (it does not depend on the target's draws).
   */
  interrupted?: () => boolean;
}

/** The draft model's view of one drafted position. */
export interface DraftConfidence {
  /** Probability of the most likely token (temperature 1 for greedy drafts, the processed q when sampled). */
  top: number;
  /** The most likely token other than the drafted one. */
  runnerUp: number;
}

export interface ProposalOutcome {
  /** The proposer (or hybrid member) that drafted the round. */
  source: string;
  drafted: number;
  accepted: number;
}

/**
 * A training-free proposer: its draft is a continuation found by matching the
 * context's tail somewhere (the context itself, the tenant's history, the
 * user's prediction), with the evidence for it, so a hybrid can weigh it
 * against a draft model before any model step is spent.
 */
export interface Matcher extends Proposer {
  /** The continuation after the best match of the context's tail, at most `limit` tokens; null = no match. */
  match(context: readonly number[], limit: number): Match | null;
}

export interface Match {
  tokens: number[];
  /** Tokens of the context's tail the match covers (its n-gram length); Infinity = aligned by construction (a prediction from its start). */
  matchLength: number;
  /**
   * Drafted tokens expected to be accepted, from the match's own statistics
   * (SuffixDecoding's path score: Σ over the path of the product of the
   * empirical continuation frequencies); tokens.length when there are none.
   */
  expectedAccepted: number;
  /** Occurrences of the matched n-gram that agree on the first drafted token / all occurrences found. */
  support: { agree: number; total: number };
}

/** Deterministic drafts from a match: only token ids cross the wire (q = δ). */
export function matchDraft(match: Match | null): DraftToken[] {
  return match ? match.tokens.map((token) => ({ token })) : [];
}

/** The match bound for one round: `maxMatchTokens` when it is larger, else `maxTokens`. */
export function matchLimit(maxTokens: number, options: ProposeOptions = {}): number {
  return Math.max(maxTokens, options.maxMatchTokens ?? 0);
}

/** One macrotask turn: lets a pending fetch resolve between model steps, which run synchronously inside their promises. */
export function yieldToIo(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}
