/**
 * The delay-adaptive draft-length policy (ARCHITECTURE.md: "Why link delay decides everything").
 *
 * Lockstep speculation delivers E(k) tokens per round at a cost of
 * k·t_draft + R + t_verify(k), with E(k) = (1 − α^{k+1})/(1 − α) for per-token
 * acceptance α. Origin-only decoding streams one token per target step after
 * paying R once. The controller keeps running estimates of α, t_draft, R and
 * the target's forward time as a function of the tokens it verifies, picks the
 * k that maximises expected tokens per second, and says "hand over" when even
 * the best k is predicted to lose to origin-only decoding of the tokens left.
 * (The same objective as SpecDec++ / SpecKV's draft-length choice, with the
 * link delay in the denominator as in DSD and PipeSpec.)
 *
 * Estimates are kept per isolate (a module-level `LinkEstimator`), so the
 * second request already knows the link; every request refreshes them.
 */

/** What one lockstep verify round cost and delivered. */
export interface RoundObservation {
  /** Draft tokens sent. */
  drafted: number;
  /** Of those, accepted by the target. */
  accepted: number;
  /** Edge time spent drafting them (ms). */
  draftMs: number;
  /** Wall time from sending the verify request to its answer (ms): link + origin. */
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

export interface ControllerOptions {
  /** Largest draft length the controller may choose (the request's draft_length). */
  maxDraftLength: number;
  /** Greedy and sampled requests accept at different rates; estimates are kept apart. */
  greedy: boolean;
}

export type RoundPlan = { action: 'speculate'; draftLength: number; expectedTokensPerS: number } | { action: 'hand-over'; reason: string };

/** Exponential forgetting per observation: about the last 30 rounds matter. */
const DECAY = 0.97;

/**
 * The draft step's cost per token when the clock cannot measure it (ms): a
 * deployed Worker's clock stands still during computation and moves only
 * across I/O (ARCHITECTURE.md: The clock), so a model draft times as exactly
 * 0 ms and its real cost lands in the next verify call's wall time. Measured
 * in workerd on the shipped draft: 0.8-1.1 ms greedy, 1.5 ms sampled
 * (wrangler.toml's CPU budget uses the same numbers); `DRAFT_MS_PER_TOKEN`
 * sets it for another draft or machine.
 */
export const ASSUMED_DRAFT_MS_PER_TOKEN = 1.5;

/**
 * Running estimates for one edge–origin link. `forward(n)` is a ridge-regularised
 * line fitted to (tokens verified, origin forward ms): flat on a GPU, rising on
 * a CPU origin.
 */
export class LinkEstimator {
  /** Used for a round whose model draft timed as 0 ms (a frozen clock); `calibrate` sets it from configuration. */
  assumedDraftMsPerToken = ASSUMED_DRAFT_MS_PER_TOKEN;
  /** Rounds whose draft time the clock could not see (deployed Workers): their drafting was taken out of the link. */
  frozenClockRounds = 0;
  private acceptance = { greedy: { accepted: 0, rejected: 0 }, sampled: { accepted: 0, rejected: 0 } };
  private draftPerToken = { sum: 0, weight: 0 };
  private link = { sum: 0, weight: 0 };
  /** Decayed sums for the line forward_ms = a + b·(n − 1). */
  private fit = { w: 0, x: 0, y: 0, xx: 0, xy: 0 };
  observations = 0;

  observeRound(round: RoundObservation, greedy: boolean) {
    // A model draft that took exactly no time was not measured (a frozen clock): its cost is the assumed
    // one, and it sits inside the verify wall time, which would otherwise teach a link k·t_draft too slow.
    const frozen = round.modelDraft !== false && round.drafted > 0 && round.draftMs === 0;
    const draftMs = frozen ? round.drafted * this.assumedDraftMsPerToken : round.draftMs;
    if (frozen) this.frozenClockRounds++;
    if (round.modelDraft !== false) {
      const counts = this.acceptance[greedy ? 'greedy' : 'sampled'];
      counts.accepted = counts.accepted * DECAY + round.accepted;
      // Token-level verification stops at the first rejection: one rejection per round that was cut short.
      counts.rejected = counts.rejected * DECAY + (round.accepted < round.drafted ? 1 : 0);
      if (round.drafted > 0) this.addDraftTime(draftMs / round.drafted);
    }
    this.addLink(Math.max(0, round.verifyWallMs - round.forwardMs - (frozen ? draftMs : 0)));
    // A few re-run positions are normal (a block-granular origin cache); a prompt prefill is not a decode step.
    if ((round.prefillTokens ?? 0) <= 32) this.addForward(round.drafted + 1, round.forwardMs);
    this.observations++;
  }

  /** Origin-only decoding: the first token's wall time shows the link, later tokens the one-token step. */
  observeOriginToken(forwardMs: number, wallMs?: number) {
    if (wallMs !== undefined) this.addLink(Math.max(0, wallMs - forwardMs));
    else this.addForward(1, forwardMs);
  }

  /** Per-token acceptance, Beta(2, 2)-smoothed so a cold start is neither 0 nor 1. */
  alpha(greedy: boolean): number {
    const { accepted, rejected } = this.acceptance[greedy ? 'greedy' : 'sampled'];
    return (accepted + 2) / (accepted + rejected + 4);
  }

  draftMsPerToken(): number {
    return this.draftPerToken.weight > 0 ? this.draftPerToken.sum / this.draftPerToken.weight : 1;
  }

  linkMs(): number {
    return this.link.weight > 0 ? this.link.sum / this.link.weight : 0;
  }

  /** Modelled origin forward time for a pass over `n` new tokens. */
  forwardMs(n: number): number {
    const { w, x, y, xx, xy } = this.fit;
    if (w === 0) return 5;
    const meanX = x / w;
    const meanY = y / w;
    // Ridge on the slope (λ = 1 in units of tokens²) keeps the line sane while only one n has been seen.
    const slope = Math.max(0, (xy - w * meanX * meanY) / (xx - w * meanX * meanX + 1));
    const intercept = Math.max(0.01, meanY - slope * meanX);
    return intercept + slope * (n - 1);
  }

  private addDraftTime(ms: number) {
    this.draftPerToken.sum = this.draftPerToken.sum * DECAY + ms;
    this.draftPerToken.weight = this.draftPerToken.weight * DECAY + 1;
  }

  private addLink(ms: number) {
    // The link moves faster than the models: forget it fast (the last round weighs half).
    this.link.sum = this.link.sum * 0.5 + ms;
    this.link.weight = this.link.weight * 0.5 + 1;
  }

  private addForward(n: number, ms: number) {
    const f = this.fit;
    const xv = n - 1;
    f.w = f.w * DECAY + 1;
    f.x = f.x * DECAY + xv;
    f.y = f.y * DECAY + ms;
    f.xx = f.xx * DECAY + xv * xv;
    f.xy = f.xy * DECAY + xv * ms;
  }
}

/** Expected tokens per lockstep round with k drafts at acceptance α: E(k) = (1 − α^{k+1})/(1 − α). */
export function expectedTokensPerRound(alpha: number, k: number): number {
  if (alpha >= 1) return k + 1;
  return (1 - alpha ** (k + 1)) / (1 - alpha);
}

/**
 * Chooses each round's draft length from the link's estimates, or hands the
 * rest of the generation to the origin when speculation is predicted to lose.
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
    const link = this.link;
    const alpha = link.alpha(this.options.greedy);
    const draftMs = link.draftMsPerToken();
    const linkMs = link.linkMs();
    let best = { k: 1, rate: 0 };
    for (let k = 1; k <= Math.max(1, Math.min(this.options.maxDraftLength, remaining - 1)); k++) {
      const rate = expectedTokensPerRound(alpha, k) / (k * draftMs + linkMs + link.forwardMs(k + 1));
      if (rate > best.rate) best = { k, rate };
    }
    // Origin-only for the rest: one link delay to start the stream, then one target step per token.
    const originMs = linkMs + remaining * link.forwardMs(1);
    const speculativeMs = remaining / best.rate;
    // No evidence yet (a fresh isolate): speculate one round to measure the link.
    if (link.observations > 0 && speculativeMs > originMs) {
      return {
        action: 'hand-over',
        reason: `predicted ${speculativeMs.toFixed(0)} ms speculating vs ${originMs.toFixed(0)} ms origin-only for ${remaining} tokens (α ${alpha.toFixed(2)}, draft ${draftMs.toFixed(2)} ms/token, link ${linkMs.toFixed(1)} ms, target step ${link.forwardMs(1).toFixed(2)} ms)`,
      };
    }
    return { action: 'speculate', draftLength: best.k, expectedTokensPerS: best.rate * 1000 };
  }
}

/** The isolate's estimates of its origin link, shared by every request it serves. */
export const isolateLink = new LinkEstimator();
