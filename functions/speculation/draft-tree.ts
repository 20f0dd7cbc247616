import { branchRng, sampleFrom, sparseToDense, withoutTokens, type DraftToken } from '../../shared/sampling';
import type { WireSampling } from '../../shared/protocol';
import type { DraftConfidence, Proposer } from '../proposers/types';

/** An alternative beside the draft path: node `draft.length + j` of the tree, hanging from `parent` (-1 = the context). */
export interface DraftAlternative extends DraftToken {
  parent: number;
}

/**
 * Multi-path drafts (ARCHITECTURE.md: Multi-path drafts): up to `count`
 * one-token alternatives beside the draft model's path, where the draft was
 * least sure, so a rejection there can still be answered by an alternative
 * the target scored in the same pass (shared/sampling/multipath.ts decides).
 *
 * Sampled drafts: each alternative goes to the position where a rejection is
 * likeliest to be met (reached, with the draft's own probabilities of the
 * tokens before it standing in for acceptance, times the mass of q its drafted
 * tokens leave uncovered), and is drawn from q without them (sampling
 * without replacement: its q is exactly that remainder), with the draft
 * stream of its own row (`branchRng`), never the draws verification uses.
 * Greedy drafts: the draft's runner-up at the least confident positions,
 * one per position, as a deterministic proposal. Where the alternatives go
 * depends only on the draft's own distributions, so verification stays
 * lossless. Rows: the path is row 0 and alternative j opens row j + 1 (a
 * later child opens a new row: multipath.ts, treeShape).
 */
export function draftAlternatives(draft: readonly DraftToken[], sampling: WireSampling, count: number, confidence?: readonly DraftConfidence[]): DraftAlternative[] {
  if (count <= 0 || draft.length === 0) return [];
  const sampled = draft.every((d) => d.q);
  return sampled ? sampledAlternatives(draft, sampling, count) : greedyAlternatives(draft, count, confidence);
}

/**
 * Continue each alternative along its own row, so a round that takes it can
 * keep accepting after it (branches up to `branchLength` tokens, at most as deep
 * as the path): the proposer drafts each continuation from the branch's own
 * context with its row's draws (`Proposer.extendBranch`). A continuation node
 * is its parent's first child, so it stays on the alternative's row. Returns
 * the alternatives followed by every continuation node, numbered after them,
 * within `maxNodes` in all.
 */
export async function extendAlternatives(
  proposer: Pick<Proposer, 'extendBranch'>,
  context: readonly number[],
  draft: readonly DraftToken[],
  alternatives: readonly DraftAlternative[],
  branchLength: number,
  sampling: WireSampling,
  maxNodes: number,
): Promise<DraftAlternative[]> {
  const nodes: DraftAlternative[] = [...alternatives];
  if (!proposer.extendBranch || branchLength <= 1) return nodes;
  for (const [j, alternative] of alternatives.entries()) {
    const depth = alternative.parent + 1;
    const steps = Math.min(branchLength - 1, draft.length - 1 - depth, maxNodes - nodes.length);
    if (steps <= 0) continue;
    const prefix = [...draft.slice(0, depth).map((d) => d.token), alternative.token];
    const continuation = await proposer.extendBranch(context, prefix, steps, sampling, j + 1);
    let parent = draft.length + j;
    for (const node of continuation) {
      nodes.push({ ...node, parent });
      parent = draft.length + nodes.length - 1;
    }
  }
  return nodes;
}

function sampledAlternatives(draft: readonly DraftToken[], sampling: WireSampling, count: number): DraftAlternative[] {
  const drawn = draft.map((d) => [d.token]);
  // q of each drafted token: what its position's drafts cover so far, and the stand-in for its acceptance.
  const own = draft.map((d) => d.q!.find(([token]) => token === d.token)?.[1] ?? 0);
  const covered = own.slice();
  const branches: DraftAlternative[] = [];
  for (let j = 0; j < count; j++) {
    // The position where a rejection is likeliest to be met: reached (every drafted token before it kept, with the
    // draft's own probabilities standing in for acceptance) and not covered by what was drafted there yet.
    let at = -1;
    let best = 0;
    let reach = 1;
    for (let i = 0; i < draft.length; i++) {
      const gain = reach * (1 - covered[i]);
      if (draft[i].q!.length > drawn[i].length && gain > best) [at, best] = [i, gain];
      reach *= own[i];
    }
    if (at < 0) break;
    const q = withoutTokens(draft[at].q!, drawn[at]);
    const vocab = 1 + Math.max(...q.map(([token]) => token));
    const token = sampleFrom(sparseToDense(q, vocab), branchRng(sampling.seed, sampling.offset, branches.length + 1).uniform(sampling.offset + at, 'draft'));
    branches.push({ token, q, parent: at - 1 });
    drawn[at].push(token);
    covered[at] += draft[at].q!.find(([t]) => t === token)![1];
  }
  return branches;
}

function greedyAlternatives(draft: readonly DraftToken[], count: number, confidence?: readonly DraftConfidence[]): DraftAlternative[] {
  if (!confidence || confidence.length < draft.length) return [];
  const positions = draft
    .map((d, i) => ({ i, top: confidence[i].top, runnerUp: confidence[i].runnerUp }))
    .filter(({ i, runnerUp }) => runnerUp >= 0 && runnerUp !== draft[i].token)
    .sort((a, b) => a.top - b.top || a.i - b.i)
    .slice(0, count);
  return positions.map(({ i, runnerUp }) => ({ token: runnerUp, parent: i - 1 }));
}
