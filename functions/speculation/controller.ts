/**
 * The delay-adaptive draft-length policy (ARCHITECTURE.md: "Why link delay decides everything").
 *
 * Lockstep speculation delivers E(k) tokens per round at a cost of
 * k·t_draft + R + t_verify(k), with E(k) = (1 − α^{k+1})/(1 − α) for per-token
 * acceptance α. Origin-only decoding streams one token per target step after
 * paying R once; speculation at the origin pays R once and k·t_draft_origin +
 * t_verify(k) per round. The `LinkEstimator` keeps running estimates of all of
 * these; `./placement.ts` turns them into predictions and a choice, and the
 * controller here picks each edge round's k or hands the rest of the generation
 * over (to the origin's speculation or its plain decoding) with the same
 * comparison. (The same objective as SpecDec++ / SpecKV's draft-length choice,
 * with the link delay in the denominator as in DSD and PipeSpec.)
 *
 * Nothing here times the Worker's own computation (ARCHITECTURE.md: The
 * clock): deployed, a draft reads 0 ms and its cost lands in the next verify
 * call's wall time, so the draft's cost is derived from what does advance
 * (round wall time − the origin's forward time − a link delay measured where
 * no edge computation was inside the wall time), or from calibration.
 *
 * Estimates are kept per isolate (a module-level `LinkEstimator`), so the
 * second request already knows the link; every request refreshes them.
 */
import { bestEdgeRound, describePredictions, predictPlacements, preferredPlacement } from './placement';

export { expectedTokensPerRound } from './placement';

/** What one lockstep verify round cost and delivered. */
export interface RoundObservation {
  /** Draft tokens sent. */
  drafted: number;
  /** Of those, accepted by the target. */
  accepted: number;
  /** Edge time spent drafting them (ms); exactly 0 for a model draft means the clock stood still. */
  draftMs: number;
  /** Wall time from sending the verify request to its answer (ms): link + origin (+ the draft, when the clock stood still). */
  verifyWallMs: number;
  /** The origin's own forward time for the round (ms), as it reported. */
  forwardMs: number;
  /** Positions the origin ran that were not drafts or the last correction (a prompt prefill): kept out of the forward-time line. */
  prefillTokens?: number;
  /**
   * false when a match or a prediction drafted the round (functions/proposers):
   * its acceptance and its (zero) draft time say nothing about the draft
   * model, so only the link and the forward-time line learn from it.
   */
  modelDraft?: boolean;
}

/** What an origin speculation stream (`speculate` on /v1/generate) reported in its `done` event, and how long the edge waited for it. */
export interface OriginSpeculationObservation {
  /** Tokens the stream emitted. */
  tokens: number;
  /** The origin's verify rounds, tokens it drafted and of those accepted. */
  rounds: number;
  drafted: number;
  accepted: number;
  /** The origin's summed target forward time and drafting time (ms): its own clock, which runs. */
  forwardMs: number;
  draftMs: number;
  /** The edge's wall time from sending the request to `done` (ms): one link delay plus everything the origin did. */
  wallMs: number;
  /**
   * The edge's wall time from sending the request to the first token (ms): the link, the prompt's prefill
   * and the first round. When given, the stream's rate is read after it, so neither the prefill (which
   * every placement pays) nor a cold first pass is charged to speculating at the origin.
   */
  firstTokenMs?: number;
  /** With firstTokenMs: the wall time to the last speculated token (an adaptive origin may decode the rest alone). */
  lastTokenMs?: number;
  greedy: boolean;
}

export interface ControllerOptions {
  /** Largest draft length the controller may choose (the request's draft_length). */
  maxDraftLength: number;
  /** Greedy and sampled requests accept at different rates; estimates are kept apart. */
  greedy: boolean;
  /** The origins can speculate themselves (their /health names a draft): a hand-over may go to their speculation. */
  originDrafts?: boolean;
}

export type RoundPlan =
  | { action: 'speculate'; draftLength: number; expectedTokensPerS: number }
  /**
   * Stop drafting here: `to: 'origin'` = the origin's own speculation, asked
   * for `draftLength` drafts per round; `'none'` = its plain decoding (`draftLength` 0).
   */
  | { action: 'hand-over'; to: 'origin' | 'none'; draftLength: number; reason: string };

/** Exponential forgetting per observation: about the last 30 rounds matter. */
const DECAY = 0.97;
/** The link moves faster than the models: forget it fast (the last observation weighs half). */
const LINK_DECAY = 0.5;
/** Per origin speculation stream (a whole request each): about the last five matter. */
const ORIGIN_DECAY = 0.8;

/**
 * The draft step's cost per token when the clock cannot measure it and no
 * link measurement lets the controller derive it (ms): a deployed Worker's
 * clock stands still during computation and moves only across I/O
 * (ARCHITECTURE.md: The clock). Measured in workerd on the shipped draft:
 * 0.8-1.1 ms greedy, 1.5 ms sampled (wrangler.toml's CPU budget uses the same
 * numbers); `DRAFT_MS_PER_TOKEN` sets it for another draft or machine.
 */
export const ASSUMED_DRAFT_MS_PER_TOKEN = 1.5;

/**
 * Bounds on a derived draft cost (ms per token). A derivation subtracts a link
 * delay from a round's wall time, so link jitter (or a stale measurement) can
 * push it past anything real: 0.05 ms is 16× below the shipped draft's WASM
 * step (0.8 ms), and at 50 ms a drafted token costs more than several target
 * steps of any origin worth speculating against, so edge drafting loses either way.
 */
export const MIN_DRAFT_MS_PER_TOKEN = 0.05;
export const MAX_DRAFT_MS_PER_TOKEN = 50;

/** A decayed ratio Σ value / Σ weight: a running mean (weight 1 each) or a per-unit cost (ms over tokens). */
class DecayedRatio {
  private sum = 0;
  private total = 0;
  constructor(private readonly decay: number) {}

  add(value: number, weight = 1) {
    this.sum = this.sum * this.decay + value;
    this.total = this.total * this.decay + weight;
  }

  get observed(): boolean {
    return this.total > 0;
  }

  /** The decayed weight of the evidence behind `value`. */
  weight(): number {
    return this.total;
  }

  value(): number | null {
    return this.total > 0 ? this.sum / this.total : null;
  }
}

interface OriginSums {
  ms: number;
  tokens: number;
  rounds: number;
  drafted: number;
  accepted: number;
}
const emptyOriginSums = (): OriginSums => ({ ms: 0, tokens: 0, rounds: 0, drafted: 0, accepted: 0 });

const clampDraftMs = (ms: number) => Math.min(MAX_DRAFT_MS_PER_TOKEN, Math.max(MIN_DRAFT_MS_PER_TOKEN, ms));

/** Token-level verification accepts Σ_{i=1..k} α^i drafts per round in expectation: solved for α from the means (bisection, it is monotone). */
function acceptanceFromMeans(meanDrafted: number, meanAccepted: number): number {
  const expectedAccepted = (alpha: number) => (alpha * (1 - alpha ** meanDrafted)) / (1 - alpha);
  let low = 0.02;
  let high = 0.98;
  if (meanAccepted <= expectedAccepted(low)) return low;
  if (meanAccepted >= expectedAccepted(high)) return high;
  for (let i = 0; i < 40; i++) {
    const mid = (low + high) / 2;
    if (expectedAccepted(mid) < meanAccepted) low = mid;
    else high = mid;
  }
  return (low + high) / 2;
}

/**
 * Running estimates for one edge–origin link. `forward(n)` is a ridge-regularised
 * line fitted to (tokens verified, origin forward ms): flat on a GPU, rising on
 * a CPU origin.
 */
export class LinkEstimator {
  /** Calibration for a draft the clock could not time, while no link measurement lets it be derived (the `DRAFT_MS_PER_TOKEN` var sets it). */
  assumedDraftMsPerToken = ASSUMED_DRAFT_MS_PER_TOKEN;
  /** Rounds whose draft time the clock could not see (deployed Workers): their drafting was derived from wall time or assumed. */
  frozenClockRounds = 0;
  /** Edge verify rounds observed. */
  observations = 0;
  private acceptance = { greedy: { accepted: 0, rejected: 0 }, sampled: { accepted: 0, rejected: 0 } };
  /**
   * Edge draft time, decayed together per model round: what a running clock
   * measured; for frozen-clock rounds their hidden cost still mixed with one
   * link delay each (wall − forward), taken apart when read with the link
   * known then, so the order of the evidence does not matter; and, for
   * reading without a measured link, their calibrated cost (never more than
   * the wall time it hides in).
   */
  private draft = { measuredMs: 0, measuredTokens: 0, hiddenMs: 0, calibratedMs: 0, frozenRounds: 0, frozenTokens: 0 };
  /**
   * Link delay (ms) in three grades, best first: `measured` from wall times
   * with no edge computation inside (origin-only first tokens, rounds whose
   * drafting the clock timed or that needed no model step, explicit probes);
   * `derived` from frozen-clock rounds less the calibrated draft cost;
   * `streamCeiling` from origin speculation streams, wall − the origin's
   * reported forward and draft time: the link plus the origin's unreported
   * overhead, an upper bound.
   */
  private link = { measured: new DecayedRatio(LINK_DECAY), derived: new DecayedRatio(LINK_DECAY), streamCeiling: new DecayedRatio(LINK_DECAY) };
  /**
   * Origin forward ms per pass length n, each a mean decayed over its own
   * observations. The line forward_ms = a + b·(n − 1) is fitted across these
   * means, one point per length seen: a single decayed line let a stream of
   * k + 1-token verify rounds wash out the one-token steps seen before, and
   * with one length left the line went flat at the verify pass's cost, so on a
   * CPU origin a one-token step looked as dear as a verify pass and
   * origin-only decoding as slower than it is.
   */
  private forwardByLength = new Map<number, DecayedRatio>();
  /** The origin's own speculation per sampling kind, decayed per stream: its time without the link, tokens, rounds, drafts, acceptances. */
  private originSpeculation = { greedy: emptyOriginSums(), sampled: emptyOriginSums() };
  private originDraftPerToken = new DecayedRatio(ORIGIN_DECAY);

  observeRound(round: RoundObservation, greedy: boolean) {
    const modelDraft = round.modelDraft !== false;
    // A model draft that took exactly no time was not measured (a frozen clock): its cost sits inside the verify wall time.
    const frozen = modelDraft && round.drafted > 0 && round.draftMs === 0;
    const wallLessForward = round.verifyWallMs - round.forwardMs;
    if (modelDraft) {
      const counts = this.acceptance[greedy ? 'greedy' : 'sampled'];
      counts.accepted = counts.accepted * DECAY + round.accepted;
      // Token-level verification stops at the first rejection: one rejection per round that was cut short.
      counts.rejected = counts.rejected * DECAY + (round.accepted < round.drafted ? 1 : 0);
      if (round.drafted > 0) this.addDraft(frozen, round.drafted, frozen ? wallLessForward : round.draftMs);
    }
    if (frozen) {
      this.frozenClockRounds++;
      // Not a link measurement (edge computation is inside it); less the calibrated draft cost it is the best guess until one arrives.
      this.link.derived.add(Math.max(0, wallLessForward - this.calibratedDraftMs(round.drafted, wallLessForward)));
    } else {
      // The verify timer starts after drafting: a running clock, or no model step, leaves only link + origin inside.
      this.link.measured.add(Math.max(0, wallLessForward));
    }
    // A few re-run positions are normal (a block-granular origin cache); a prompt prefill is not a decode step.
    if ((round.prefillTokens ?? 0) <= 32) this.addForward(round.drafted + 1, round.forwardMs);
    this.observations++;
  }

  /** Origin-only decoding: the first token's wall time shows the link, later tokens the one-token step. */
  observeOriginToken(forwardMs: number, wallMs?: number) {
    if (wallMs !== undefined) this.link.measured.add(Math.max(0, wallMs - forwardMs));
    else this.addForward(1, forwardMs);
  }

  /** A round trip with no edge computation and next to no origin work inside it (e.g. GET /health), in ms. */
  observeLinkProbe(ms: number) {
    this.link.measured.add(Math.max(0, ms));
  }

  /**
   * The `done` event of an origin speculation stream. Its wall time is one
   * link delay plus the origin's whole speculation; the origin's ms per token
   * is what remains without the link. The link used for that is the measured
   * one, but never more than wall − (forward + draft), which is what the
   * stream itself bounds it by; without a measured link the stream's bound is
   * also the link's last-resort estimate.
   */
  observeOriginSpeculation(s: OriginSpeculationObservation) {
    if (s.tokens <= 0) return;
    const ceiling = Math.max(0, s.wallMs - s.forwardMs - s.draftMs);
    this.link.streamCeiling.add(ceiling);
    const linkMs = Math.min(ceiling, this.link.measured.value() ?? ceiling);
    if (s.drafted > 0) this.originDraftPerToken.add(s.draftMs, s.drafted);
    // With the first token's time: the rounds after the first, each credited its mean share of the stream
    // (round one's tokens arrive together with the first). Without it: the whole stream less the link.
    const share = s.firstTokenMs === undefined ? 1 : (s.rounds - 1) / Math.max(1, s.rounds);
    if (share <= 0) return;
    const own = this.originSpeculation[s.greedy ? 'greedy' : 'sampled'];
    for (const key of Object.keys(own) as Array<keyof OriginSums>) own[key] *= ORIGIN_DECAY;
    own.ms += s.firstTokenMs === undefined ? s.wallMs - linkMs : Math.max(0, (s.lastTokenMs ?? s.wallMs) - s.firstTokenMs);
    own.tokens += s.tokens * share;
    own.rounds += s.rounds * share;
    own.drafted += s.drafted * share;
    own.accepted += s.accepted * share;
  }

  /** Per-token acceptance at the edge, Beta(2, 2)-smoothed so a cold start is neither 0 nor 1. */
  alpha(greedy: boolean): number {
    const { accepted, rejected } = this.acceptance[greedy ? 'greedy' : 'sampled'];
    return (accepted + 2) / (accepted + rejected + 4);
  }

  /** Whether any edge model round of this kind was verified (else `alpha` is only its prior). */
  hasEdgeAcceptance(greedy: boolean): boolean {
    const { accepted, rejected } = this.acceptance[greedy ? 'greedy' : 'sampled'];
    return accepted + rejected > 0;
  }

  /**
   * Edge draft cost per token (ms): measured rounds as timed; frozen-clock
   * rounds as (wall − forward − measured link) per drafted token, or at the
   * calibration while no link has been measured; clamped to sane bounds.
   */
  draftMsPerToken(): number {
    const d = this.draft;
    const tokens = d.measuredTokens + d.frozenTokens;
    if (tokens <= 0) return this.assumedDraftMsPerToken;
    const measuredLink = this.link.measured.value();
    const frozenMs = measuredLink !== null ? d.hiddenMs - d.frozenRounds * measuredLink : d.calibratedMs;
    return clampDraftMs((d.measuredMs + frozenMs) / tokens);
  }

  /** Round-trip link delay (ms): measured if ever, else derived from frozen rounds, else an origin stream's bound, else 0. */
  linkMs(): number {
    return this.link.measured.value() ?? this.link.derived.value() ?? this.link.streamCeiling.value() ?? 0;
  }

  /** Whether anything has shown the link yet (a cold isolate has seen nothing). */
  hasLinkEvidence(): boolean {
    return this.link.measured.observed || this.link.derived.observed || this.link.streamCeiling.observed;
  }

  /** Whether the link was measured from wall times with no edge computation inside (not derived or bounded). */
  hasMeasuredLink(): boolean {
    return this.link.measured.observed;
  }

  /** The origin's own speculation: ms per emitted token without the link, or null before any stream. */
  originSpeculationMsPerToken(greedy: boolean): number | null {
    const own = this.originSpeculation[greedy ? 'greedy' : 'sampled'];
    return own.tokens > 0 ? own.ms / own.tokens : null;
  }

  /**
   * The origin's average speculation round: its ms without the link, drafts
   * per round, and the per-token acceptance that explains its accepted drafts
   * per round; null before any stream with rounds.
   */
  originRound(greedy: boolean): { ms: number; drafted: number; alpha: number } | null {
    const own = this.originSpeculation[greedy ? 'greedy' : 'sampled'];
    if (own.rounds <= 0 || own.drafted <= 0) return null;
    const drafted = own.drafted / own.rounds;
    return { ms: own.ms / own.rounds, drafted, alpha: acceptanceFromMeans(drafted, own.accepted / own.rounds) };
  }

  /** Per-token acceptance of the origin's speculation, or null before any. */
  originAlpha(greedy: boolean): number | null {
    return this.originRound(greedy)?.alpha ?? null;
  }

  /** The origin's draft cost per drafted token (its own clock), or null before any stream. */
  originDraftMsPerToken(): number | null {
    return this.originDraftPerToken.value();
  }

  /** Modelled origin forward time for a pass over `n` new tokens. */
  forwardMs(n: number): number {
    let w = 0;
    let x = 0;
    let y = 0;
    let xx = 0;
    let xy = 0;
    for (const [length, mean] of this.forwardByLength) {
      const ms = mean.value();
      if (ms === null) continue;
      // A length seen once counts less than one seen often, but no length outweighs another by more than its evidence.
      const weight = Math.min(1, mean.weight());
      const xv = length - 1;
      w += weight;
      x += weight * xv;
      y += weight * ms;
      xx += weight * xv * xv;
      xy += weight * xv * ms;
    }
    if (w === 0) return 5;
    const meanX = x / w;
    const meanY = y / w;
    // Ridge on the slope (λ = 1 in units of tokens²) keeps the line sane while only one n has been seen.
    const slope = Math.max(0, (xy - w * meanX * meanY) / (xx - w * meanX * meanX + 1));
    const intercept = Math.max(0.01, meanY - slope * meanX);
    return intercept + slope * (n - 1);
  }

  /** A frozen round's draft at the calibration, but no more than the wall time it is hidden in (the link is not negative). */
  private calibratedDraftMs(drafted: number, wallLessForward: number): number {
    return Math.max(0, Math.min(drafted * this.assumedDraftMsPerToken, wallLessForward));
  }

  private addDraft(frozen: boolean, tokens: number, ms: number) {
    const d = this.draft;
    for (const key of Object.keys(d) as Array<keyof typeof d>) d[key] *= DECAY;
    if (frozen) {
      d.hiddenMs += ms;
      d.calibratedMs += this.calibratedDraftMs(tokens, ms);
      d.frozenRounds += 1;
      d.frozenTokens += tokens;
    } else {
      d.measuredMs += ms;
      d.measuredTokens += tokens;
    }
  }

  private addForward(n: number, ms: number) {
    let mean = this.forwardByLength.get(n);
    if (!mean) this.forwardByLength.set(n, (mean = new DecayedRatio(DECAY)));
    mean.add(ms);
  }
}

/**
 * Chooses each round's draft length from the link's estimates, or hands the
 * rest of the generation over when drafting here is predicted to lose: to the
 * origin's speculation when it can draft and wins, else to its plain decoding.
 * The comparison is placement's own (`./placement.ts`), so a request never
 * switches to an option the per-request choice would not have picked.
 */
export class DelayAdaptiveController {
  constructor(
    private readonly link: LinkEstimator,
    private readonly options: ControllerOptions,
  ) {}

  observe(round: RoundObservation) {
    this.link.observeRound(round, this.options.greedy);
  }

  /** The plan for the next round, `remaining` tokens before max_tokens. */
  plan(remaining: number): RoundPlan {
    const question = { greedy: this.options.greedy, maxDraftLength: this.options.maxDraftLength, remaining, originDrafts: this.options.originDrafts ?? false, edgeDrafts: true };
    const edge = bestEdgeRound(this.link, question);
    // No edge round seen yet (a fresh isolate, or the first edge request): speculate one round to measure it.
    if (this.link.observations === 0) return { action: 'speculate', draftLength: edge.k, expectedTokensPerS: 1000 / edge.msPerToken };
    const predictions = predictPlacements(this.link, question);
    const preferred = preferredPlacement(predictions, this.link.linkMs());
    if (preferred === 'edge') return { action: 'speculate', draftLength: edge.k, expectedTokensPerS: 1000 / edge.msPerToken };
    return {
      action: 'hand-over',
      to: preferred,
      draftLength: preferred === 'origin' ? predictions.origin!.k : 0,
      reason: `${preferred === 'origin' ? 'speculation at the origin' : 'origin-only decoding'} is predicted faster: ${describePredictions(this.link, question, predictions)}`,
    };
  }
}

/** The isolate's estimates of its origin link, shared by every request it serves. */
export const isolateLink = new LinkEstimator();
