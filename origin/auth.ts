import type { MiddlewareHandler } from 'hono';
import { ApiError } from '../shared/errors';
import { checkSignature, DEFAULT_MAX_AGE_MS, SIGNATURE_HEADER, TIMESTAMP_HEADER } from '../shared/origin-auth';

/**
 * Rejects verify/generate requests that are not signed with the shared secret
 * (shared/origin-auth.ts): 401 in OpenAI's error shape, naming what is wrong.
 * The body is read from a clone, so handlers still read the original.
 */
export function requireSignature(secret: string, maxAgeMs = DEFAULT_MAX_AGE_MS): MiddlewareHandler {
  return async (c, next) => {
    const body = await c.req.raw.clone().text();
    const check = await checkSignature(secret, {
      method: c.req.method,
      path: c.req.path,
      body,
      timestamp: c.req.header(TIMESTAMP_HEADER),
      signature: c.req.header(SIGNATURE_HEADER),
    }, Date.now(), maxAgeMs);
    if (!check.ok) throw new ApiError(401, check.message, null, check.code);
    await next();
  };
}
