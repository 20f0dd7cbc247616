import { ApiError } from '../../shared/errors';
import type { Caller } from '../auth/tenants';
import type { EdgeConfig } from '../config';
import type { EdgeContext } from '../context';
import type { DraftEngine } from '../draft/engine';
import type { Env } from '../env';
import { usage, type Usage } from '../openai/response';
import { draftPrefixCache, tenantOrigin } from '../prefix-cache';
import { createProposer, type Proposer } from '../proposers';
import { reserveUsage } from '../rate-limit';
import { decode, type FinishReason, type GenerationInput } from '../speculation/loop';
import { newStats, statsToJson } from '../speculation/stats';
import { createOriginClient, type OriginClient } from '../upstream';
import { DraftOnlyOrigin, isOriginsUnavailable, withDraftFallback, type FallbackState } from '../upstream/draft-only';
import { checkMaxTokens, speculationPlan, type SpeculationRequest } from './plan';

/**
 * The generation pipeline every entry point calls (completions, chat, the job
 * consumer): a tokenized request in, rounds of token ids and final stats out.
 * It owns everything between: the tenant's caps and rate limits, the upstream
 * session with prefix affinity, the draft fallback, the prefix cache, the
 * speculation plan, cancellation and charging. No route knows about any of it.
 */
export interface GenerationRequest {
  prompt: number[];
  maxTokens: number;
  sampling: { temperature: number; top_p: number; top_k: number; seed?: number | null };
  speculation?: SpeculationRequest;
  /** "draft": when no origin can serve, the draft answers alone (labelled); "none": 503. */
  fallback?: 'none' | 'draft';
  /**
   * The caller's predicted output as token ids (OpenAI's Predicted Outputs,
   * `prediction: {type: "content"}`): a deterministic draft (q = δ), tried
   * before any other proposer. Not wired yet.
   */
  prediction?: number[];
}

/** What the pipeline needs from its caller; a route builds it from the Hono context (`generationDeps`). */
export interface GenerationDeps {
  env: Env;
  config: EdgeConfig;
  caller: Caller;
  engine: DraftEngine;
  /** Aborted when the client goes away (request.signal with enable_request_signal). */
  signal: AbortSignal;
  waitUntil(promise: Promise<unknown>): void;
}

export interface GenerationSummary {
  usage: Usage;
  speculation: Record<string, unknown>;
  /** Present when the draft answered alone: the output is not the target's. */
  fallback?: { mode: 'draft'; from_token: number; reason: string };
}

export interface Generation {
  prompt: readonly number[];
  /** The generation; its first round has already run (`first`), so failures before any output are clean errors. */
  rounds: AsyncGenerator<number[], FinishReason>;
  first: IteratorResult<number[], FinishReason>;
  summary(completionTokens: number): GenerationSummary;
  /** Response headers (rate limits, fallback), asked as late as possible. */
  headers(): Record<string, string>;
  /** Aborted when the client leaves or `cancel` is called: every upstream call of this generation listens to it. */
  signal: AbortSignal;
  cancel(reason?: string): void;
  /**
   * Exactly once, when the response is over (completed, failed or cut short):
   * charges the tenant for the tokens generated, and keeps the prefix blocks
   * of a completed generation for the next request.
   */
  finish(outcome: { completionTokens: number; completed: boolean }): void;
}

export function generationDeps(c: EdgeContext): GenerationDeps {
  return {
    env: c.env,
    config: c.var.config,
    caller: c.var.caller,
    engine: c.var.draftEngine,
    signal: c.req.raw.signal,
    waitUntil: (promise) => c.executionCtx.waitUntil(promise.catch((err) => console.error('[edge] background task failed', err))),
  };
}

export async function startGeneration(deps: GenerationDeps, request: GenerationRequest): Promise<Generation> {
  const { env, config, caller, engine } = deps;
  const limits = caller.tenant.limits;
  checkMaxTokens(request.maxTokens, limits);
  const plan = speculationPlan(request.speculation, config, limits);
  const prompt = request.prompt;

  // Origin pool session with affinity to the prompt's first block.
  const pool = createOriginClient(config, { affinityTokens: prompt, waitUntil: deps.waitUntil });
  const fallback: FallbackState = { reason: null, fromToken: 0 };
  const upstream: OriginClient =
    request.fallback === 'draft'
      ? withDraftFallback(pool, new DraftOnlyOrigin(createProposer('draft-model', engine, { qEntries: config.draftQEntries }), engine.config), fallback)
      : pool;
  const targetLimits = await originLimits(pool, engine).catch((err: unknown) => {
    if (request.fallback !== 'draft' || !isOriginsUnavailable(err)) throw err;
    fallback.reason = 'no origin could serve';
    return { maxPositions: engine.config.maxPositions };
  });
  const maxPositions = Math.min(engine.config.maxPositions, targetLimits.maxPositions);
  if (prompt.length >= maxPositions) {
    throw new ApiError(413, `This model's maximum context length is ${maxPositions} tokens; the prompt has ${prompt.length} and leaves no room to generate.`, 'prompt', 'context_length_exceeded');
  }

  // Rate limits: reserve the most this request can use; `finish` charges what it did.
  const reservation = await reserveUsage(env, caller, prompt.length + request.maxTokens);
  // Register the settlement with waitUntil now, not at the end: when a client disconnects, the runtime
  // cancels the invocation unless a waitUntil is already pending, and the refund would never be sent.
  let settle!: (usedTokens: number) => void;
  deps.waitUntil(new Promise<number>((resolve) => (settle = resolve)).then((used) => reservation.settle(used)));
  const cancelled = new AbortController();
  const signal = AbortSignal.any([deps.signal, cancelled.signal]);
  try {
    const input: GenerationInput = {
      prompt,
      maxTokens: request.maxTokens,
      sampling: {
        temperature: request.sampling.temperature,
        top_p: request.sampling.top_p,
        top_k: request.sampling.top_k,
        seed: request.sampling.seed ?? crypto.getRandomValues(new Uint32Array(1))[0],
      },
      stopTokenIds: new Set(engine.config.eosTokenIds),
      maxPositions,
    };
    const stats = newStats(plan.mode, plan.draftLength, plan.method);

    // Prefix cache (functions/prefix-cache): the draft starts from the longest cached prefix of the
    // prompt and runs only over the rest; the origin reuses target KV under the same tenant salt.
    const prefixCache = plan.mode !== 'origin' ? draftPrefixCache(env, config, engine, caller.cacheSalt) : null;
    const restored = prefixCache ? await prefixCache.restore(prompt) : null;
    const originCachedTokens: number[] = [];
    const tenantUpstream = tenantOrigin(upstream, caller.cacheSalt, (tokens) => originCachedTokens.push(tokens));
    let proposer: Proposer | null = null;
    const newProposer = () => (proposer = createProposer('draft-model', engine, { qEntries: config.draftQEntries, prefix: restored?.prefix }));
    const rounds = decode(input, plan, newProposer, tenantUpstream, stats, signal);

    // Run the first round before answering, so an unreachable origin is a clean 5xx, not a broken stream.
    const first = await rounds.next();
    let finished = false;
    return {
      prompt,
      rounds,
      first,
      signal,
      cancel: (reason = 'cancelled') => cancelled.abort(new DOMException(reason, 'AbortError')),
      summary: (completionTokens) => ({
        // Cached prompt tokens: draft KV restored at the edge; origin-only decoding reports the origin's target KV.
        usage: usage(prompt.length, completionTokens, stats.drafted, stats.accepted, restored ? restored.cachedTokens : (originCachedTokens[0] ?? 0)),
        speculation: { ...statsToJson(stats, completionTokens), prompt_cached_tokens: restored?.cachedTokens ?? 0, origin_cached_tokens: originCachedTokens },
        ...(fallback.reason !== null ? { fallback: { mode: 'draft' as const, from_token: fallback.fromToken, reason: fallback.reason } } : {}),
      }),
      headers: () => ({ ...reservation.headers, ...(fallback.reason !== null ? { 'x-edgespec-fallback': 'draft' } : {}) }),
      finish({ completionTokens, completed }) {
        if (finished) return;
        finished = true;
        // Whatever is still on the wire (a pipelined block, an origin stream) stops now.
        cancelled.abort(new DOMException('generation finished', 'AbortError'));
        void rounds.return('stop').catch(() => {});
        settle(prompt.length + completionTokens);
        const draftKv = (proposer as Proposer | null)?.draftKv?.();
        if (completed && prefixCache && restored && draftKv) {
          deps.waitUntil(prefixCache.store(draftKv, restored.keys, restored.cachedTokens / config.prefixCache.blockTokens));
        }
      },
    };
  } catch (err) {
    // Nothing was generated: nothing is charged.
    cancelled.abort();
    settle(0);
    throw err;
  }
}

/** Target limits from the origin's /health, checked once per isolate against the draft: they must share a vocabulary. */
let limits: Promise<{ maxPositions: number }> | null = null;
function originLimits(origin: OriginClient, engine: DraftEngine): Promise<{ maxPositions: number }> {
  limits ??= origin.health().then((health) => {
    if (health.vocab_size !== engine.config.vocabSize) {
      console.error(`[edge] origin model "${health.model}" has vocabulary ${health.vocab_size} but the draft has ${engine.config.vocabSize}: they must share a tokenizer`);
      throw new ApiError(502, 'The verifier and the draft model do not match (operator: see the edge log).', null, 'model_mismatch');
    }
    return { maxPositions: health.max_positions };
  });
  limits.catch(() => (limits = null));
  return limits;
}
