import type { MiddlewareHandler } from 'hono';
import { ApiError } from '../../shared/errors';
import type { EdgeEnv } from '../context';
import { draftEngine } from '../draft/engine';

/** `c.var.draftEngine`: the isolate's draft model and tokenizer, loaded from R2 on first use. */
export const withDraftEngine: MiddlewareHandler<EdgeEnv> = async (c, next) => {
  const { draftModel } = c.var.config;
  const engine = await draftEngine(c.env.MODELS, draftModel).catch((err: Error) => {
    console.error(`[edge] draft model "${draftModel}" failed to load`, err);
    throw new ApiError(503, 'The draft model is not available right now.', null, 'draft_unavailable');
  });
  c.set('draftEngine', engine);
  await next();
};
