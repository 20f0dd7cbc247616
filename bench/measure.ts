import type { BenchRecord } from './records';
import { streamCompletion, type EdgeTarget } from './sse';

/**
 * The measuring loop the generation suites share (bench/speculation.ts,
 * bench/proposers.ts, bench/block-verification.ts): send one streamed
 * completion and read its timing and `speculation` stats (`streamOnce`), run
 * every mode on every item in rotating order so all modes see the same
 * machine load (`interleaved`), and sum a mode's runs into one record
 * (`summarise`).
 */
export interface Run {
  tokens: number;
  wallMs: number;
  ttftMs: number;
  /** Target passes whose output was used (verify rounds, at the edge or the origin, + tokens the origin decoded alone). */
  rounds: number;
  /** Every target pass, discarded pipelined blocks included. */
  targetPasses: number;
  /** Tokens the origin decoded alone (origin-only, or a hand-over to an origin without a draft). */
  originTokens: number;
  /** Tokens the origin speculated itself (placement "origin", or a hand-over to a drafting origin). */
  originSpeculated: number;
  /** Draft-model steps the origin ran for its own speculation (one per token its draft model drafted; matches cost none). */
  originDraftSteps: number;
  /** Branch-ahead: verdicts that had branches drafted for them, and those that came back as one (its block sent without drafting). */
  branchVerdicts: number;
  branchHits: number;
  /** Drafted and accepted tokens, wherever drafting happened. */
  drafted: number;
  accepted: number;
  draftMs: number;
  /** Target forward time the origin reported (held to the cost model's duration on the GPU-cost-model origin). */
  originForwardMs: number;
  handedOver: boolean;
  /** `speculation.proposers`: per proposer that drafted, its verify rounds, drafted and accepted tokens. */
  proposers: Record<string, { rounds: number; drafted: number; accepted: number }>;
  /** `usage.completion_tokens_details.accepted_prediction_tokens` when the request carried a prediction, else 0. */
  acceptedPrediction: number;
}

export async function streamOnce(edge: EdgeTarget, body: Record<string, unknown>): Promise<Run> {
  const { ttftMs, wallMs, last } = await streamCompletion(edge, body);
  const s = last.speculation;
  const atOrigin = s.origin_speculation ?? { rounds: 0, drafted: 0, accepted: 0, tokens: 0, draft_ms: 0, draft_steps: 0 };
  return {
    tokens: last.usage.completion_tokens,
    wallMs,
    ttftMs,
    rounds: s.rounds,
    targetPasses: s.target_passes ?? s.rounds,
    originTokens: (s.origin_tokens ?? 0) - atOrigin.tokens,
    originSpeculated: atOrigin.tokens,
    originDraftSteps: atOrigin.draft_steps ?? atOrigin.drafted,
    branchVerdicts: s.branch_ahead?.verdicts ?? 0,
    branchHits: s.branch_ahead?.hits ?? 0,
    drafted: s.drafted + atOrigin.drafted,
    accepted: s.accepted + atOrigin.accepted,
    draftMs: s.draft_ms + atOrigin.draft_ms,
    originForwardMs: s.origin_forward_ms ?? 0,
    handedOver: s.handover_at != null,
    proposers: s.proposers ?? {},
    acceptedPrediction: body.prediction ? (last.usage.completion_tokens_details?.accepted_prediction_tokens ?? 0) : 0,
  };
}

/**
 * Item i runs every mode, starting at mode i mod modes.length (a rotating
 * order, so no mode always runs first after a change of prompt). `send`
 * returns the measured run, or null for an unmeasured request (a history
 * turn, a warm-up); returns each mode's measured runs in item order.
 */
export async function interleaved<M extends { mode: string }, R = Run>(modes: M[], items: number, send: (mode: M, item: number) => Promise<R | null>): Promise<Map<string, R[]>> {
  const runs = new Map<string, R[]>(modes.map((m) => [m.mode, []]));
  for (let i = 0; i < items; i++) {
    for (let j = 0; j < modes.length; j++) {
      const m = modes[(i + j) % modes.length];
      const run = await send(m, i);
      if (run) runs.get(m.mode)!.push(run);
    }
  }
  return runs;
}

export function summarise(r: Run[], fields: Pick<BenchRecord, 'suite' | 'mode' | 'rtt_ms' | 'origin_cost'> & Record<string, unknown>): BenchRecord {
  const sum = (f: (x: Run) => number) => r.reduce((a, x) => a + f(x), 0);
  const tokens = sum((x) => x.tokens);
  const verifyRounds = sum((x) => x.rounds - x.originTokens);
  return {
    ...fields,
    tokens_per_s: round((tokens / sum((x) => x.wallMs)) * 1000),
    ttft_ms: round(median(r.map((x) => x.ttftMs))),
    target_passes_per_token: round(sum((x) => x.targetPasses) / tokens),
    // Tokens per verify round (the target's own token included); 1 for origin-only decoding.
    mean_accepted: verifyRounds > 0 ? round((tokens - sum((x) => x.originTokens)) / verifyRounds) : 1,
    draft_ms_per_token: sum((x) => x.drafted) ? round(sum((x) => x.draftMs) / sum((x) => x.drafted)) : 0,
    acceptance_rate: sum((x) => x.drafted) ? round(sum((x) => x.accepted) / sum((x) => x.drafted)) : null,
    handover_fraction: round(r.filter((x) => x.handedOver).length / r.length),
    // Of the tokens, those speculated at the origin (placement "origin", or an adaptive hand-over to a drafting origin).
    origin_speculated_fraction: round(sum((x) => x.originSpeculated) / tokens),
    // The origin's forward time per target pass (a decode step for origin-only decoding, a verify pass otherwise).
    target_ms_per_pass: sum((x) => x.targetPasses) ? round(sum((x) => x.originForwardMs) / sum((x) => x.targetPasses)) : null,
    // The GPU drafting work: draft-model steps the origin ran per output token (edge drafting saves these).
    origin_draft_steps_per_token: round(sum((x) => x.originDraftSteps) / tokens),
    branch_hit_rate: sum((x) => x.branchVerdicts) ? round(sum((x) => x.branchHits) / sum((x) => x.branchVerdicts)) : null,
    tokens,
    prompts: r.length,
  };
}

export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
export const round = (v: number) => Math.round(v * 100) / 100;
