import {
  argmax,
  isGreedy,
  processLogits,
  roundDecisions,
  tokenLogprob,
  treePaths,
  treeShape,
  verifyTreeBlock,
  verifyTreeGreedy,
  verifyTreeTokenLevel,
  type DraftTreeNode,
} from '../shared/sampling';
import { draftTreeProblem, type VerifyRequest } from '../shared/protocol';
import { ApiError } from '../shared/errors';
import { logitsRow } from '../shared/model';
import { checkDraft, type ForwardTarget, type VerifyResult } from './verify';

/**
 * One verify round over a draft tree (ARCHITECTURE.md: Multi-path drafts): the
 * draft path plus its branches, laid out as root-to-leaf rows
 * (shared/sampling/multipath.ts: treePaths). Every row is asked of the target
 * at once over the shared context, so a batching queue runs them as the rows
 * of one forward pass (the context's KV is held once, in the target KV cache);
 * the shared tree rules then pick the outcome with the round's draws.
 */
export async function verifyDraftTree(target: ForwardTarget, request: VerifyRequest): Promise<VerifyResult> {
  const { context, draft, sampling } = request;
  const branches = request.branches ?? [];
  const problem = draftTreeProblem(draft.length, branches);
  if (problem) throw new ApiError(400, problem, 'branches', 'invalid_draft_tree');
  const vocab = target.config.vocabSize;
  const nodes: DraftTreeNode[] = [...draft.map((d, i) => ({ ...d, parent: i - 1 })), ...branches];
  checkDraft([...context, ...nodes.map((n) => n.token)], nodes, target.config, 'branches');

  // Row r's tokens are its path from the root; the target is asked for the distributions after its own nodes
  // (row 0: after the context too), which is every distribution the tree rules read, each exactly once.
  const paths = treePaths(nodes);
  // A row lists its ancestors (nodes of earlier rows) first, then its own nodes.
  const { row: rowOf } = treeShape(nodes);
  const ownFrom = paths.map((path, r) => (r === 0 ? 0 : path.findIndex((node) => rowOf[node] === r)));
  const started = performance.now();
  const passes = await Promise.all(
    paths.map((path, r) => {
      const tokens = [...context, ...path.map((node) => nodes[node].token)];
      // Row 0 starts at the context's last token (the distribution after the context); others after their first own node.
      const firstRow = r === 0 ? context.length - 1 : context.length + ownFrom[r];
      return target.logitsFrom(tokens, firstRow, request.cache_salt);
    }),
  );
  const forwardMs = Math.max(...passes.map((pass) => pass.passMs ?? 0)) || performance.now() - started;

  /** rows[0]: logits after the context; rows[i + 1]: after node i. */
  const rows: Float32Array[] = new Array(nodes.length + 1);
  paths.forEach((path, r) => {
    const at = (i: number) => logitsRow(passes[r], i, vocab);
    if (r === 0) {
      rows[0] = at(0);
      path.forEach((node, i) => (rows[node + 1] = at(i + 1)));
    } else {
      path.slice(ownFrom[r]).forEach((node, i) => (rows[node + 1] = at(i)));
    }
  });

  const offset = sampling.offset;
  const outcome = isGreedy(sampling)
    ? verifyTreeGreedy(nodes, rows.map((row) => argmax(row)))
    : (request.method === 'block' ? verifyTreeBlock : verifyTreeTokenLevel)(nodes, rows.map((row) => processLogits(row, sampling)), roundDecisions(sampling.seed, offset), offset);
  // The i-th emitted token was decided from the distribution after the accepted node before it (the context for the first).
  const decidedFrom = (i: number) => rows[i === 0 ? 0 : outcome.acceptedNodes[i - 1] + 1];
  const logprobs = request.logprobs === undefined ? undefined : outcome.tokens.map((token, i) => tokenLogprob(decidedFrom(i), token, request.logprobs!));
  return {
    accepted: outcome.acceptedCount,
    tokens: outcome.tokens,
    path: outcome.acceptedNodes,
    ...(logprobs ? { logprobs } : {}),
    forwardMs,
    cachedTokens: passes[0].cachedTokens,
    queueMs: passes[0].queueMs,
    batchSize: passes[0].batchSize,
  };
}
