import { z } from 'zod';

/**
 * POST /v1/completions body: OpenAI's fields, plus vLLM's `top_k` and an
 * edgespec `speculation` object. Fields OpenAI defines but edgespec does not
 * implement are accepted only at their neutral value, so a client never gets
 * silently different behaviour.
 */
/**
 * A stop string is matched against the text of every round and the last
 * (longest stop − 1) characters are held back from the stream, so its length
 * is bounded; 256 characters is far beyond any stop sequence in use.
 */
const stopString = z.string().min(1, 'stop strings must not be empty').max(256, 'a stop string has at most 256 characters');

export const completionRequestSchema = z.strictObject({
  model: z.string().min(1).optional(),
  prompt: z.union([
    z.string().min(1, 'prompt must not be empty'),
    z.array(z.number().int().nonnegative()).min(1, 'prompt token list must not be empty'),
    z.array(z.string()).length(1, 'one prompt per request: batches of prompts are not supported').transform((p) => p[0]),
    z.array(z.array(z.number().int().nonnegative()).min(1)).length(1, 'one prompt per request: batches of prompts are not supported').transform((p) => p[0]),
  ]),
  max_tokens: z.number().int().min(1).max(4096).nullish().transform((v) => v ?? 16),
  temperature: z.number().min(0).max(2).nullish().transform((v) => v ?? 1),
  top_p: z.number().gt(0).max(1).nullish().transform((v) => v ?? 1),
  top_k: z.number().int().min(-1).nullish().transform((v) => (v == null || v === -1 ? 0 : v)),
  seed: z.number().int().min(0).max(2 ** 32 - 1).nullish(),
  stop: z
    .union([stopString, z.array(stopString).max(4)])
    .nullish()
    .transform((v) => (v == null ? [] : typeof v === 'string' ? [v] : v)),
  stream: z.boolean().nullish().transform((v) => v ?? false),
  stream_options: z.object({ include_usage: z.boolean().optional() }).nullish(),
  n: z.literal(1, 'n must be 1: edgespec returns one choice').nullish(),
  best_of: z.literal(1, 'best_of must be 1').nullish(),
  echo: z.literal(false, 'echo is not supported').nullish(),
  logprobs: z.literal(0, 'logprobs is not supported').nullish(),
  frequency_penalty: z.literal(0, 'frequency_penalty is not supported').nullish(),
  presence_penalty: z.literal(0, 'presence_penalty is not supported').nullish(),
  suffix: z.null('suffix is not supported').optional(),
  user: z.string().max(256).optional(),
  /** vLLM's extension: also return the prompt's and the completion's token ids. */
  return_token_ids: z.boolean().optional(),
  /** edgespec: "draft" lets the draft model answer alone when no origin can (labelled in the response); "none" (default) answers 503. */
  fallback: z.enum(['none', 'draft']).optional(),
  speculation: z
    .strictObject({
      /** Draft tokens per round; 0 turns speculation off (origin-only decoding). */
      draft_length: z.number().int().min(0).max(16).optional(),
      method: z.enum(['token', 'block']).optional(),
      /** lockstep: one verify round in flight; pipelined: up to `depth`; adaptive: the controller picks k or hands over to the origin; origin: no drafting. */
      mode: z.enum(['origin', 'lockstep', 'pipelined', 'adaptive']).optional(),
      depth: z.number().int().min(1).max(8).optional(),
      /** Early stop when the draft's top probability falls below this (0 = off). */
      min_confidence: z.number().min(0).max(1).optional(),
    })
    .optional(),
});

export type CompletionRequest = z.infer<typeof completionRequestSchema>;
