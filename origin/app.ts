import { Hono } from 'hono';
import { stream } from 'hono/streaming';
import { ApiError, isApiError } from '../shared/errors';
import { generateRequestSchema, verifyRequestSchema, type OriginHealth, type VerifyResponse } from '../shared/protocol';
import { parseRequest, readJsonBody } from '../shared/validation';
import { requireSignature } from './auth';
import { generateTokens } from './generate';
import { ForwardQueue } from './queue';
import type { TargetModel } from './target';
import { verifyDraft, type ForwardTarget } from './verify';

export interface OriginOptions {
  id: string;
  modelName: string;
  target: TargetModel;
  /** Shared secret: when set, verify and generate require a valid signature (401 otherwise). */
  secret?: string;
  /** Forward-pass admission; one pass at a time by default. */
  queue?: ForwardQueue;
  /** Execution provider actually in use, reported by /health. */
  device?: string;
  /** Name of the GPU cost model forward passes are held to, reported by /health (benchmarks only). */
  costModel?: string | null;
}

/** The reference verifier: POST /v1/verify, POST /v1/generate (NDJSON stream), GET /health. */
export function createOriginApp({ id, modelName, target, secret, queue = new ForwardQueue(), device = 'cpu', costModel = null }: OriginOptions) {
  const app = new Hono();

  app.onError((err, c) => {
    const apiError = isApiError(err) ? err : new ApiError(500, `origin failure: ${err.message}`);
    if (!isApiError(err)) console.error('[origin]', err);
    return c.json(apiError.toBody(), apiError.status, apiError.headers);
  });
  app.notFound((c) => c.json(new ApiError(404, `no route ${c.req.method} ${c.req.path}`).toBody(), 404));

  app.get('/health', (c) => {
    const health: OriginHealth = {
      status: 'ok',
      id,
      model: modelName,
      vocab_size: target.config.vocabSize,
      max_positions: target.config.maxPositions,
      device,
      auth: secret ? 'hmac-sha256' : 'none',
      queue: queue.stats(),
      cost_model: costModel,
    };
    return c.json(health);
  });

  // Liveness (/health) stays open for load balancers; everything that runs the model is signed.
  if (secret) {
    app.use('/v1/verify', requireSignature(secret));
    app.use('/v1/generate', requireSignature(secret));
  }

  app.post('/v1/verify', async (c) => {
    const request = parseRequest(verifyRequestSchema, await readJsonBody(c.req.raw));
    const { value: result, queueMs } = await queue.run(() => verifyDraft(target, request));
    const body: VerifyResponse = {
      accepted: result.accepted,
      tokens: result.tokens,
      origin: { id, forward_ms: round(result.forwardMs), cached_tokens: result.cachedTokens, queue_ms: round(queueMs) },
    };
    return c.json(body);
  });

  app.post('/v1/generate', async (c) => {
    const request = parseRequest(generateRequestSchema, await readJsonBody(c.req.raw));
    // Each token's forward pass takes its own queue slot, so concurrent streams interleave token by token.
    let queueMs = 0;
    const queued: ForwardTarget = {
      config: target.config,
      logitsFrom: async (tokens, firstRow, cacheSalt) => {
        const pass = await queue.run(() => target.logitsFrom(tokens, firstRow, cacheSalt));
        queueMs += pass.queueMs;
        return pass.value;
      },
    };
    const events = generateTokens(queued, request, c.req.raw.signal);
    // Validate before the first byte so a bad request is a 4xx, not a broken stream.
    const first = await events.next();
    c.header('content-type', 'application/x-ndjson');
    return stream(c, async (out) => {
      const write = (event: object) => out.write(JSON.stringify(event) + '\n');
      try {
        for (let next = first; !next.done; next = await events.next()) {
          const event = next.value;
          await write(event.type === 'done' ? { ...event, origin: { ...event.origin, id, forward_ms: round(event.origin.forward_ms), queue_ms: round(queueMs) } } : event);
        }
      } catch (err) {
        await write({ type: 'error', message: (err as Error).message });
      }
    });
  });

  return app;
}

const round = (ms: number) => Math.round(ms * 100) / 100;
