/**
 * How the next token is chosen. `top_k` 0 = off (as is any top_k >= vocab),
 * `top_p` 1 = off, `temperature` 0 = greedy (argmax, no randomness at all).
 */
export interface SamplingParams {
  temperature: number;
  top_p: number;
  top_k: number;
}

export const isGreedy = (s: SamplingParams) => s.temperature === 0;
