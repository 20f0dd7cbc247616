/** What one generation's speculation did, reported in the response's `speculation` object. */
export interface SpeculationStats {
  mode: 'speculative' | 'origin';
  draftLength: number;
  method: 'token' | 'block';
  rounds: number;
  drafted: number;
  accepted: number;
  draftMs: number;
  verifyMs: number;
  originIds: Set<string>;
  /** Target forward time the origin reported, summed over calls. */
  originForwardMs: number;
}

export function newStats(mode: SpeculationStats['mode'], draftLength: number, method: SpeculationStats['method']): SpeculationStats {
  return { mode, draftLength, method, rounds: 0, drafted: 0, accepted: 0, draftMs: 0, verifyMs: 0, originIds: new Set(), originForwardMs: 0 };
}

const ms = (v: number) => Math.round(v * 100) / 100;

/** The wire form: `mean_accepted_length` counts the target's extra token too (tokens emitted per round). */
export function statsToJson(stats: SpeculationStats, emittedTokens: number) {
  return {
    mode: stats.mode,
    method: stats.method,
    draft_length: stats.draftLength,
    rounds: stats.rounds,
    drafted: stats.drafted,
    accepted: stats.accepted,
    acceptance_rate: stats.drafted ? ms(stats.accepted / stats.drafted) : null,
    mean_accepted_length: stats.rounds ? ms(emittedTokens / stats.rounds) : null,
    draft_ms: ms(stats.draftMs),
    verify_ms: ms(stats.verifyMs),
    origin_forward_ms: ms(stats.originForwardMs),
    origin: [...stats.originIds].join(',') || null,
  };
}
