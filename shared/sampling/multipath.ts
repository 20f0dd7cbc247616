/**
 * Verification of a draft tree: several draft paths sharing a prefix, scored
 * by the target in one pass, one outcome chosen by rules that keep the output
 * distributed exactly as target-only decoding (ARCHITECTURE.md: "Multi-path
 * drafts").
 *
 * The tree: `nodes[i]` is a drafted token with its proposal q and its parent
 * (-1 = the context itself). Parents come before children, and a node's
 * children are in the order they were drawn: each child's q is the
 * distribution it was actually sampled from given the siblings drawn before
 * it (for sampling without replacement, the parent's q without them,
 * renormalised: `withoutTokens`). `p[0]` is the target's distribution after
 * the context, `p[i + 1]` its distribution after node i (and the path to it).
 *
 * Rows: a tree is laid out as paths, one per batch row of the target's pass.
 * A node's first child continues its row; every later child starts a new
 * row. A node's random draws are those of its row's generator at its
 * position (`branchRng(seed, round, row)`), so a tree that is one path reads
 * exactly the draws of single-path verification (roundRng), and the tree
 * rules reduce to verifyGreedy / verifyTokenLevel / verifyBlock there.
 *
 * The three rules:
 * - `verifyTreeGreedy`: follow the child equal to the target's argmax.
 * - `verifyTreeTokenLevel`: recursive rejection sampling over siblings
 *   (Jeon et al. 2024, "Recursive Speculative Decoding: Accelerating LLM
 *   Inference via Sampling Without Replacement"; SpecInfer's multi-step
 *   speculative sampling when siblings are independent draws): try each child
 *   with min(1, r(x)/q_x(x)); after a rejection the target becomes
 *   r ← norm(max(0, r − q_x)); accept a child and descend, or after the last
 *   rejection draw the correction from r.
 * - `verifyTreeBlock`: multi-path block verification. Block verification
 *   (Sun et al. 2024) along the first path from a node; where it stops, at a
 *   node whose other children were drafted too, the correction it would draw
 *   from its weighted residual is instead drawn by verifying those children
 *   (block verification again, with that residual as their first target), and
 *   so on greedily; only when every alternative is rejected is the residual
 *   sampled. Lossless because each alternative is verified against exactly
 *   the conditional distribution block verification would have sampled from,
 *   with draws and drafts independent of the ones that stopped it. It is our
 *   construction in the spirit of Thomas & Pal 2026 ("Greedy Multi-Path Block
 *   Verification for Faster Decoding in Speculative Sampling", GBV), not a
 *   transcription of their algorithm; test/sampling/multipath.test.ts proves
 *   its losslessness by exact enumeration.
 */
import { argmax, assertSparseDistribution, sampleFrom } from './distribution';
import type { RngStream } from './rng';
import { branchRng } from './rng';
import { blockVerificationWeights, proposalAsDense, proposalProbability, scaledResidual, type DraftToken } from './verify';

/** A drafted token of a tree: `parent` is the index of the node it follows, -1 for the context. */
export interface DraftTreeNode extends DraftToken {
  parent: number;
}

/** The accepted nodes (root to deepest), and the tokens emitted: their tokens and then one more (correction or bonus). */
export interface TreeVerifyOutcome {
  acceptedCount: number;
  tokens: number[];
  acceptedNodes: number[];
}

/**
 * Where a tree verifier's random decisions come from. In production both
 * compare the draw of (row, position, stream) from the round's generators
 * (`roundDecisions`), exactly as the single-path rules do; tests substitute an
 * enumerator that follows every outcome with its probability.
 */
export interface TreeDecisions {
  /** True with probability `probability`. */
  bernoulli(probability: number, row: number, position: number, stream: RngStream): boolean;
  /** A token drawn from `dist`. */
  categorical(dist: Float64Array, row: number, position: number, stream: RngStream): number;
}

/** The decisions of round `roundOffset` of a request seeded `seed`: one generator per row. */
export function roundDecisions(seed: number, roundOffset: number): TreeDecisions {
  const rows = new Map<number, ReturnType<typeof branchRng>>();
  const rng = (row: number) => {
    let generator = rows.get(row);
    if (!generator) rows.set(row, (generator = branchRng(seed, roundOffset, row)));
    return generator;
  };
  return {
    // Strict '<' with u in [0, 1): probability 0 never passes, probability 1 always does (as verifyTokenLevel).
    bernoulli: (probability, row, position, stream) => rng(row).uniform(position, stream) < probability,
    categorical: (dist, row, position, stream) => sampleFrom(dist, rng(row).uniform(position, stream)),
  };
}

/** How a tree's nodes hang together: children per node (index 0 = the context's), depth and row per node. */
export interface TreeShape {
  /** children[0]: the context's children; children[i + 1]: node i's, in draw order. */
  children: number[][];
  depth: number[];
  row: number[];
  rows: number;
}

export function treeShape(nodes: readonly DraftTreeNode[]): TreeShape {
  const children: number[][] = Array.from({ length: nodes.length + 1 }, () => []);
  const depth: number[] = [];
  const row: number[] = [];
  let rows = 1;
  nodes.forEach((node, i) => {
    const { parent } = node;
    if (!Number.isInteger(parent) || parent < -1 || parent >= i) {
      throw new RangeError(`draft tree node ${i} has parent ${parent}: parents must come before their children (-1 = the context)`);
    }
    const siblings = children[parent + 1];
    depth.push(parent < 0 ? 0 : depth[parent] + 1);
    // The first child continues its parent's row (the context's row is 0); later children open rows.
    row.push(siblings.length === 0 ? (parent < 0 ? 0 : row[parent]) : rows++);
    siblings.push(i);
  });
  return { children, depth, row, rows };
}

/** Each row's nodes from the context to its leaf: the token paths the target scores, one batch row each. */
export function treePaths(nodes: readonly DraftTreeNode[]): number[][] {
  const shape = treeShape(nodes);
  const paths: number[][] = Array.from({ length: nodes.length === 0 ? 1 : shape.rows }, () => []);
  // A row is its first node's ancestors, then the first-child chain below it.
  nodes.forEach((node, i) => {
    if (node.parent >= 0 && shape.row[node.parent] === shape.row[i]) return;
    const ancestors: number[] = [];
    for (let a = node.parent; a >= 0; a = nodes[a].parent) ancestors.unshift(a);
    const chain = [i];
    for (let at = i; shape.children[at + 1].length > 0; ) chain.push((at = shape.children[at + 1][0]));
    paths[shape.row[i]] = [...ancestors, ...chain];
  });
  return paths;
}

/** q without `tokens`, renormalised: the proposal of the next sibling when siblings are drawn without replacement. */
export function withoutTokens(q: Array<[number, number]>, tokens: readonly number[]): Array<[number, number]> {
  const kept = q.filter(([token]) => !tokens.includes(token));
  const mass = kept.reduce((sum, [, probability]) => sum + probability, 0);
  if (!(mass > 0)) throw new RangeError('no proposal mass left once the earlier siblings are removed');
  return kept.map(([token, probability]) => [token, probability / mass]);
}

/** Greedy: descend to the child equal to the target's argmax while there is one; then the argmax itself. `targetArgmax` is laid out as p. */
export function verifyTreeGreedy(nodes: readonly DraftTreeNode[], targetArgmax: readonly number[]): TreeVerifyOutcome {
  const shape = treeShape(nodes);
  if (targetArgmax.length !== nodes.length + 1) {
    throw new RangeError(`verifyTreeGreedy needs ${nodes.length + 1} target argmax tokens (context + each node), got ${targetArgmax.length}`);
  }
  const acceptedNodes: number[] = [];
  for (let at = -1; ; ) {
    const want = targetArgmax[at + 1];
    const next = shape.children[at + 1].find((child) => nodes[child].token === want);
    if (next === undefined) return outcome(nodes, acceptedNodes, want);
    acceptedNodes.push(next);
    at = next;
  }
}

/** Greedy from full target rows: argmax of each (for callers holding distributions or logits). */
export function treeArgmax(rows: ReadonlyArray<ArrayLike<number>>): number[] {
  return rows.map((row) => argmax(row));
}

/**
 * Recursive rejection sampling down the tree (see the file comment). Draws:
 * child c's test is (row(c), offset + depth(c), 'accept'); the correction
 * after every child of node n is rejected is (row(n), offset + depth of those
 * children, 'residual'); the bonus after leaf l is (row(l), offset + depth(l)
 * + 1, 'sample'). The context's row is 0.
 */
export function verifyTreeTokenLevel(nodes: readonly DraftTreeNode[], p: readonly Float64Array[], decisions: TreeDecisions, offset: number): TreeVerifyOutcome {
  const vocab = checkTreeInputs(nodes, p);
  const shape = treeShape(nodes);
  const acceptedNodes: number[] = [];
  for (let at = -1; ; ) {
    const kids = shape.children[at + 1];
    const rowHere = at < 0 ? 0 : shape.row[at];
    const position = offset + (at < 0 ? 0 : shape.depth[at] + 1);
    if (kids.length === 0) return outcome(nodes, acceptedNodes, decisions.categorical(p[at + 1], rowHere, position, 'sample'));
    let target = p[at + 1];
    let next = -1;
    for (const child of kids) {
      const node = nodes[child];
      const acceptProbability = Math.min(1, target[node.token] / proposalProbability(node, vocab));
      if (decisions.bernoulli(acceptProbability, shape.row[child], position, 'accept')) {
        next = child;
        break;
      }
      target = scaledResidual(target, proposalAsDense(node, vocab), 1);
    }
    if (next < 0) return outcome(nodes, acceptedNodes, decisions.categorical(target, rowHere, position, 'residual'));
    acceptedNodes.push(next);
    at = next;
  }
}

/**
 * Multi-path block verification (see the file comment). Draws: the η of a
 * node is (row, offset + depth, 'accept'), as verifyBlock's along row 0; the
 * final correction at node n is (row(n), offset + depth of n's children,
 * 'residual'); the bonus after leaf l is (row(l), offset + depth(l) + 1,
 * 'sample').
 */
export function verifyTreeBlock(nodes: readonly DraftTreeNode[], p: readonly Float64Array[], decisions: TreeDecisions, offset: number): TreeVerifyOutcome {
  const vocab = checkTreeInputs(nodes, p);
  const shape = treeShape(nodes);
  const acceptedNodes: number[] = [];
  // `at`: the node the accepted prefix ends at; `target`: the distribution its next token must follow
  // (p itself, or a residual once an earlier attempt stopped here); `untried`: its children not yet verified.
  let at = -1;
  let target = p[0];
  let untried = shape.children[0];
  for (;;) {
    const rowHere = at < 0 ? 0 : shape.row[at];
    const position = offset + (at < 0 ? 0 : shape.depth[at] + 1);
    if (untried.length === 0) {
      // A leaf reached by acceptance samples its bonus from p; a node whose alternatives all failed, its residual.
      const isBonus = shape.children[at + 1].length === 0 && target === p[at + 1];
      return outcome(nodes, acceptedNodes, decisions.categorical(target, rowHere, position, isBonus ? 'sample' : 'residual'));
    }
    const [start, ...rest] = untried;
    // The first path from `start`: the first-child chain, all on start's row.
    const path = [start];
    while (shape.children[path[path.length - 1] + 1].length > 0) path.push(shape.children[path[path.length - 1] + 1][0]);
    const targets = [target, ...path.map((node) => p[node + 1])];
    const { weights, thresholds } = blockVerificationWeights(path.map((node) => nodes[node]), targets);
    let tau = 0;
    path.forEach((node, i) => {
      if (decisions.bernoulli(thresholds[i], shape.row[node], offset + shape.depth[node], 'accept')) tau = i + 1;
    });
    if (tau === path.length) {
      acceptedNodes.push(...path);
      at = path[path.length - 1];
      target = p[at + 1];
      untried = [];
      continue;
    }
    // Stopped after tau nodes: the correction block verification would draw is norm(max(0, w_τ·t_τ − q)) for the
    // node after the stop; the stop node's other children (or start's later siblings, at tau = 0) get to propose it.
    const weight = tau === 0 ? 1 : weights[tau - 1];
    const stoppedBefore = nodes[path[tau]];
    const residual = scaledResidual(targets[tau], proposalAsDense(stoppedBefore, vocab), weight);
    if (tau === 0) {
      untried = rest;
    } else {
      acceptedNodes.push(...path.slice(0, tau));
      at = path[tau - 1];
      untried = shape.children[at + 1].slice(1);
    }
    target = residual;
  }
}

function outcome(nodes: readonly DraftTreeNode[], acceptedNodes: number[], last: number): TreeVerifyOutcome {
  return { acceptedCount: acceptedNodes.length, tokens: [...acceptedNodes.map((node) => nodes[node].token), last], acceptedNodes };
}

function checkTreeInputs(nodes: readonly DraftTreeNode[], p: readonly Float64Array[]): number {
  if (p.length !== nodes.length + 1) throw new RangeError(`tree verification needs ${nodes.length + 1} target distributions (context + each node), got ${p.length}`);
  const vocab = p[0].length;
  for (const [i, dist] of p.entries()) {
    if (dist.length !== vocab) throw new RangeError(`target distribution ${i} has ${dist.length} entries, expected ${vocab}`);
  }
  for (const node of nodes) {
    if (!Number.isInteger(node.token) || node.token < 0 || node.token >= vocab) throw new RangeError(`token ${node.token} is outside the vocabulary (${vocab})`);
    if (node.q) assertSparseDistribution(node.q, vocab);
  }
  return vocab;
}
