import type { CausalLM } from '../shared/model';
import type { GenerateEvent, GenerateRequest, OriginSpeculation, VerifyRequest, VerifyResponse } from '../shared/protocol';
import { proposerFor } from '../functions/proposers';
import { DRAFT_MODEL } from '../functions/proposers/draft-model';
import { LinkEstimator } from '../functions/speculation/controller';
import { decode, type GenerationInput } from '../functions/speculation/loop';
import { GenerationRecord } from '../functions/speculation/record';
import { newStats } from '../functions/speculation/stats';
import type { OriginClient } from '../functions/upstream/client';
import { generateTokens } from './generate';
import { checkTokens, verifyDraft, type ForwardTarget } from './verify';

/** Sparse q entries a sampled draft token carries, as the edge's default (DRAFT_Q_ENTRIES). */
const Q_ENTRIES = 32;

/**
 * This origin's own estimates for its speculation (no link: verification is
 * local), shared by its streams as an isolate's are at the edge, so the next
 * stream starts from what the last ones measured. Kept apart from anything the
 * edge learns.
 */
const originLink = new LinkEstimator();

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
  link: LinkEstimator = originLink,
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
  const mode = speculate.adaptive ? ('adaptive' as const) : ('lockstep' as const);
  const stats = newStats(mode, speculate.draft_length, speculate.method);
  let forwardMs = 0;
  const local: OriginClient = {
    health: () => Promise.reject(new Error('not used')),
    // The controller's hand-over: plain decoding from where speculation stopped (its request carries the RNG offset).
    async *generate(rest: GenerateRequest, restSignal?: AbortSignal) {
      for await (const event of generateTokens(target, { ...rest, cache_salt: request.cache_salt }, restSignal)) {
        if (event.type === 'token') forwardMs += event.forward_ms;
        yield event;
      }
    },
    async verify(verify: VerifyRequest, verifySignal?: AbortSignal): Promise<VerifyResponse> {
      verifySignal?.throwIfAborted();
      const result = await verifyDraft(target, { ...verify, cache_salt: request.cache_salt });
      forwardMs += result.forwardMs;
      return { accepted: result.accepted, tokens: result.tokens, ...(result.path ? { path: result.path } : {}), ...(result.logprobs ? { logprobs: result.logprobs } : {}), origin: { id: '', forward_ms: result.forwardMs, cached_tokens: result.cachedTokens } };
    },
  };
  // The hybrid: suffix matches over the context itself cost no draft step (the tenant's history stays at the edge),
  // else the draft model; the caller's prediction is tried before either.
  const proposer = () =>
    proposerFor(speculate.proposer ?? 'hybrid', { lm: draft }, { qEntries: Q_ENTRIES, promptLength: request.context.length - offset, prediction: speculate.prediction, history: null });
  // Lockstep with k = draft_length (seed-reproducible), or with `adaptive` as the edge's adaptive mode: k up to
  // draft_length from this origin's measured acceptance, draft and forward costs, and a hand-over to plain decoding
  // when speculating here is predicted to lose (on a CPU origin, where a draft step costs half a target step,
  // sampled requests often do).
  const plan = { mode, method: speculate.method, draftLength: speculate.draft_length, depth: 1, minConfidence: 0, maxMatchDraft: 4 * speculate.draft_length };
  const rounds = decode(input, plan, proposer, local, stats, signal, link);
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
        // Decoded alone after a hand-over: no source, as any origin-decoded token (one target pass each).
        ...(token.source === 'origin' ? {} : { source: token.source }),
        ...(token.logprob ? { logprob: token.logprob } : {}),
      };
    }
    if (step.done) {
      yield {
        type: 'done',
        finish_reason: step.value,
        origin: { id: '', forward_ms: forwardMs, cached_tokens: 0 },
        speculation: {
          // Verify rounds only: tokens decoded alone after a hand-over are target passes of their own at the edge.
          rounds: stats.rounds - stats.originTokens,
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
