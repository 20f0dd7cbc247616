import { ApiError } from '../../shared/errors';
import type { DraftEngine } from '../draft/engine';

/**
 * A completion prompt as token ids, bounded before any work: a text prompt
 * longer in bytes than the context times the most bytes one token stands for
 * cannot fit, so it is refused without tokenizing it.
 */
export function promptTokens(prompt: string | number[], engine: DraftEngine, param = 'prompt'): number[] {
  const maxPositions = engine.config.maxPositions;
  if (typeof prompt !== 'string') {
    if (prompt.length >= maxPositions) throw contextExceeded(maxPositions, `${prompt.length} tokens`, param);
    const bad = prompt.findIndex((t) => t >= engine.config.vocabSize);
    if (bad >= 0) throw new ApiError(400, `prompt token ${prompt[bad]} at index ${bad} is outside the vocabulary (0..${engine.config.vocabSize - 1})`, param, 'invalid_token');
    return prompt;
  }
  const maxBytes = maxPositions * engine.tokenizer.maxBytesPerToken;
  // UTF-16 length ≤ UTF-8 length: the cheap check first, the exact one only near the bound.
  if (prompt.length > maxBytes || (prompt.length * 3 > maxBytes && new TextEncoder().encode(prompt).length > maxBytes)) {
    throw contextExceeded(maxPositions, `more than ${maxBytes} bytes`, param);
  }
  return engine.tokenizer.encode(prompt);
}

function contextExceeded(maxPositions: number, size: string, param: string): ApiError {
  return new ApiError(413, `This model's maximum context length is ${maxPositions} tokens; the prompt has ${size}.`, param, 'context_length_exceeded');
}
