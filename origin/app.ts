import { Hono } from 'hono';
import { stream } from 'hono/streaming';
import { ApiError, isApiError } from '../shared/errors';
import { generateRequestSchema, verifyRequestSchema, type OriginHealth, type VerifyResponse } from '../shared/protocol';
import { parseRequest, readJsonBody } from '../shared/validation';
import { generateTokens } from './generate';
import type { TargetModel } from './target';
import { verifyDraft } from './verify';

export interface OriginOptions {
  id: string;
  modelName: string;
  target: TargetModel;
}

/** The reference verifier: POST /v1/verify, POST /v1/generate (NDJSON stream), GET /health. */
export function createOriginApp({ id, modelName, target }: OriginOptions) {
  const app = new Hono();

  app.onError((err, c) => {
    const apiError = isApiError(err) ? err : new ApiError(500, `origin failure: ${err.message}`);
    if (!isApiError(err)) console.error('[origin]', err);
    return c.json(apiError.toBody(), apiError.status);
  });
  app.notFound((c) => c.json(new ApiError(404, `no route ${c.req.method} ${c.req.path}`).toBody(), 404));

  app.get('/health', (c) => {
    const health: OriginHealth = {
      status: 'ok',
      id,
      model: modelName,
      vocab_size: target.config.vocabSize,
      max_positions: target.config.maxPositions,
    };
    return c.json(health);
  });

  app.post('/v1/verify', async (c) => {
    const request = parseRequest(verifyRequestSchema, await readJsonBody(c.req.raw));
    const result = await verifyDraft(target, request);
    const body: VerifyResponse = {
      accepted: result.accepted,
      tokens: result.tokens,
      origin: { id, forward_ms: round(result.forwardMs), cached_tokens: result.cachedTokens },
    };
    return c.json(body);
  });

  app.post('/v1/generate', async (c) => {
    const request = parseRequest(generateRequestSchema, await readJsonBody(c.req.raw));
    const events = generateTokens(target, request, c.req.raw.signal);
    // Validate before the first byte so a bad request is a 4xx, not a broken stream.
    const first = await events.next();
    c.header('content-type', 'application/x-ndjson');
    return stream(c, async (out) => {
      const write = (event: object) => out.write(JSON.stringify(event) + '\n');
      try {
        for (let next = first; !next.done; next = await events.next()) {
          const event = next.value;
          await write(event.type === 'done' ? { ...event, origin: { ...event.origin, id, forward_ms: round(event.origin.forward_ms) } } : event);
        }
      } catch (err) {
        await write({ type: 'error', message: (err as Error).message });
      }
    });
  });

  return app;
}

const round = (ms: number) => Math.round(ms * 100) / 100;
