import { describe, expect, it } from 'vitest';
import { DelayAdaptiveController, LinkEstimator, type RoundObservation } from '../../functions/speculation/controller';

/**
 * The controller on a deployed Worker's clock, which stands still during
 * computation: a model draft times as 0 ms and its cost shows up inside the
 * next verify call's wall time. Fed the same rounds as a running clock would
 * see them and as a frozen one does, it must learn the same link and choose
 * the same plan, instead of seeing free drafting and a slow link.
 */
const draftMsPerToken = 1.5;
const linkMs = 20;
const forwardMs = (n: number) => 6 + 0.1 * (n - 1);

/** One lockstep round of k drafts, a accepted, as a running clock measures it and as a frozen one does. */
function round(k: number, accepted: number, frozen: boolean): RoundObservation {
  const draftMs = k * draftMsPerToken;
  const forward = forwardMs(k + 1);
  return frozen
    ? { drafted: k, accepted, draftMs: 0, verifyWallMs: draftMs + linkMs + forward, forwardMs: forward }
    : { drafted: k, accepted, draftMs, verifyWallMs: linkMs + forward, forwardMs: forward };
}

function trained(frozen: boolean): LinkEstimator {
  const link = new LinkEstimator();
  link.assumedDraftMsPerToken = draftMsPerToken;
  const outcomes = [4, 3, 4, 1, 4, 2, 4, 4, 0, 3, 4, 4];
  for (const accepted of outcomes) link.observeRound(round(4, accepted, frozen), true);
  return link;
}

describe('delay-adaptive controller under a frozen clock (deployed Workers)', () => {
  it('learns the same link delay and draft cost as with a running clock', () => {
    const running = trained(false);
    const frozen = trained(true);
    expect(frozen.frozenClockRounds).toBe(12);
    expect(running.frozenClockRounds).toBe(0);
    expect(frozen.linkMs()).toBeCloseTo(running.linkMs(), 6);
    expect(frozen.draftMsPerToken()).toBeCloseTo(running.draftMsPerToken(), 6);
    expect(frozen.linkMs()).toBeCloseTo(linkMs, 6);
  });

  it('chooses the same draft length or hand-over at every link delay', () => {
    for (const rtt of [0, 5, 20, 50, 100]) {
      const plans = [false, true].map((frozen) => {
        const link = new LinkEstimator();
        link.assumedDraftMsPerToken = draftMsPerToken;
        for (const accepted of [4, 3, 4, 1, 4, 2, 4]) {
          const r = round(4, accepted, frozen);
          link.observeRound({ ...r, verifyWallMs: r.verifyWallMs - linkMs + rtt }, true);
        }
        return new DelayAdaptiveController(link, { maxDraftLength: 8, greedy: true }).plan(64);
      });
      expect(plans[1], `RTT ${rtt}`).toEqual(plans[0]);
    }
  });

  it('without the correction a frozen clock would look like free drafting (the failure this guards against)', () => {
    const link = new LinkEstimator();
    // An assumed cost of 0 is what the clock reports: the link then absorbs k·t_draft.
    link.assumedDraftMsPerToken = 0;
    for (const accepted of [4, 3, 4, 1]) link.observeRound(round(4, accepted, true), true);
    expect(link.draftMsPerToken()).toBe(0);
    expect(link.linkMs()).toBeGreaterThan(linkMs + 5);
  });
});
