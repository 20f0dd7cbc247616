import { Hono, type Context } from 'hono';
import { stream } from 'hono/streaming';
import { ApiError, isApiError } from '../shared/errors';
import type { KeyRing } from '../shared/origin-auth';
import { PROMETHEUS_CONTENT_TYPE } from '../shared/metrics';
import { generateRequestSchema, verifyRequestSchema, type OriginHealth, type VerifyRequest, type VerifyResponse } from '../shared/protocol';
import { parseRequest } from '../shared/validation';
import { requireSignature } from './auth';
import { limitBody, protocolBodyLimit } from './body-limit';
import type { CausalLM } from '../shared/model';
import { generateTokens } from './generate';
import { targetBatcher } from './batcher';
import type { HoldStats } from './cost-model';
import { metricsAuth, observeOriginRequests, originMetrics, readQueue } from './metrics';
import { ForwardQueue } from './queue';
import { SeenSignatures } from './replay';
import { OriginSessions } from './session';
import { speculateTokens } from './speculate';
import type { TargetModel } from './target';
import { verifyDraft, type ForwardTarget } from './verify';

export interface OriginOptions {
  id: string;
  modelName: string;
  target: TargetModel;
  /** Secrets by key id (origin/auth.ts parseOriginKeys): when any is set, verify and generate require a valid signature (401 otherwise). */
  keys?: KeyRing;
  /** Signatures already accepted (replay protection); a fresh cache by default. */
  seenSignatures?: SeenSignatures;
  /** Largest request body read (413 beyond); by default the largest valid request for this target (origin/body-limit.ts). */
  maxBodyBytes?: number;
  /** Forward-pass admission; one pass at a time, unbatched, by default (origin/main.ts: `--max-batch`). */
  queue?: ForwardQueue;
  /** Execution provider actually in use, reported by /health. */
  device?: string;
  /** Name of the GPU cost model forward passes are held to, reported by /health (benchmarks only). */
  costModel?: string | null;
  /** The cost model's running totals (origin/cost-model.ts holdForwardPasses), exported by /metrics. */
  holdStats?: HoldStats | null;
  /** A draft model to speculate with next to the target (`--draft`): /v1/generate with `speculate` uses it; /health names it. */
  draft?: { name: string; lm: CausalLM } | null;
  /** WebSocket sessions (origin/session.ts): how many at once, and when an idle one closes. */
  sessions?: { maxSessions?: number; idleTimeoutMs?: number };
}

export interface Origin {
  app: Hono;
  /** The session endpoint, GET /v1/session: attach it to the HTTP server that serves `app` (origin/main.ts). */
  sessions: OriginSessions;
}

/** The reference verifier's HTTP app (no sessions: they need the Node server, see createOrigin). */
export function createOriginApp(options: OriginOptions): Hono {
  return createOrigin(options).app;
}

/** The reference verifier: POST /v1/verify, POST /v1/generate (NDJSON stream), GET /health, GET /metrics (origin/metrics.ts), and WebSocket sessions. */
export function createOrigin({
  id,
  modelName,
  target,
  keys = new Map(),
  seenSignatures = new SeenSignatures(),
  maxBodyBytes = protocolBodyLimit(target.config.maxPositions),
  queue = new ForwardQueue(),
  device = 'cpu',
  costModel = null,
  holdStats = null,
  draft = null,
  sessions: sessionOptions = {},
}: OriginOptions): Origin {
  const app = new Hono();
  const signed = keys.size > 0;
  const metrics = originMetrics();
  // Every pass goes through the queue, which batches the rows waiting together into one forward pass (origin/batcher.ts).
  const batcher = targetBatcher(target, queue, metrics);
  /** One verify round, for POST /v1/verify and for session rounds alike: one queue, one cost model, one set of metrics. */
  const verifyRound = async (request: VerifyRequest, signal: AbortSignal): Promise<VerifyResponse> => {
    // A verify whose client left while it waited (a discarded pipelined block) is dropped before its pass.
    const result = await verifyDraft(batcher.target('verify', signal), request);
    metrics.tokensVerified.inc({}, request.draft.length);
    metrics.tokensGenerated.inc({ endpoint: 'verify' }, result.tokens.length);
    return {
      accepted: result.accepted,
      tokens: result.tokens,
      ...(result.path ? { path: result.path } : {}),
      ...(result.logprobs ? { logprobs: result.logprobs } : {}),
      origin: { id, forward_ms: round(result.forwardMs), cached_tokens: result.cachedTokens, queue_ms: round(result.queueMs ?? 0) },
    };
  };

  // GET /v1/session (origin/session.ts): its rounds are verifyRound too.
  const sessions = new OriginSessions({
    keys,
    seenSignatures,
    limits: { vocabSize: target.config.vocabSize, maxPositions: target.config.maxPositions },
    maxMessageBytes: maxBodyBytes,
    verifyRound,
    holdSequence: (cacheSalt) => target.kv.hold(cacheSalt),
    ...sessionOptions,
    onSessionCount: (open) => metrics.sessions.set({}, open),
  });

  app.onError((err, c) => {
    // The client left before its pass started (ForwardQueue dropped it): nobody reads this answer, nothing to log.
    if (err.name === 'AbortError') return new Response(null, { status: 499 });
    const apiError = isApiError(err) ? err : new ApiError(500, `origin failure: ${err.message}`);
    if (!isApiError(err)) console.error('[origin]', err);
    return c.json(apiError.toBody(), apiError.status, apiError.headers);
  });
  app.notFound((c) => c.json(new ApiError(404, `no route ${c.req.method} ${c.req.path}`).toBody(), 404));
  app.use('*', observeOriginRequests(metrics));

  app.get('/health', (c) => {
    const health: OriginHealth = {
      status: 'ok',
      id,
      model: modelName,
      vocab_size: target.config.vocabSize,
      max_positions: target.config.maxPositions,
      device,
      auth: signed ? 'hmac-sha256' : 'none',
      queue: queue.stats(),
      cost_model: costModel,
      draft: draft?.name ?? null,
      ...(sessions.attached ? { session: true } : {}),
    };
    return c.json(health);
  });

  app.get('/metrics', metricsAuth(keys), (c) => {
    readQueue(metrics, queue, holdStats);
    return c.body(metrics.registry.render(), 200, { 'content-type': PROMETHEUS_CONTENT_TYPE, 'cache-control': 'no-store' });
  });

  // Liveness (/health) stays open for load balancers; everything that runs the model is capped, then signed.
  // Order: body limit (before a byte is read) → signature (over the raw text) → JSON parse → zod.
  for (const path of ['/v1/verify', '/v1/generate']) {
    app.use(path, limitBody(maxBodyBytes));
    if (signed) app.use(path, requireSignature({ keys, seen: seenSignatures }));
  }

  app.post('/v1/verify', async (c) => {
    const request = parseRequest(verifyRequestSchema, await jsonBody(c));
    return c.json(await verifyRound(request, c.req.raw.signal));
  });


  app.post('/v1/generate', async (c) => {
    const request = parseRequest(generateRequestSchema, await jsonBody(c));
    // The edge gone means no more forward passes: @hono/node-server aborts the request's signal when the
    // connection closes before the response finished; the stream's own abort (its reader cancelled)
    // covers every other adapter. generateTokens checks before each pass, the queue drops a waiting one.
    const streamGone = new AbortController();
    const signal = AbortSignal.any([c.req.raw.signal, streamGone.signal]);
    // Each token's forward pass queues on its own, so concurrent streams share passes token by token (batching).
    let queueMs = 0;
    const batched = batcher.target('generate', signal);
    const queued: ForwardTarget = {
      config: target.config,
      logitsFrom: async (tokens, firstRow, cacheSalt) => {
        const pass = await batched.logitsFrom(tokens, firstRow, cacheSalt);
        queueMs += pass.queueMs ?? 0;
        return pass;
      },
    };
    // `speculate` without a draft here: decode alone, which gives the same tokens (the edge reads /health's `draft`).
    const events = request.speculate && draft ? speculateTokens(queued, draft.lm, { ...request, speculate: request.speculate }, signal) : generateTokens(queued, request, signal);
    // Validate before the first byte so a bad request is a 4xx, not a broken stream.
    const first = await events.next();
    c.header('content-type', 'application/x-ndjson');
    return stream(c, async (out) => {
      out.onAbort(() => streamGone.abort(new DOMException('the client closed the generate stream', 'AbortError')));
      const write = (event: object) => out.write(JSON.stringify(event) + '\n');
      try {
        for (let next = first; !next.done; next = await events.next()) {
          const event = next.value;
          if (event.type === 'token') metrics.tokensGenerated.inc({ endpoint: 'generate' });
          await write(event.type === 'done' ? { ...event, origin: { ...event.origin, id, forward_ms: round(event.origin.forward_ms), queue_ms: round(queueMs) } } : event);
        }
      } catch (err) {
        await write({ type: 'error', message: (err as Error).message });
      }
    });
  });

  return { app, sessions };
}

const round = (ms: number) => Math.round(ms * 100) / 100;

/** The body as JSON; Hono caches the text, so the signature check and this read it once. Malformed JSON is the client's error. */
async function jsonBody(c: Context): Promise<unknown> {
  const text = await c.req.text();
  if (!text.trim()) throw new ApiError(400, 'Request body is empty; expected a JSON object.', null, 'invalid_json');
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(400, 'Request body is not valid JSON.', null, 'invalid_json');
  }
}
