import { z } from 'zod';
import { ApiError } from '../../shared/errors';
import type { DraftEngine } from '../draft/engine';
import { MAX_TOP_LOGPROBS } from '../../shared/sampling/logprobs';
import { PROPOSER_KINDS } from '../proposers/kinds';

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

/** How many tokens a request may ask to generate (completions' max_tokens, chat's max_completion_tokens / max_tokens). */
export const tokenBudget = z.number().int().min(1).max(4096);

/** edgespec's `speculation` object, the same for every entry point (completions, chat). */
export const speculationSchema = z
  .strictObject({
    /** Draft tokens per round; 0 turns speculation off (origin-only decoding). */
    draft_length: z.number().int().min(0).max(16).optional(),
    method: z.enum(['token', 'block']).optional(),
    /** lockstep: one verify round in flight; pipelined: up to `depth`; adaptive: the controller picks k or hands over to the origin; branch-ahead: lockstep, drafting the next block for the likeliest verdicts while one is on the wire; origin: no drafting. */
    mode: z.enum(['origin', 'lockstep', 'pipelined', 'adaptive', 'branch-ahead']).optional(),
    depth: z.number().int().min(1).max(8).optional(),
    /** Multi-path drafts: up to this many alternative tokens beside the draft model's path, where it was least sure, scored in the same target pass (0 = one path). */
    branches: z.number().int().min(0).max(8).optional(),
    /** Multi-path drafts: each alternative continued by the draft to this many tokens (at most the path's depth; 1 = the alternative alone). */
    branch_length: z.number().int().min(1).max(16).optional(),
    /** Early stop when the draft's top probability falls below this (0 = off). */
    min_confidence: z.number().min(0).max(1).optional(),
    /** How drafts are made: the draft model, n-gram lookup in the context, suffix matching over the context and the tenant's recent outputs, or per round the best of them. */
    proposer: z.enum(PROPOSER_KINDS).optional(),
    /** Longest draft a match or a prediction may propose in one round (default 2 × draft_length; the verify protocol takes 64). */
    max_match_draft: z.number().int().min(1).max(64).optional(),
    /** vLLM's prompt lookup n-gram bounds (`proposer: "prompt-lookup"`). */
    prompt_lookup_min: z.number().int().min(1).max(32).optional(),
    prompt_lookup_max: z.number().int().min(1).max(32).optional(),
    /** Where drafts are made: in this Worker ("edge"), next to the target ("origin", an origin started with --draft; others decode alone), or "auto" (the default): chosen per request from measured link delay, acceptance and costs. */
    placement: z.enum(['auto', 'edge', 'origin']).optional(),
    /** Return what happened to every token and round (`speculation.record`; streamed: `speculation_record` on each chunk). */
    record: z.boolean().optional(),
  })
  .refine((s) => (s.prompt_lookup_min ?? 1) <= (s.prompt_lookup_max ?? 32), { message: 'prompt_lookup_min must not exceed prompt_lookup_max', path: ['prompt_lookup_min'] });

/**
 * OpenAI's Predicted Outputs (`prediction: {type: "content", content}`):
 * text the output is expected to (mostly) repeat. edgespec drafts from it
 * (a deterministic proposal, q = δ), so a right prediction costs far fewer
 * target passes and a wrong one changes nothing about the output.
 */
export const predictionSchema = z.strictObject({
  type: z.literal('content', 'prediction.type must be "content"'),
  content: z.union([z.string(), z.array(z.strictObject({ type: z.literal('text', 'prediction content parts must be text'), text: z.string() }))]),
});
export type Prediction = z.infer<typeof predictionSchema>;

/** The prediction's text: the string, or its text parts joined. */
export function predictionText(prediction: Prediction): string {
  return typeof prediction.content === 'string' ? prediction.content : prediction.content.map((part) => part.text).join('');
}

/**
 * The prediction as token ids, bounded like a prompt before tokenizing (BPE
 * over long runs is slow: ARCHITECTURE.md, A request's life): more bytes than
 * the context × the longest token's bytes can never be the output; a 413.
 */
export function predictionTokens(prediction: Prediction | null | undefined, engine: Pick<DraftEngine, 'config' | 'tokenizer'>, param = 'prediction'): number[] | undefined {
  if (!prediction) return undefined;
  const text = predictionText(prediction);
  const maxBytes = engine.config.maxPositions * engine.tokenizer.maxBytesPerToken;
  if (text.length > maxBytes || (text.length * 3 > maxBytes && new TextEncoder().encode(text).length > maxBytes)) {
    throw new ApiError(413, `The prediction is longer than this model's context of ${engine.config.maxPositions} tokens could ever generate (more than ${maxBytes} bytes).`, param, 'context_length_exceeded');
  }
  return text ? engine.tokenizer.encode(text) : [];
}

export const completionRequestSchema = z.strictObject({
  model: z.string().min(1).optional(),
  prompt: z.union([
    z.string().min(1, 'prompt must not be empty'),
    z.array(z.number().int().nonnegative()).min(1, 'prompt token list must not be empty'),
    z.array(z.string()).length(1, 'one prompt per request: batches of prompts are not supported').transform((p) => p[0]),
    z.array(z.array(z.number().int().nonnegative()).min(1)).length(1, 'one prompt per request: batches of prompts are not supported').transform((p) => p[0]),
  ]),
  max_tokens: tokenBudget.nullish().transform((v) => v ?? 16),
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
  /** The target's raw log-probability of each token and this many alternatives (README: Log-probabilities); 0 = the token's own only. */
  logprobs: z.number().int().min(0).max(MAX_TOP_LOGPROBS).nullish(),
  frequency_penalty: z.literal(0, 'frequency_penalty is not supported').nullish(),
  presence_penalty: z.literal(0, 'presence_penalty is not supported').nullish(),
  suffix: z.null('suffix is not supported').optional(),
  user: z.string().max(256).optional(),
  /** vLLM's extension: also return the prompt's and the completion's token ids. */
  return_token_ids: z.boolean().optional(),
  /** edgespec: "draft" lets the draft model answer alone when no origin can (labelled in the response); "none" (default) answers 503. */
  fallback: z.enum(['none', 'draft']).optional(),
  speculation: speculationSchema.optional(),
  /** OpenAI's Predicted Outputs: the expected output, drafted from (README: Proposers and Predicted Outputs). */
  prediction: predictionSchema.nullish(),
});

export type CompletionRequest = z.infer<typeof completionRequestSchema>;

/** `model` is optional; when given, it must be the one this deployment serves (404, as OpenAI answers). */
export function checkModel(model: string | undefined, served: string): void {
  if (model && model !== served) {
    throw new ApiError(404, `The model '${model}' does not exist; this deployment serves '${served}'.`, 'model', 'model_not_found');
  }
}
