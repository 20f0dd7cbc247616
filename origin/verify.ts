import { argmax, isGreedy, roundRng, processLogits, tokenLogprob, verifyBlock, verifyGreedy, verifyTokenLevel, type TokenLogprob } from '../shared/sampling';
import { logitsRow } from '../shared/model';
import type { VerifyRequest } from '../shared/protocol';
import { ApiError } from '../shared/errors';
import type { TargetModel } from './target';
import { verifyDraftTree } from './verify-tree';

export interface VerifyResult {
  accepted: number;
  tokens: number[];
  /** A draft tree's round (`branches`): the accepted nodes, root first (origin/verify-tree.ts). */
  path?: number[];
  /** With the request's `logprobs`: the raw log-probability of each of `tokens` and its alternatives. */
  logprobs?: TokenLogprob[];
  forwardMs: number;
  cachedTokens: number;
  /** Through the batching queue (origin/batcher.ts): the wait for the pass, and the rows that shared it. */
  queueMs?: number;
  batchSize?: number;
}

/** What verification needs of the target: its config and a (possibly queued) forward pass. */
export type ForwardTarget = Pick<TargetModel, 'config' | 'logitsFrom'>;

/**
 * One verify round: a single target forward over context + draft yields k+1
 * distributions; the shared verification rules decide what is accepted.
 */
export async function verifyDraft(target: ForwardTarget, request: VerifyRequest): Promise<VerifyResult> {
  if (request.branches?.length) return verifyDraftTree(target, request);
  const { context, draft, sampling } = request;
  const vocab = target.config.vocabSize;
  const tokens = [...context, ...draft.map((d) => d.token)];
  checkDraft(tokens, draft, target.config, 'draft');

  const started = performance.now();
  const result = await target.logitsFrom(tokens, context.length - 1, request.cache_salt);
  // Through the batching queue the pass's own time (the wait is queue_ms), else the call's.
  const forwardMs = result.passMs ?? performance.now() - started;
  const row = (i: number) => logitsRow(result, i, vocab);

  const k = draft.length;
  let outcome;
  if (isGreedy(sampling)) {
    const targetArgmax = Array.from({ length: k + 1 }, (_, i) => argmax(row(i)));
    outcome = verifyGreedy(draft.map((d) => d.token), targetArgmax);
  } else {
    const p = Array.from({ length: k + 1 }, (_, i) => processLogits(row(i), sampling));
    // Fresh draws per round, keyed by the round's offset (known to both sides): block verification
    // reads draws past the accepted prefix, so reusing them next round would skew the output.
    const rng = roundRng(sampling.seed, sampling.offset);
    const verify = request.method === 'block' ? verifyBlock : verifyTokenLevel;
    outcome = verify(draft, p, rng, sampling.offset);
  }
  // Row i is the distribution the i-th emitted token was decided from (an accepted draft, then the correction or bonus).
  const logprobs = request.logprobs === undefined ? undefined : outcome.tokens.map((token, i) => tokenLogprob(row(i), token, request.logprobs!));
  return { accepted: outcome.acceptedCount, tokens: outcome.tokens, ...(logprobs ? { logprobs } : {}), forwardMs, cachedTokens: result.cachedTokens, queueMs: result.queueMs, batchSize: result.batchSize };
}

/** `checkTokens` for context + drafted tokens, and the proposals' own entries: an out-of-vocabulary id in q would index past the distribution. */
export function checkDraft(tokens: readonly number[], drafted: ReadonlyArray<{ q?: Array<[number, number]> }>, config: { vocabSize: number; maxPositions: number }, param: string) {
  checkTokens(tokens, config.vocabSize, config.maxPositions);
  const badQ = drafted.flatMap((d) => d.q ?? []).find(([id]) => id >= config.vocabSize);
  if (badQ) throw new ApiError(400, `draft q entry token id ${badQ[0]} is outside the target vocabulary (${config.vocabSize})`, param, 'invalid_token');
}

export function checkTokens(tokens: readonly number[], vocab: number, maxPositions: number) {
  const bad = tokens.find((t) => t >= vocab);
  if (bad !== undefined) throw new ApiError(400, `token id ${bad} is outside the target vocabulary (${vocab})`, 'context', 'invalid_token');
  if (tokens.length > maxPositions) {
    throw new ApiError(413, `context of ${tokens.length} tokens exceeds the target context of ${maxPositions}`, 'context', 'context_length_exceeded');
  }
}
