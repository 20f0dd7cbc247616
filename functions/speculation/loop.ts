import { ApiError } from '../../shared/errors';
import type { WireSampling } from '../../shared/protocol';
import type { OriginClient } from '../origin/client';
import type { Proposer } from '../proposers';
import type { SpeculationStats } from './stats';

export interface GenerationInput {
  prompt: readonly number[];
  maxTokens: number;
  /** Sampling for the whole generation; `offset` is filled per round. */
  sampling: Omit<WireSampling, 'offset'>;
  /** Tokens that end generation (end-of-text); emitted, then generation stops. */
  stopTokenIds: ReadonlySet<number>;
  /** Smallest context of draft and target: no position may pass it. */
  maxPositions: number;
}

export type FinishReason = 'stop' | 'length';

/** Wall clock in ms. Inside workerd time only advances across I/O, so draft time there is measured at the await boundaries. */
const now = () => performance.now();

/**
 * Lockstep speculative decoding (DESIGN: Speculative decoding, exactly):
 * propose k tokens at the edge, verify them at the origin in one target pass,
 * emit the accepted tokens plus the target's own next token, repeat.
 * Yields the tokens of each round; returns why generation ended.
 */
export async function* speculativeDecode(
  input: GenerationInput,
  proposer: Proposer,
  origin: OriginClient,
  method: 'token' | 'block',
  draftLength: number,
  stats: SpeculationStats,
): AsyncGenerator<number[], FinishReason> {
  const generated: number[] = [];
  while (generated.length < input.maxTokens) {
    const context = [...input.prompt, ...generated];
    if (context.length >= input.maxPositions) return 'length';
    // The round emits up to k+1 tokens: leave room for the target's extra one.
    const k = Math.max(0, Math.min(draftLength, input.maxTokens - generated.length - 1, input.maxPositions - context.length - 1));
    const sampling = { ...input.sampling, offset: generated.length };

    const draftStarted = now();
    const draft = k > 0 ? await proposer.propose(context, k, sampling) : [];
    const verifyStarted = now();
    const verdict = await origin.verify({ context, draft, sampling, method });
    stats.draftMs += verifyStarted - draftStarted;
    stats.verifyMs += now() - verifyStarted;
    stats.rounds++;
    stats.drafted += draft.length;
    stats.accepted += verdict.accepted;
    stats.originIds.add(verdict.origin.id);
    stats.originForwardMs += verdict.origin.forward_ms;

    const { tokens, finish } = cutAtStop(verdict.tokens, input.stopTokenIds, input.maxTokens - generated.length);
    generated.push(...tokens);
    yield tokens;
    if (finish) return finish;
  }
  return 'length';
}

/** Origin-only decoding through the origin's stream: the baseline, and the path when speculation is off (k = 0). */
export async function* originDecode(
  input: GenerationInput,
  origin: OriginClient,
  stats: SpeculationStats,
  signal?: AbortSignal,
): AsyncGenerator<number[], FinishReason> {
  const started = now();
  const events = origin.generate(
    {
      context: [...input.prompt],
      max_tokens: Math.min(input.maxTokens, input.maxPositions - input.prompt.length),
      sampling: { ...input.sampling, offset: 0 },
      stop_token_ids: [...input.stopTokenIds],
    },
    signal,
  );
  for await (const event of events) {
    if (event.type === 'token') {
      stats.rounds++;
      stats.originForwardMs += event.forward_ms;
      yield [event.token];
    } else if (event.type === 'done') {
      stats.originIds.add(event.origin.id);
      stats.verifyMs = now() - started;
      return event.finish_reason;
    } else {
      throw new ApiError(502, `origin generation failed: ${event.message}`, null, 'origin_error');
    }
  }
  throw new ApiError(502, 'origin stream ended without a done event', null, 'origin_error');
}

function cutAtStop(tokens: number[], stopIds: ReadonlySet<number>, room: number): { tokens: number[]; finish: FinishReason | null } {
  const stopAt = tokens.findIndex((t) => stopIds.has(t));
  if (stopAt >= 0 && stopAt < room) return { tokens: tokens.slice(0, stopAt + 1), finish: 'stop' };
  if (tokens.length >= room) return { tokens: tokens.slice(0, room), finish: 'length' };
  return { tokens, finish: null };
}
