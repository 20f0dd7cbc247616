import { ApiError } from '../../shared/errors';

/**
 * What a client may see of a failure. Its own mistakes (4xx) are explained in
 * full: they are about its request. Server-side failures (5xx) say what kind
 * of failure it was and the request id, nothing more: no origin URL, origin
 * id or exception text reaches the internet. The whole error goes to the log
 * under the same request id (the `x-request-id` response header).
 */
const PUBLIC_MESSAGES: Record<string, string> = {
  origin_unreachable: 'No verifier can serve this request right now. Retry after the Retry-After delay.',
  origin_timeout: 'The verifier did not answer in time.',
  origin_overloaded: 'The verifiers are overloaded. Retry shortly.',
  draft_unavailable: 'The draft model is not available right now.',
  model_mismatch: 'The verifier and the draft model do not match; the operator has to fix the deployment.',
};

export function publicError(err: unknown, requestId: string): ApiError {
  if (err instanceof ApiError && err.status < 500) return err;
  const status = err instanceof ApiError ? err.status : 500;
  const code = err instanceof ApiError ? (err.code ?? 'server_error') : 'internal_error';
  const known = PUBLIC_MESSAGES[code] ?? (code.startsWith('origin_') ? 'The verifier failed while generating.' : 'Internal error.');
  console.error(`[edge] request ${requestId}: ${status} ${code}:`, err instanceof Error ? (err.stack ?? err.message) : err);
  const error = new ApiError(status, `${known} (request id ${requestId})`, null, code);
  if (err instanceof ApiError && err.headers) error.headers = err.headers;
  return error;
}

/** A client that went away is not a failure: nobody is left to answer. */
export function isCancellation(err: unknown): boolean {
  return err instanceof Error && (err.name === 'AbortError' || (err as DOMException).code === 20);
}
