import { argmax, counterRng, isGreedy, processLogits, sampleFrom, tokenLogprob } from '../shared/sampling';
import { logitsRow } from '../shared/model';
import type { GenerateEvent, GenerateRequest } from '../shared/protocol';
import { checkTokens, type ForwardTarget } from './verify';

/**
 * Origin-only autoregressive decoding: the baseline speculation is measured
 * against and the path the edge falls back to. Position `offset + i` draws
 * from the 'sample' stream, the same draw verification uses for a bonus token.
 */
export async function* generateTokens(target: ForwardTarget, request: GenerateRequest, signal?: AbortSignal): AsyncGenerator<GenerateEvent> {
  const { sampling } = request;
  const { vocabSize, maxPositions } = target.config;
  checkTokens(request.context, vocabSize, maxPositions);
  const rng = counterRng(sampling.seed);
  const stopIds = new Set(request.stop_token_ids);
  const tokens = [...request.context];
  let cachedTokens = 0;
  let forwardTotal = 0;
  for (let i = 0; i < request.max_tokens; i++) {
    // A client leaving arrives as a socket event: give pending I/O a turn before committing to the next
    // pass, or the abort is only seen one pass later (measured here: 2 passes after a disconnect without, 1 with).
    if (signal) await nextTurn();
    if (signal?.aborted) return;
    if (tokens.length >= maxPositions) {
      yield { type: 'done', finish_reason: 'length', origin: { id: '', forward_ms: forwardTotal, cached_tokens: cachedTokens } };
      return;
    }
    const started = performance.now();
    const result = await target.logitsFrom(tokens, tokens.length - 1, request.cache_salt);
    // Through the batching queue the pass's own time (its wait is reported as queue_ms), else the call's.
    const forwardMs = result.passMs ?? performance.now() - started;
    forwardTotal += forwardMs;
    if (i === 0) cachedTokens = result.cachedTokens;
    const logits = logitsRow(result, 0, vocabSize);
    const token = isGreedy(sampling)
      ? argmax(logits)
      : sampleFrom(processLogits(logits, sampling), rng.uniform(sampling.offset + i, 'sample'));
    tokens.push(token);
    const logprob = request.logprobs === undefined ? {} : { logprob: tokenLogprob(logits, token, request.logprobs) };
    yield { type: 'token', token, forward_ms: forwardMs, ...logprob };
    if (stopIds.has(token)) {
      yield { type: 'done', finish_reason: 'stop', origin: { id: '', forward_ms: forwardTotal, cached_tokens: cachedTokens } };
      return;
    }
  }
  yield { type: 'done', finish_reason: 'length', origin: { id: '', forward_ms: forwardTotal, cached_tokens: cachedTokens } };
}

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));
