import { z } from 'zod';
import type { OpenAIErrorBody } from './errors';
import { verifyRequestSchema, verifyResponseSchema, type VerifyResponse } from './protocol';

/**
 * The session protocol (ARCHITECTURE.md: Verify protocol, "Sessions"): one
 * WebSocket per generation between the edge and its origin, so the context
 * crosses once and a round carries only what is new. JSON text frames.
 *
 * Edge → origin:
 *   open    first message; signed like an HTTP request (shared/origin-auth.ts) over
 *           the exact text of `params` with method OPEN and path /v1/session
 *           (WebSocket clients cannot all set headers, so the signature travels in
 *           the message). A bad or replayed signature closes with 1008 and a reason.
 *   verify  one round: the origin rebuilds the context as known.slice(0, keep).concat(append).
 *   cancel  the edge discarded a round (a pipelined block): a pass that has not started is dropped.
 * Origin → edge:
 *   verdict the round's VerifyResponse, with its id.
 *   error   a round (id) or a message (no id) failed, in the OpenAI error shape.
 *
 * `known`, on both sides: empty at open; after every verify message the origin
 * accepted, known = its context + its draft tokens (the sequence the target
 * just ran, whose KV the origin holds). Both sides update it when the message
 * is sent / received, not when the verdict arrives, so with pipelined rounds in
 * flight the edge computes the next diff without waiting. A verify message the
 * origin refuses before rebuilding its context leaves the origin's known empty
 * and its error says `reset: true`: the edge then sends keep 0 next.
 */
export const SESSION_PATH = '/v1/session';
/** The method signed for an open message: never a valid HTTP method of the protocol, so no signed body replays as one. */
export const SESSION_OPEN_METHOD = 'OPEN';

/** WebSocket close codes the protocol uses (RFC 6455 §7.4.1). */
export const CLOSE_NORMAL = 1000;
export const CLOSE_GOING_AWAY = 1001;
/** Policy violation: a missing, bad or replayed signature; a first message that is not an open. */
export const CLOSE_POLICY = 1008;
export const CLOSE_TOO_BIG = 1009;
/** A close reason is at most 123 bytes of UTF-8 (RFC 6455 §5.5: control frame payload ≤ 125). */
export const MAX_CLOSE_REASON_BYTES = 123;

const roundId = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const position = z.number().int().nonnegative();
const v = verifyRequestSchema.shape;

/** What the open message's `params` text holds: the session-wide fields of every verify request. */
export const sessionParamsSchema = z.strictObject({
  model: v.model,
  cache_salt: v.cache_salt,
});
export type SessionParams = z.infer<typeof sessionParamsSchema>;

/** The signature of an open message: the four values HTTP requests carry as headers. */
export const sessionAuthSchema = z.strictObject({
  key_id: z.string().max(64),
  timestamp: z.string().max(16),
  nonce: z.string().max(128),
  signature: z.string().max(80),
});
export type SessionAuth = z.infer<typeof sessionAuthSchema>;

export const sessionOpenSchema = z.strictObject({
  type: z.literal('open'),
  /** JSON text of SessionParams: signed as sent, parsed after the signature checks. */
  params: z.string().max(4096),
  /** Absent for an origin without a key ring (which then accepts any open). */
  auth: sessionAuthSchema.optional(),
});
export type SessionOpen = z.infer<typeof sessionOpenSchema>;

export const sessionVerifySchema = z.strictObject({
  type: z.literal('verify'),
  /** The round's number, unique within the session: the verdict carries it back. */
  id: roundId,
  /** Tokens of `known` that begin this round's context. */
  keep: position,
  /** The context's tokens after those. */
  append: z.array(v.context.element),
  draft: v.draft,
  branches: v.branches,
  sampling: v.sampling,
  method: v.method,
  logprobs: v.logprobs,
});
export type SessionVerify = z.infer<typeof sessionVerifySchema>;

export const sessionCancelSchema = z.strictObject({ type: z.literal('cancel'), id: roundId });

export const sessionClientMessageSchema = z.discriminatedUnion('type', [sessionOpenSchema, sessionVerifySchema, sessionCancelSchema]);
export type SessionClientMessage = z.infer<typeof sessionClientMessageSchema>;

export const sessionVerdictSchema = verifyResponseSchema.extend({ type: z.literal('verdict'), id: roundId });
export type SessionVerdict = VerifyResponse & { type: 'verdict'; id: number };

export const sessionErrorSchema = z.object({
  type: z.literal('error'),
  /** The round it answers; absent when the message itself could not be read. */
  id: roundId.optional(),
  /** The HTTP status POST /v1/verify would have answered. */
  status: z.number().int().min(400).max(599),
  error: z.object({ message: z.string().max(4096), type: z.string().max(64), param: z.string().max(256).nullable(), code: z.string().max(64).nullable() }),
  /** The origin's known is empty now: the next verify must send keep 0. */
  reset: z.boolean().optional(),
});
export type SessionError = { type: 'error'; id?: number; status: number; error: OpenAIErrorBody['error']; reset?: boolean };

export const sessionServerMessageSchema = z.discriminatedUnion('type', [sessionVerdictSchema, sessionErrorSchema]);
export type SessionServerMessage = SessionVerdict | SessionError;

/**
 * Largest verdict or error the edge reads (64 + 1 tokens with 20 alternatives
 * each is ~30 KB of JSON): a larger message is a broken origin.
 */
export const MAX_SERVER_MESSAGE_CHARS = 1 << 20;

/** Tokens `a` and `b` share from the start. */
export function sharedPrefixLength(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

/** A close reason within the 123-byte limit (cut on a character boundary). */
export function closeReason(text: string): string {
  const bytes = new TextEncoder().encode(text);
  if (bytes.length <= MAX_CLOSE_REASON_BYTES) return text;
  let cut = text.slice(0, MAX_CLOSE_REASON_BYTES);
  while (new TextEncoder().encode(cut).length > MAX_CLOSE_REASON_BYTES) cut = cut.slice(0, -1);
  return cut;
}
