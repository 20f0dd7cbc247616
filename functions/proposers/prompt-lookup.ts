import type { DraftToken } from '../../shared/sampling';
import { matchDraft, matchLimit, type Match, type Matcher, type ProposeOptions } from './types';

/** vLLM's `prompt_lookup_min` / `prompt_lookup_max`: the n-gram lengths matched (defaults measured on held-out code, README: Proposers and Predicted Outputs). */
export interface PromptLookupOptions {
  min: number;
  max: number;
}

export const PROMPT_LOOKUP_DEFAULTS: PromptLookupOptions = { min: 2, max: 8 };

/**
 * Prompt lookup decoding (Saxena 2023; vLLM's `ngram` method): find the
 * longest n-gram, n in [min, max], that ends the context and occurred earlier
 * in it (prompt and generated text alike), and propose the tokens that
 * followed it. No model step, so the draft may be longer than k
 * (`maxMatchTokens`). Deterministic: q = δ.
 */
export class PromptLookupProposer implements Matcher {
  readonly name = 'prompt-lookup';

  constructor(private readonly options: PromptLookupOptions = PROMPT_LOOKUP_DEFAULTS) {}

  match(context: readonly number[], limit: number): Match | null {
    const found = longestNgramMatch(context, this.options.min, this.options.max);
    if (!found || limit <= 0) return null;
    const tokens = context.slice(found.end + 1, found.end + 1 + limit);
    return { tokens, matchLength: found.length, expectedAccepted: tokens.length, support: { agree: 1, total: 1 } };
  }

  async propose(context: readonly number[], maxTokens: number, _sampling: unknown, options: ProposeOptions = {}): Promise<DraftToken[]> {
    return matchDraft(this.match(context, matchLimit(maxTokens, options)));
  }
}

/**
 * vLLM's `_find_longest_matched_ngram_and_propose_tokens` (vllm/v1/spec_decode/ngram_proposer.py):
 * the longest n in [min, max] such that the last n tokens also occur ending
 * before the last token (overlap allowed), and among those of that length the
 * earliest occurrence. Returns the index of the occurrence's last token
 * (`end`, so the proposal starts at end + 1) and n; null when no n ≥ min matches.
 * O(length · max) per call, like vLLM's (which runs KMP over the reversed context).
 */
export function longestNgramMatch(tokens: readonly number[], min: number, max: number): { end: number; length: number } | null {
  const last = tokens.length - 1;
  if (last < 1 || tokens.length < min || max < 1) return null;
  let best: { end: number; length: number } | null = null;
  for (let end = 0; end < last; end++) {
    if (tokens[end] !== tokens[last]) continue;
    let length = 1;
    while (length < max && end - length >= 0 && tokens[end - length] === tokens[last - length]) length++;
    // Strictly longer only: the earliest occurrence keeps a tie.
    if (length >= min && (!best || length > best.length)) {
      best = { end, length };
      if (length === max) break;
    }
  }
  return best;
}
