import type { FinishReason } from '../speculation/loop';

/** OpenAI `text_completion` objects, streamed and not. */
export interface CompletionMeta {
  id: string;
  created: number;
  model: string;
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

export function completionChunk(meta: CompletionMeta, text: string, finishReason: FinishReason | null, extra: object = {}) {
  return {
    id: meta.id,
    object: 'text_completion',
    created: meta.created,
    model: meta.model,
    choices: [{ text, index: 0, logprobs: null, finish_reason: finishReason }],
    ...extra,
  };
}

export function newCompletionMeta(model: string): CompletionMeta {
  return { id: `cmpl-${crypto.randomUUID().replaceAll('-', '')}`, created: Math.floor(Date.now() / 1000), model };
}
