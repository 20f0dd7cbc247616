import { beforeAll, describe, expect, it } from 'vitest';
import { LinkEstimator, expectedTokensPerRound } from '../../functions/speculation/controller';
import type { GenerationInput, SpeculationPlan } from '../../functions/speculation/loop';
import { chiSquareTest } from '../stats';
import { exactPairs as exactPairsFor, greedy, loadHarness, plan, run as runWith, type Harness } from './harness';

/**
 * The speculation loop's modes, in process (real draft and target models, the
 * origin's own verify and generate code, no HTTP: ./harness.ts): pipelined and adaptive keep
 * greedy output identical to target-only decoding and the sampled distribution
 * equal to target-only sampling, including across an adaptive hand-over to
 * origin-only decoding in the middle of a generation. The same properties are
 * checked through the whole stack in test/edge.
 */
let h: Harness;

beforeAll(async () => {
  h = await loadHarness();
});

/** A link whose estimates say "speculation loses" once `roundsBeforeHandover` verify rounds were observed. */
function handoverAfter(roundsBeforeHandover: number): LinkEstimator {
  const link = new LinkEstimator();
  const linkMs = link.linkMs.bind(link);
  link.linkMs = () => (link.observations >= roundsBeforeHandover ? 1e6 : linkMs());
  // The first plan needs evidence to act on; until the switch, speculating is predicted to win.
  link.observations = 0;
  return link;
}

/** As handoverAfter, with the origin's own speculation predicted far faster than its plain decoding: the hand-over goes to it. */
function originWinsAfter(roundsBeforeHandover: number): LinkEstimator {
  const link = handoverAfter(roundsBeforeHandover);
  link.originRound = () => ({ ms: 0.1, drafted: 1, alpha: 0.9 });
  return link;
}

const run = (prompt: number[], maxTokens: number, sampling: GenerationInput['sampling'], p: SpeculationPlan, link = new LinkEstimator()) => runWith(h, prompt, maxTokens, sampling, p, { link });
/** Branch-ahead drafts while a verdict is on the wire: in process the answer is immediate, so each verify waits `ms` as a link would. */
const runOverLink = (ms: number, prompt: number[], maxTokens: number, sampling: GenerationInput['sampling'], p: SpeculationPlan) =>
  runWith(h, prompt, maxTokens, sampling, p, { link: new LinkEstimator(), verifyDelayMs: ms });
const prompts = [
  [11, 400, 93, 1200, 7, 88, 512],
  [300, 301, 302, 45, 46, 47, 48, 49],
  [5, 1000, 2000, 3000, 40, 41],
];

describe('greedy output is identical to target-only decoding in every mode', () => {
  const modes: Array<[string, SpeculationPlan, LinkEstimator?]> = [
    ['pipelined k=3 depth 3', plan('pipelined')],
    ['pipelined k=1 depth 4', plan('pipelined', { draftLength: 1, depth: 4 })],
    ['pipelined, block verification', plan('pipelined', { method: 'block' })],
    ['adaptive with early stop', plan('adaptive', { draftLength: 6, minConfidence: 0.4 })],
  ];
  it.each(modes)('%s', async (_, p) => {
    for (const prompt of prompts) {
      const reference = await run(prompt, 40, greedy, plan('origin', { draftLength: 0 }));
      const speculative = await run(prompt, 40, greedy, p);
      expect(speculative.tokens).toEqual(reference.tokens);
      expect(speculative.stats.drafted).toBeGreaterThan(0);
    }
  });

  it('multi-path drafts (lockstep k=4, 3 alternatives): the same tokens, some rounds decided through an alternative', async () => {
    let trees = 0;
    let taken = 0;
    for (const prompt of prompts) {
      const reference = await run(prompt, 40, greedy, plan('origin', { draftLength: 0 }));
      for (const [method, branchLength] of [['token', 1], ['block', 1], ['block', 4]] as const) {
        const tree = await run(prompt, 40, greedy, plan('lockstep', { draftLength: 4, branches: 3, method, branchLength }));
        expect(tree.tokens).toEqual(reference.tokens);
        trees += tree.stats.tree.rounds;
        taken += tree.stats.tree.branchTaken;
      }
    }
    console.log(`multi-path, greedy: ${taken} of ${trees} tree rounds went through an alternative`);
    expect(trees).toBeGreaterThan(10);
    expect(taken).toBeGreaterThan(0);
  });

  it('branch-ahead: the same tokens, with next blocks drafted while verdicts are on the wire', async () => {
    let verdicts = 0;
    let hits = 0;
    for (const prompt of prompts) {
      const reference = await run(prompt, 40, greedy, plan('origin', { draftLength: 0 }));
      const branched = await runOverLink(15, prompt, 40, greedy, plan('branch-ahead', { draftLength: 4 }));
      expect(branched.tokens).toEqual(reference.tokens);
      verdicts += branched.stats.branchAhead.verdicts;
      hits += branched.stats.branchAhead.hits;
    }
    console.log(`branch-ahead, greedy: ${hits} of ${verdicts} verdicts came back as a drafted branch`);
    // Branches were drafted and used, so the identity above covers rounds sent without drafting.
    expect(verdicts).toBeGreaterThan(10);
    expect(hits).toBeGreaterThan(0);
  });

  it('adaptive hand-over to origin speculation mid-generation: no token lost or repeated', async () => {
    for (const prompt of prompts) {
      const reference = await run(prompt, 40, greedy, plan('origin', { draftLength: 0 }));
      const handed = await run(prompt, 40, greedy, plan('adaptive', { originDrafts: true }), originWinsAfter(3));
      expect(handed.stats.handoverAt).toBeGreaterThan(0);
      expect(handed.stats.originSpeculatedTokens).toBe(40 - handed.stats.handoverAt!);
      expect(handed.stats.originSpeculation.rounds).toBeGreaterThan(0);
      expect(handed.tokens).toEqual(reference.tokens);
    }
  });

  it('adaptive hand-over mid-generation: no token lost or repeated', async () => {
    for (const prompt of prompts) {
      const reference = await run(prompt, 40, greedy, plan('origin', { draftLength: 0 }));
      const handed = await run(prompt, 40, greedy, plan('adaptive'), handoverAfter(3));
      expect(handed.stats.handoverAt).toBeGreaterThan(0);
      expect(handed.stats.handoverAt).toBeLessThan(40);
      expect(handed.stats.originTokens).toBe(40 - handed.stats.handoverAt!);
      expect(handed.tokens).toEqual(reference.tokens);
    }
  });
});

describe('sampled output has the target-only distribution in every mode', () => {
  const sampling = { temperature: 1, top_k: 6, top_p: 1 };
  const prompt = [300, 301, 302, 45, 46, 47];
  const samples = Number(process.env.LOSSLESS_SAMPLES ?? 2000);

  const exactPairs = () => exactPairsFor(h, prompt, sampling);

  // max_tokens 3 with k = 1 lets a pipelined successor decide token 2; the hand-over after one round
  // makes the origin's stream decide token 2 (offset 1) whenever round one emitted a single token.
  const modes: Array<[string, SpeculationPlan, (() => LinkEstimator)?]> = [
    ['lockstep, block verification', plan('lockstep', { draftLength: 2, method: 'block' })],
    // Trees: the draft path plus alternatives where the draft was least sure, scored in one round.
    ['multi-path k=2, 3 alternatives, recursive rejection sampling', plan('lockstep', { draftLength: 2, branches: 3 })],
    ['multi-path k=2, 3 alternatives, multi-path block verification', plan('lockstep', { draftLength: 2, branches: 3, method: 'block' })],
    // Alternatives continued by the draft on their own rows: a round can accept past an alternative.
    ['multi-path k=2, 3 alternatives continued to 2 tokens, multi-path block verification', plan('lockstep', { draftLength: 2, branches: 3, branchLength: 2, method: 'block' })],
    ['pipelined k=1 depth 2', plan('pipelined', { draftLength: 1, depth: 2 })],
    ['adaptive, hand-over after one round', plan('adaptive', { draftLength: 1 }), () => handoverAfter(1)],
    // The switch between placements: edge drafting for one round, then speculation at the origin from offset 1 or 2.
    ['adaptive, hand-over to origin speculation after one round', plan('adaptive', { draftLength: 1, originDrafts: true }), () => originWinsAfter(1)],
  ];
  it('branch-ahead k=1: first two tokens (chi-square), the second often drafted as a branch', async () => {
    const expected = await exactPairs();
    const counts = new Map<string, number>();
    let branchSecond = 0;
    for (let seed = 0; seed < samples; seed++) {
      // max_tokens 3 leaves room for one branch only: after a one-token round 1 (a rejection), the correction
      // branch drafts token 2, so a hit means token 2 was verified from a block drafted before round 1's verdict.
      const { tokens, stats } = await runOverLink(3, prompt, 3, { ...sampling, seed }, plan('branch-ahead', { draftLength: 1 }));
      const key = tokens.slice(0, 2).join(',');
      counts.set(key, (counts.get(key) ?? 0) + 1);
      if (stats.branchAhead.hits > 0) branchSecond++;
    }
    expect([...counts.keys()].filter((k) => !expected.has(k))).toEqual([]);
    const keys = [...expected.keys()];
    const result = chiSquareTest(
      keys.map((k) => counts.get(k) ?? 0),
      keys.map((k) => expected.get(k)! * samples),
    );
    console.log(`branch-ahead k=1: chi-square ${result.statistic.toFixed(1)} on ${result.df} df, p = ${result.pValue.toFixed(4)}; ${branchSecond} generations used a drafted branch`);
    expect(branchSecond).toBeGreaterThan(samples * 0.05);
    expect(result.pValue).toBeGreaterThan(1e-3);
  });

  it.each(modes)('%s: first two tokens (chi-square)', async (_, p, link) => {
    const expected = await exactPairs();
    const counts = new Map<string, number>();
    let accepted = 0;
    let handovers = 0;
    let originSpeculated = 0;
    let branchTaken = 0;
    for (let seed = 0; seed < samples; seed++) {
      const { tokens, stats } = await run(prompt, 3, { ...sampling, seed }, p, link?.());
      branchTaken += stats.tree.branchTaken;
      const key = tokens.slice(0, 2).join(',');
      counts.set(key, (counts.get(key) ?? 0) + 1);
      accepted += stats.accepted;
      if (stats.handoverAt !== null && stats.handoverAt < 2) handovers++;
      if (stats.handoverAt !== null && stats.handoverAt < 2 && stats.originSpeculatedTokens > 0) originSpeculated++;
    }
    expect([...counts.keys()].filter((k) => !expected.has(k))).toEqual([]);
    const keys = [...expected.keys()];
    const result = chiSquareTest(
      keys.map((k) => counts.get(k) ?? 0),
      keys.map((k) => expected.get(k)! * samples),
    );
    console.log(`${_}: chi-square ${result.statistic.toFixed(1)} on ${result.df} df, p = ${result.pValue.toFixed(4)}; accepted ${accepted}, early hand-overs ${handovers}`);
    expect(accepted).toBeGreaterThan(samples * 0.05);
    if (link) expect(handovers).toBeGreaterThan(samples * 0.05);
    // The hand-over to origin speculation decided token 2 there often enough to be tested.
    if (p.originDrafts) expect(originSpeculated).toBeGreaterThan(samples * 0.05);
    // Trees: rounds decided through an alternative happened often enough to be tested.
    if (p.branches) expect(branchTaken, 'rounds decided through an alternative').toBeGreaterThan(samples * 0.05);
    expect(result.pValue).toBeGreaterThan(1e-3);
  });
});

describe('delay-adaptive controller', () => {
  it('expected tokens per round follows (1 − α^{k+1})/(1 − α)', () => {
    expect(expectedTokensPerRound(0.5, 0)).toBeCloseTo(1);
    expect(expectedTokensPerRound(0.5, 3)).toBeCloseTo(1.875);
    expect(expectedTokensPerRound(1, 4)).toBe(5);
  });
});
