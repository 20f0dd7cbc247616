/**
 * Where drafting happens, per request and again mid-request (ARCHITECTURE.md:
 * "Why link delay decides everything", "Where drafting should happen").
 *
 * Three ways to produce the `remaining` tokens, each predicted from the
 * link's estimates (./controller.ts, `LinkEstimator`):
 *
 *   edge    lockstep across the link, every round pays R:
 *             E(k) tokens per k·t_draft + R + t_verify(k+1)
 *   origin  speculation next to the target, R once, then
 *             E_o(k) tokens per k·t_draft_origin + t_verify(k+1)
 *           (once its streams were measured: their rounds' cost without the link, and their acceptance)
 *   none    origin-only decoding, R once, then one target step t_verify(1) per token
 *
 * with E(k) = (1 − α^{k+1})/(1 − α). The fastest wins, except that on a short
 * link the edge is kept while it is nearly as fast (EDGE_TOLERANCE).
 */
import type { LinkEstimator } from './controller';

export type Placement = 'edge' | 'origin' | 'none';

export interface PlacementQuestion {
  greedy: boolean;
  /** The request's k cap. */
  maxDraftLength: number;
  /** Tokens left to generate. */
  remaining: number;
  /** The origin's /health names a draft: origin-side speculation is possible. */
  originDrafts: boolean;
  /** The Worker has a draft proposer (false: only origin or none). */
  edgeDrafts: boolean;
}

export interface PlacementChoice {
  placement: Placement;
  /** For edge: the k to start with; for origin: the k to ask the origin for; 0 for none. */
  draftLength: number;
  /** Human-readable, with the predicted ms of each option. */
  reason: string;
  predictedMs: { edge: number | null; origin: number | null; none: number };
}

/** Predicted wall time (ms) of each option for the tokens left, and the k each would use. */
export interface PlacementPredictions {
  edge: { ms: number; k: number } | null;
  origin: { ms: number; k: number } | null;
  none: { ms: number };
}

/**
 * On a link this short (round trip, ms) the edge is "next to" the origin
 * (Smart Placement), and drafting there is kept while it is nearly as fast.
 */
export const SHORT_LINK_MS = 5;

/**
 * How much slower than the best option edge drafting may be predicted to be
 * on a short link and still be chosen: then the origin's GPU runs no draft
 * step (against origin placement) and far fewer target passes (against
 * origin-only decoding), worth a little latency. The issue suggests ~10%;
 * 5% is the most that still keeps the choice at or above 0.95× the best
 * option by construction (1/1.05 ≈ 0.952), the goal the placement-adaptive
 * default is held to.
 */
export const EDGE_TOLERANCE = 0.05;

/**
 * The k an origin is asked for before anything is known about acceptance
 * (the placement benchmark's k = 4: BENCHMARKS.md, Draft placement). The
 * origin keeps it for the whole stream, so a prior-driven guess (α = 0.5 says
 * k = 1) would cost the entire first request.
 */
export const COLD_ORIGIN_DRAFT_LENGTH = 4;

/** Expected tokens per lockstep round with k drafts at acceptance α: E(k) = (1 − α^{k+1})/(1 − α). */
export function expectedTokensPerRound(alpha: number, k: number): number {
  if (alpha >= 1) return k + 1;
  return (1 - alpha ** (k + 1)) / (1 - alpha);
}

/** Draft lengths worth trying: a round emits up to k + 1 tokens, so no more than the tokens left need. */
const draftLengths = (q: PlacementQuestion) => Math.max(1, Math.min(q.maxDraftLength, q.remaining - 1));

/** The k maximising E(k) / roundMs(k), and the ms per token it gives. */
function bestRound(alpha: number, maxK: number, roundMs: (k: number) => number): { k: number; msPerToken: number } {
  let best = { k: 1, msPerToken: Infinity };
  for (let k = 1; k <= maxK; k++) {
    const msPerToken = roundMs(k) / expectedTokensPerRound(alpha, k);
    if (msPerToken < best.msPerToken) best = { k, msPerToken };
  }
  return best;
}

/**
 * Edge acceptance: measured, or before any edge round the origin's (the
 * origin drafts with the same shipped draft model), or the prior.
 */
function edgeAlpha(link: LinkEstimator, greedy: boolean): number {
  return link.hasEdgeAcceptance(greedy) ? link.alpha(greedy) : (link.originAlpha(greedy) ?? link.alpha(greedy));
}

/** Lockstep at the edge: every round pays k·t_draft + R + t_verify(k+1). */
export function bestEdgeRound(link: LinkEstimator, q: PlacementQuestion): { k: number; msPerToken: number } {
  const draftMs = link.draftMsPerToken();
  const linkMs = link.linkMs();
  return bestRound(edgeAlpha(link, q.greedy), draftLengths(q), (k) => k * draftMs + linkMs + link.forwardMs(k + 1));
}

/**
 * Speculation at the origin: rounds of k·t_draft_origin + t_verify(k+1), no
 * link. Once its streams were measured, a round costs what they showed at
 * the k they ran (everything the model leaves out included: its loop, the
 * hybrid's matches), moved to another k by the draft and forward-time
 * differences. Before an origin draft was timed, the edge's draft cost
 * stands in: native onnxruntime drafts at least as fast as WASM, so it errs
 * towards a shorter k.
 */
function bestOriginRound(link: LinkEstimator, q: PlacementQuestion): { k: number; msPerToken: number } {
  const draftMs = link.originDraftMsPerToken() ?? link.draftMsPerToken();
  const measured = link.originRound(q.greedy);
  if (measured) {
    const roundMs = (k: number) => Math.max(0.01, measured.ms + (k - measured.drafted) * draftMs + link.forwardMs(k + 1) - link.forwardMs(measured.drafted + 1));
    return bestRound(measured.alpha, draftLengths(q), roundMs);
  }
  const roundMs = (k: number) => k * draftMs + link.forwardMs(k + 1);
  if (link.hasEdgeAcceptance(q.greedy)) return bestRound(link.alpha(q.greedy), draftLengths(q), roundMs);
  const k = Math.max(1, Math.min(q.maxDraftLength, COLD_ORIGIN_DRAFT_LENGTH));
  return { k, msPerToken: roundMs(k) / expectedTokensPerRound(link.alpha(q.greedy), k) };
}

const hasAcceptanceEvidence = (link: LinkEstimator, greedy: boolean) => link.hasEdgeAcceptance(greedy) || link.originAlpha(greedy) !== null;

/** Each available option's predicted wall time for the tokens left. */
export function predictPlacements(link: LinkEstimator, q: PlacementQuestion): PlacementPredictions {
  const linkMs = link.linkMs();
  const canDraft = q.maxDraftLength > 0 && q.remaining > 0;
  const edge = canDraft && q.edgeDrafts ? bestEdgeRound(link, q) : null;
  const origin = canDraft && q.originDrafts ? bestOriginRound(link, q) : null;
  return {
    edge: edge && { ms: q.remaining * edge.msPerToken, k: edge.k },
    origin: origin && { ms: linkMs + q.remaining * origin.msPerToken, k: origin.k },
    none: { ms: linkMs + q.remaining * link.forwardMs(1) },
  };
}

/** The fastest option, except that on a short link the edge is kept within EDGE_TOLERANCE of it. */
export function preferredPlacement(predictions: PlacementPredictions, linkMs: number): Placement {
  const { edge, origin, none } = predictions;
  const remote: Placement = origin && origin.ms < none.ms ? 'origin' : 'none';
  const remoteMs = remote === 'origin' ? origin!.ms : none.ms;
  if (!edge) return remote;
  const allowance = linkMs <= SHORT_LINK_MS ? 1 + EDGE_TOLERANCE : 1;
  return edge.ms <= remoteMs * allowance ? 'edge' : remote;
}

const fmt = (ms: number | null | undefined) => (ms === null || ms === undefined ? '–' : `${ms.toFixed(0)} ms`);

/** The numbers behind a choice, for `handover_reason` and logs. */
export function describePredictions(link: LinkEstimator, q: PlacementQuestion, p: PlacementPredictions): string {
  const options = [
    p.edge ? `edge ${fmt(p.edge.ms)} (k ${p.edge.k})` : 'edge –',
    p.origin ? `origin ${fmt(p.origin.ms)} (k ${p.origin.k})` : 'origin –',
    `none ${fmt(p.none.ms)}`,
  ];
  const originMs = link.originSpeculationMsPerToken(q.greedy);
  return (
    `predicted ${options.join(', ')} for ${q.remaining} tokens ` +
    `(link ${link.linkMs().toFixed(1)} ms${link.hasMeasuredLink() ? '' : ' unmeasured'}, α ${edgeAlpha(link, q.greedy).toFixed(2)}, ` +
    `draft ${link.draftMsPerToken().toFixed(2)} ms/token, target step ${link.forwardMs(1).toFixed(2)} ms` +
    `${originMs !== null ? `, origin speculation ${originMs.toFixed(2)} ms/token` : ''})`
  );
}

/**
 * Where this request drafts, and with what k. Cold start (this isolate has
 * seen no link delay, or no acceptance of this sampling kind): with an
 * origin that drafts, at the origin (k = COLD_ORIGIN_DRAFT_LENGTH), since
 * colocated speculation wins at every RTT above a few ms and is never far
 * behind below; its stream reports acceptance and bounds the link for the
 * next request. Without one, at the edge, whose first round measures link
 * and acceptance (the controller hands over after it if the edge loses);
 * with neither, nowhere.
 */
export function choosePlacement(link: LinkEstimator, question: PlacementQuestion): PlacementChoice {
  const predictions = predictPlacements(link, question);
  const predictedMs = { edge: predictions.edge?.ms ?? null, origin: predictions.origin?.ms ?? null, none: predictions.none.ms };
  const numbers = describePredictions(link, question, predictions);
  const choice = (placement: Placement, why: string): PlacementChoice => ({
    placement,
    draftLength: placement === 'edge' ? predictions.edge!.k : placement === 'origin' ? predictions.origin!.k : 0,
    reason: `${why}: ${numbers}`,
    predictedMs,
  });

  // Cold: no link seen, or nothing known of acceptance (the prior alone cannot say whether speculation pays).
  if (!link.hasLinkEvidence() || !hasAcceptanceEvidence(link, question.greedy)) {
    if (predictions.origin) return choice('origin', 'cold start, the origin drafts: colocated speculation wins at every RTT above a few ms');
    if (predictions.edge) return choice('edge', 'cold start, no origin draft: speculate at the edge, whose first round measures the link');
    return choice('none', 'nowhere to draft');
  }
  const placement = preferredPlacement(predictions, link.linkMs());
  const fastest = Math.min(predictedMs.edge ?? Infinity, predictedMs.origin ?? Infinity, predictedMs.none);
  const why =
    placement === 'edge' && predictions.edge!.ms > fastest
      ? `edge within ${EDGE_TOLERANCE * 100}% of the fastest on a link ≤ ${SHORT_LINK_MS} ms (the origin runs no draft step)`
      : `${placement} is predicted fastest`;
  return choice(placement, why);
}
