import type { Context } from 'hono';
import { ApiError } from '../../shared/errors';

/**
 * Small HTTP helpers shared by the jobs, webhook endpoint and trigger routes:
 * OpenAI-style list pagination and the answers shared/errors.ts has no status for.
 */
export function pageParams(c: Context): { limit: number; after?: string } {
  const limitText = c.req.query('limit');
  const limit = limitText === undefined ? 20 : Number(limitText);
  if (!Number.isInteger(limit) || limit < 1 || limit > 100) throw new ApiError(400, 'limit must be an integer from 1 to 100.', 'limit', 'invalid_value');
  const after = c.req.query('after');
  if (after !== undefined && !/^[a-z]{3}_[0-9a-f]{24}$/.test(after)) throw new ApiError(400, 'after must be an id from a previous page.', 'after', 'invalid_value');
  return { limit, after };
}

export function listJson<T extends { id: string }>(data: T[], hasMore: boolean) {
  return { object: 'list', data, first_id: data[0]?.id ?? null, last_id: data[data.length - 1]?.id ?? null, has_more: hasMore };
}

/** 409 in OpenAI's error shape (ApiError's statuses stop at those the completions API uses). */
export function conflict(c: Context, message: string, code: string, param: string | null = null): Response {
  return c.json({ error: { message, type: 'invalid_request_error', param, code } }, 409);
}
