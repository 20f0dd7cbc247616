import { describe, expect, it } from 'vitest';
import { DelayAdaptiveController, LinkEstimator, MAX_DRAFT_MS_PER_TOKEN, MIN_DRAFT_MS_PER_TOKEN, type RoundObservation, type RoundPlan } from '../../functions/speculation/controller';

/**
 * The link estimator and the delay-adaptive controller on a deployed Worker's
 * clock, which stands still during computation: a model draft times as 0 ms
 * and its cost shows up inside the next verify call's wall time. Fed the same
 * rounds as a running clock would see them and as a frozen one does, it must
 * learn the same draft cost and link and make the same choices (k, hand-over
 * and where to), instead of seeing free drafting and a slow link.
 */
const forwardMs = (n: number) => 6 + 0.1 * (n - 1);
/** Accepted drafts of successive rounds (cut to each round's k): good acceptance, with a few early rejections. */
const outcomes = [4, 3, 4, 1, 4, 2, 4, 4, 0, 3, 4, 4];

interface Link {
  rttMs: number;
  draftMsPerToken: number;
}
const deployed: Link = { rttMs: 20, draftMsPerToken: 1.5 };

/** One lockstep round of k drafts, a accepted, as a running clock measures it and as a frozen one does. */
function round(k: number, accepted: number, frozen: boolean, link: Link = deployed): RoundObservation {
  const draftMs = k * link.draftMsPerToken;
  const forward = forwardMs(k + 1);
  return frozen
    ? { drafted: k, accepted, draftMs: 0, verifyWallMs: draftMs + link.rttMs + forward, forwardMs: forward }
    : { drafted: k, accepted, draftMs, verifyWallMs: link.rttMs + forward, forwardMs: forward };
}

/** An estimator fed `outcomes` at k = 2..6 (as the adaptive controller moves k), after an optional /health probe. */
function trained(frozen: boolean, link: Link = deployed, options: { probe?: boolean; calibration?: number } = {}): LinkEstimator {
  const estimator = new LinkEstimator();
  if (options.calibration !== undefined) estimator.assumedDraftMsPerToken = options.calibration;
  if (options.probe) estimator.observeLinkProbe(link.rttMs);
  outcomes.forEach((accepted, i) => {
    const k = 2 + (i % 5);
    estimator.observeRound(round(k, Math.min(accepted, k), frozen, link), true);
  });
  return estimator;
}

const controller = (link: LinkEstimator, originDrafts = false, maxDraftLength = 8) => new DelayAdaptiveController(link, { maxDraftLength, greedy: true, originDrafts });

describe('draft cost under a frozen clock (deployed Workers)', () => {
  it('with no link measured, takes the calibration, and learns the same link as a running clock', () => {
    const running = trained(false, deployed, { calibration: 1.5 });
    const frozen = trained(true, deployed, { calibration: 1.5 });
    expect(frozen.frozenClockRounds).toBe(outcomes.length);
    expect(running.frozenClockRounds).toBe(0);
    expect(frozen.hasMeasuredLink()).toBe(false);
    expect(frozen.draftMsPerToken()).toBeCloseTo(1.5, 6);
    expect(frozen.draftMsPerToken()).toBeCloseTo(running.draftMsPerToken(), 6);
    expect(frozen.linkMs()).toBeCloseTo(running.linkMs(), 6);
    expect(frozen.linkMs()).toBeCloseTo(20, 6);
  });

  it('derives the hidden draft cost from wall time once the link is measured, whatever the calibration says', () => {
    // The real draft costs 4 ms per token; the calibration says 1.5.
    const slowDraft: Link = { rttMs: 20, draftMsPerToken: 4 };
    for (const evidence of ['probe first', 'probe last', 'origin-only first token', 'a match-drafted round'] as const) {
      const frozen = trained(true, slowDraft, { calibration: 1.5, probe: evidence === 'probe first' });
      if (evidence === 'probe last') frozen.observeLinkProbe(20);
      if (evidence === 'origin-only first token') frozen.observeOriginToken(9, 20 + 9);
      // A match costs no model step: its wall time holds only link and origin, whatever the clock does.
      if (evidence === 'a match-drafted round') frozen.observeRound({ drafted: 8, accepted: 8, draftMs: 0, verifyWallMs: 20 + forwardMs(9), forwardMs: forwardMs(9), modelDraft: false }, true);
      expect(frozen.hasMeasuredLink(), evidence).toBe(true);
      expect(Math.abs(frozen.draftMsPerToken() - 4) / 4, evidence).toBeLessThan(0.2);
      expect(frozen.linkMs(), evidence).toBeCloseTo(20, 6);
    }
  });

  it('stays within 20% of the hidden cost when the link jitters around its measurement', () => {
    const estimator = new LinkEstimator();
    estimator.observeLinkProbe(20);
    const jitter = [3, -2, 1, -3, 2, 0, -1, 3, -2, 1, 2, -3];
    outcomes.forEach((accepted, i) => {
      const r = round(4, accepted, true, { rttMs: 20 + jitter[i], draftMsPerToken: 1.5 });
      estimator.observeRound(r, true);
    });
    expect(Math.abs(estimator.draftMsPerToken() - 1.5) / 1.5).toBeLessThan(0.2);
  });

  it('never learns the link from a frozen round (its wall time holds edge computation)', () => {
    const estimator = new LinkEstimator();
    estimator.observeLinkProbe(20);
    for (const accepted of outcomes) estimator.observeRound(round(4, accepted, true), true);
    // Were frozen rounds link measurements, the link would read 20 + 4 × 1.5 and drafting would look nearly free.
    expect(estimator.linkMs()).toBeCloseTo(20, 6);
    expect(estimator.draftMsPerToken()).toBeCloseTo(1.5, 6);
  });

  it('clamps a derived cost to sane bounds', () => {
    const stale = new LinkEstimator();
    // The probe saw a slow moment: the link since is shorter than it says, and the derivation goes negative.
    stale.observeLinkProbe(60);
    for (const accepted of outcomes) stale.observeRound(round(4, accepted, true), true);
    expect(stale.draftMsPerToken()).toBe(MIN_DRAFT_MS_PER_TOKEN);
    const absurd = new LinkEstimator();
    absurd.observeLinkProbe(0);
    absurd.observeRound({ drafted: 1, accepted: 1, draftMs: 0, verifyWallMs: 5000, forwardMs: 6 }, true);
    expect(absurd.draftMsPerToken()).toBe(MAX_DRAFT_MS_PER_TOKEN);
  });

  it('without link evidence, a calibration above the hidden wall time is cut to it (the link is not negative)', () => {
    const estimator = trained(true, { rttMs: 0, draftMsPerToken: 0.5 }, { calibration: 1.5 });
    expect(estimator.draftMsPerToken()).toBeCloseTo(0.5, 6);
    expect(estimator.linkMs()).toBeCloseTo(0, 6);
  });
});

describe('origin speculation streams', () => {
  it('read their rate after the first token: a slow prefill or cold first pass is not charged to speculating at the origin', () => {
    // 64 tokens in 16 rounds at 2 ms a round after the first token; the first token took 400 ms (link + a long prefill).
    const stream = { tokens: 64, rounds: 16, drafted: 64, accepted: 48, forwardMs: 16 * 1.5, draftMs: 16 * 0.4, greedy: true };
    const after = new LinkEstimator();
    after.observeLinkProbe(5);
    after.observeOriginSpeculation({ ...stream, wallMs: 400 + 15 * 2, firstTokenMs: 400, lastTokenMs: 400 + 15 * 2 });
    expect(after.originSpeculationMsPerToken(true)).toBeCloseTo(2 / 4, 1);
    // Without the first token's time the whole stream less the (measured, 5 ms) link counts, prefill included.
    const whole = new LinkEstimator();
    whole.observeLinkProbe(5);
    whole.observeOriginSpeculation({ ...stream, wallMs: 400 + 15 * 2 });
    expect(whole.originSpeculationMsPerToken(true)!).toBeGreaterThan(5 * after.originSpeculationMsPerToken(true)!);
  });
});

describe('the origin forward-time line', () => {
  it('keeps a CPU origin’s one-token step while many verify passes of one length arrive after it', () => {
    const link = new LinkEstimator();
    // Origin-only decoding: a one-token step of 3 ms; then 300 lockstep rounds of k = 4 (5-token passes) at 7 ms.
    link.observeOriginToken(3, 20);
    for (let i = 0; i < 128; i++) link.observeOriginToken(3);
    for (let i = 0; i < 300; i++) link.observeRound({ drafted: 4, accepted: 2, draftMs: 4, verifyWallMs: 27, forwardMs: 7 }, true);
    expect(link.forwardMs(1)).toBeCloseTo(3, 0);
    expect(link.forwardMs(5)).toBeCloseTo(7, 0);
    // On a flat GPU-like origin the line stays flat.
    const flat = new LinkEstimator();
    for (let i = 0; i < 50; i++) flat.observeOriginToken(6);
    for (let i = 0; i < 50; i++) flat.observeRound({ drafted: 4, accepted: 2, draftMs: 4, verifyWallMs: 27, forwardMs: 6.1 }, true);
    expect(flat.forwardMs(1)).toBeCloseTo(6, 0);
    expect(flat.forwardMs(9)).toBeLessThan(6.5);
  });
});

describe('the controller’s choices', () => {
  it('chooses the same k, hand-over and hand-over target with a frozen clock as with a running one, at every link delay', () => {
    const decision = (plan: RoundPlan) => (plan.action === 'speculate' ? { speculate: plan.draftLength } : { handOverTo: plan.to });
    const seen = new Set<string>();
    for (const rttMs of [0, 2, 5, 10, 20, 50, 100]) {
      for (const originDrafts of [false, true]) {
        const link: Link = { rttMs, draftMsPerToken: 4 };
        // The frozen clock with a wrong calibration (1.5 for a 4 ms draft) and a /health probe; the running clock needs neither.
        const running = controller(trained(false, link), originDrafts).plan(64);
        const frozen = controller(trained(true, link, { calibration: 1.5, probe: true }), originDrafts).plan(64);
        expect(decision(frozen), `RTT ${rttMs}, origin drafts: ${originDrafts}`).toEqual(decision(running));
        seen.add(JSON.stringify(decision(running)));
      }
    }
    // The sweep covers speculation and both hand-over targets, so agreeing is not trivial.
    expect([...seen].some((d) => d.includes('speculate'))).toBe(true);
    expect(seen).toContain(JSON.stringify({ handOverTo: 'origin' }));
    expect(seen).toContain(JSON.stringify({ handOverTo: 'none' }));
  });

  it('drafts longer as the link grows (a round trip is amortised over more tokens), shorter as drafting costs more', () => {
    const k = (rttMs: number, draftMsPerToken = 0.3) => {
      const plan = controller(trained(false, { rttMs, draftMsPerToken }), false, 16).plan(64);
      expect(plan.action, `RTT ${rttMs}, draft ${draftMsPerToken} ms`).toBe('speculate');
      return plan.action === 'speculate' ? plan.draftLength : 0;
    };
    const byLink = [0, 2, 5, 10].map((rttMs) => k(rttMs));
    for (let i = 1; i < byLink.length; i++) expect(byLink[i]).toBeGreaterThanOrEqual(byLink[i - 1]);
    expect(byLink[3]).toBeGreaterThan(byLink[0]);
    expect(k(0, 1.5)).toBeLessThan(k(0, 0.3));
    // Never more than the tokens left need (a round emits k + 1).
    const plan = controller(trained(false, { rttMs: 10, draftMsPerToken: 0.3 }), false, 16).plan(3);
    expect(plan).toMatchObject({ action: 'speculate', draftLength: 2 });
  });

  it('keeps speculating on a short link with good acceptance, unless the origin’s own speculation is clearly faster', () => {
    const short = () => trained(true, { rttMs: 1, draftMsPerToken: 0.5 }, { probe: true });
    expect(controller(short(), false).plan(64).action).toBe('speculate');
    // The origin measured as a little slower per round than the edge (its draft shares a busy host): stay.
    const busy = short();
    busy.observeOriginSpeculation({ tokens: 64, rounds: 18, drafted: 72, accepted: 46, forwardMs: 18 * 6.4, draftMs: 72 * 0.9, wallMs: 1 + 18 * (6.4 + 3.6 + 0.5), greedy: true });
    expect(controller(busy, true).plan(64).action).toBe('speculate');
    // The origin measured with a fast native draft: hand over to it.
    const fast = short();
    fast.observeOriginSpeculation({ tokens: 64, rounds: 18, drafted: 72, accepted: 46, forwardMs: 18 * 6.4, draftMs: 72 * 0.1, wallMs: 1 + 18 * (6.4 + 0.4), greedy: true });
    expect(controller(fast, true).plan(64)).toMatchObject({ action: 'hand-over', to: 'origin' });
  });

  it('hands over on a slow link: to the origin’s speculation when it drafts, else to origin-only decoding', () => {
    const slow = () => trained(true, { rttMs: 100, draftMsPerToken: 1.5 }, { probe: true });
    const toOrigin = controller(slow(), true).plan(64);
    expect(toOrigin).toMatchObject({ action: 'hand-over', to: 'origin' });
    expect(toOrigin.action === 'hand-over' && toOrigin.draftLength).toBeGreaterThanOrEqual(1);
    expect(toOrigin.action === 'hand-over' && toOrigin.reason).toMatch(/edge \d+ ms \(k \d+\), origin \d+ ms \(k \d+\), none \d+ ms for 64 tokens/);
    expect(controller(slow(), false).plan(64)).toMatchObject({ action: 'hand-over', to: 'none', draftLength: 0 });
  });

  it('hands over to origin-only decoding when the origin’s own speculation was measured slower than decoding', () => {
    const link = trained(true, { rttMs: 100, draftMsPerToken: 1.5 }, { probe: true });
    // An origin whose drafting competes with its target: 64 tokens in 900 ms beside 6 ms target steps.
    link.observeOriginSpeculation({ tokens: 64, rounds: 40, drafted: 160, accepted: 24, forwardMs: 250, draftMs: 550, wallMs: 100 + 900, greedy: true });
    expect(controller(link, true).plan(64)).toMatchObject({ action: 'hand-over', to: 'none' });
  });

  it('in a fresh isolate, speculates one round to measure before judging', () => {
    const plan = controller(new LinkEstimator(), true).plan(64);
    expect(plan.action).toBe('speculate');
  });
});
