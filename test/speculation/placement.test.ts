import { describe, expect, it } from 'vitest';
import { LinkEstimator } from '../../functions/speculation/controller';
import {
  choosePlacement,
  COLD_ORIGIN_DRAFT_LENGTH,
  EDGE_TOLERANCE,
  expectedTokensPerRound,
  SHORT_LINK_MS,
  type Placement,
  type PlacementQuestion,
} from '../../functions/speculation/placement';

/**
 * Placement chosen from synthetic observation histories: a `World` says what
 * things really cost, `history` feeds a LinkEstimator what the loop would
 * observe there (edge rounds as a running or a frozen clock times them,
 * origin speculation streams, a /health probe), and the choice is checked
 * against what the world says is fastest.
 */
interface World {
  rttMs: number;
  /** Per-token acceptance of the draft, at the edge and at the origin alike. */
  alpha: number;
  edgeDraftMs: number;
  originDraftMs: number;
  /** What an origin round costs beyond its draft and forward pass (its loop, the hybrid's matching). */
  originRoundOverheadMs: number;
  forwardMs: (n: number) => number;
}

/** A GPU origin (flat ~6 ms pass) with a native draft beside it: origin-side speculation is cheap. */
const gpu = (rttMs: number): World => ({ rttMs, alpha: 0.8, edgeDraftMs: 0.6, originDraftMs: 0.4, originRoundOverheadMs: 0.3, forwardMs: () => 6 });
/** An origin whose draft competes for a busy host: drafting there costs more than in the Worker. */
const busyOrigin = (rttMs: number): World => ({ rttMs, alpha: 0.8, edgeDraftMs: 0.6, originDraftMs: 0.9, originRoundOverheadMs: 0.5, forwardMs: () => 6 });
/** The 2-core bench machine: a slow WASM draft, a CPU target rising with tokens verified. */
const cpu = (rttMs: number): World => ({ rttMs, alpha: 0.85, edgeDraftMs: 4, originDraftMs: 1.2, originRoundOverheadMs: 0.3, forwardMs: (n) => 7 + 0.3 * (n - 1) });

/** Low-discrepancy uniforms (golden-ratio sequence): acceptance frequencies match α closely in a few rounds, deterministically. */
function uniforms() {
  let i = 0;
  return () => ((++i * 0.6180339887498949) % 1);
}

function acceptedOf(next: () => number, alpha: number, k: number): number {
  let accepted = 0;
  while (accepted < k && next() < alpha) accepted++;
  return accepted;
}

interface History {
  edgeRounds?: number;
  originStreams?: number;
  /** A /health round trip measured the link. */
  probe?: boolean;
  clock?: 'running' | 'frozen';
  /** The DRAFT_MS_PER_TOKEN calibration (default: the estimator's). */
  calibration?: number;
}

function observe(world: World, history: History, link = new LinkEstimator()): LinkEstimator {
  const next = uniforms();
  if (history.calibration !== undefined) link.assumedDraftMsPerToken = history.calibration;
  if (history.probe) link.observeLinkProbe(world.rttMs);
  for (let i = 0; i < (history.edgeRounds ?? 0); i++) {
    // The adaptive controller's k moves, which is also what lets the forward-time line find its slope.
    const k = 2 + (i % 5);
    const accepted = acceptedOf(next, world.alpha, k);
    const forwardMs = world.forwardMs(k + 1);
    const draftMs = k * world.edgeDraftMs;
    link.observeRound(
      history.clock === 'frozen'
        ? // Deployed: the draft timed as 0 and its cost landed inside the verify call's wall time.
          { drafted: k, accepted, draftMs: 0, verifyWallMs: draftMs + world.rttMs + forwardMs, forwardMs }
        : { drafted: k, accepted, draftMs, verifyWallMs: world.rttMs + forwardMs, forwardMs },
      true,
    );
  }
  for (let i = 0; i < (history.originStreams ?? 0); i++) link.observeOriginSpeculation(originStream(world, next, 64, 4));
  return link;
}

/** One origin speculation stream of `tokens` greedy tokens at k, as its `done` event and the edge's wall clock show it. */
function originStream(world: World, next: () => number, tokens: number, k: number) {
  const s = { tokens: 0, rounds: 0, drafted: 0, accepted: 0, forwardMs: 0, draftMs: 0, wallMs: world.rttMs, greedy: true };
  while (s.tokens < tokens) {
    const accepted = acceptedOf(next, world.alpha, k);
    s.rounds++;
    s.drafted += k;
    s.accepted += accepted;
    s.tokens += accepted + 1;
    s.forwardMs += world.forwardMs(k + 1);
    s.draftMs += k * world.originDraftMs;
    s.wallMs += world.forwardMs(k + 1) + k * world.originDraftMs + world.originRoundOverheadMs;
  }
  return s;
}

/** What each option really costs in the world, each at its best k. */
function truth(world: World, remaining: number, maxK: number): Record<Placement, number> {
  const best = (roundMs: (k: number) => number) => Math.min(...Array.from({ length: maxK }, (_, i) => roundMs(i + 1) / expectedTokensPerRound(world.alpha, i + 1)));
  return {
    edge: remaining * best((k) => k * world.edgeDraftMs + world.rttMs + world.forwardMs(k + 1)),
    origin: world.rttMs + remaining * best((k) => k * world.originDraftMs + world.forwardMs(k + 1) + world.originRoundOverheadMs),
    none: world.rttMs + remaining * world.forwardMs(1),
  };
}

const question = (over: Partial<PlacementQuestion> = {}): PlacementQuestion => ({ greedy: true, maxDraftLength: 8, remaining: 64, originDrafts: true, edgeDrafts: true, ...over });
const warm: History = { edgeRounds: 20, originStreams: 3, probe: true };

describe('placement from measured link, acceptance and costs', () => {
  const cases: Array<[string, World, History, Partial<PlacementQuestion>, Placement]> = [
    ['short link, good acceptance, origin drafting costs more than the Worker', busyOrigin(1), warm, {}, 'edge'],
    ['short link, no origin draft', gpu(1), { edgeRounds: 20, probe: true }, { originDrafts: false }, 'edge'],
    ['20 ms link, origin drafts', gpu(20), warm, {}, 'origin'],
    ['50 ms link, origin drafts', gpu(50), warm, {}, 'origin'],
    ['100 ms link, origin drafts', gpu(100), warm, {}, 'origin'],
    ['20 ms link, origin drafts (busy origin)', busyOrigin(20), warm, {}, 'origin'],
    ['50 ms link, no origin draft: speculation across it loses', gpu(50), { edgeRounds: 20, probe: true }, { originDrafts: false }, 'none'],
    ['CPU bench origin, 0 ms, origin drafts: its native draft beats WASM', cpu(0), warm, {}, 'origin'],
    ['CPU bench origin, 5 ms, no origin draft: a 4 ms WASM draft step loses', cpu(5), { edgeRounds: 20, probe: true }, { originDrafts: false }, 'none'],
    ['no edge proposer, origin drafts', gpu(1), warm, { edgeDrafts: false }, 'origin'],
    ['no edge proposer, no origin draft', gpu(1), warm, { edgeDrafts: false, originDrafts: false }, 'none'],
    ['draft_length 0', gpu(1), warm, { maxDraftLength: 0 }, 'none'],
  ];
  it.each(cases)('%s → %s', (_, world, history, over, expected) => {
    const choice = choosePlacement(observe(world, history), question(over));
    expect(choice.placement, choice.reason).toBe(expected);
    if (expected === 'none') expect(choice.draftLength).toBe(0);
    else expect(choice.draftLength).toBeGreaterThanOrEqual(1);
  });

  it('reports each option’s predicted ms, null where it is not available', () => {
    const link = observe(gpu(20), warm);
    const withOrigin = choosePlacement(link, question());
    expect(withOrigin.predictedMs.edge).toBeGreaterThan(0);
    expect(withOrigin.predictedMs.origin).toBeGreaterThan(0);
    // Origin-only: one link delay, then one target step per token.
    expect(withOrigin.predictedMs.none).toBeCloseTo(20 + 64 * link.forwardMs(1), 6);
    expect(withOrigin.reason).toMatch(/edge \d+ ms \(k \d+\), origin \d+ ms \(k \d+\), none \d+ ms for 64 tokens/);
    const edgeOnly = choosePlacement(link, question({ originDrafts: false }));
    expect(edgeOnly.predictedMs.origin).toBeNull();
    expect(choosePlacement(link, question({ edgeDrafts: false })).predictedMs.edge).toBeNull();
  });

  it('the link decides: the same history at a longer link moves drafting from the edge to the origin', () => {
    // Fails if placement ignored the link: everything but the link delay is the same.
    const at = (rttMs: number) => choosePlacement(observe(busyOrigin(rttMs), warm), question());
    expect(at(1).placement).toBe('edge');
    expect(at(50).placement).toBe('origin');
    expect(at(50).predictedMs.edge!).toBeGreaterThan(at(1).predictedMs.edge! + 10 * 40);
    // Paid once, not per round: origin placement barely moves.
    expect(at(50).predictedMs.origin! - at(1).predictedMs.origin!).toBeCloseTo(49, 0);
  });

  /** Origin-side speculation predicted `lead` (e.g. 3%) faster than edge drafting at this link: the origin's round overhead solved for. */
  function originAhead(rttMs: number, lead: number) {
    const world = (overheadMs: number): World => ({ ...gpu(rttMs), originDraftMs: 0.6, originRoundOverheadMs: overheadMs });
    const predicted = (overheadMs: number) => choosePlacement(observe(world(overheadMs), warm), question());
    let [low, high] = [0, 40];
    for (let i = 0; i < 40; i++) {
      const mid = (low + high) / 2;
      const { edge, origin } = predicted(mid).predictedMs;
      if (edge! / origin! > 1 + lead) low = mid;
      else high = mid;
    }
    return predicted(low);
  }

  it('on a short link the edge is kept within EDGE_TOLERANCE of origin-side speculation, and only on a short link', () => {
    const short = originAhead(2, 0.03);
    expect(2).toBeLessThanOrEqual(SHORT_LINK_MS);
    expect(short.predictedMs.edge! / short.predictedMs.origin!).toBeCloseTo(1.03, 3);
    expect(short.placement, short.reason).toBe('edge');
    expect(short.reason).toMatch(/within/);
    // Just past the tolerance, the origin.
    expect(originAhead(2, EDGE_TOLERANCE + 0.01).placement).toBe('origin');
    // The same 3% at a 10 ms link: the tolerance does not apply, the faster option wins.
    const longer = originAhead(10, 0.03);
    expect(longer.predictedMs.edge! / longer.predictedMs.origin!).toBeCloseTo(1.03, 3);
    expect(longer.placement, longer.reason).toBe('origin');
  });

  it('does not keep the edge on a short link when it is further behind than the tolerance', () => {
    const link = observe(gpu(2), warm);
    const choice = choosePlacement(link, question());
    expect(choice.predictedMs.edge!).toBeGreaterThan(choice.predictedMs.origin! * (1 + EDGE_TOLERANCE));
    expect(choice.placement).toBe('origin');
  });
});

describe('cold start', () => {
  it('with an origin that drafts, speculates there at the default k until the link and acceptance are seen', () => {
    const link = new LinkEstimator();
    const choice = choosePlacement(link, question());
    expect(choice.placement).toBe('origin');
    expect(choice.draftLength).toBe(COLD_ORIGIN_DRAFT_LENGTH);
    expect(choice.reason).toMatch(/cold start/);
    expect(choosePlacement(link, question({ maxDraftLength: 2 })).draftLength).toBe(2);
    // A link probe alone says nothing about acceptance: still the origin.
    link.observeLinkProbe(1);
    expect(choosePlacement(link, question()).placement).toBe('origin');
  });

  it('without an origin draft, speculates at the edge for a round to measure; with neither, nowhere', () => {
    expect(choosePlacement(new LinkEstimator(), question({ originDrafts: false })).placement).toBe('edge');
    expect(choosePlacement(new LinkEstimator(), question({ originDrafts: false, edgeDrafts: false })).placement).toBe('none');
  });

  it('after the first origin stream, a short measured link lets the edge compete (its acceptance borrowed from the origin’s)', () => {
    const world = busyOrigin(1);
    const link = new LinkEstimator();
    link.assumedDraftMsPerToken = world.edgeDraftMs;
    expect(choosePlacement(link, question()).placement).toBe('origin');
    link.observeOriginSpeculation(originStream(world, uniforms(), 64, 4));
    link.observeLinkProbe(world.rttMs);
    const second = choosePlacement(link, question());
    expect(second.placement, second.reason).toBe('edge');
    // The same first stream over a 50 ms link keeps the origin.
    const far = busyOrigin(50);
    const farLink = new LinkEstimator();
    farLink.observeOriginSpeculation(originStream(far, uniforms(), 64, 4));
    farLink.observeLinkProbe(far.rttMs);
    expect(choosePlacement(farLink, question()).placement).toBe('origin');
  });

  it('an origin stream alone bounds the link: wall time less the origin’s forward and draft time', () => {
    const link = new LinkEstimator();
    link.observeOriginSpeculation({ tokens: 64, rounds: 16, drafted: 64, accepted: 48, forwardMs: 96, draftMs: 26, wallMs: 30 + 96 + 26, greedy: true });
    expect(link.hasLinkEvidence()).toBe(true);
    expect(link.hasMeasuredLink()).toBe(false);
    expect(link.linkMs()).toBeCloseTo(30, 6);
    expect(link.originSpeculationMsPerToken(true)).toBeCloseTo((96 + 26) / 64, 6);
    // A measured link, shorter than the bound, takes over; the stream's own cost is then wall − that link.
    link.observeLinkProbe(20);
    link.observeOriginSpeculation({ tokens: 64, rounds: 16, drafted: 64, accepted: 48, forwardMs: 96, draftMs: 26, wallMs: 30 + 96 + 26, greedy: true });
    expect(link.linkMs()).toBeCloseTo(20, 6);
  });
});

describe('placement never falls far behind the best option', () => {
  const worlds: Array<[string, (rttMs: number) => World]> = [
    ['GPU origin', gpu],
    ['busy origin', busyOrigin],
    ['CPU bench', cpu],
  ];
  const rtts = [0, 1, 2, 5, 10, 20, 50, 100];
  for (const [name, world] of worlds) {
    for (const originDrafts of [true, false]) {
      it(`${name}, ${originDrafts ? 'origin drafts' : 'no origin draft'}: ≥ 0.95× the best at every RTT, the same with a frozen clock`, () => {
        for (const rttMs of rtts) {
          const w = world(rttMs);
          const history: History = { edgeRounds: 30, originStreams: originDrafts ? 3 : 0, probe: true };
          const q = question({ originDrafts });
          const running = observe(w, history);
          // Deployed: every draft times as 0 ms, and the calibration is wrong (the bench machine's draft is slower).
          const frozen = observe(w, { ...history, clock: 'frozen', calibration: 1.5 });
          const choice = choosePlacement(running, q);
          expect(choosePlacement(frozen, q).placement, `RTT ${rttMs}`).toBe(choice.placement);
          expect(Math.abs(frozen.draftMsPerToken() - w.edgeDraftMs) / w.edgeDraftMs, `RTT ${rttMs}`).toBeLessThan(0.2);
          const real = truth(w, 64, q.maxDraftLength);
          const best = Math.min(real.edge, real.none, originDrafts ? real.origin : Infinity);
          expect(best / real[choice.placement], `RTT ${rttMs}: ${choice.reason}`).toBeGreaterThanOrEqual(0.95);
        }
      });
    }
  }
});
