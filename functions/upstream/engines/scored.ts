import { ApiError } from '../../../shared/errors';
import { verifyReplyProblem, type GenerateEvent, type GenerateRequest, type OriginHealth, type VerifyRequest, type VerifyResponse, type WireSampling } from '../../../shared/protocol';
import { counterRng, isGreedy, processLogits, roundRng, sampleFrom, verifyBlock, verifyGreedy, verifyTokenLevel } from '../../../shared/sampling';
import { originFetch, type OriginClient } from '../client';

/**
 * Verification through a serving engine that can score given token ids but
 * does not speak /v1/verify (SGLang, vLLM). One engine call scores context +
 * draft and returns, for each of the k+1 positions after the context, the
 * engine's top-N log-probabilities; the verification rules (shared/sampling)
 * then run here at the edge, exactly as the reference origin runs them.
 *
 * What top-N log-probabilities allow:
 * - Greedy: the target's argmax is the top-1 entry, so greedy verification is
 *   exact (token-for-token what the engine's own greedy decoding picks, up to
 *   exact ties and the engine's prefill-vs-decode kernel numerics).
 * - Sampling with 1 ≤ top_k ≤ N: the processed distribution p only involves
 *   the top_k tokens, and raw log-probabilities differ from logits by one
 *   constant per position, so p (after temperature, top-k, then top-p) is
 *   rebuilt exactly and speculative sampling stays lossless, with the same
 *   seeded draws as the reference origin.
 * - Any other sampling (top_k off or above N): the tail beyond the top N is
 *   unknown, p cannot be rebuilt, and acceptance min(1, p/q) or the residual
 *   norm(max(0, p − q)) would be wrong. Those requests are refused (or routed to
 *   a reference origin by the pool) instead of being served inexactly.
 * Engines are always asked for greedy output with raw log-probabilities
 * (temperature 0), so their own sampler and its temperature scaling never
 * enter the result.
 */
export interface ScoredPositions {
  /** rows[i] = [token, logprob] entries of the target's distribution after context + draft[0..i-1]; k+1 rows. */
  rows: Array<Array<[number, number]>>;
  cachedTokens: number;
}

export interface EngineScorer {
  /** Engine name for messages ("sglang", "vllm"). */
  readonly kind: string;
  score(context: readonly number[], draftTokens: readonly number[], topN: number, signal?: AbortSignal): Promise<ScoredPositions>;
  /** Path of the engine's liveness endpoint. */
  readonly healthPath: string;
}

export interface EngineOriginOptions {
  id: string;
  baseUrl: string;
  timeoutMs: number;
  vocabSize: number;
  maxPositions: number;
  /** Most log-probabilities per position the engine returns (vLLM's --max-logprobs, 20 by default). */
  topLogprobs: number;
  healthTimeoutMs?: number;
}

export class EngineOriginClient implements OriginClient {
  constructor(
    private readonly scorer: EngineScorer,
    private readonly options: EngineOriginOptions,
  ) {}

  /** Null when this origin can verify `sampling` exactly, else why not. */
  unsupportedSampling(sampling: Omit<WireSampling, 'offset'>): string | null {
    if (isGreedy(sampling)) return null;
    const n = this.options.topLogprobs;
    if (sampling.top_k >= 1 && sampling.top_k <= n) return null;
    return `origin ${this.options.id} is a ${this.scorer.kind} engine: its top-${n} log-probabilities determine the target distribution exactly only for greedy decoding or 1 <= top_k <= ${n} (got top_k ${sampling.top_k || 'off'})`;
  }

  async health(): Promise<OriginHealth> {
    const { id, baseUrl, vocabSize, maxPositions } = this.options;
    try {
      await originFetch(id, baseUrl + this.scorer.healthPath, { method: 'GET' }, this.options.healthTimeoutMs ?? this.options.timeoutMs);
    } catch (err) {
      // A probe carries no client input: any refusal is about the engine (client.ts, isRetryableOriginError).
      if (err instanceof ApiError && err.status < 500) throw new ApiError(502, `origin ${id} (${this.scorer.kind}) answered ${err.status} to its health check`, null, 'origin_error');
      throw err;
    }
    return { status: 'ok', id, model: `${this.scorer.kind}:${baseUrl}`, vocab_size: vocabSize, max_positions: maxPositions };
  }

  async verify(request: VerifyRequest, signal?: AbortSignal): Promise<VerifyResponse> {
    this.assertSupported(request.sampling);
    const { context, draft, sampling } = request;
    const started = performance.now();
    const draftTokens = draft.map((d) => d.token);
    const greedy = isGreedy(sampling);
    const scored = await this.scorer.score(context, draftTokens, this.rowSize(sampling, request.logprobs), signal);
    const forwardMs = performance.now() - started;
    let outcome;
    if (greedy) {
      outcome = verifyGreedy(draftTokens, scored.rows.map(topToken));
    } else {
      const p = scored.rows.map((row) => this.distribution(row, sampling));
      const verify = request.method === 'block' ? verifyBlock : verifyTokenLevel;
      outcome = verify(draft, p, roundRng(sampling.seed, sampling.offset), sampling.offset);
    }
    const logprobs = request.logprobs === undefined ? undefined : outcome.tokens.map((token, i) => this.rowLogprob(scored.rows[i], token, request.logprobs!));
    const reply = {
      accepted: outcome.acceptedCount,
      tokens: outcome.tokens,
      ...(logprobs ? { logprobs } : {}),
      origin: { id: this.options.id, forward_ms: Math.round(forwardMs * 100) / 100, cached_tokens: scored.cachedTokens },
    };
    // The verdict is computed here, but its tokens come from the engine's rows (a greedy top-1 is not range-checked).
    const problem = verifyReplyProblem(request, reply, this.options.vocabSize);
    if (problem) throw formatError(this.scorer.kind, this.options.id, problem);
    return reply;
  }

  /**
   * Origin-only decoding, one engine call per token. The engine's own stream is
   * not used: its sampler has its own randomness, and edgespec's seeded,
   * position-keyed draws (the same as the reference origin's) are what make a
   * seeded request reproducible and a resumed stream continue exactly.
   */
  async *generate(request: GenerateRequest, signal?: AbortSignal): AsyncGenerator<GenerateEvent> {
    this.assertSupported(request.sampling);
    const { sampling } = request;
    const rng = counterRng(sampling.seed);
    const stopIds = new Set(request.stop_token_ids);
    const tokens = [...request.context];
    let forwardTotal = 0;
    let cachedTokens = 0;
    const done = (finish_reason: 'stop' | 'length'): GenerateEvent => ({
      type: 'done',
      finish_reason,
      origin: { id: this.options.id, forward_ms: Math.round(forwardTotal * 100) / 100, cached_tokens: cachedTokens },
    });
    for (let i = 0; i < request.max_tokens; i++) {
      if (signal?.aborted) return;
      if (tokens.length >= this.options.maxPositions) {
        yield done('length');
        return;
      }
      const started = performance.now();
      const greedy = isGreedy(sampling);
      const scored = await this.scorer.score(tokens, [], this.rowSize(sampling, request.logprobs), signal);
      const forwardMs = performance.now() - started;
      forwardTotal += forwardMs;
      if (i === 0) cachedTokens = scored.cachedTokens;
      const row = scored.rows[0];
      const token = greedy ? topToken(row) : sampleFrom(this.distribution(row, sampling), rng.uniform(sampling.offset + i, 'sample'));
      if (token >= this.options.vocabSize) throw formatError(this.scorer.kind, this.options.id, `token ${token} is outside the vocabulary (${this.options.vocabSize})`);
      tokens.push(token);
      const logprob = request.logprobs === undefined ? {} : { logprob: this.rowLogprob(row, token, request.logprobs) };
      yield { type: 'token', token, forward_ms: forwardMs, ...logprob };
      if (stopIds.has(token)) {
        yield done('stop');
        return;
      }
    }
    yield done('length');
  }

  /** Entries per scored position: what decoding needs (top-1, or top_k), or more when the caller asked for that many alternatives. */
  private rowSize(sampling: Omit<WireSampling, 'offset'>, logprobs: number | undefined): number {
    const decoding = isGreedy(sampling) ? 1 : sampling.top_k;
    if (logprobs !== undefined && logprobs > this.options.topLogprobs) {
      throw new ApiError(400, `origin ${this.options.id} is a ${this.scorer.kind} engine that returns at most ${this.options.topLogprobs} log-probabilities per position (asked for ${logprobs})`, 'logprobs', 'logprobs_unsupported_by_origin');
    }
    return Math.max(decoding, logprobs ?? 0);
  }

  /**
   * An emitted token's log-probability and alternatives from the engine's row: the engine's own raw
   * log-probabilities (vLLM's default logprobs mode, SGLang's), the same distribution the reference
   * origin reports. The token is always in the row: greedy emits the row's top, sampling draws within top_k ≤ N.
   */
  private rowLogprob(row: Array<[number, number]>, token: number, top: number): { logprob: number; top: Array<[number, number]> } {
    const own = row.find(([id]) => id === token);
    if (!own) throw formatError(this.scorer.kind, this.options.id, `the emitted token ${token} is not among the returned log-probabilities`);
    const sorted = [...row].sort((a, b) => b[1] - a[1] || a[0] - b[0]);
    return { logprob: Math.min(0, own[1]), top: sorted.slice(0, top).map(([id, lp]) => [id, Math.min(0, lp)]) };
  }

  private assertSupported(sampling: Omit<WireSampling, 'offset'>) {
    const reason = this.unsupportedSampling(sampling);
    if (reason) throw new ApiError(400, `${reason}; use a reference origin for this request or set top_k`, 'top_k', 'sampling_unsupported_by_origin');
  }

  /** The processed target distribution from a top-N row: tokens outside it get -Infinity, which top-k (≤ N) would drop anyway. */
  private distribution(row: Array<[number, number]>, sampling: Omit<WireSampling, 'offset'>): Float64Array {
    const logits = new Float64Array(this.options.vocabSize).fill(-Infinity);
    for (const [token, logprob] of row) {
      if (token >= logits.length) throw new ApiError(502, `origin ${this.options.id} returned token ${token} outside the vocabulary (${logits.length})`, null, 'origin_error');
      // JSON turns 1e999 into Infinity: not a log-probability, and processLogits would refuse it mid-verification.
      if (!(logprob < Infinity)) throw formatError(this.scorer.kind, this.options.id, `the log-probability of token ${token} is not a number below +Infinity`);
      logits[token] = logprob;
    }
    return processLogits(logits, sampling);
  }
}

/** The highest log-probability in a row, lower token id on ties (the rule argmax uses). */
export function topToken(row: Array<[number, number]>): number {
  if (row.length === 0) throw new ApiError(502, 'engine returned an empty log-probability row', null, 'origin_error');
  let best = row[0];
  for (const entry of row) if (entry[1] > best[1] || (entry[1] === best[1] && entry[0] < best[0])) best = entry;
  return best[0];
}

/** A response that does not have the documented shape: a gateway failure naming what was expected (never quoting the response). */
export function formatError(kind: string, id: string, what: string): ApiError {
  return new ApiError(502, `origin ${id} (${kind}) answered in an unexpected format: ${what}`, null, 'origin_error');
}
