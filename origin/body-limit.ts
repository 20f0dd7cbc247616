import type { MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { ApiError } from '../shared/errors';

/**
 * The largest body a valid verify/generate request can have, from the bounds
 * of shared/protocol.ts as JSON.stringify writes them (the edge sends no
 * whitespace):
 *
 * - draft: at most 64 entries, each with up to 4096 q pairs. A pair is at
 *   most `[1234567,1.2345678901234567e-100],` = 34 bytes (a 7-digit token id,
 *   a double's longest shortest-round-trip form), so 64 × 4096 × 34 B ≈ 8.5 MiB.
 *   The edge actually sends ≤ 16 × 256 pairs (≈ 140 KB): the cap is the
 *   protocol's, not today's edge's, so a future edge is not refused.
 * - context: at most `maxPositions` token ids of ≤ 8 bytes each (0.9 MiB for
 *   a 128k-position model, 8 KiB for the shipped target).
 * - the rest (sampling, method, cache_salt ≤ 256 chars even fully escaped,
 *   per-entry keys): under 16 KiB.
 *
 * Anything larger cannot parse into a valid request, so refusing it before
 * reading loses nothing and bounds what an unsigned client can make us buffer.
 */
export function protocolBodyLimit(maxPositions: number): number {
  const draft = 64 * (4096 * 34 + 32);
  const context = maxPositions * 8;
  return draft + context + 16 * 1024;
}

/**
 * 413 in OpenAI's shape for a body over `maxBytes`. hono/body-limit refuses a
 * too-large `content-length` without reading a byte, and counts a chunked body
 * while reading it, stopping at the cap; Node's HTTP parser never delivers more
 * than a declared content-length, so the declared length is the real bound.
 */
export function limitBody(maxBytes: number): MiddlewareHandler {
  const mib = Math.round((maxBytes / 2 ** 20) * 100) / 100;
  return bodyLimit({
    maxSize: maxBytes,
    onError: () => {
      throw new ApiError(413, `Request body exceeds this origin's limit of ${mib} MiB (--max-body-mb / ORIGIN_MAX_BODY_MB).`, null, 'body_too_large');
    },
  });
}
