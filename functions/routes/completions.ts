import { Hono } from 'hono';
import { ApiError } from '../../shared/errors';
import { parseRequest, readJsonBody } from '../../shared/validation';
import { edgeConfig, type EdgeConfig } from '../config';
import { draftEngine, type DraftEngine } from '../draft/engine';
import type { Env } from '../env';
import { completionRequestSchema, type CompletionRequest } from '../openai/request';
import { completionJson, completionStream, type CompletionOutput } from '../openai/respond';
import { newCompletionMeta, usage } from '../openai/response';
import { createOriginClient, type OriginClient } from '../origin';
import { DraftOnlyOrigin, isOriginsUnavailable, withDraftFallback, type FallbackState } from '../origin/draft-only';
import { draftPrefixCache, tenantCacheSalt, tenantOrigin, type TenantVariables } from '../prefix-cache';
import { createProposer, type Proposer } from '../proposers';
import { decode, type GenerationInput, type SpeculationPlan } from '../speculation/loop';
import { newStats, statsToJson } from '../speculation/stats';

export const completions = new Hono<{ Bindings: Env; Variables: TenantVariables }>();

completions.post('/v1/completions', async (c) => {
  const config = edgeConfig(c.env);
  const request = parseRequest(completionRequestSchema, await readJsonBody(c.req.raw));
  if (request.model && request.model !== config.modelId) {
    throw new ApiError(404, `The model '${request.model}' does not exist; this deployment serves '${config.modelId}'.`, 'model', 'model_not_found');
  }
  const engine = await draftEngine(c.env.MODELS, config.draftModel).catch((err: Error) => {
    throw new ApiError(503, `draft model "${config.draftModel}" could not be loaded from the MODELS bucket: ${err.message}`, null, 'draft_unavailable');
  });
  const prompt = tokenizePrompt(request, engine);
  // Origin pool session with affinity to the prompt's first block; `fallback: "draft"` lets the draft answer alone when no origin can.
  const pool = createOriginClient(config, { affinityTokens: prompt, waitUntil: waitUntilOf(c) });
  const fallback: FallbackState = { reason: null, fromToken: 0 };
  const origin: OriginClient =
    request.fallback === 'draft'
      ? withDraftFallback(pool, new DraftOnlyOrigin(createProposer('draft-model', engine, { qEntries: config.draftQEntries }), engine.config), fallback)
      : pool;
  const targetLimits = await originLimits(pool, engine).catch((err: unknown) => {
    if (request.fallback !== 'draft' || !isOriginsUnavailable(err)) throw err;
    fallback.reason = err.message;
    return { maxPositions: engine.config.maxPositions };
  });
  const maxPositions = Math.min(engine.config.maxPositions, targetLimits.maxPositions);
  if (prompt.length >= maxPositions) {
    throw new ApiError(413, `This model's maximum context length is ${maxPositions} tokens; the prompt has ${prompt.length} and leaves no room to generate.`, 'prompt', 'context_length_exceeded');
  }

  const input: GenerationInput = {
    prompt,
    maxTokens: request.max_tokens,
    sampling: {
      temperature: request.temperature,
      top_p: request.top_p,
      top_k: request.top_k,
      seed: request.seed ?? crypto.getRandomValues(new Uint32Array(1))[0],
    },
    stopTokenIds: new Set(engine.config.eosTokenIds),
    maxPositions,
  };
  const plan = speculationPlan(request, config);
  const stats = newStats(plan.mode, plan.draftLength, plan.method);

  // Prefix cache (functions/prefix-cache): the draft starts from the longest cached prefix of the
  // prompt and runs only over the rest; the origin reuses target KV under the same tenant salt.
  const cacheSalt = tenantCacheSalt(c);
  const prefixCache = plan.mode !== 'origin' ? draftPrefixCache(c.env, config, engine, cacheSalt) : null;
  const restored = prefixCache ? await prefixCache.restore(prompt) : null;
  const originCachedTokens: number[] = [];
  const tenantClient = tenantOrigin(origin, cacheSalt, (tokens) => originCachedTokens.push(tokens));
  let proposer: Proposer | null = null;
  const newProposer = () => (proposer = createProposer('draft-model', engine, { qEntries: config.draftQEntries, prefix: restored?.prefix }));
  /** After the response: keep the draft KV's new full blocks (prompt and generated text) for the next request. */
  const storePrefix = () => {
    const state = (proposer as Proposer | null)?.draftKv?.();
    if (prefixCache && restored && state) {
      c.executionCtx.waitUntil(prefixCache.store(state, restored.keys, restored.cachedTokens / config.prefixCache.blockTokens));
    }
  };
  const rounds = decode(input, plan, newProposer, tenantClient, stats, c.req.raw.signal);

  // Run the first round before answering, so an unreachable origin is a clean 5xx, not a broken stream.
  const first = await rounds.next();
  const output: CompletionOutput = {
    meta: newCompletionMeta(config.modelId),
    prompt,
    rounds,
    first,
    tokenizer: engine.tokenizer,
    stop: request.stop,
    returnTokenIds: request.return_token_ids ?? false,
    includeUsageChunk: request.stream_options?.include_usage ?? false,
    final: (completionTokens) => ({
      // Cached prompt tokens: draft KV restored at the edge; origin-only decoding reports the origin's target KV.
      usage: usage(prompt.length, completionTokens, stats.drafted, stats.accepted, restored ? restored.cachedTokens : (originCachedTokens[0] ?? 0)),
      speculation: { ...statsToJson(stats, completionTokens), prompt_cached_tokens: restored?.cachedTokens ?? 0, origin_cached_tokens: originCachedTokens },
      // Draft-only output is not the target's: say so wherever a client looks.
      ...(fallback.reason !== null ? { fallback: { mode: 'draft', from_token: fallback.fromToken, reason: fallback.reason } } : {}),
    }),
    onComplete: storePrefix,
    headers: (): Record<string, string> => (fallback.reason !== null ? { 'x-edgespec-fallback': 'draft' } : {}),
  };
  return request.stream ? completionStream(c, output) : completionJson(c, output);
});

/** waitUntil of the request, when the runtime has one (workerd does; a bare app.request does not). */
function waitUntilOf(c: { executionCtx: { waitUntil(promise: Promise<unknown>): void } }): ((promise: Promise<unknown>) => void) | undefined {
  try {
    const ctx = c.executionCtx;
    return (promise) => ctx.waitUntil(promise.catch(() => {}));
  } catch {
    return undefined;
  }
}

/** The request's `speculation` object over the configured defaults; draft_length 0 means origin-only decoding. */
function speculationPlan(request: CompletionRequest, config: EdgeConfig): SpeculationPlan {
  const spec = request.speculation ?? {};
  const draftLength = spec.draft_length ?? config.draftLength;
  const mode = draftLength === 0 ? 'origin' : (spec.mode ?? config.speculationMode);
  return {
    mode,
    method: spec.method ?? config.verifyMethod,
    draftLength: mode === 'origin' ? 0 : draftLength,
    depth: spec.depth ?? config.pipelineDepth,
    // Early stop is part of adaptive drafting; lockstep and pipelined draft k tokens unless asked.
    minConfidence: spec.min_confidence ?? (mode === 'adaptive' ? config.draftMinConfidence : 0),
  };
}

function tokenizePrompt(request: CompletionRequest, engine: DraftEngine): number[] {
  if (typeof request.prompt === 'string') return engine.tokenizer.encode(request.prompt);
  const vocab = engine.config.vocabSize;
  const bad = request.prompt.findIndex((t) => t >= vocab);
  if (bad >= 0) throw new ApiError(400, `prompt token ${request.prompt[bad]} at index ${bad} is outside the vocabulary (0..${vocab - 1})`, 'prompt', 'invalid_token');
  return request.prompt;
}

/** Target limits from the origin's /health, checked once per isolate against the draft: they must share a vocabulary. */
let limits: Promise<{ maxPositions: number }> | null = null;
function originLimits(origin: OriginClient, engine: DraftEngine): Promise<{ maxPositions: number }> {
  limits ??= origin.health().then((health) => {
    if (health.vocab_size !== engine.config.vocabSize) {
      throw new ApiError(502, `origin model "${health.model}" has vocabulary ${health.vocab_size} but the draft has ${engine.config.vocabSize}: they must share a tokenizer`, null, 'model_mismatch');
    }
    return { maxPositions: health.max_positions };
  });
  limits.catch(() => (limits = null));
  return limits;
}
