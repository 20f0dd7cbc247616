import { describe, expect, it } from 'vitest';
import {
  blockVerificationWeights,
  counterRng,
  residualDistribution,
  sampleFrom,
  verifyBlock,
  verifyGreedy,
  verifyTokenLevel,
  type DraftToken,
  type Rng,
  type RngStream,
} from '../../shared/sampling';
import type { Verifier } from './simulation';

const dist = (...probs: number[]) => Float64Array.from(probs);
const SEEDS = 4_000;
const verifiers: Array<[string, Verifier]> = [
  ['verifyTokenLevel', verifyTokenLevel],
  ['verifyBlock', verifyBlock],
];

/** An Rng that records which draws were read. */
function recordingRng(seed: number): Rng & { reads: string[] } {
  const inner = counterRng(seed);
  const reads: string[] = [];
  return {
    reads,
    uniform(position: number, stream: RngStream) {
      reads.push(`${stream}@${position}`);
      return inner.uniform(position, stream);
    },
  };
}

/** Runs a verifier over seeds 0..n-1 and returns the outcomes. */
function outcomes(verify: Verifier, drafts: DraftToken[], p: Float64Array[], n = SEEDS, offset = 0) {
  return Array.from({ length: n }, (_, seed) => verify(drafts, p, counterRng(seed), offset));
}

/** |observed − expected| within 4.5 binomial standard errors. */
function expectFrequency(hits: number, n: number, probability: number) {
  const se = Math.sqrt((probability * (1 - probability)) / n);
  expect(Math.abs(hits / n - probability)).toBeLessThanOrEqual(4.5 * se + 1e-12);
}

describe('verifyGreedy', () => {
  it('replaces the first mismatch with the target argmax', () => {
    expect(verifyGreedy([5, 6, 7], [9, 6, 7, 8])).toEqual({ acceptedCount: 0, tokens: [9] });
    expect(verifyGreedy([5, 6, 7], [5, 6, 2, 8])).toEqual({ acceptedCount: 2, tokens: [5, 6, 2] });
  });

  it('adds the bonus token when every draft matches', () => {
    expect(verifyGreedy([5, 6, 7], [5, 6, 7, 8])).toEqual({ acceptedCount: 3, tokens: [5, 6, 7, 8] });
    expect(verifyGreedy([], [4])).toEqual({ acceptedCount: 0, tokens: [4] });
  });

  it('stops at the first mismatch even if later drafts match', () => {
    expect(verifyGreedy([1, 2, 3], [1, 9, 3, 4])).toEqual({ acceptedCount: 1, tokens: [1, 9] });
  });

  it('requires k+1 target tokens', () => {
    expect(() => verifyGreedy([1, 2], [1, 2])).toThrow(RangeError);
  });
});

describe('residualDistribution', () => {
  it('is norm(max(0, p − q)) (hand-computed)', () => {
    const p = dist(0.4, 0.4, 0.2);
    expect([...residualDistribution(p, [[0, 0.5], [2, 0.5]])]).toEqual([0, 1, 0]);
    const r = residualDistribution(dist(0.5, 0.3, 0.2), [[0, 0.3], [1, 0.3], [2, 0.4]]);
    expect(r[0]).toBeCloseTo(1, 15);
    expect(r[1]).toBe(0);
    expect(r[2]).toBe(0);
    const mixed = residualDistribution(dist(0.5, 0.3, 0.2, 0), [[3, 0.6], [0, 0.4]]);
    // max(0, p − q) = (0.1, 0.3, 0.2, 0), mass 0.6.
    [1 / 6, 1 / 2, 1 / 3, 0].forEach((v, i) => expect(mixed[i]).toBeCloseTo(v, 14));
  });

  it('excludes tokens the target gives zero probability, whatever q does', () => {
    const r = residualDistribution(dist(0.6, 0, 0.4), [[1, 0.9], [0, 0.1]]);
    expect(r[1]).toBe(0);
    expect(r[0] + r[2]).toBeCloseTo(1, 14);
  });

  it('for a deterministic proposal is p without that token, renormalised', () => {
    const r = residualDistribution(dist(0.5, 0.3, 0.2), 0);
    [0, 0.6, 0.4].forEach((v, i) => expect(r[i]).toBeCloseTo(v, 14));
  });

  it('falls back to p when no mass is left (p == q: a rejection cannot happen)', () => {
    const p = dist(0.25, 0.75);
    expect([...residualDistribution(p, [[0, 0.25], [1, 0.75]])]).toEqual([0.25, 0.75]);
    expect([...residualDistribution(dist(0, 1), 1)]).toEqual([0, 1]);
  });
});

describe.each(verifiers)('%s', (_name, verify) => {
  it('always rejects a drafted token the target gives zero probability, and never emits it', () => {
    const p = [dist(0.5, 0, 0.5), dist(1 / 3, 1 / 3, 1 / 3)];
    const drafts: DraftToken[] = [{ token: 1, q: [[1, 0.7], [0, 0.3]] }];
    for (const outcome of outcomes(verify, drafts, p)) {
      expect(outcome.acceptedCount).toBe(0);
      expect(outcome.tokens).toHaveLength(1);
      expect(outcome.tokens[0]).not.toBe(1);
    }
  });

  it('never accepts past a zero-probability token, even when later drafts look good', () => {
    // Token 2 is impossible at position 0; the later drafts are the target's favourites.
    const p = [dist(0.5, 0.5, 0), dist(0.1, 0.1, 0.8), dist(0.1, 0.1, 0.8), dist(1 / 3, 1 / 3, 1 / 3)];
    const q: Array<[number, number]> = [[0, 0.2], [1, 0.2], [2, 0.6]];
    const drafts: DraftToken[] = [{ token: 2, q }, { token: 2, q }, { token: 2, q }];
    for (const outcome of outcomes(verify, drafts, p)) {
      expect(outcome.acceptedCount).toBe(0);
      expect(outcome.tokens[0]).not.toBe(2);
    }
  });

  it('always accepts when p == q, then adds the bonus from p[k]', () => {
    const p = [dist(0.2, 0.3, 0.5), dist(0.6, 0.4, 0), dist(0.1, 0.2, 0.7)];
    const drafts: DraftToken[] = [
      { token: 2, q: [[2, 0.5], [1, 0.3], [0, 0.2]] },
      { token: 1, q: [[0, 0.6], [1, 0.4]] },
    ];
    const bonusCounts = [0, 0, 0];
    for (const [seed, outcome] of outcomes(verify, drafts, p).entries()) {
      expect(outcome.acceptedCount).toBe(2);
      expect(outcome.tokens.slice(0, 2)).toEqual([2, 1]);
      // The bonus is exactly plain sampling from p[k] with the 'sample' draw at offset + k.
      expect(outcome.tokens[2]).toBe(sampleFrom(p[2], counterRng(seed).uniform(2, 'sample')));
      bonusCounts[outcome.tokens[2]]++;
    }
    [0.1, 0.2, 0.7].forEach((probability, token) => expectFrequency(bonusCounts[token], SEEDS, probability));
  });

  it('with no drafts is plain sampling from p[0]', () => {
    const p = [dist(0.3, 0.7)];
    for (let seed = 0; seed < 100; seed++) {
      expect(verify([], p, counterRng(seed), 9)).toEqual({ acceptedCount: 0, tokens: [sampleFrom(p[0], counterRng(seed).uniform(9, 'sample'))] });
    }
  });

  it('accepts a single draft with probability min(1, p(x)/q(x)) and corrects from the residual', () => {
    const p = [dist(0.2, 0.5, 0.3), dist(0.5, 0.5, 0)];
    const q: Array<[number, number]> = [[0, 0.6], [1, 0.3], [2, 0.1]];
    const results = outcomes(verify, [{ token: 0, q }], p);
    const accepted = results.filter((o) => o.acceptedCount === 1).length;
    expectFrequency(accepted, SEEDS, 0.2 / 0.6);
    // Residual norm(max(0, p − q)) = (0, 0.2, 0.2)/0.4: token 0 is never the correction.
    const corrections = results.filter((o) => o.acceptedCount === 0).map((o) => o.tokens[0]);
    expect(corrections).not.toContain(0);
    expectFrequency(corrections.filter((t) => t === 1).length, corrections.length, 0.5);
  });

  it('accepts a deterministic proposal with probability p(x), else draws from p without x', () => {
    const p = [dist(0.3, 0.5, 0.2), dist(1, 0, 0)];
    const results = outcomes(verify, [{ token: 1 }], p);
    expectFrequency(results.filter((o) => o.acceptedCount === 1).length, SEEDS, 0.5);
    const corrections = results.filter((o) => o.acceptedCount === 0).map((o) => o.tokens[0]);
    expect(corrections).not.toContain(1);
    expectFrequency(corrections.filter((t) => t === 0).length, corrections.length, 0.6);
    // Every accepted round ends with the bonus from p[1] = δ(0).
    for (const o of results.filter((o) => o.acceptedCount === 1)) expect(o.tokens).toEqual([1, 0]);
  });

  it('always emits the accepted drafts plus exactly one token', () => {
    const p = [dist(0.4, 0.6), dist(0.7, 0.3), dist(0.5, 0.5), dist(0.1, 0.9)];
    const drafts: DraftToken[] = [
      { token: 0, q: [[0, 0.8], [1, 0.2]] },
      { token: 1 },
      { token: 0, q: [[0, 1]] },
    ];
    for (const outcome of outcomes(verify, drafts, p, 500)) {
      expect(outcome.tokens).toHaveLength(outcome.acceptedCount + 1);
      expect(outcome.tokens.slice(0, outcome.acceptedCount)).toEqual(drafts.slice(0, outcome.acceptedCount).map((d) => d.token));
    }
  });

  it('reads draws only relative to offset: shifting offset equals shifting the generator', () => {
    const p = [dist(0.4, 0.6), dist(0.7, 0.3), dist(0.5, 0.5)];
    const drafts: DraftToken[] = [{ token: 0, q: [[0, 0.8], [1, 0.2]] }, { token: 1, q: [[1, 1]] }];
    for (let seed = 0; seed < 200; seed++) {
      const rng = counterRng(seed);
      const shifted: Rng = { uniform: (position, stream) => rng.uniform(position + 40, stream) };
      expect(verify(drafts, p, rng, 40)).toEqual(verify(drafts, p, shifted, 0));
    }
  });

  it('rejects inconsistent input', () => {
    const p = [dist(0.5, 0.5), dist(0.5, 0.5)];
    const rng = counterRng(0);
    expect(() => verify([{ token: 0 }], [p[0]], rng, 0)).toThrow(/k\+1/);
    expect(() => verify([{ token: 0, q: [[1, 1]] }], p, rng, 0)).toThrow(/own proposal/);
    expect(() => verify([{ token: 0, q: [[0, 0.5]] }], p, rng, 0)).toThrow(RangeError);
    expect(() => verify([{ token: 2 }], p, rng, 0)).toThrow(/vocabulary/);
    expect(() => verify([{ token: 0 }], [p[0], dist(1, 0, 0)], rng, 0)).toThrow(RangeError);
    expect(() => verify([{ token: 0 }], [p[0], dist(0.5, 0.4)], rng, 0)).toThrow(/sums/);
  });
});

describe('verifyTokenLevel', () => {
  it('reads the documented draws and nothing after the first rejection', () => {
    // Draft 0 always accepted (p = q), draft 1 never (p(x) = 0): rejection at position 1.
    const p = [dist(0.5, 0.5), dist(1, 0), dist(0.5, 0.5), dist(0.5, 0.5)];
    const q: Array<[number, number]> = [[0, 0.5], [1, 0.5]];
    const rng = recordingRng(1);
    const outcome = verifyTokenLevel([{ token: 0, q }, { token: 1, q }, { token: 0, q }], p, rng, 10);
    expect(outcome).toEqual({ acceptedCount: 1, tokens: [0, 0] });
    expect(rng.reads).toEqual(['accept@10', 'accept@11', 'residual@11']);
  });

  it('reads the sample draw at offset + k for the bonus', () => {
    const p = [dist(0.5, 0.5), dist(0.5, 0.5)];
    const rng = recordingRng(1);
    verifyTokenLevel([{ token: 0, q: [[0, 0.5], [1, 0.5]] }], p, rng, 3);
    expect(rng.reads).toEqual(['accept@3', 'sample@4']);
  });
});

describe('verifyBlock', () => {
  // Sun et al. 2024, §3 motivating example: context-free models over {a, b}, target (1/3, 2/3),
  // draft (2/3, 1/3), two drafts. Token-level accepts 10/9 tokens in expectation, block 11/9.
  const target = dist(1 / 3, 2 / 3);
  const draftQ: Array<[number, number]> = [[0, 2 / 3], [1, 1 / 3]];
  const draftDense = dist(2 / 3, 1 / 3);
  const paperP = [target, target, target];

  /** Exact E[accepted] of block verification for given drafts: τ = max{i : η_i < h_i}. */
  function expectedBlockAccepted(drafts: DraftToken[], p: Float64Array[]): number {
    const { thresholds } = blockVerificationWeights(drafts, p);
    let expected = 0;
    let noneFromHere = 1;
    for (let i = thresholds.length; i >= 1; i--) {
      noneFromHere *= 1 - thresholds[i - 1];
      expected += 1 - noneFromHere; // P(τ >= i)
    }
    return expected;
  }

  it("reproduces the paper's example: 11/9 accepted tokens against token-level's 10/9", () => {
    let blockExpected = 0;
    let tokenExpected = 0;
    for (const [a, qa] of draftQ) {
      for (const [b, qb] of draftQ) {
        const drafts: DraftToken[] = [{ token: a, q: draftQ }, { token: b, q: draftQ }];
        blockExpected += qa * qb * expectedBlockAccepted(drafts, paperP);
        const first = Math.min(1, target[a] / qa);
        tokenExpected += qa * qb * (first + first * Math.min(1, target[b] / qb));
      }
    }
    expect(blockExpected).toBeCloseTo(11 / 9, 14);
    expect(tokenExpected).toBeCloseTo(10 / 9, 14);
  });

  it('computes the weights and thresholds of Algorithm 2 (hand-computed for the draft "a b")', () => {
    // p_1 = min(1, (1/3)/(2/3)) = 1/2; h_1 = Σ max(0, p_1·p − q) / (… + 1 − p_1) = 0 / (0 + 1/2) = 0;
    // p_2 = min(1, p_1 · (2/3)/(1/3)) = 1 = h_2.
    const { weights, thresholds } = blockVerificationWeights([{ token: 0, q: draftQ }, { token: 1, q: draftQ }], paperP);
    expect(weights).toEqual([0.5, 1]);
    expect(thresholds).toEqual([0, 1]);
    // Draft "b a": p_1 = 1, h_1 = (1/3)/(1/3 + 0) = 1; p_2 = 1/2 = h_2.
    const ba = blockVerificationWeights([{ token: 1, q: draftQ }, { token: 0, q: draftQ }], paperP);
    expect(ba.weights).toEqual([1, 0.5]);
    expect(ba.thresholds[0]).toBeCloseTo(1, 15);
    expect(ba.thresholds[1]).toBe(0.5);
  });

  it('accepts the whole block where token-level verification would reject the first token', () => {
    // "a b": token-level rejects a half the time; block sees that b restores the path's weight.
    const drafts: DraftToken[] = [{ token: 0, q: draftQ }, { token: 1, q: draftQ }];
    const block = outcomes(verifyBlock, drafts, paperP);
    expect(block.every((o) => o.acceptedCount === 2)).toBe(true);
    const tokenLevel = outcomes(verifyTokenLevel, drafts, paperP);
    expectFrequency(tokenLevel.filter((o) => o.acceptedCount === 0).length, SEEDS, 0.5);
  });

  it('matches the exact expected accepted length of the paper example by simulation', () => {
    let total = 0;
    const n = 20_000;
    for (let seed = 0; seed < n; seed++) {
      const rng = counterRng(seed);
      const drafts: DraftToken[] = [0, 1].map((i) => ({ token: sampleFrom(draftDense, rng.uniform(i, 'draft')), q: draftQ }));
      total += verifyBlock(drafts, paperP, rng, 0).acceptedCount;
    }
    // Accepted count has variance below 1: 4.5 standard errors is < 0.032.
    expect(Math.abs(total / n - 11 / 9)).toBeLessThan(4.5 / Math.sqrt(n));
  });

  it('with one draft is exactly token-level verification (same draws, same decisions)', () => {
    const p = [dist(0.2, 0.5, 0.3), dist(0.5, 0.25, 0.25)];
    for (const draft of [{ token: 0, q: [[0, 0.6], [1, 0.3], [2, 0.1]] as Array<[number, number]> }, { token: 2 }]) {
      for (let seed = 0; seed < 500; seed++) {
        expect(verifyBlock([draft], p, counterRng(seed), 5)).toEqual(verifyTokenLevel([draft], p, counterRng(seed), 5));
      }
    }
  });

  it('equals token-level in expected length for deterministic proposals (no slack to exploit)', () => {
    const p = [dist(0.6, 0.3, 0.1), dist(0.2, 0.7, 0.1), dist(0.5, 0.1, 0.4), dist(1 / 3, 1 / 3, 1 / 3)];
    const drafts: DraftToken[] = [{ token: 0 }, { token: 1 }, { token: 2 }];
    const tokenLevel = 0.6 + 0.6 * 0.7 + 0.6 * 0.7 * 0.4;
    expect(expectedBlockAccepted(drafts, p)).toBeCloseTo(tokenLevel, 14);
  });

  it('reads one acceptance draw per draft position, then the residual or bonus draw', () => {
    const p = [dist(0.5, 0.5), dist(1, 0), dist(0.5, 0.5), dist(0.5, 0.5)];
    const q: Array<[number, number]> = [[0, 0.5], [1, 0.5]];
    const rejected = recordingRng(1);
    expect(verifyBlock([{ token: 0, q }, { token: 1, q }, { token: 0, q }], p, rejected, 10).acceptedCount).toBe(1);
    expect(rejected.reads).toEqual(['accept@10', 'accept@11', 'accept@12', 'residual@11']);
    const allAccepted = recordingRng(1);
    verifyBlock([{ token: 0, q }], [dist(0.5, 0.5), dist(0.5, 0.5)], allAccepted, 3);
    expect(allAccepted.reads).toEqual(['accept@3', 'sample@4']);
  });
});
