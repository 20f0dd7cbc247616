import { ApiError } from '../../shared/errors';
import type { GenerateEvent, GenerateRequest, OriginHealth, VerifyRequest, VerifyResponse } from '../../shared/protocol';
import type { Proposer } from '../proposers';
import type { OriginClient } from './client';

export const DRAFT_ONLY_ID = 'draft-only';

/**
 * The opt-in fallback (`fallback: "draft"`) when no origin can serve: the
 * draft model answers alone. It is an OriginClient whose "verification"
 * accepts every drafted token and adds one more of the draft's own, so the
 * speculation loop runs unchanged. The output is the draft model's, not the
 * target's: the response says so (`fallback` in the body, `x-edgespec-fallback`
 * header), because nothing here is lossless any more.
 */
export class DraftOnlyOrigin implements OriginClient {
  constructor(
    private readonly proposer: Proposer,
    private readonly limits: { vocabSize: number; maxPositions: number },
  ) {}

  async health(): Promise<OriginHealth> {
    return { status: 'ok', id: DRAFT_ONLY_ID, model: this.proposer.name, vocab_size: this.limits.vocabSize, max_positions: this.limits.maxPositions };
  }

  async verify(request: VerifyRequest, _signal?: AbortSignal): Promise<VerifyResponse> {
    const drafted = request.draft.map((d) => d.token);
    const next = await this.proposer.propose([...request.context, ...drafted], 1, { ...request.sampling, offset: request.sampling.offset + drafted.length });
    return { accepted: drafted.length, tokens: [...drafted, ...next.map((d) => d.token)], origin: { id: DRAFT_ONLY_ID, forward_ms: 0, cached_tokens: 0 } };
  }

  async *generate(request: GenerateRequest, signal?: AbortSignal): AsyncGenerator<GenerateEvent> {
    const stopIds = new Set(request.stop_token_ids);
    const context = [...request.context];
    const done = (finish_reason: 'stop' | 'length'): GenerateEvent => ({ type: 'done', finish_reason, origin: { id: DRAFT_ONLY_ID, forward_ms: 0, cached_tokens: 0 } });
    for (let i = 0; i < request.max_tokens; i++) {
      if (signal?.aborted) return;
      const [next] = await this.proposer.propose(context, 1, { ...request.sampling, offset: request.sampling.offset + i });
      if (!next) break;
      context.push(next.token);
      yield { type: 'token', token: next.token, forward_ms: 0 };
      if (stopIds.has(next.token)) {
        yield done('stop');
        return;
      }
    }
    yield done('length');
  }
}

/** True for the pool's "no origin can serve" error (503), the one case the draft may step in. */
export function isOriginsUnavailable(err: unknown): err is ApiError {
  return err instanceof ApiError && err.status === 503 && err.code === 'origin_unreachable';
}

export interface FallbackState {
  /** Why the draft took over; null while the origins serve. */
  reason: string | null;
  /** Tokens generated before the draft took over. */
  fromToken: number;
}

/**
 * The origin pool, switching to the draft for the rest of the generation the
 * first time every origin is unavailable. Tokens already emitted stay (they
 * were the target's); `state` records where the draft took over.
 */
export function withDraftFallback(primary: OriginClient, fallback: OriginClient, state: FallbackState): OriginClient {
  const active = () => (state.reason === null ? primary : fallback);
  const switchOver = (err: ApiError, emitted: number) => {
    state.reason = err.message;
    state.fromToken = emitted;
  };
  return {
    async health() {
      return active().health();
    },
    async verify(request, signal) {
      if (state.reason === null) {
        try {
          return await primary.verify(request, signal);
        } catch (err) {
          if (!isOriginsUnavailable(err)) throw err;
          switchOver(err, request.sampling.offset);
        }
      }
      return fallback.verify(request, signal);
    },
    async *generate(request, signal) {
      const emitted: number[] = [];
      if (state.reason === null) {
        try {
          for await (const event of primary.generate(request, signal)) {
            yield event;
            if (event.type === 'token') emitted.push(event.token);
            if (event.type === 'done') return;
          }
          return;
        } catch (err) {
          if (!isOriginsUnavailable(err)) throw err;
          switchOver(err, request.sampling.offset + emitted.length);
        }
      }
      yield* fallback.generate(
        {
          ...request,
          context: [...request.context, ...emitted],
          max_tokens: request.max_tokens - emitted.length,
          sampling: { ...request.sampling, offset: request.sampling.offset + emitted.length },
        },
        signal,
      );
    },
  };
}
