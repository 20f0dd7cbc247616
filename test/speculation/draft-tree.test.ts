import { describe, expect, it } from 'vitest';
import { draftAlternatives, extendAlternatives } from '../../functions/speculation/draft-tree';
import { draftTreeProblem, verifyReplyProblem, verifyRequestSchema } from '../../shared/protocol';
import { treeShape, type DraftToken } from '../../shared/sampling';

/**
 * Where multi-path drafts put their alternatives (functions/speculation/draft-tree.ts), and what the protocol
 * accepts of a tree and of a tree's verdict (shared/protocol.ts). The rules' losslessness is
 * test/sampling/multipath.test.ts; through the loop and the real models, test/speculation/modes.test.ts.
 */
const sampling = { temperature: 0.8, top_p: 1, top_k: 0, seed: 7, offset: 12 };

describe('draftAlternatives', () => {
  const sampled: DraftToken[] = [
    { token: 5, q: [[5, 0.9], [6, 0.1]] },
    { token: 7, q: [[7, 0.4], [8, 0.35], [9, 0.25]] },
    { token: 1, q: [[1, 0.6], [2, 0.4]] },
  ];

  it('sampled: goes where the drafted tokens cover the least of q, drawing without replacement', () => {
    const alternatives = draftAlternatives(sampled, sampling, 3);
    // Position 1 covers 0.4, position 2 0.6, position 0 0.9: the first goes to position 1, and so on by coverage.
    expect(alternatives[0].parent).toBe(0);
    expect([8, 9]).toContain(alternatives[0].token);
    // Its q is position 1's q without the drafted token, renormalised.
    expect(alternatives[0].q!.map(([t]) => t).sort()).toEqual([8, 9]);
    expect(alternatives[0].q!.reduce((sum, [, p]) => sum + p, 0)).toBeCloseTo(1, 12);
    // No token is drafted twice at one position, and every q excludes what was drawn there before.
    const drawn = new Map<number, number[]>([[-1, [5]], [0, [7]], [1, [1]]]);
    for (const alternative of alternatives) {
      const before = drawn.get(alternative.parent)!;
      expect(before).not.toContain(alternative.token);
      expect(alternative.q!.some(([t]) => before.includes(t))).toBe(false);
      before.push(alternative.token);
    }
    // Each alternative opens its own row, numbered in order after the path's row 0 (the rows the draws came from).
    const nodes = [...sampled.map((d, i) => ({ ...d, parent: i - 1 })), ...alternatives];
    expect(treeShape(nodes).row.slice(sampled.length)).toEqual(alternatives.map((_, j) => j + 1));
  });

  it('sampled: the same draws give the same tree, another seed may not', () => {
    expect(draftAlternatives(sampled, sampling, 3)).toEqual(draftAlternatives(sampled, sampling, 3));
    const trees = new Set(Array.from({ length: 20 }, (_, seed) => JSON.stringify(draftAlternatives(sampled, { ...sampling, seed }, 1))));
    expect(trees.size).toBeGreaterThan(1);
  });

  it('stops when every position is exhausted', () => {
    expect(draftAlternatives(sampled, sampling, 10)).toHaveLength(1 + 2 + 1);
  });

  it('greedy: the runner-up at the least confident positions, one per position', () => {
    const path: DraftToken[] = [{ token: 3 }, { token: 4 }, { token: 5 }];
    const confidence = [
      { top: 0.9, runnerUp: 10 },
      { top: 0.3, runnerUp: 11 },
      { top: 0.5, runnerUp: 12 },
    ];
    expect(draftAlternatives(path, { ...sampling, temperature: 0 }, 2, confidence)).toEqual([
      { token: 11, parent: 0 },
      { token: 12, parent: 1 },
    ]);
    // Without the draft's confidence there is nothing to branch from.
    expect(draftAlternatives(path, { ...sampling, temperature: 0 }, 2)).toEqual([]);
    expect(draftAlternatives(path, sampling, 0, confidence)).toEqual([]);
  });
});

describe('extendAlternatives', () => {
  const path: DraftToken[] = [{ token: 3 }, { token: 4 }, { token: 5 }, { token: 6 }];
  const alternatives = [
    { token: 10, parent: -1 },
    { token: 11, parent: 1 },
    { token: 12, parent: 2 },
  ];
  // Continues every branch with tokens naming its row and depth, and records what it was asked.
  const asked: Array<{ prefix: number[]; steps: number; row: number }> = [];
  const proposer = {
    async extendBranch(_context: readonly number[], prefix: readonly number[], steps: number, _sampling: unknown, row: number) {
      asked.push({ prefix: [...prefix], steps, row });
      return Array.from({ length: steps }, (_, s) => ({ token: 100 * row + prefix.length + s }));
    },
  };

  it('continues each alternative on its own row to the path’s depth, within the node budget', async () => {
    const nodes = await extendAlternatives(proposer, [1, 2], path, alternatives, 4, sampling, 48);
    expect(asked).toEqual([
      { prefix: [10], steps: 3, row: 1 },
      { prefix: [3, 4, 11], steps: 1, row: 2 },
    ]);
    // The alternative at the last position has no room left (the path is 4 deep).
    const tree = [...path.map((d, i) => ({ ...d, parent: i - 1 })), ...nodes];
    expect(draftTreeProblem(path.length, nodes)).toBeNull();
    const shape = treeShape(tree);
    // Continuations stay on their alternative's row: rows 1, 2, 3 for the alternatives, and 1, 1, 1, 2 after them.
    expect(shape.row.slice(path.length)).toEqual([1, 2, 3, 1, 1, 1, 2]);
    expect(shape.depth.slice(path.length)).toEqual([0, 2, 3, 1, 2, 3, 3]);
    expect(nodes.map((n) => n.token)).toEqual([10, 11, 12, 101, 102, 103, 203]);
  });

  it('stops at the node budget and leaves one-token alternatives alone', async () => {
    asked.length = 0;
    expect(await extendAlternatives(proposer, [1, 2], path, alternatives, 4, sampling, 4)).toHaveLength(4);
    expect(await extendAlternatives(proposer, [1, 2], path, alternatives, 1, sampling, 48)).toEqual(alternatives);
  });
});

describe('draft trees on the wire', () => {
  const request = { context: [1, 2], draft: [{ token: 5 }, { token: 6 }], sampling, method: 'token' as const };

  it('refuses branches that hang from a later node, sit deeper than the path, or have no path', () => {
    expect(draftTreeProblem(2, [{ parent: 0 }, { parent: -1 }, { parent: 3 }])).toBeNull();
    expect(draftTreeProblem(2, [{ parent: 2 }])).toMatch(/does not come before it/);
    expect(draftTreeProblem(2, [{ parent: 1 }])).toMatch(/deeper than the draft path/);
    expect(draftTreeProblem(0, [{ parent: -1 }])).toMatch(/need a draft path/);
    expect(verifyRequestSchema.safeParse({ ...request, branches: [{ token: 9, parent: 1 }] }).success).toBe(false);
    expect(verifyRequestSchema.safeParse({ ...request, branches: [{ token: 9, parent: 0 }] }).success).toBe(true);
  });

  it('checks a verdict’s path against the tree, and takes a verdict without one as the path alone', () => {
    const tree = { ...request, branches: [{ token: 9, parent: 0 }, { token: 8, parent: -1 }] };
    // Through the alternative 9 after 5: nodes 0 then 2.
    expect(verifyReplyProblem(tree, { accepted: 2, tokens: [5, 9, 4], path: [0, 2] })).toBeNull();
    expect(verifyReplyProblem(tree, { accepted: 1, tokens: [8, 4], path: [3] })).toBeNull();
    expect(verifyReplyProblem(tree, { accepted: 2, tokens: [5, 9, 4], path: [0, 3] })).toMatch(/not a child/);
    expect(verifyReplyProblem(tree, { accepted: 2, tokens: [5, 8, 4], path: [0, 2] })).toMatch(/not the accepted node/);
    expect(verifyReplyProblem(tree, { accepted: 2, tokens: [5, 9, 4], path: [0] })).toMatch(/a path of 1 nodes/);
    // No path: an engine or older origin verified the draft path alone.
    expect(verifyReplyProblem(tree, { accepted: 2, tokens: [5, 6, 4] })).toBeNull();
    expect(verifyReplyProblem(tree, { accepted: 2, tokens: [5, 9, 4] })).toMatch(/not the accepted draft token/);
  });
});
