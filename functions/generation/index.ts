import { ApiError } from '../../shared/errors';
import type { Caller } from '../auth/tenants';
import type { EdgeConfig } from '../config';
import type { EdgeContext } from '../context';
import type { DraftEngine } from '../draft/engine';
import type { Env } from '../env';
import { recordGeneration } from '../metrics';
import { usage, type Usage } from '../openai/response';
import { draftPrefixCache, tenantOrigin } from '../prefix-cache';
import {
  createProposer,
  DEFAULT_MAX_MATCH_DRAFT,
  MATCH_DRAFT_FACTOR,
  predictionUsage,
  proposerFor,
  recordTenantOutput,
  tenantSuffixIndex,
  usesTenantHistory,
  type Proposer,
  type ProposerRequest,
} from '../proposers';
import { PROMPT_LOOKUP_DEFAULTS } from '../proposers/prompt-lookup';
import { reserveUsage } from '../rate-limit';
import { isolateLink } from '../speculation/controller';
import { decode, resolvePlacement, type FinishReason, type GenerationInput, type SpeculationPlan } from '../speculation/loop';
import { GenerationRecord } from '../speculation/record';
import { newStats, statsToJson } from '../speculation/stats';
import { createOriginClient, generationTransport, type OriginClient, type SessionOriginClient } from '../upstream';
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
  speculation?: SpeculationRequest & ProposerRequest;
  /** "draft": when no origin can serve, the draft answers alone (labelled); "none": 503. */
  fallback?: 'none' | 'draft';
  /**
   * The caller's predicted output as token ids (OpenAI's Predicted Outputs,
   * `prediction: {type: "content"}`; `predictionTokens` in functions/openai/request.ts):
   * a deterministic draft (q = δ), tried before any other proposer, and what
   * `accepted_prediction_tokens` / `rejected_prediction_tokens` count against.
   */
  prediction?: number[];
  /** The target's log-probability of each emitted token and this many alternatives (`logprobs`), read from `Generation.record`. */
  logprobs?: number;
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
  /** Every round and emitted token so far, with its source (and logprobs when asked): `speculation.record`, `logprobs`. */
  record: GenerationRecord;
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
  const planned = withMatchDraft(speculationPlan(request.speculation, config, limits), request.speculation, limits.maxDraftLength);
  const prompt = request.prompt;

  // Origin pool session with affinity to the prompt's first block.
  const pool = createOriginClient(config, { affinityTokens: prompt, waitUntil: deps.waitUntil });
  const fallback: FallbackState = { reason: null, fromToken: 0 };
  // The draft-only fallback goes around whatever carries the rounds: the pool, or a session over it (below).
  const withFallback = (verifier: OriginClient): OriginClient =>
    request.fallback === 'draft' ? withDraftFallback(verifier, new DraftOnlyOrigin(createProposer('draft-model', engine, { qEntries: config.draftQEntries }), engine.config), fallback) : verifier;
  const targetLimits = await originLimits(pool, engine).catch((err: unknown) => {
    if (request.fallback !== 'draft' || !isOriginsUnavailable(err)) throw err;
    fallback.reason = 'no origin could serve';
    return { maxPositions: engine.config.maxPositions, drafts: false };
  });
  const maxPositions = Math.min(engine.config.maxPositions, targetLimits.maxPositions);
  let plan: SpeculationPlan = { ...planned, originDrafts: targetLimits.drafts ?? false };
  // Where the clock cannot time drafting (deployed Workers), the controller assumes this cost per drafted token.
  isolateLink.assumedDraftMsPerToken = config.draftMsPerToken;
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
  let transport: SessionOriginClient | null = null;
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
      logprobs: request.logprobs,
      prediction: request.prediction,
      record: new GenerationRecord(request.logprobs !== undefined, () => fallback.reason !== null),
    };
    const stats = newStats(plan.mode, plan.draftLength, plan.method, plan.placement);
    // Placement `auto` is decided here, before draft KV is restored for a Worker that might not draft.
    plan = resolvePlacement(plan, input, stats);
    // Drafting here: verify rounds travel over one session with the origin (ORIGIN_SESSION), opened now so its
    // handshake overlaps the prefix-cache restore and the first draft. Otherwise only the origin's stream is used.
    const edgeDrafts = plan.mode !== 'origin' && plan.draftLength > 0 && plan.placement !== 'origin' && fallback.reason === null;
    transport = edgeDrafts ? generationTransport(config, pool, stats, { cacheSalt: caller.cacheSalt, vocabSize: engine.config.vocabSize }) : null;
    const upstream = withFallback(transport ?? pool);

    // Prefix cache (functions/prefix-cache): the draft starts from the longest cached prefix of the
    // prompt and runs only over the rest; the origin reuses target KV under the same tenant salt.
    const prefixCache = plan.mode !== 'origin' && plan.placement !== 'origin' ? draftPrefixCache(env, config, engine, caller.cacheSalt) : null;
    const restored = prefixCache ? await prefixCache.restore(prompt) : null;
    const originCachedTokens: number[] = [];
    const tenantUpstream = tenantOrigin(upstream, caller.cacheSalt, (tokens) => originCachedTokens.push(tokens));
    let proposer: Proposer | null = null;
    const spec = request.speculation ?? {};
    // The tenant's recent outputs (functions/suffix-history): this isolate's index, filled from the tenant's SuffixHistory object first if it never was.
    const history = usesTenantHistory(spec.proposer ?? config.defaultProposer) ? await tenantSuffixIndex(env, caller.cacheSalt, deps.waitUntil) : null;
    const newProposer = () =>
      (proposer = proposerFor(spec.proposer ?? config.defaultProposer, engine, {
        qEntries: config.draftQEntries,
        prefix: restored?.prefix,
        promptLength: prompt.length,
        prediction: request.prediction,
        // Only ever the caller's own tenant's outputs (keyed by its cache salt).
        history,
        promptLookup: { min: spec.prompt_lookup_min ?? PROMPT_LOOKUP_DEFAULTS.min, max: spec.prompt_lookup_max ?? Math.max(PROMPT_LOOKUP_DEFAULTS.max, spec.prompt_lookup_min ?? 0) },
      }));
    const output: number[] = [];
    const rounds = recorded(decode(input, plan, newProposer, tenantUpstream, stats, signal), output);

    // Run the first round before answering, so an unreachable origin is a clean 5xx, not a broken stream.
    const first = await rounds.next();
    let finished = false;
    return {
      prompt,
      rounds,
      first,
      record: input.record!,
      signal,
      cancel: (reason = 'cancelled') => cancelled.abort(new DOMException(reason, 'AbortError')),
      summary: (completionTokens) => ({
        // Cached prompt tokens: draft KV restored at the edge; origin-only decoding reports the origin's target KV.
        usage: usage(prompt.length, completionTokens, ...predictionCounts(request.prediction, output.slice(0, completionTokens), stats), restored ? restored.cachedTokens : (originCachedTokens[0] ?? 0)),
        speculation: { ...statsToJson(stats, completionTokens), prompt_cached_tokens: restored?.cachedTokens ?? 0, origin_cached_tokens: originCachedTokens },
        ...(fallback.reason !== null ? { fallback: { mode: 'draft' as const, from_token: fallback.fromToken, reason: fallback.reason } } : {}),
      }),
      headers: () => ({ ...reservation.headers, ...(fallback.reason !== null ? { 'x-edgespec-fallback': 'draft' } : {}) }),
      finish({ completionTokens, completed }) {
        if (finished) return;
        finished = true;
        // Whatever is still on the wire (a pipelined block, an origin stream, the session) stops now.
        cancelled.abort(new DOMException('generation finished', 'AbortError'));
        void rounds.return('stop').catch(() => {});
        transport?.close();
        settle(prompt.length + completionTokens);
        recordGeneration({ promptTokens: prompt.length, completionTokens, speculation: statsToJson(stats, completionTokens), draftOnly: fallback.reason !== null }, completed, deps);
        // The tenant's recent outputs feed its suffix drafts (functions/proposers/suffix.ts); a draft-only answer is not the target's.
        if (completed && fallback.reason === null) recordTenantOutput(env, caller.cacheSalt, output.slice(0, completionTokens), deps.waitUntil);
        const drafter = proposer as Proposer | null;
        if (completed && prefixCache && restored && drafter?.draftKv) {
          // Rounds a match or a prediction drafted left the draft model behind: it catches up on the whole
          // prompt and output in one pass (after the response), so the next turn's prefix hits all the same.
          const everything = [...prompt, ...output.slice(0, completionTokens)];
          const kv = (drafter.syncKv ? drafter.syncKv(everything) : Promise.resolve()).then(() => drafter.draftKv!());
          deps.waitUntil(kv.then((draftKv) => prefixCache.store(draftKv, restored.keys, restored.cachedTokens / config.prefixCache.blockTokens)));
        }
      },
    };
  } catch (err) {
    // Nothing was generated: nothing is charged.
    cancelled.abort();
    transport?.close();
    settle(0);
    throw err;
  }
}

/**
 * The plan's match-draft bound: the request's `max_match_draft`, else
 * DEFAULT_MAX_MATCH_DRAFT; a tenant with a `max_draft_length` cap C gets at
 * most MATCH_DRAFT_FACTOR·C (asking for more is a 400, as for the other caps).
 */
function withMatchDraft(plan: SpeculationPlan, spec: ProposerRequest = {}, cap: number | null): SpeculationPlan {
  const tenantCap = cap === null ? null : MATCH_DRAFT_FACTOR * cap;
  if (spec.max_match_draft !== undefined && tenantCap !== null && spec.max_match_draft > tenantCap) {
    throw new ApiError(400, `Invalid value for 'speculation.max_match_draft': at most ${tenantCap} for this API key's tenant (got ${spec.max_match_draft}).`, 'speculation.max_match_draft', 'limit_exceeded');
  }
  const maxMatchDraft = Math.max(plan.draftLength, Math.min(spec.max_match_draft ?? DEFAULT_MAX_MATCH_DRAFT, tenantCap ?? Infinity));
  return { ...plan, maxMatchDraft };
}

/**
 * `usage.completion_tokens_details` as (drafted, accepted) for `usage`: with a
 * prediction, OpenAI's meaning (prediction tokens that appeared in the output
 * / that did not, `predictionUsage`); without one, the speculation's own
 * drafted tokens the target accepted / rejected (edgespec's meaning before
 * Predicted Outputs, kept for its clients).
 */
function predictionCounts(prediction: readonly number[] | undefined, output: readonly number[], stats: { drafted: number; accepted: number }): [number, number] {
  if (!prediction) return [stats.drafted, stats.accepted];
  const { accepted, rejected } = predictionUsage(prediction, output);
  return [accepted + rejected, accepted];
}

/** The rounds, with every emitted token appended to `output` as it passes (the prediction's accounting and the tenant's history read it). */
async function* recorded(rounds: AsyncGenerator<number[], FinishReason>, output: number[]): AsyncGenerator<number[], FinishReason> {
  try {
    for (;;) {
      const step = await rounds.next();
      if (step.done) return step.value;
      output.push(...step.value);
      yield step.value;
    }
  } finally {
    await rounds.return('stop');
  }
}

/**
 * Target limits from the origin's /health, checked once per isolate against the draft: they must share a
 * vocabulary. `drafts`: it hosts a draft, so it can speculate next to the target (an adaptive hand-over goes there).
 */
let limits: Promise<{ maxPositions: number; drafts: boolean }> | null = null;
function originLimits(origin: OriginClient, engine: DraftEngine): Promise<{ maxPositions: number; drafts: boolean }> {
  limits ??= origin.health().then((health) => {
    if (health.vocab_size !== engine.config.vocabSize) {
      console.error(`[edge] origin model "${health.model}" has vocabulary ${health.vocab_size} but the draft has ${engine.config.vocabSize}: they must share a tokenizer`);
      throw new ApiError(502, 'The verifier and the draft model do not match (operator: see the edge log).', null, 'model_mismatch');
    }
    return { maxPositions: health.max_positions, drafts: Boolean(health.draft) };
  });
  limits.catch(() => (limits = null));
  return limits;
}
