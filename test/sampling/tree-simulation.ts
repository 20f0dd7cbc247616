/**
 * Draft trees on the toy models of simulation.ts, and an exact enumerator of
 * every random decision a round makes, for test/sampling/multipath.test.ts.
 *
 * The enumerator runs the production verifier itself (through its
 * TreeDecisions seam) once per combination of outcomes, so "exact" here means
 * the shipped code, not a re-derivation of it.
 */
import {
  argmax,
  roundDecisions,
  sparseToDense,
  truncateToSparse,
  withoutTokens,
  type DraftTreeNode,
  type RngStream,
  type TreeDecisions,
  type TreeVerifyOutcome,
} from '../../shared/sampling';
import type { SpeculationCase } from './simulation';

export type TreeVerifier = (nodes: DraftTreeNode[], p: Float64Array[], decisions: TreeDecisions, offset: number) => TreeVerifyOutcome;

export interface TreeShapeOptions {
  /** Depth of the main path. */
  k: number;
  /** Children at the branch point (1 = a single path). */
  branches: number;
  /** Depth of the branch point's children (0 = the first drafted position). */
  branchDepth: number;
  /** Siblings drawn without replacement (q of each = the parent's q without the earlier siblings), else independently from q. */
  withoutReplacement: boolean;
  /** A deliberate bug for the power checks: siblings drawn without replacement but each labelled with the unreduced q. */
  mislabelSiblingQ?: boolean;
}

/**
 * A draft tree after `prefix`: the main path of k tokens (row 0), and at
 * `branchDepth` further children, each continued to depth k − 1 on its own
 * row. Sampled proposals draw from the sparse q with the 'draft' stream of the
 * node's row; deterministic ones (c.qEntries undefined) take the draft's
 * ranked choices (argmax, then the next best) as δ proposals.
 */
export function draftTree(c: SpeculationCase, prefix: readonly number[], decisions: TreeDecisions, offset: number, shape: TreeShapeOptions): DraftTreeNode[] {
  const nodes: DraftTreeNode[] = [];
  let rows = 0;
  // Extends a path from `parent` down to depth k − 1 on `row`; `first` is its first node's token and q, already chosen.
  const extend = (parent: number, path: number[], row: number, depth: number, first?: DraftTreeNode) => {
    for (let d = depth; d < shape.k; d++) {
      let node: DraftTreeNode;
      if (d === depth && first) node = first;
      else node = { ...propose(c, [...prefix, ...path], decisions, row, offset + d), parent };
      node.parent = parent;
      nodes.push(node);
      parent = nodes.length - 1;
      path = [...path, node.token];
    }
  };
  extend(-1, [], rows++, 0);
  if (shape.branches < 2 || shape.branchDepth >= shape.k) return nodes;
  const mainPath = nodes.map((n) => n.token);
  const parent = shape.branchDepth - 1; // main-path node index = its depth
  const context = [...prefix, ...mainPath.slice(0, shape.branchDepth)];
  const full = c.draft(context);
  const firstChild = nodes[shape.branchDepth];
  const drawn = [firstChild.token];
  for (let b = 1; b < shape.branches; b++) {
    const row = rows++;
    let child: DraftTreeNode;
    if (c.qEntries === undefined) {
      // Deterministic: the draft's next-ranked token, q = δ.
      const ranked = Array.from(full.keys()).sort((x, y) => full[y] - full[x] || x - y);
      const token = ranked.find((t) => !drawn.includes(t));
      if (token === undefined) break;
      child = { token, parent };
    } else {
      const base = truncateToSparse(full, c.qEntries);
      const q = shape.withoutReplacement ? withoutTokensOrNull(base, drawn) : base;
      if (!q) break;
      const token = decisions.categorical(sparseToDense(q, c.vocab), row, offset + shape.branchDepth, 'draft');
      child = { token, q: shape.mislabelSiblingQ ? base : q, parent };
    }
    drawn.push(child.token);
    extend(parent, mainPath.slice(0, shape.branchDepth), row, shape.branchDepth, child);
  }
  return nodes;
}

function withoutTokensOrNull(q: Array<[number, number]>, tokens: number[]) {
  return q.some(([t]) => !tokens.includes(t)) ? withoutTokens(q, tokens) : null;
}

function propose(c: SpeculationCase, context: number[], decisions: TreeDecisions, row: number, position: number): Omit<DraftTreeNode, 'parent'> {
  const full = c.draft(context);
  if (c.qEntries === undefined) return { token: argmax(full) };
  const q = truncateToSparse(full, c.qEntries);
  return { token: decisions.categorical(sparseToDense(q, c.vocab), row, position, 'draft'), q };
}

/** The target's distributions laid out as tree verification wants them: after the context, then after each node. */
export function targetForTree(c: SpeculationCase, prefix: readonly number[], nodes: readonly DraftTreeNode[]): Float64Array[] {
  const pathTo = (i: number): number[] => (i < 0 ? [] : [...pathTo(nodes[i].parent), nodes[i].token]);
  return [c.target(prefix), ...nodes.map((_, i) => c.target([...prefix, ...pathTo(i)]))];
}

/** One tree round after `prefix` with `decisions`: draft, score, verify. */
export function treeRound(c: SpeculationCase, prefix: readonly number[], decisions: TreeDecisions, shape: TreeShapeOptions, verify: TreeVerifier): TreeVerifyOutcome {
  const offset = prefix.length;
  const nodes = draftTree(c, prefix, decisions, offset, shape);
  return verify(nodes, targetForTree(c, prefix, nodes), decisions, offset);
}

/** Tree rounds until `length` tokens, each round with its own generators (roundDecisions keyed by its offset). */
export function generateWithTree(c: SpeculationCase, seed: number, length: number, shape: TreeShapeOptions, verify: TreeVerifier) {
  const tokens: number[] = [];
  let firstAccepted = -1;
  while (tokens.length < length) {
    const outcome = treeRound(c, tokens, roundDecisions(seed, tokens.length), shape, verify);
    if (firstAccepted < 0) firstAccepted = outcome.acceptedCount;
    tokens.push(...outcome.tokens);
  }
  return { tokens: tokens.slice(0, length), firstAccepted };
}

/** A branch point of the enumeration: the options of the first decision past the script. */
class Unexplored {
  constructor(readonly probabilities: number[]) {}
}

/**
 * Every outcome of `run` with its exact probability: `run` is called again
 * for each combination of decision outcomes (depth-first), each decision
 * answered from the script of the branch being explored. Outcomes of
 * probability zero are not followed.
 */
export function enumerateDecisions<T>(run: (decisions: TreeDecisions) => T): Array<{ value: T; probability: number }> {
  const results: Array<{ value: T; probability: number }> = [];
  const explore = (script: number[]) => {
    let step = 0;
    let probability = 1;
    const choose = <V>(options: Array<{ value: V; probability: number }>): V => {
      const live = options.filter((o) => o.probability > 0);
      if (step < script.length) {
        const option = live[script[step++]];
        probability *= option.probability;
        return option.value;
      }
      throw new Unexplored(live.map((o) => o.probability));
    };
    const decisions: TreeDecisions = {
      bernoulli: (p: number, _row: number, _position: number, _stream: RngStream) =>
        choose([
          { value: true, probability: Math.min(1, Math.max(0, p)) },
          { value: false, probability: 1 - Math.min(1, Math.max(0, p)) },
        ]),
      categorical: (dist: Float64Array) => choose(Array.from(dist, (probability, token) => ({ value: token, probability }))),
    };
    try {
      results.push({ value: run(decisions), probability });
    } catch (error) {
      if (!(error instanceof Unexplored)) throw error;
      error.probabilities.forEach((_, option) => explore([...script, option]));
    }
  };
  explore([]);
  return results;
}
