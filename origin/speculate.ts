import type { CausalLM } from '../shared/model';
import type { GenerateEvent, GenerateRequest, OriginSpeculation, VerifyRequest, VerifyResponse } from '../shared/protocol';
import { proposerFor } from '../functions/proposers';
import { DRAFT_MODEL } from '../functions/proposers/draft-model';
import { LinkEstimator } from '../functions/speculation/controller';
import { decode, type GenerationInput } from '../functions/speculation/loop';
import { GenerationRecord } from '../functions/speculation/record';
import { newStats } from '../functions/speculation/stats';
import type { OriginClient } from '../functions/upstream/client';
import { checkTokens, verifyDraft, type ForwardTarget } from './verify';

/** Sparse q entries a sampled draft token carries, as the edge's default (DRAFT_Q_ENTRIES). */
const Q_ENTRIES = 32;

/**
 * Speculation next to the target (`speculate` on /v1/generate, an origin
 * started with `--draft`): the edge's own loop (functions/speculation/loop.ts)
 * and proposers, run here unchanged, with verification against the local
 * target instead of over the network. The same shared verification rules
 * and position-keyed draws decide every token, so the output is exactly what
 * edge drafting or origin-only decoding would give (greedy: identical;
 * sampled: the same distribution); only where the draft runs differs. The
 * stream carries each verified token with its source, and the rounds in the
 * `done` event.
 */
export async function* speculateTokens(
  target: ForwardTarget,
  draft: CausalLM,
  request: GenerateRequest & { speculate: OriginSpeculation },
  signal?: AbortSignal,
): AsyncGenerator<GenerateEvent> {
  checkTokens(request.context, target.config.vocabSize, target.config.maxPositions);
  const { speculate, sampling } = request;
  const { offset, ...roundSampling } = sampling;
  const record = new GenerationRecord(request.logprobs !== undefined);
  const input: GenerationInput = {
    prompt: request.context,
    maxTokens: request.max_tokens,
    sampling: roundSampling,
    // A stream resumed after `offset` tokens: the prompt ends `offset` tokens into the generation.
    offset,
    stopTokenIds: new Set(request.stop_token_ids),
    maxPositions: Math.min(target.config.maxPositions, draft.config.maxPositions),
    logprobs: request.logprobs,
    record,
  };
  const stats = newStats('lockstep', speculate.draft_length, speculate.method);
  let forwardMs = 0;
  const local: OriginClient = {
    health: () => Promise.reject(new Error('not used')),
    generate: () => {
      throw new Error('not used');
    },
    async verify(verify: VerifyRequest, verifySignal?: AbortSignal): Promise<VerifyResponse> {
      verifySignal?.throwIfAborted();
      const result = await verifyDraft(target, { ...verify, cache_salt: request.cache_salt });
      forwardMs += result.forwardMs;
      return { accepted: result.accepted, tokens: result.tokens, ...(result.logprobs ? { logprobs: result.logprobs } : {}), origin: { id: '', forward_ms: result.forwardMs, cached_tokens: result.cachedTokens } };
    },
  };
  // The hybrid: suffix matches over the context itself cost no draft step (the tenant's history stays at the edge),
  // else the draft model; the caller's prediction is tried before either.
  const proposer = () =>
    proposerFor(speculate.proposer ?? 'hybrid', { lm: draft }, { qEntries: Q_ENTRIES, promptLength: request.context.length - offset, prediction: speculate.prediction, history: null });
  const plan = { mode: 'lockstep' as const, method: speculate.method, draftLength: speculate.draft_length, depth: 1, minConfidence: 0, maxMatchDraft: 4 * speculate.draft_length };
  // A private link estimator: these rounds have no link, and must not teach anything else.
  const rounds = decode(input, plan, proposer, local, stats, signal, new LinkEstimator());
  let sent = 0;
  for (;;) {
    const step = await rounds.next();
    for (; sent < record.tokens.length; sent++) {
      const token = record.tokens[sent];
      const round = record.rounds[token.round];
      yield {
        type: 'token',
        token: token.id,
        // A round's forward pass decided all its tokens: each carries its share.
        forward_ms: round.forward_ms / Math.max(1, round.emitted),
        source: token.source,
        ...(token.logprob ? { logprob: token.logprob } : {}),
      };
    }
    if (step.done) {
      yield {
        type: 'done',
        finish_reason: step.value,
        origin: { id: '', forward_ms: forwardMs, cached_tokens: 0 },
        speculation: {
          rounds: stats.rounds,
          drafted: stats.drafted,
          accepted: stats.accepted,
          draft_ms: Math.round(stats.draftMs * 100) / 100,
          draft_steps: stats.proposers[DRAFT_MODEL]?.drafted ?? 0,
        },
      };
      return;
    }
  }
}
