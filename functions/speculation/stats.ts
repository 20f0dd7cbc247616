import type { DraftPlacement, PlacementRequest, SpeculationMode } from './loop';

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
  /** Tokens of the origin's stream (origin-only, after an adaptive hand-over, or speculated at the origin). */
  originTokens: number;
  /** Of those, tokens the origin speculated (drafted next to its target) rather than decoded alone. */
  originSpeculatedTokens: number;
  /** Speculation at the origin, as its streams reported it: its verify rounds, drafted and accepted tokens, drafting ms. */
  originSpeculation: { rounds: number; drafted: number; accepted: number; draftMs: number; draftSteps: number };
  /** Where drafts were planned to be made ("none" when placement `auto` chose origin-only decoding). */
  placement: DraftPlacement | 'none';
  /** Placement `auto`: why it chose what it chose, with each option's predicted time. */
  placementReason: string | null;
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
  /**
   * Branch-ahead mode: verdicts that had branches drafted for them, how many of those
   * came back as one branch guessed (its block was then sent without drafting), the
   * branches drafted, and the edge ms spent drafting them while verdicts were on the wire.
   */
  branchAhead: { verdicts: number; hits: number; branches: number; draftMs: number };
  /**
   * Multi-path drafts (`speculation.branches`): verify rounds sent as a tree, the alternative nodes they
   * carried, and the rounds whose accepted path went through an alternative (ARCHITECTURE.md: Multi-path drafts).
   */
  tree: { rounds: number; branches: number; branchTaken: number };
  /** How verify rounds reached the origin (functions/upstream/session.ts): "websocket" once a session served one, else "http". */
  transport: 'websocket' | 'http';
  /** Verify rounds sent over HTTP although a session was tried (it could not open, or dropped mid-generation). */
  sessionFallbacks: number;
  /** Forward-pass queue wait the origins reported, summed over verify calls: verify_ms minus this and origin_forward_ms is the transport's share. */
  originQueueMs: number;
}

export interface ProposerStats {
  rounds: number;
  drafted: number;
  accepted: number;
}

export function newStats(strategy: SpeculationMode, draftLength: number, method: SpeculationStats['method'], placement: PlacementRequest = 'edge'): SpeculationStats {
  return {
    originSpeculatedTokens: 0,
    originSpeculation: { rounds: 0, drafted: 0, accepted: 0, draftMs: 0, draftSteps: 0 },
    // `auto` is decided when decoding starts (loop.ts decode); edge until then.
    placement: placement === 'auto' ? 'edge' : placement,
    placementReason: null,
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
    branchAhead: { verdicts: 0, hits: 0, branches: 0, draftMs: 0 },
    tree: { rounds: 0, branches: 0, branchTaken: 0 },
    transport: 'http',
    sessionFallbacks: 0,
    originQueueMs: 0,
  };
}

const ms = (v: number) => Math.round(v * 100) / 100;

/** The wire form: `mean_accepted_length` counts the target's extra token too (tokens emitted per round). */
export function statsToJson(stats: SpeculationStats, emittedTokens: number) {
  const originSpec = stats.originSpeculation;
  const originAlone = stats.originTokens - stats.originSpeculatedTokens;
  // Edge verify rounds: every used target pass that was neither an origin-alone token nor an origin-side round.
  const verifyRounds = stats.rounds - originAlone - originSpec.rounds;
  return {
    // An adaptive request handed over before its first round never speculated.
    mode: (stats.mode === 'origin' || stats.placement === 'none' || stats.handoverAt === 0) && originSpec.rounds === 0 ? 'origin' : 'speculative',
    /** Where drafts were made: "edge" (this Worker), "origin" (next to the target), "none" (origin-only decoding). */
    placement: stats.mode === 'origin' ? 'none' : stats.placement,
    placement_reason: stats.placementReason,
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
    /** Speculation the origin ran next to its target (placement "origin", or an adaptive hand-over to a drafting origin); null if none. */
    origin_speculation: originSpec.rounds > 0 ? { rounds: originSpec.rounds, drafted: originSpec.drafted, accepted: originSpec.accepted, tokens: stats.originSpeculatedTokens, draft_ms: ms(originSpec.draftMs), draft_steps: originSpec.draftSteps } : null,
    handover_at: stats.handoverAt,
    handover_reason: stats.handoverReason,
    origin: [...stats.originIds].join(',') || null,
    /** Branch-ahead drafting: the share of verdicts whose next block was drafted while they were on the wire. */
    branch_ahead:
      stats.strategy === 'branch-ahead'
        ? { verdicts: stats.branchAhead.verdicts, hits: stats.branchAhead.hits, hit_rate: stats.branchAhead.verdicts ? ms(stats.branchAhead.hits / stats.branchAhead.verdicts) : null, branches: stats.branchAhead.branches, draft_ms: ms(stats.branchAhead.draftMs) }
        : null,
    /** Multi-path drafts: rounds sent as a tree, their alternatives, and rounds decided through one. */
    tree: stats.tree.rounds > 0 ? { rounds: stats.tree.rounds, branches: stats.tree.branches, branch_taken: stats.tree.branchTaken } : null,
    proposers: Object.fromEntries(Object.entries(stats.proposers).map(([name, p]) => [name, { ...p }])),
    transport: stats.transport,
    session_fallbacks: stats.sessionFallbacks,
    origin_queue_ms: ms(stats.originQueueMs),
  };
}
