import { z } from 'zod';

/**
 * The edge <-> origin wire protocol. Only token ids (and, for sampled drafts,
 * the draft's exact sparse proposal distribution q) cross the link; text never does.
 */

const tokenId = z.number().int().nonnegative();

export const samplingSchema = z.object({
  temperature: z.number().min(0).max(2),
  top_p: z.number().gt(0).max(1),
  top_k: z.number().int().min(0),
  /** Seed of the counter-based RNG: a seeded request is reproducible. */
  seed: z.number().int().nonnegative().max(2 ** 32 - 1),
  /** Generation position of the first token this call decides (the RNG counter). */
  offset: z.number().int().nonnegative(),
});
export type WireSampling = z.infer<typeof samplingSchema>;

const cacheSaltSchema = z.string().max(256).optional();

export const draftTokenSchema = z.object({
  token: tokenId,
  /** Sparse [token, prob] pairs the draft sampled from; absent = deterministic proposal. */
  q: z.array(z.tuple([tokenId, z.number().min(0).max(1)])).max(4096).optional(),
});

export const verifyRequestSchema = z.object({
  model: z.string().optional(),
  /** Every token before the draft: prompt plus tokens generated so far. */
  context: z.array(tokenId).min(1),
  draft: z.array(draftTokenSchema).max(64),
  sampling: samplingSchema,
  method: z.enum(['token', 'block']).default('token'),
  /** The tenant's prefix-cache salt: target KV is only reused within one salt (shared/prefix-cache). */
  cache_salt: cacheSaltSchema,
});
export type VerifyRequest = z.infer<typeof verifyRequestSchema>;

export interface OriginStats {
  /** Which origin answered (its configured id). */
  id: string;
  /** Time in the target's forward pass for this call. */
  forward_ms: number;
  /** Context tokens whose target KV was already held, so not recomputed. */
  cached_tokens: number;
  /** Time this call waited for the origin's forward-pass queue (reference origin). */
  queue_ms?: number;
}

export interface VerifyResponse {
  /** Drafted tokens accepted. */
  accepted: number;
  /** The accepted drafts followed by exactly one token from the target (correction or bonus). */
  tokens: number[];
  origin: OriginStats;
}

export const generateRequestSchema = z.object({
  model: z.string().optional(),
  context: z.array(tokenId).min(1),
  max_tokens: z.number().int().positive(),
  sampling: samplingSchema,
  /** Generation stops after emitting any of these (end-of-text). */
  stop_token_ids: z.array(tokenId).default([]),
  /** The tenant's prefix-cache salt: target KV is only reused within one salt (shared/prefix-cache). */
  cache_salt: cacheSaltSchema,
});
export type GenerateRequest = z.infer<typeof generateRequestSchema>;

/** One line of the origin's newline-delimited JSON stream for /v1/generate. */
export type GenerateEvent =
  | { type: 'token'; token: number; forward_ms: number }
  | { type: 'done'; finish_reason: 'stop' | 'length'; origin: OriginStats }
  | { type: 'error'; message: string };

export interface OriginHealth {
  status: 'ok';
  id: string;
  model: string;
  vocab_size: number;
  max_positions: number;
  /** Reference origin: execution provider in use ("cpu", "cuda"). */
  device?: string;
  /** Reference origin: "hmac-sha256" when verify/generate require signatures, "none" otherwise. */
  auth?: string;
  /** Reference origin: forward-pass queue (concurrency, running, waiting, served, mean_queue_ms). */
  queue?: { concurrency: number; running: number; waiting: number; served: number; mean_queue_ms: number };
  /** Reference origin: the GPU cost model forward passes are held to (benchmarks), or null for measured timing. */
  cost_model?: string | null;
}
