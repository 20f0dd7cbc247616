/**
 * Losslessness of speculative sampling, checked two ways on tiny language
 * models whose distributions depend on the whole prefix:
 *
 * - by simulation: draft with the 'draft' stream, verify, and compare the
 *   first tokens emitted over 20,000 seeds with target-only sampling
 *   (χ² test), including deliberately broken verifiers to show the test has
 *   the power to notice;
 * - exactly: enumerate every draft and every verification outcome and compare
 *   the resulting distribution with the target's to 1e-12.
 *
 * Everything is seeded, so results are deterministic.
 */
import { describe, expect, it } from 'vitest';
import {
  blockVerificationWeights,
  residualDistribution,
  roundRng,
  sampleFrom,
  sparseToDense,
  truncateToSparse,
  verifyBlock,
  verifyTokenLevel,
  type DraftToken,
} from '../../shared/sampling';
import { chiSquareTest } from '../stats';
import {
  makeCase,
  sequenceIndex,
  sharedRng,
  simulate,
  targetSequenceProbabilities,
  type RngForRound,
  type SimulationResult,
  type SpeculationCase,
  type Verifier,
} from './simulation';

const RUNS = 20_000;
/** A correct verifier passes far above this; the broken ones land far below 1e-6. */
const PASS_P_VALUE = 1e-3;
const perRound: RngForRound = (seed, roundOffset) => roundRng(seed, roundOffset);

const cases: SpeculationCase[] = [
  makeCase({
    name: 'vocab 6, target top-k 4, hotter draft sending its top 4 (q proposes masked tokens)',
    seed: 11,
    vocab: 6,
    k: 3,
    targetParams: { temperature: 1, top_p: 1, top_k: 4 },
    draftParams: { temperature: 1.3, top_p: 1, top_k: 0 },
    draftNoise: 0.5,
    qEntries: 4,
  }),
  makeCase({
    name: 'vocab 8, target top-p 0.9 at T 1.2, draft sending its top 5',
    seed: 23,
    vocab: 8,
    k: 3,
    targetParams: { temperature: 1.2, top_p: 0.9, top_k: 0 },
    draftParams: { temperature: 1, top_p: 1, top_k: 0 },
    draftNoise: 0.4,
    qEntries: 5,
  }),
  makeCase({
    name: 'vocab 6, deterministic proposals (draft argmax), target top-p 0.95',
    seed: 37,
    vocab: 6,
    k: 3,
    targetParams: { temperature: 1, top_p: 0.95, top_k: 0 },
    draftParams: { temperature: 1, top_p: 1, top_k: 0 },
    draftNoise: 0.3,
  }),
];

const methods: Array<{ name: string; verify: Verifier; rngForRound: RngForRound }> = [
  // Token-level verification never reads past its first rejection, so one generator can serve the whole generation.
  { name: 'token-level', verify: verifyTokenLevel, rngForRound: sharedRng },
  // Block verification reads every position's draws: each round needs fresh ones (see roundRng).
  { name: 'block', verify: verifyBlock, rngForRound: perRound },
];

/** Simulations are shared between tests (the accepted-length test reuses the losslessness runs). */
const simulations = new Map<string, SimulationResult>();
function simulated(c: SpeculationCase, method: (typeof methods)[number], length = 2): SimulationResult {
  const key = `${c.name}|${method.name}|${length}`;
  let result = simulations.get(key);
  if (!result) simulations.set(key, (result = simulate(c, method.verify, { runs: RUNS, length, rngForRound: method.rngForRound })));
  return result;
}

/** The classic bug: the correction is drawn from p instead of norm(max(0, p − q)). */
function correctionFromTarget(verify: Verifier): Verifier {
  return (drafts, p, rng, offset) => {
    const outcome = verify(drafts, p, rng, offset);
    const tau = outcome.acceptedCount;
    if (tau === drafts.length) return outcome;
    return { acceptedCount: tau, tokens: [...outcome.tokens.slice(0, tau), sampleFrom(p[tau], rng.uniform(offset + tau, 'residual'))] };
  };
}

/** Block verification with token-level's residual norm(max(0, p − q)), forgetting the path weight p_τ of Sun et al. */
const blockWithUnweightedResidual: Verifier = (drafts, p, rng, offset) => {
  const outcome = verifyBlock(drafts, p, rng, offset);
  const tau = outcome.acceptedCount;
  if (tau === drafts.length) return outcome;
  const residual = residualDistribution(p[tau], drafts[tau].q ?? drafts[tau].token);
  return { acceptedCount: tau, tokens: [...outcome.tokens.slice(0, tau), sampleFrom(residual, rng.uniform(offset + tau, 'residual'))] };
};

describe('speculative sampling emits the target distribution (first 2 tokens, 20,000 seeds)', () => {
  describe.each(cases)('$name', (c) => {
    it.each(methods)('$name verification', (method) => {
      const { observed, expected } = simulated(c, method);
      const result = chiSquareTest(observed, expected);
      // Enough cells survive pooling for the test to mean something.
      expect(result.df).toBeGreaterThanOrEqual(10);
      expect(result.pValue).toBeGreaterThan(PASS_P_VALUE);
    });

    it.each(methods)('notices $name verification with the correction drawn from p (power check)', (method) => {
      const { observed, expected } = simulate(c, correctionFromTarget(method.verify), { runs: RUNS, length: 2, rngForRound: method.rngForRound });
      expect(chiSquareTest(observed, expected).pValue).toBeLessThan(1e-6);
    });
  });

  it('notices block verification that forgets the path weight in its residual (power check)', () => {
    const { observed, expected } = simulate(cases[0], blockWithUnweightedResidual, { runs: RUNS, length: 2, rngForRound: perRound });
    expect(chiSquareTest(observed, expected).pValue).toBeLessThan(1e-6);
  });
});

describe('speculative sampling over several rounds (first 4 tokens, 20,000 seeds)', () => {
  const c = cases[0];
  const pValue = (verify: Verifier, rngForRound: RngForRound) => {
    const { observed, expected } = simulate(c, verify, { runs: RUNS, length: 4, rngForRound });
    return chiSquareTest(observed, expected).pValue;
  };

  it('token-level verification is lossless with one generator for the whole generation', () => {
    expect(pValue(verifyTokenLevel, sharedRng)).toBeGreaterThan(PASS_P_VALUE);
  });

  it('block verification is lossless with a fresh generator per round', () => {
    expect(pValue(verifyBlock, perRound)).toBeGreaterThan(PASS_P_VALUE);
  });

  it('block verification is NOT lossless if rounds share one generator (why roundRng exists)', () => {
    // The next round would reuse acceptance and draft draws that already decided where this round stopped.
    expect(pValue(verifyBlock, sharedRng)).toBeLessThan(1e-6);
  });
});

describe('block verification accepts at least as many tokens as token-level', () => {
  it.each(cases)('in simulation: $name', (c) => {
    const [tokenLevel, block] = methods.map((method) => simulated(c, method));
    const tolerance = 4 * Math.hypot(tokenLevel.firstAcceptedStdError, block.firstAcceptedStdError);
    expect(block.meanFirstAccepted).toBeGreaterThanOrEqual(tokenLevel.meanFirstAccepted - tolerance);
  });

  it('exactly, on random draft/target pairs (strictly more when the draft is imperfect)', () => {
    let strictlyMore = 0;
    for (let seed = 100; seed < 120; seed++) {
      const c = makeCase({
        name: `random ${seed}`,
        seed,
        vocab: 5,
        k: 3,
        targetParams: { temperature: 1, top_p: 0.95, top_k: 0 },
        draftParams: { temperature: 1.1, top_p: 1, top_k: 4 },
        draftNoise: 0.5,
        qEntries: 3,
      });
      const tokenLevel = exactExpectedAccepted(c, 'token');
      const block = exactExpectedAccepted(c, 'block');
      expect(block).toBeGreaterThanOrEqual(tokenLevel - 1e-12);
      if (block > tokenLevel + 1e-3) strictlyMore++;
    }
    expect(strictlyMore).toBeGreaterThan(10);
  });
});

describe('exact losslessness by enumeration (every draft, every outcome)', () => {
  describe.each(cases)('$name', (c) => {
    it.each(['token', 'block'] as const)('%s verification', (method) => {
      const target = targetSequenceProbabilities(c.target, c.vocab, c.k + 1);
      const output = exactOutputDistribution(c, method);
      const worst = Math.max(...target.map((probability, i) => Math.abs(probability - output[i])));
      expect(worst).toBeLessThan(1e-12);
    });
  });
});

// ---------------------------------------------------------------------------
// Exact enumeration: every way the draft can draft, weighted by its probability under q.

interface DraftPath {
  drafts: DraftToken[];
  probability: number;
}

function draftPaths(c: SpeculationCase): DraftPath[] {
  const paths: DraftPath[] = [];
  const extend = (drafts: DraftToken[], probability: number) => {
    if (drafts.length === c.k) return void paths.push({ drafts, probability });
    const full = c.draft(drafts.map((d) => d.token));
    if (c.qEntries === undefined) {
      const token = full.indexOf(Math.max(...full));
      return extend([...drafts, { token }], probability);
    }
    const q = truncateToSparse(full, c.qEntries);
    for (const [token, prob] of q) extend([...drafts, { token, q }], probability * prob);
  };
  extend([], 1);
  return paths;
}

function targetAlong(c: SpeculationCase, drafts: DraftToken[]): Float64Array[] {
  const tokens = drafts.map((d) => d.token);
  return Array.from({ length: c.k + 1 }, (_, i) => c.target(tokens.slice(0, i)));
}

/** P(τ = i | drafts) for i = 0..k, for either method. */
function acceptedLengthDistribution(method: 'token' | 'block', drafts: DraftToken[], p: Float64Array[]): number[] {
  const k = drafts.length;
  const probabilities = new Array<number>(k + 1).fill(0);
  if (method === 'token') {
    let reach = 1;
    for (let i = 0; i < k; i++) {
      const { token, q } = drafts[i];
      const proposal = q ? q.find(([t]) => t === token)![1] : 1;
      const accept = Math.min(1, p[i][token] / proposal);
      probabilities[i] = reach * (1 - accept);
      reach *= accept;
    }
    probabilities[k] = reach;
    return probabilities;
  }
  // Block: τ = max{i : η_i < h_i}, with independent η_i.
  const { thresholds } = blockVerificationWeights(drafts, p);
  let noneAfter = 1;
  for (let i = k; i >= 1; i--) {
    probabilities[i] = thresholds[i - 1] * noneAfter;
    noneAfter *= 1 - thresholds[i - 1];
  }
  probabilities[0] = noneAfter;
  return probabilities;
}

/** The correction's distribution after τ < k accepted drafts. */
function correctionDistribution(method: 'token' | 'block', drafts: DraftToken[], p: Float64Array[], tau: number): Float64Array {
  const draft = drafts[tau];
  if (method === 'token') return residualDistribution(p[tau], draft.q ?? draft.token);
  // Sun et al. 2024, Algorithm 2: norm(max(0, p_τ·p(·|X^τ) − q(·|X^τ))), with p_0 = 1.
  const weight = tau === 0 ? 1 : blockVerificationWeights(drafts, p).weights[tau - 1];
  const vocab = p[tau].length;
  const q = draft.q ? sparseToDense(draft.q, vocab) : Float64Array.from({ length: vocab }, (_, x) => (x === draft.token ? 1 : 0));
  const residual = p[tau].map((px, x) => Math.max(0, weight * px - q[x]));
  const mass = residual.reduce((s, v) => s + v, 0);
  return mass > 0 ? residual.map((v) => v / mass) : p[tau];
}

/**
 * Distribution of k+1 tokens when one verification round is followed by
 * target-only sampling up to k+1 tokens: lossless iff it equals the target's.
 */
function exactOutputDistribution(c: SpeculationCase, method: 'token' | 'block'): number[] {
  const output = new Array<number>(c.vocab ** (c.k + 1)).fill(0);
  const continueWithTarget = (tokens: number[], probability: number) => {
    if (probability === 0) return;
    if (tokens.length === c.k + 1) return void (output[sequenceIndex(tokens, c.vocab)] += probability);
    const p = c.target(tokens);
    for (let t = 0; t < c.vocab; t++) continueWithTarget([...tokens, t], probability * p[t]);
  };
  for (const { drafts, probability } of draftPaths(c)) {
    const p = targetAlong(c, drafts);
    const lengths = acceptedLengthDistribution(method, drafts, p);
    for (let tau = 0; tau <= c.k; tau++) {
      const accepted = drafts.slice(0, tau).map((d) => d.token);
      const next = tau === c.k ? p[c.k] : correctionDistribution(method, drafts, p, tau);
      for (let t = 0; t < c.vocab; t++) continueWithTarget([...accepted, t], probability * lengths[tau] * next[t]);
    }
  }
  return output;
}

function exactExpectedAccepted(c: SpeculationCase, method: 'token' | 'block'): number {
  let expected = 0;
  for (const { drafts, probability } of draftPaths(c)) {
    const lengths = acceptedLengthDistribution(method, drafts, targetAlong(c, drafts));
    lengths.forEach((ptau, tau) => (expected += probability * ptau * tau));
  }
  return expected;
}
