/**
 * Multi-path (draft tree) verification: shape bookkeeping, reduction to the
 * single-path rules on a one-path tree, exact losslessness by enumerating
 * every decision of the shipped functions, the same by simulation (χ²), and
 * deliberately broken variants that both checks must catch.
 */
import { describe, expect, it } from 'vitest';
import {
  roundDecisions,
  roundRng,
  scaledResidual,
  treePaths,
  treeShape,
  verifyBlock,
  verifyGreedy,
  verifyTokenLevel,
  verifyTreeBlock,
  verifyTreeGreedy,
  verifyTreeTokenLevel,
  withoutTokens,
  type DraftTreeNode,
} from '../../shared/sampling';
import { chiSquareTest } from '../stats';
import { makeCase, sequenceIndex, targetSequenceProbabilities, type SpeculationCase } from './simulation';
import { draftTree, enumerateDecisions, generateWithTree, targetForTree, treeRound, type TreeShapeOptions, type TreeVerifier } from './tree-simulation';

const sampledCase = makeCase({
  name: 'vocab 6, target top-k 4, hotter draft sending its top 4',
  seed: 11,
  vocab: 6,
  k: 3,
  targetParams: { temperature: 1, top_p: 1, top_k: 4 },
  draftParams: { temperature: 1.3, top_p: 1, top_k: 0 },
  draftNoise: 0.5,
  qEntries: 4,
});
const topPCase = makeCase({
  name: 'vocab 7, target top-p 0.9 at T 1.2, draft sending its top 5',
  seed: 23,
  vocab: 7,
  k: 3,
  targetParams: { temperature: 1.2, top_p: 0.9, top_k: 0 },
  draftParams: { temperature: 1, top_p: 1, top_k: 0 },
  draftNoise: 0.6,
  qEntries: 5,
});
const deterministicCase = makeCase({
  name: 'vocab 6, deterministic proposals (ranked draft choices), target top-p 0.95',
  seed: 37,
  vocab: 6,
  k: 3,
  targetParams: { temperature: 1, top_p: 0.95, top_k: 0 },
  draftParams: { temperature: 1, top_p: 1, top_k: 0 },
  draftNoise: 0.5,
});

const verifiers: Array<{ name: string; verify: TreeVerifier }> = [
  { name: 'recursive (token-level tree)', verify: verifyTreeTokenLevel },
  { name: 'multi-path block', verify: verifyTreeBlock },
];

const shapes: Array<{ name: string; shape: TreeShapeOptions }> = [
  // k = 2 keeps exact enumeration to seconds: every drafted token and every decision multiplies the outcomes.
  { name: '3 children at the first position, without replacement', shape: { k: 2, branches: 3, branchDepth: 0, withoutReplacement: true } },
  { name: '2 children at the second position, without replacement', shape: { k: 2, branches: 2, branchDepth: 1, withoutReplacement: true } },
  { name: '3 independent children at the first position', shape: { k: 2, branches: 3, branchDepth: 0, withoutReplacement: false } },
];

/**
 * Output distribution of the first `length` tokens: one tree round, every decision enumerated, then target-only
 * sampling for the rest, added analytically (enumerating it too would multiply the outcomes by vocab per token).
 */
function exactOutput(c: SpeculationCase, shape: TreeShapeOptions, verify: TreeVerifier, length: number): number[] {
  const output = new Array<number>(c.vocab ** length).fill(0);
  const spread = (tokens: number[], probability: number) => {
    if (tokens.length >= length) {
      output[sequenceIndex(tokens.slice(0, length), c.vocab)] += probability;
      return;
    }
    const p = c.target(tokens);
    for (let t = 0; t < c.vocab; t++) if (p[t] > 0) spread([...tokens, t], probability * p[t]);
  };
  for (const { value, probability } of enumerateDecisions((decisions) => treeRound(c, [], decisions, shape, verify).tokens)) spread(value, probability);
  return output;
}

function worstDeviation(c: SpeculationCase, output: number[], length: number): number {
  const target = targetSequenceProbabilities(c.target, c.vocab, length);
  return Math.max(...target.map((probability, i) => Math.abs(probability - output[i])));
}

function exactExpectedAccepted(c: SpeculationCase, shape: TreeShapeOptions, verify: TreeVerifier): number {
  return enumerateDecisions((decisions) => treeRound(c, [], decisions, shape, verify).acceptedCount).reduce((sum, { value, probability }) => sum + value * probability, 0);
}

/** Multi-path block verification whose alternatives are judged against p instead of the stop's residual. */
const treeBlockForgettingResidual: TreeVerifier = (nodes, p, decisions, offset) => {
  // Feeding the alternatives p: re-root every non-first child on an unmodified target by giving it no earlier sibling's
  // residual. Implemented by verifying the subtree of each root child independently against p, first acceptance wins.
  const shape = treeShape(nodes);
  for (const child of shape.children[0]) {
    const keep = new Set<number>();
    const mark = (n: number) => {
      keep.add(n);
      shape.children[n + 1].forEach(mark);
    };
    mark(child);
    const index = [...keep].sort((a, b) => a - b);
    const sub = index.map((n) => ({ ...nodes[n], parent: nodes[n].parent < 0 ? -1 : index.indexOf(nodes[n].parent) }));
    const outcome = verifyTreeBlock(sub, [p[0], ...index.map((n) => p[n + 1])], decisions, offset);
    if (outcome.acceptedCount > 0 || child === shape.children[0][shape.children[0].length - 1]) return outcome;
  }
  return verifyTreeBlock([], [p[0]], decisions, offset);
};

describe('tree shape', () => {
  const nodes: DraftTreeNode[] = [
    { token: 1, parent: -1 },
    { token: 2, parent: 0 },
    { token: 3, parent: 1 },
    { token: 4, parent: 0 },
    { token: 5, parent: 3 },
    { token: 6, parent: -1 },
  ];

  it('gives first children their parent’s row and every later child a new one', () => {
    const shape = treeShape(nodes);
    expect(shape.row).toEqual([0, 0, 0, 1, 1, 2]);
    expect(shape.depth).toEqual([0, 1, 2, 1, 2, 0]);
    expect(shape.children[0]).toEqual([0, 5]);
    expect(shape.rows).toBe(3);
  });

  it('lays rows out as root-to-leaf paths, one per target batch row', () => {
    expect(treePaths(nodes)).toEqual([[0, 1, 2], [0, 3, 4], [5]]);
    expect(treePaths([])).toEqual([[]]);
  });

  it('refuses a parent that does not come first', () => {
    expect(() => treeShape([{ token: 1, parent: 0 }])).toThrow(/parents must come before/);
    expect(() => treeShape([{ token: 1, parent: -2 }])).toThrow(/parents must come before/);
  });

  it('removes earlier siblings from q and renormalises', () => {
    expect(withoutTokens([[1, 0.5], [2, 0.3], [3, 0.2]], [1])).toEqual([[2, 0.6], [3, 0.4]].map(([t, p]) => [t, expect.closeTo(p, 12)]));
    expect(() => withoutTokens([[1, 1]], [1])).toThrow(/no proposal mass/);
  });
});

describe('a one-path tree is exactly single-path verification (same draws)', () => {
  it('token-level and block, 300 seeds and offsets', () => {
    const c = sampledCase;
    const mismatches: number[] = [];
    for (let seed = 0; seed < 300; seed++) {
      const offset = seed % 7;
      const nodes = draftTree(c, [], roundDecisions(seed, offset), offset, { k: 3, branches: 1, branchDepth: 0, withoutReplacement: true });
      const p = targetForTree(c, [], nodes);
      const chain = nodes.map(({ token, q }) => ({ token, q }));
      const same =
        verifyTreeTokenLevel(nodes, p, roundDecisions(seed, offset), offset).tokens.join() === verifyTokenLevel(chain, p, roundRng(seed, offset), offset).tokens.join() &&
        verifyTreeBlock(nodes, p, roundDecisions(seed, offset), offset).tokens.join() === verifyBlock(chain, p, roundRng(seed, offset), offset).tokens.join();
      if (!same) mismatches.push(seed);
    }
    expect(mismatches).toEqual([]);
  });

  it('greedy: the tree rule on a path is verifyGreedy', () => {
    const nodes: DraftTreeNode[] = [
      { token: 3, parent: -1 },
      { token: 1, parent: 0 },
      { token: 4, parent: 1 },
    ];
    for (const argmaxes of [[3, 1, 4, 2], [3, 0, 4, 2], [2, 1, 4, 0], [3, 1, 5, 5]]) {
      expect(verifyTreeGreedy(nodes, argmaxes).tokens).toEqual(verifyGreedy([3, 1, 4], argmaxes).tokens);
    }
  });
});

describe('greedy over a tree', () => {
  // Context → 3 → {1 → 4, 2 → 5}; argmax after each node laid out as p.
  const nodes: DraftTreeNode[] = [
    { token: 3, parent: -1 },
    { token: 1, parent: 0 },
    { token: 4, parent: 1 },
    { token: 2, parent: 0 },
    { token: 5, parent: 3 },
  ];

  it('takes the branch the target agrees with, and its bonus', () => {
    // After 3 the target wants 2 (the second child), after 2 it wants 5, after 5 it wants 0.
    expect(verifyTreeGreedy(nodes, [3, 2, 9, 9, 5, 0])).toEqual({ acceptedCount: 3, tokens: [3, 2, 5, 0], acceptedNodes: [0, 3, 4] });
  });

  it('stops with the argmax where no child matches', () => {
    expect(verifyTreeGreedy(nodes, [3, 7, 9, 9, 5, 0])).toEqual({ acceptedCount: 1, tokens: [3, 7], acceptedNodes: [0] });
    expect(verifyTreeGreedy(nodes, [6, 2, 9, 9, 5, 0]).tokens).toEqual([6]);
  });

  it('checks the argmax layout', () => {
    expect(() => verifyTreeGreedy(nodes, [3, 2])).toThrow(/needs 6 target argmax/);
  });
});

describe('exact losslessness by enumeration (every draft, every decision of the shipped rules)', () => {
  describe.each([sampledCase, topPCase, deterministicCase])('$name', (c) => {
    describe.each(shapes)('$name', ({ shape }) => {
      it.each(verifiers)('$name', ({ verify }) => {
        // A round emits at most k + 1 tokens; compare the first k + 1.
        const length = shape.k + 1;
        expect(worstDeviation(c, exactOutput(c, shape, verify, length), length)).toBeLessThan(1e-12);
      });
    });
  });

  it('catches siblings drawn without replacement but labelled with the full q', () => {
    const shape = { k: 2, branches: 3, branchDepth: 0, withoutReplacement: true, mislabelSiblingQ: true };
    for (const { verify } of verifiers) expect(worstDeviation(sampledCase, exactOutput(sampledCase, shape, verify, 2), 2)).toBeGreaterThan(1e-3);
  });

  it('catches alternatives judged against p instead of the residual', () => {
    const shape = shapes[0].shape;
    expect(worstDeviation(sampledCase, exactOutput(sampledCase, shape, treeBlockForgettingResidual, 2), 2)).toBeGreaterThan(1e-3);
  });
});

describe('more accepted tokens per round than a single path (exact expectations)', () => {
  it.each(verifiers)('$name, on random draft/target pairs', ({ verify }) => {
    let gains = 0;
    for (let seed = 200; seed < 212; seed++) {
      const c = makeCase({
        name: `random ${seed}`,
        seed,
        vocab: 6,
        k: 3,
        targetParams: { temperature: 1, top_p: 1, top_k: 0 },
        draftParams: { temperature: 1.2, top_p: 1, top_k: 0 },
        draftNoise: 0.6,
        qEntries: 4,
      });
      const single = exactExpectedAccepted(c, { ...shapes[0].shape, branches: 1 }, verify);
      const tree = exactExpectedAccepted(c, shapes[0].shape, verify);
      // The first path is the single path, with the same draws: alternatives can only add.
      expect(tree).toBeGreaterThanOrEqual(single - 1e-12);
      if (tree > single * 1.15) gains++;
    }
    expect(gains).toBeGreaterThan(6);
  });

  it('multi-path block accepts at least as many as the recursive rule on the same tree', () => {
    for (const c of [sampledCase]) {
      for (const { shape } of shapes) {
        expect(exactExpectedAccepted(c, shape, verifyTreeBlock)).toBeGreaterThanOrEqual(exactExpectedAccepted(c, shape, verifyTreeTokenLevel) - 1e-12);
      }
    }
  });
});

describe('by simulation over several rounds (first 4 tokens, 20,000 seeds, χ²)', () => {
  const RUNS = 20_000;
  const tally = (verify: TreeVerifier, shape: TreeShapeOptions, c = sampledCase) => {
    const expected = targetSequenceProbabilities(c.target, c.vocab, 4).map((probability) => probability * RUNS);
    const observed = new Array<number>(expected.length).fill(0);
    for (let seed = 0; seed < RUNS; seed++) observed[sequenceIndex(generateWithTree(c, seed, 4, shape, verify).tokens, c.vocab)]++;
    return chiSquareTest(observed, expected);
  };

  it.each(verifiers)('$name is lossless with per-round generators', ({ verify }) => {
    const result = tally(verify, shapes[0].shape);
    expect(result.df).toBeGreaterThanOrEqual(10);
    expect(result.pValue).toBeGreaterThan(1e-3);
  });

  it('notices mislabelled sibling proposals (power check)', () => {
    expect(tally(verifyTreeTokenLevel, { ...shapes[0].shape, mislabelSiblingQ: true }).pValue).toBeLessThan(1e-6);
  });

  it('notices rounds that share one set of draws (power check)', () => {
    const shared: TreeVerifier = (nodes, p, _decisions, offset) => verifyTreeBlock(nodes, p, roundDecisions(0, 0), offset);
    // Drafting uses the round's draws, verification a fixed set: every round then sees the same acceptance draws.
    expect(tally(shared, shapes[0].shape).pValue).toBeLessThan(1e-6);
  });
});

describe('residuals', () => {
  it('scaledResidual with weight 1 is norm(max(0, p − q))', () => {
    const r = scaledResidual(Float64Array.from([0.5, 0.3, 0.2]), Float64Array.from([0.2, 0.6, 0.2]), 1);
    expect(Array.from(r)).toEqual([1, 0, 0]);
  });
});
