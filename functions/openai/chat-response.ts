import type { ResponseShape } from './response';
import { chatLogprobs } from './token-details';

/**
 * `chat.completion` and `chat.completion.chunk`: the assistant's message
 * whole, or as deltas after an opening chunk that names the role.
 */
export const chatShape: ResponseShape = {
  idPrefix: 'chatcmpl',
  object: { whole: 'chat.completion', chunk: 'chat.completion.chunk' },
  wholeChoice: (text, finishReason) => ({ index: 0, message: { role: 'assistant', content: text }, logprobs: null, finish_reason: finishReason }),
  // The last chunk (finish reason, no text) has an empty delta, as OpenAI sends it.
  deltaChoice: (text, finishReason) => ({ index: 0, delta: text ? { content: text } : {}, logprobs: null, finish_reason: finishReason }),
  openingChoice: { index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null },
  promptTokenIdsIn: 'response',
  logprobs: chatLogprobs,
};
