import type { SpeculationMode } from './loop';

/** What one generation's speculation did, reported in the response's `speculation` object. */
export interface SpeculationStats {
  /** 'speculative' when any draft was verified, else 'origin' (kept for clients of the first API). */
  mode: 'speculative' | 'origin';
  /** The requested mode: origin, lockstep, pipelined or adaptive. */
  strategy: SpeculationMode;
  draftLength: number;
  method: 'token' | 'block';
  /** Target passes whose output was used: verify rounds plus tokens the origin decoded alone. */
  rounds: number;
  /** Pipelined verify rounds whose answer was discarded (an earlier block was not fully accepted): target passes too. */
  discardedRounds: number;
  /** Tokens decoded by the origin's own stream (origin-only, or after an adaptive hand-over). */
  originTokens: number;
  drafted: number;
  accepted: number;
  draftMs: number;
  verifyMs: number;
  originIds: Set<string>;
  /** Target forward time the origin reported, summed over calls. */
  originForwardMs: number;
  /** Adaptive mode: tokens generated before the rest was handed to origin-only decoding, else null. */
  handoverAt: number | null;
  handoverReason: string | null;
  /**
   * Per proposer that drafted (a hybrid's members by name: draft-model,
   * prompt-lookup, suffix, prediction): verify rounds whose verdict was used,
   * the tokens it drafted in them, and how many of those the target accepted.
   * Discarded pipelined blocks are in `discardedRounds` only.
   */
  proposers: Record<string, ProposerStats>;
}

export interface ProposerStats {
  rounds: number;
  drafted: number;
  accepted: number;
}

export function newStats(strategy: SpeculationMode, draftLength: number, method: SpeculationStats['method']): SpeculationStats {
  return {
    mode: strategy === 'origin' ? 'origin' : 'speculative',
    strategy,
    draftLength,
    method,
    rounds: 0,
    discardedRounds: 0,
    originTokens: 0,
    drafted: 0,
    accepted: 0,
    draftMs: 0,
    verifyMs: 0,
    originIds: new Set(),
    originForwardMs: 0,
    handoverAt: null,
    handoverReason: null,
    proposers: {},
  };
}

const ms = (v: number) => Math.round(v * 100) / 100;

/** The wire form: `mean_accepted_length` counts the target's extra token too (tokens emitted per round). */
export function statsToJson(stats: SpeculationStats, emittedTokens: number) {
  const verifyRounds = stats.rounds - stats.originTokens;
  return {
    // An adaptive request handed over before its first round never speculated.
    mode: stats.mode === 'origin' || stats.handoverAt === 0 ? 'origin' : 'speculative',
    strategy: stats.strategy,
    method: stats.method,
    draft_length: stats.draftLength,
    rounds: stats.rounds,
    discarded_rounds: stats.discardedRounds,
    target_passes: stats.rounds + stats.discardedRounds,
    drafted: stats.drafted,
    accepted: stats.accepted,
    acceptance_rate: stats.drafted ? ms(stats.accepted / stats.drafted) : null,
    mean_accepted_length: stats.rounds ? ms(emittedTokens / stats.rounds) : null,
    /** Tokens per verify round only (origin-decoded tokens left out). */
    mean_verified_length: verifyRounds > 0 ? ms((emittedTokens - stats.originTokens) / verifyRounds) : null,
    draft_ms: ms(stats.draftMs),
    verify_ms: ms(stats.verifyMs),
    origin_forward_ms: ms(stats.originForwardMs),
    origin_tokens: stats.originTokens,
    handover_at: stats.handoverAt,
    handover_reason: stats.handoverReason,
    origin: [...stats.originIds].join(',') || null,
    proposers: Object.fromEntries(Object.entries(stats.proposers).map(([name, p]) => [name, { ...p }])),
  };
}
