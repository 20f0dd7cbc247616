import type { FinishReason } from '../speculation/loop';
import { completionLogprobs, type TokenDetail, type TokenDetailsReader } from './token-details';

/**
 * OpenAI response objects, streamed and not. Every response kind
 * (`text_completion`, `chat.completion`) is the same envelope around one
 * choice; a `ResponseShape` says only how its choices look, and the one
 * writer (./respond.ts) does everything else.
 */
export interface ResponseMeta {
  id: string;
  created: number;
  model: string;
}

export interface ResponseShape {
  /** Response ids are this, a dash and 32 hex digits (`cmpl-…`, `chatcmpl-…`). */
  idPrefix: string;
  /** `object` of the non-streamed response and of a stream chunk. */
  object: { whole: string; chunk: string };
  /** The choice of a non-streamed response: all the text. */
  wholeChoice(text: string, finishReason: FinishReason): Record<string, unknown>;
  /** The choice of a stream chunk: a text delta; the last one carries the finish reason. */
  deltaChoice(text: string, finishReason: FinishReason | null): Record<string, unknown>;
  /** A stream's first choice, before any text (chat: the assistant's role), or null for none. */
  openingChoice: Record<string, unknown> | null;
  /** Where `prompt_token_ids` go when asked for (`return_token_ids`, as vLLM places them): in the choice or in the response. */
  promptTokenIdsIn: 'choice' | 'response';
  /** A choice's `logprobs` for these tokens (completions' parallel lists, chat's `content` entries). */
  logprobs(tokens: readonly TokenDetail[], reader: TokenDetailsReader): object;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { cached_tokens: number };
  completion_tokens_details: { accepted_prediction_tokens: number; rejected_prediction_tokens: number };
}

export function usage(promptTokens: number, completionTokens: number, drafted: number, accepted: number, cachedTokens = 0): Usage {
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
    prompt_tokens_details: { cached_tokens: cachedTokens },
    completion_tokens_details: { accepted_prediction_tokens: accepted, rejected_prediction_tokens: drafted - accepted },
  };
}

/** One response object or stream chunk: the envelope, the choices (none for the usage chunk), and the final fields. */
export function responseObject(shape: ResponseShape, meta: ResponseMeta, streamed: boolean, choices: Record<string, unknown>[], extra: object = {}) {
  return {
    id: meta.id,
    object: streamed ? shape.object.chunk : shape.object.whole,
    created: meta.created,
    model: meta.model,
    choices,
    ...extra,
  };
}

/** `text_completion`: the same choice streamed and not. */
const completionChoice = (text: string, finishReason: FinishReason | null) => ({ text, index: 0, logprobs: null, finish_reason: finishReason });
export const completionShape: ResponseShape = {
  idPrefix: 'cmpl',
  object: { whole: 'text_completion', chunk: 'text_completion' },
  wholeChoice: completionChoice,
  deltaChoice: completionChoice,
  openingChoice: null,
  promptTokenIdsIn: 'choice',
  logprobs: completionLogprobs,
};

/** A fresh response id and creation time. */
export function newResponseMeta(shape: ResponseShape, model: string): ResponseMeta {
  return { id: `${shape.idPrefix}-${crypto.randomUUID().replaceAll('-', '')}`, created: Math.floor(Date.now() / 1000), model };
}
